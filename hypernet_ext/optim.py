"""Optimizer registry and factory: every usable torch.optim optimizer, plus third-party ones when installed.

Names are the optimizer class names (what webui stores as ``optimizer_name``); keyword arguments, also as a
"betas=0.9,0.99 weight_decay=0.01" string, are checked against the class signature before anything is built.
"""
from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import logging
import math
import re
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Dict, List, Tuple

import torch

from .config import ConfigMixin
from .errors import ConfigError

logger = logging.getLogger(__name__)

# name -> (module, attribute, pip package)
EXTRA_OPTIMIZERS: Dict[str, Tuple[str, str, str]] = {
    "Lion": ("lion_pytorch", "Lion", "lion-pytorch"),
    "Prodigy": ("prodigyopt", "Prodigy", "prodigyopt"),
    "DAdaptAdam": ("dadaptation", "DAdaptAdam", "dadaptation"),
    "DAdaptLion": ("dadaptation", "DAdaptLion", "dadaptation"),
    "AdamWScheduleFree": ("schedulefree", "AdamWScheduleFree", "schedulefree"),
    "AdamW8bit": ("bitsandbytes.optim", "AdamW8bit", "bitsandbytes"),
    "Lion8bit": ("bitsandbytes.optim", "Lion8bit", "bitsandbytes"),
}
# torch.optim classes the trainer cannot drive, and why
UNSUPPORTED = {
    "LBFGS": "it needs a closure that re-evaluates the loss at every step",
    "SparseAdam": "it only takes sparse gradients, and a hypernetwork's are dense",
    "Muon": "it only takes 2-D weight matrices, and a hypernetwork also has biases",
}
# packages whose optimizers estimate the step size themselves: lr is a multiplier of their estimate d
LR_FREE_PACKAGES = ("prodigyopt", "dadaptation")
_KEY = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*=(?!=)")
_SKIPPED = ("self", "params", "lr")


@lru_cache(maxsize=1)
def torch_optimizers() -> Tuple[str, ...]:
    """Names of the torch.optim optimizers the trainer can use, in this torch."""
    names = [name for name, cls in inspect.getmembers(torch.optim, inspect.isclass)
             if issubclass(cls, torch.optim.Optimizer) and cls is not torch.optim.Optimizer]
    return tuple(sorted(n for n in names if n not in UNSUPPORTED))


def known_optimizers() -> List[str]:
    """Every name build_optimizer accepts, installed or not."""
    return list(torch_optimizers()) + [n for n in EXTRA_OPTIMIZERS if n not in torch_optimizers()]


def available_optimizers() -> List[str]:
    """torch.optim optimizers, then the third-party ones whose package is installed (none is imported)."""
    extras = [n for n, (module, _, _) in EXTRA_OPTIMIZERS.items()
              if n not in torch_optimizers() and importlib.util.find_spec(module.split(".")[0]) is not None]
    return list(torch_optimizers()) + extras


def resolve_optimizer_name(name) -> str:
    """The canonical name for ``name`` (matched ignoring case); ConfigError listing the choices if unknown."""
    text = str(name or "").strip()
    if text in UNSUPPORTED or text.lower() in {n.lower() for n in UNSUPPORTED}:
        canonical = next(n for n in UNSUPPORTED if n.lower() == text.lower())
        raise ConfigError(f"optimizer {canonical} cannot be used for training a hypernetwork: "
                          f"{UNSUPPORTED[canonical]}; choose another, e.g. AdamW")
    by_lower = {n.lower(): n for n in known_optimizers()}
    if text.lower() in by_lower:
        return by_lower[text.lower()]
    missing = [n for n in known_optimizers() if n not in available_optimizers()]
    extra = f"; with their packages installed also {', '.join(missing)}" if missing else ""
    raise ConfigError(f"optimizer {name!r} is unknown; choose one of {', '.join(available_optimizers())}{extra}")


