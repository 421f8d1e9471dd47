"""Gradient checkpointing for a frozen UNet: its residual and transformer blocks recompute in the backward pass.

Blocks are found by class name (ldm/sgm, diffusers), so no host code is imported. Each gets an instance-level
forward running the class's forward through non-reentrant torch.utils.checkpoint (which works when no input
needs grad, as with a frozen base); the handle's ``remove()`` deletes every wrapper and leaves nothing behind.

``disable_builtin_checkpointing`` turns off ldm's/sgm's own checkpointing (``use_checkpoint: True`` in the SD
yamls and on webui's sd_model), which recomputes under no_grad and gives no gradient to a hypernetwork.
"""
from __future__ import annotations

import inspect
import logging
from typing import List, Tuple

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

logger = logging.getLogger(__name__)

BLOCK_CLASSES = ("ResBlock", "SpatialTransformer", "SpatialVideoTransformer", "ResnetBlock2D",
                 "Transformer2DModel")
# ldm/sgm flags that route a block through their own checkpoint(); in ldm that is a CheckpointFunction running the
# forward under no_grad and differentiating only the block's inputs and own (frozen) parameters
BUILTIN_FLAGS = ("checkpoint", "use_checkpoint")
# ldm and sgm classes carrying one of BUILTIN_FLAGS (SpatialTransformer only passes it on); any class defined in an
# ``ldm`` or ``sgm`` module is matched as well
BUILTIN_CLASSES = ("BasicTransformerBlock", "BasicTransformerSingleLayerBlock", "ResBlock", "AttentionBlock",
                   "SpatialTransformer", "UNetModel", "EncoderUNetModel", "VideoResBlock", "VideoTransformerBlock",
                   "SpatialVideoTransformer", "VideoUNet")
# classes whose forward checkpoints whatever their flag says (ldm: ``checkpoint(..., True)``); they get an
# instance forward calling their ``_forward`` directly, as webui's sd_hijack_checkpoint does for the class
ALWAYS_CHECKPOINTED = ("AttentionBlock", "BasicTransformerSingleLayerBlock")
_MISSING = object()


class _Recompute:
    """The wrapper put on one block: checkpoint the original forward while gradients are being recorded."""

    def __init__(self, module: nn.Module, previous):
        self.forward = previous if previous is not _MISSING else type(module).forward.__get__(module)
        self.previous = previous

    def __call__(self, *args, **kwargs):
        if torch.is_grad_enabled():
            return checkpoint(self.forward, *args, use_reentrant=False, **kwargs)
        return self.forward(*args, **kwargs)


def _unwrap(module: nn.Module, wrapper, while_what: str) -> bool:
    """Delete the instance forward ``wrapper`` we put on ``module``; False (and a warning) when someone else has
    replaced it meanwhile, whose forward is then left in place."""
    if module.__dict__.get("forward") is not wrapper:
        logger.warning("the forward of %s was replaced by someone else while %s; leaving theirs in place",
                       type(module).__name__, while_what)
        return False
    del module.__dict__["forward"]
    return True


class CheckpointingHandle:
    """Owns the wrappers; ``remove()`` (or leaving a ``with`` block) restores every block's forward."""

    def __init__(self, wrapped: List[Tuple[nn.Module, _Recompute]]):
        self._wrapped = wrapped

    @property
    def blocks(self) -> int:
        return len(self._wrapped)

    def remove(self) -> None:
        wrapped, self._wrapped = self._wrapped, []
        for module, wrapper in wrapped:
            if _unwrap(module, wrapper, "checkpointing was on") and wrapper.previous is not _MISSING:
                module.__dict__["forward"] = wrapper.previous

    def __enter__(self) -> "CheckpointingHandle":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


def find_blocks(root: nn.Module, classes=BLOCK_CLASSES) -> List[nn.Module]:
    """The outermost modules under ``root`` whose class name is in ``classes`` (no block inside another)."""
    found, names = [], []
    for name, module in root.named_modules():
        if type(module).__name__ in classes and not any(name.startswith(n + ".") for n in names):
            found.append(module)
            names.append(name)
    return found


