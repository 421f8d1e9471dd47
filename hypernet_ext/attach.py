"""Attach hypernetworks to a model's attention modules with removable hooks, and the handle that owns them.

Targets are found by duck typing (any module with ``to_k`` and ``to_v``); pre-hooks on those two layers
replace their input by the hypernetwork-transformed context, so every attention implementation is covered.
"""
from __future__ import annotations

import logging
import math
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from .errors import AttachError
from .families import check_fit

logger = logging.getLogger(__name__)

CACHE_SIZE = 4  # distinct context tensors kept per UNet call; self-attention inputs pass through quickly
# Layers that draw random numbers in training mode: every torch dropout layer, and RReLU's random slopes.
_RANDOM = (nn.modules.dropout._DropoutNd, nn.RReLU)


def _width(linear: nn.Module) -> Optional[int]:
    width = getattr(linear, "in_features", None)
    if isinstance(width, int):
        return width
    weight = getattr(linear, "weight", None)
    return int(weight.shape[-1]) if isinstance(weight, torch.Tensor) and weight.dim() == 2 else None


def attention_modules(model: nn.Module) -> List[Tuple[str, nn.Module, int]]:
    """(name, module, width) of every module under ``model`` with ``to_k`` and ``to_v`` layers; ``width`` is
    the input width of ``to_k`` (the context width; see ``_targets`` for each layer's own)."""
    found = []
    for name, module in model.named_modules():
        to_k, to_v = getattr(module, "to_k", None), getattr(module, "to_v", None)
        if isinstance(to_k, nn.Module) and isinstance(to_v, nn.Module):
            width = _width(to_k)
            if width is None:
                logger.debug("skipping %s: cannot tell the input width of its to_k", name)
                continue
            found.append((name, module, width))
    return found


def _targets(found) -> List[Tuple[str, int, nn.Module, int]]:
    """(module name, kind, layer, input width) of every to_k (kind 0) and to_v (kind 1) layer: each is hooked
    for its own width, so a module whose to_v reads another width than its to_k gets the right network."""
    targets = []
    for name, module, k_width in found:
        v_width = _width(module.to_v)
        targets.append((name, 0, module.to_k, k_width))
        if v_width is not None:
            targets.append((name, 1, module.to_v, v_width))
    return targets


def _common_root(model: nn.Module, names: Sequence[str]) -> nn.Module:
    """The lowest module containing every named target: one call of it is one UNet evaluation."""
    parts = [name.split(".") if name else [] for name in names]
    prefix = []
    for pieces in zip(*parts):
        if any(p != pieces[0] for p in pieces):
            break
        prefix.append(pieces[0])
    return model.get_submodule(".".join(prefix)) if prefix else model


def _normalise(networks) -> List[list]:
    """[[network, strength], ...] from a network, a (network, strength) pair, or a list of either."""
    if _is_network(networks) or _is_pair(networks):
        networks = [networks]
    if not isinstance(networks, (list, tuple)):
        raise AttachError(f"networks: expected a Hypernetwork or a list of Hypernetwork or (Hypernetwork, "
                          f"strength), got {type(networks).__name__}")
    if not networks:
        raise AttachError("networks: the list is empty; give at least one Hypernetwork to attach")
    out = []
    for i, item in enumerate(networks):
        if _is_network(item):
            item = (item, 1.0)
        if not _is_pair(item):
            raise AttachError(f"networks[{i}]: expected a Hypernetwork or a (Hypernetwork, strength) pair, "
                              f"got {type(item).__name__}")
        out.append([item[0], _strength(f"networks[{i}] strength", item[1])])
    return out


def _is_pair(obj) -> bool:
    return isinstance(obj, (list, tuple)) and len(obj) == 2 and _is_network(obj[0]) and not _is_network(obj[1])


def _is_network(obj) -> bool:
    return isinstance(obj, nn.Module) and callable(getattr(obj, "pair", None)) and hasattr(obj, "widths")


def _strength(what: str, value) -> float:
    try:
        strength = float(value)
    except (TypeError, ValueError):
        raise AttachError(f"{what}: {value!r} is not a number; use e.g. 1.0 (full) or 0.5") from None
    if not math.isfinite(strength):
        raise AttachError(f"{what}: {value!r} is not finite; use a number such as 1.0")
    return strength


def _draws(layer: nn.Module) -> bool:
    """True when ``layer`` draws random numbers in its next forward."""
    return layer.training and (isinstance(layer, nn.RReLU) or layer.p > 0)


def _net_name(net) -> str:
    return repr(getattr(net, "name", type(net).__name__))