def load_optimizer_class(name) -> type:
    """The optimizer class of ``name``; ConfigError naming the pip package when it is not installed."""
    name = resolve_optimizer_name(name)
    if name in torch_optimizers():
        return getattr(torch.optim, name)
    module_name, attribute, package = EXTRA_OPTIMIZERS[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        raise ConfigError(f"optimizer {name} needs the package {package}; install it with "
                          f"'pip install {package}' (inside webui's venv), or choose another optimizer") from None
    except (RuntimeError, OSError) as err:   # bitsandbytes fails like this on an unsupported torch/CUDA
        raise ConfigError(f"optimizer {name}: {package} is installed but does not load here ({err}); "
                          "choose another optimizer") from err
    return getattr(module, attribute)


def parse_kwargs(text) -> dict:
    """``"betas=0.9,0.99 weight_decay=0.01 amsgrad=true"`` -> {'betas': (0.9, 0.99), 'weight_decay': 0.01,
    'amsgrad': True}. Pieces are name=value, separated by spaces, commas or ';'; values are Python literals,
    true/false, none, or else kept as text. A dict is returned as a copy."""
    if text is None:
        return {}
    if isinstance(text, dict):
        bad = [k for k in text if not isinstance(k, str) or not k.isidentifier()]
        if bad:
            raise ConfigError(f"optimizer arguments: {bad[0]!r} is not an argument name")
        return dict(text)
    text = str(text).strip()
    matches = list(_KEY.finditer(text))
    lead = text[:matches[0].start()] if matches else text
    if lead.strip(" \t\r\n,;"):
        raise ConfigError(f"optimizer arguments: {lead.strip()!r} is not name=value; write e.g. "
                          "'betas=0.9,0.99 weight_decay=0.01'")
    out = {}
    for match, following in zip(matches, matches[1:] + [None]):
        key = match.group(1)
        raw = text[match.end():following.start() if following else len(text)].strip().rstrip(",;").strip()
        if not raw:
            raise ConfigError(f"optimizer arguments: '{key}=' has no value")
        if key in out:
            raise ConfigError(f"optimizer arguments: {key} is given twice")
        out[key] = _literal(raw)
    return out


def _literal(raw: str):
    lowered = raw.strip().lower()
    if lowered in ("true", "yes", "on"):
        return True
    if lowered in ("false", "no", "off"):
        return False
    if lowered in ("none", "null", ""):
        return None
    try:
        return ast.literal_eval(raw.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        pass
    try:
        return float(raw)   # inf, nan
    except ValueError:
        return raw.strip()


def check_kwargs(name: str, cls: type, kwargs: dict) -> dict:
    """``kwargs`` checked against ``cls.__init__`` and converted (text to numbers, lists to tuples)."""
    kwargs = parse_kwargs(kwargs)
    _reject_lr(name, kwargs)
    signature = inspect.signature(cls.__init__)
    params = {n: p for n, p in signature.parameters.items()
              if n not in _SKIPPED and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)}
    open_ended = any(p.kind == p.VAR_KEYWORD for p in signature.parameters.values())
    out = {}
    for key, value in kwargs.items():
        if key not in params:
            if open_ended:
                out[key] = value
                continue
            raise ConfigError(f"{name} has no argument {key!r}; it accepts {', '.join(params) or 'none'}")
        out[key] = _coerce(name, key, value, params[key])
    return out


def _reject_lr(name: str, kwargs: dict) -> None:
    if "lr" in kwargs:
        raise ConfigError(f"{name}: lr comes from the learning-rate schedule; remove 'lr' from its arguments")


def _coerce(name: str, key: str, value, param: inspect.Parameter):
    shown = value
    if isinstance(value, str):
        value = _literal(value)
    default = param.default
    if value is None:
        if default is None or default is param.empty:
            return None
        raise ConfigError(f"{name}: {key} cannot be empty; leave it out to use its default {default!r}")
    if param.annotation in (int, "int"):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not float(value).is_integer():
            raise ConfigError(f"{name}: {key} expects a whole number, got {shown!r}")
        return int(value)
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{name}: {key} expects true or false, got {shown!r}")
        return value
    if isinstance(default, (int, float)):
        return _real(name, key, value, shown)
    if isinstance(default, tuple):
        example = ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in default)
        if not isinstance(value, (tuple, list)) or len(value) != len(default):
            raise ConfigError(f"{name}: {key} expects {len(default)} numbers such as {key}={example}, got {shown!r}")
        return tuple(_real(name, f"{key}[{i}]", v, shown) for i, v in enumerate(value))
    return value   # optional or untyped arguments: the optimizer checks them itself


def _real(name: str, key: str, value, shown):
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name}: {key} expects a number, got {shown!r}")
    return value