def enable_gradient_checkpointing(root: nn.Module, classes=BLOCK_CLASSES) -> CheckpointingHandle:
    """Wrap the blocks of ``root`` (the UNet); see the module docstring. Remove with the returned handle."""
    blocks = find_blocks(root, classes)
    if not blocks:
        logger.warning("gradient checkpointing: no %s blocks under %s; nothing is recomputed",
                       "/".join(classes), type(root).__name__)
    wrapped = []
    for module in blocks:
        wrapper = _Recompute(module, module.__dict__.get("forward", _MISSING))
        module.__dict__["forward"] = wrapper
        wrapped.append((module, wrapper))
    logger.debug("gradient checkpointing on %d blocks", len(wrapped))
    return CheckpointingHandle(wrapped)


class _Direct:
    """The forward put on a block that always checkpoints: its ``_forward``, given the arguments it accepts."""

    def __init__(self, module: nn.Module):
        self.forward = module._forward
        parameters = inspect.signature(self.forward).parameters.values()
        self.any_keyword = any(p.kind is p.VAR_KEYWORD for p in parameters)
        self.keywords = {p.name for p in parameters}

    def __call__(self, *args, **kwargs):
        if not self.any_keyword:   # sgm's AttentionBlock.forward takes and ignores **kwargs; _forward does not
            kwargs = {k: v for k, v in kwargs.items() if k in self.keywords}
        return self.forward(*args, **kwargs)


class BuiltinCheckpointHandle:
    """Owns the flags and forwards changed by disable_builtin_checkpointing; ``remove()`` restores them exactly."""

    def __init__(self, flags: List[Tuple[nn.Module, str, object]], direct: List[Tuple[nn.Module, _Direct]]):
        self._flags = flags        # (module, attribute, previous value or _MISSING when only the class had it)
        self._direct = direct

    @property
    def flags(self) -> int:
        return len(self._flags)

    @property
    def blocks(self) -> int:
        """Blocks whose always-checkpointing forward was bypassed."""
        return len(self._direct)

    def remove(self) -> None:
        flags, self._flags = self._flags, []
        direct, self._direct = self._direct, []
        for module, attribute, previous in flags:
            if module.__dict__.get(attribute) is not False:
                logger.warning("%s.%s was changed by someone else while built-in checkpointing was off; leaving "
                               "their value %r", type(module).__name__, attribute, getattr(module, attribute, None))
            elif previous is _MISSING:
                del module.__dict__[attribute]
            else:
                module.__dict__[attribute] = previous
        for module, wrapper in direct:
            _unwrap(module, wrapper, "built-in checkpointing was off")

    def __enter__(self) -> "BuiltinCheckpointHandle":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


def _is_builtin(module: nn.Module, classes) -> bool:
    cls = type(module)
    return cls.__name__ in classes or cls.__module__.split(".")[0] in ("ldm", "sgm")


def disable_builtin_checkpointing(root: nn.Module, classes=BUILTIN_CLASSES) -> BuiltinCheckpointHandle:
    """Turn off ldm's/sgm's own gradient checkpointing under ``root`` until the handle's ``remove()``.

    Every ``checkpoint`` / ``use_checkpoint`` attribute that is ``True`` on an ldm/sgm block (by class name or
    defining module) is set to False on the instance; blocks in ALWAYS_CHECKPOINTED get an instance forward that
    skips the wrapper. Use enable_gradient_checkpointing for memory savings that keep the hypernetwork's gradient.
    """
    flags, direct = [], []
    for module in root.modules():
        if not _is_builtin(module, classes):
            continue
        for attribute in BUILTIN_FLAGS:
            if getattr(module, attribute, None) is True:
                flags.append((module, attribute, module.__dict__.get(attribute, _MISSING)))
                module.__dict__[attribute] = False
        if type(module).__name__ in ALWAYS_CHECKPOINTED and callable(getattr(module, "_forward", None)):
            current = module.__dict__.get("forward")
            if current is None:
                wrapper = _Direct(module)
                module.__dict__["forward"] = wrapper
                direct.append((module, wrapper))
            elif not isinstance(current, _Direct):
                logger.warning("%s already has its own forward; its built-in checkpointing stays on",
                               type(module).__name__)
    if flags or direct:
        logger.debug("built-in checkpointing off: %d flags, %d always-checkpointed blocks", len(flags), len(direct))
    return BuiltinCheckpointHandle(flags, direct)