class _ContextCache:
    """Transformed contexts by input tensor, live only inside one call of the root module.

    Entries hold their key tensor, so a freed tensor's id can never alias a new one, and remember its
    version counter and the grad mode, so an in-place change or a no_grad/grad switch misses.
    """

    def __init__(self, enabled: bool, size: int = CACHE_SIZE):
        self.enabled = enabled
        self.size = size
        self.entries: "OrderedDict[int, tuple]" = OrderedDict()  # id -> (tensor, version, grad, {kind: out})
        self.active = False  # True only between the root's pre-hook and its forward hook

    @staticmethod
    def _stamp(x: torch.Tensor) -> tuple:
        # inference tensors have no version counter (and are not changed in place between layers)
        return (-1 if x.is_inference() else x._version), torch.is_grad_enabled()

    def _entry(self, x: torch.Tensor) -> Optional[tuple]:
        entry = self.entries.get(id(x))
        if entry is None or entry[0] is not x or entry[1:3] != self._stamp(x):
            return None
        self.entries.move_to_end(id(x))
        return entry

    def get(self, x: torch.Tensor, kind: int) -> Optional[torch.Tensor]:
        entry = self._entry(x) if self.active else None
        return entry[3].get(kind) if entry is not None else None

    def put(self, x: torch.Tensor, kind: int, out: torch.Tensor) -> None:
        if not (self.enabled and self.active):
            return
        entry = self._entry(x)
        if entry is None:
            entry = self.entries[id(x)] = (x, *self._stamp(x), {})
        entry[3][kind] = out
        while len(self.entries) > self.size:
            self.entries.popitem(last=False)

    def enter(self, module, args) -> None:  # forward pre-hook of the root
        self.entries.clear()
        self.active = True

    def leave(self, module, args, output) -> None:  # forward hook of the root, called even on error
        self.entries.clear()
        self.active = False


class _Stack:
    """The networks, their strengths, and per width the chain of (index, (k, v), dropout layers)."""

    def __init__(self, networks: List[list], widths: Sequence[int], cache: _ContextCache):
        self.networks = networks
        self.cache = cache
        self.computed = 0
        self.reused = 0
        self.chains: Dict[int, list] = {}
        for width in widths:
            chain = []
            for index, (net, _) in enumerate(networks):
                pair = net.pair(width)
                if pair is not None:
                    random_layers = [m for mod in pair for m in mod.modules() if isinstance(m, _RANDOM)]
                    chain.append((index, pair, random_layers))
            if chain:
                self.chains[width] = chain

    def transform(self, x: torch.Tensor, width: int, kind: int) -> torch.Tensor:
        """Context for to_k (kind 0) or to_v (kind 1): each network in order, as webui chains them."""
        cached = self.cache.get(x, kind)
        if cached is not None:
            self.reused += 1
            return cached
        out, stochastic = x, False
        for index, pair, random_layers in self.chains[width]:
            strength = self.networks[index][1]
            if strength == 0:  # exact identity, and nothing to compute
                continue
            module = pair[kind]
            param = next(module.parameters(), None)
            if param is not None and param.device != x.device:
                raise AttachError(f"network {_net_name(self.networks[index][0])} is on {param.device} but the "
                                  f"attention input is on {x.device}: move the network with .to({str(x.device)!r})")
            dtype = param.dtype if param is not None else x.dtype
            # cast in and back like webui's cond_cast_float / cond_cast_unet
            out = module(out.to(dtype), strength).to(x.dtype)
            self.computed += 1
            stochastic = stochastic or any(_draws(m) for m in random_layers)
        if out is not x and not stochastic:  # a random draw must stay independent per layer, as in webui
            self.cache.put(x, kind, out)
        return out


class _ContextHook:
    """Forward pre-hook on one to_k / to_v layer; its class marks a model as already attached."""

    def __init__(self, stack: _Stack, width: int, kind: int):
        self.stack, self.width, self.kind = stack, width, kind

    def __call__(self, module, args, kwargs):
        if args:
            return (self.stack.transform(args[0], self.width, self.kind),) + tuple(args[1:]), kwargs
        if isinstance(kwargs.get("input"), torch.Tensor):
            return args, dict(kwargs, input=self.stack.transform(kwargs["input"], self.width, self.kind))
        return None


def is_attached(model: nn.Module) -> bool:
    """True when some AttachHandle's hooks are on ``model``'s attention modules."""
    return any(isinstance(hook, _ContextHook) for _, module, _ in attention_modules(model)
               for layer in (module.to_k, module.to_v) for hook in layer._forward_pre_hooks.values())