@dataclass
class OptimizerConfig(ConfigMixin):
    """Which optimizer trains the hypernetwork, and its keyword arguments (the learning rate is separate)."""

    name: str = field(default="AdamW", metadata={
        "help": "Optimizer class name: any torch.optim optimizer (AdamW, Adam, SGD, RAdam, ...), or when "
                "installed Lion, Prodigy, DAdaptAdam, DAdaptLion, AdamWScheduleFree, AdamW8bit, Lion8bit."})
    kwargs: dict = field(default_factory=dict, metadata={
        "help": "Optimizer arguments as name=value, e.g. 'betas=0.9,0.99 weight_decay=0.01'. Empty: its defaults. "
                "Prodigy and D-Adaptation take lr as a multiplier of their own estimate: use a rate near 1."})

    def __post_init__(self):
        self.name = resolve_optimizer_name(self.name)
        self.kwargs = parse_kwargs(self.kwargs)
        if self.name in torch_optimizers():   # third-party ones are checked when built (importing them is slow)
            self.kwargs = check_kwargs(self.name, getattr(torch.optim, self.name), self.kwargs)
        else:
            _reject_lr(self.name, self.kwargs)


def build_optimizer(params, config_or_name, lr: float, **kwargs) -> torch.optim.Optimizer:
    """A ready optimizer over ``params`` with learning rate ``lr``; ``kwargs`` override the config's.

    ``config_or_name``: an OptimizerConfig, its dict, a name, or None for AdamW. ConfigError for an unknown
    name, a missing package, an unknown or mistyped argument, or values the optimizer itself refuses.
    """
    if isinstance(config_or_name, OptimizerConfig):
        config = config_or_name
    elif isinstance(config_or_name, dict):
        config = OptimizerConfig.from_dict(config_or_name)
    else:
        config = OptimizerConfig(name=config_or_name or "AdamW")
    cls = load_optimizer_class(config.name)
    checked = check_kwargs(config.name, cls, {**config.kwargs, **parse_kwargs(kwargs)})
    lr = _check_lr(lr)
    params = list(params)
    if not params:
        raise ValueError("build_optimizer: there are no parameters to optimize")
    try:
        optimizer = cls(params, lr=lr, **checked)
    except (ValueError, TypeError, RuntimeError) as err:
        raise ConfigError(f"{config.name} refused its settings (lr={lr:g}, {checked}): {err}") from err
    if is_lr_free(optimizer) and lr < 0.1:
        logger.warning("%s takes lr as a multiplier of its own step-size estimate; lr=%g is unusually small "
                       "(1.0 is the usual value)", config.name, lr)
    logger.info("optimizer %s, lr %g, arguments %s", config.name, lr, checked)
    return optimizer


def _check_lr(lr) -> float:
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not math.isfinite(lr) or lr < 0:
        raise ConfigError(f"learning rate: {lr!r} must be a finite number >= 0")
    return float(lr)


def is_lr_free(optimizer: torch.optim.Optimizer) -> bool:
    """True for Prodigy and D-Adaptation, which estimate the step size d themselves."""
    return type(optimizer).__module__.split(".")[0] in LR_FREE_PACKAGES and "d" in optimizer.param_groups[0]


def effective_lr(optimizer: torch.optim.Optimizer) -> float:
    """The step size of the first parameter group: d * lr for Prodigy / D-Adaptation (before their optional
    bias correction), lr for the others."""
    group = optimizer.param_groups[0]
    lr = float(group["lr"])
    return float(group["d"]) * lr if is_lr_free(optimizer) else lr


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    """Set the learning rate of every parameter group (a multiplier of d for the LR-free optimizers)."""
    lr = _check_lr(lr)
    for group in optimizer.param_groups:
        group["lr"] = lr


def _is_schedule_free(optimizer) -> bool:
    return "train_mode" in optimizer.param_groups[0] and callable(getattr(optimizer, "train", None)) \
        and callable(getattr(optimizer, "eval", None))


def optimizer_train_mode(optimizer: torch.optim.Optimizer) -> None:
    """Before training steps: schedule-free optimizers move the weights to their training point. No-op else."""
    if _is_schedule_free(optimizer):
        optimizer.train()


def optimizer_eval_mode(optimizer: torch.optim.Optimizer) -> None:
    """Before saving or previews: schedule-free optimizers move the weights to their average. No-op else."""
    if _is_schedule_free(optimizer):
        optimizer.eval()