class AttachHandle:
    """Owns one attachment: the hooks, the strengths and the cache. ``remove()`` undoes all of it."""

    def __init__(self, stack: _Stack, hooks: list, targets: int, root: nn.Module):
        self._stack = stack
        self._hooks = hooks
        self.targets = targets
        self.root = root

    @property
    def networks(self) -> Tuple[Tuple[nn.Module, float], ...]:
        return tuple((net, strength) for net, strength in self._stack.networks)

    @property
    def strengths(self) -> Tuple[float, ...]:
        return tuple(strength for _, strength in self._stack.networks)

    @property
    def cache(self) -> bool:
        return self._stack.cache.enabled

    @property
    def removed(self) -> bool:
        return not self._hooks

    @property
    def stats(self) -> Dict[str, int]:
        """Counters since attach: network module evaluations, and contexts reused from the cache."""
        return {"computed": self._stack.computed, "reused": self._stack.reused,
                "held": len(self._stack.cache.entries)}

    def set_strengths(self, strengths: Sequence[float]) -> None:
        """New strengths, one per network in attach order; takes effect at the next forward."""
        values = list(strengths) if isinstance(strengths, (list, tuple)) else [strengths]
        if len(values) != len(self._stack.networks):
            raise AttachError(f"set_strengths: got {len(values)} strengths for {len(self._stack.networks)} "
                              "attached networks; give one per network, in attach order")
        checked = [_strength(f"strengths[{i}]", v) for i, v in enumerate(values)]
        for entry, strength in zip(self._stack.networks, checked):
            entry[1] = strength
        self._stack.cache.entries.clear()

    def remove(self) -> None:
        """Take every hook off the model; calling it again does nothing."""
        hooks, self._hooks = self._hooks, []
        for hook in hooks:
            hook.remove()
        self._stack.cache.entries.clear()
        self._stack.cache.active = False
        if hooks:
            logger.debug("removed hypernetworks from %d attention modules", self.targets)

    def __enter__(self) -> "AttachHandle":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    def __repr__(self) -> str:
        names = ", ".join(f"{_net_name(n)}:{s:g}" for n, s in self._stack.networks)
        return f"AttachHandle([{names}], targets={self.targets}, removed={self.removed})"


def _check(model: nn.Module, networks: List[list], found: list, targets: list, check_device: bool) -> None:
    if not found:
        raise AttachError(f"{type(model).__name__} has no attention modules with to_k and to_v layers: pass the "
                          "UNet or the whole diffusion model (e.g. sd_model or sd_model.model.diffusion_model)")
    if is_attached(model):
        raise AttachError("this model already has hypernetworks attached by another handle: call that handle's "
                          "remove() first; to use several networks together, pass them all in one attach() call")
    model_widths = sorted({width for _, _, _, width in targets})
    for net, _ in networks:
        try:
            check_fit(str(getattr(net, "name", "") or type(net).__name__), net.widths, model_widths)
        except ValueError as err:
            raise AttachError(str(err)) from None
    param = next((p for _, module, _ in found for p in module.to_k.parameters()), None) if check_device else None
    for net, _ in networks:
        net_param = next(net.parameters(), None)
        if param is not None and net_param is not None and net_param.device != param.device:
            raise AttachError(f"network {_net_name(net)} is on {net_param.device} but the model is on "
                              f"{param.device}: move it first with network.to({str(param.device)!r})")


def attach(model: nn.Module, networks, *, cache: bool = True, check_device: bool = True) -> AttachHandle:
    """Attach ``networks`` (a Hypernetwork, or a list of Hypernetwork or (Hypernetwork, strength)) to ``model``.

    Every module with ``to_k``/``to_v`` whose width some network covers gets pre-hooks on both layers; the
    networks apply in list order. ``cache`` computes each transform once per context tensor per call of the
    lowest module holding all targets. ``check_device=False`` skips the check that the networks sit on the
    model's device, for hosts that move the model to its device only while it runs (webui's --medvram and
    --lowvram); a mismatch at run time is still an AttachError. Use the returned handle's ``remove()`` (or
    ``with``) to undo.
    """
    if not isinstance(model, nn.Module):
        raise AttachError(f"model: expected a torch.nn.Module, got {type(model).__name__}")
    entries = _normalise(networks)
    found = attention_modules(model)
    targets = _targets(found)
    _check(model, entries, found, targets, check_device)
    stack = _Stack(entries, sorted({width for _, _, _, width in targets}), _ContextCache(bool(cache)))
    hooks, names, seen, covered = [], [], set(), set()
    try:
        for name, kind, layer, width in targets:
            if width not in stack.chains or id(layer) in seen:  # a layer shared by two modules is hooked once
                continue
            seen.add(id(layer))
            covered.add(width)
            if name not in names:
                names.append(name)
            hooks.append(layer.register_forward_pre_hook(_ContextHook(stack, width, kind), with_kwargs=True))
        root = _common_root(model, names)
        hooks.append(root.register_forward_pre_hook(stack.cache.enter))
        hooks.append(root.register_forward_hook(stack.cache.leave, always_call=True))
    except BaseException:
        for hook in hooks:
            hook.remove()
        raise
    logger.debug("attached %d network(s) to %d attention modules (widths %s, root %s, cache %s)",
                 len(entries), len(names), sorted(covered), type(root).__name__, "on" if cache else "off")
    return AttachHandle(stack, hooks, len(names), root)
