"""Training checkpoints: the network file, its ``.optim`` sidecar, RNG state, and restoring an optimizer.

The sidecar has webui's keys (``optimizer_name``, ``hash`` = fileio.short_hash of the checkpoint file as written,
``optimizer_state_dict``) so webui resumes from our files and we from its, plus our resume state under
``hypernet_ext``. Both files are written atomically; sidecars are read with ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import logging
import pickle
import random
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, Optional, Tuple

import torch

from .fileio import PathLike, atomic_path, short_hash

logger = logging.getLogger(__name__)

OPTIM_SUFFIX = ".optim"
STATE_KEY = "hypernet_ext"
STATE_VERSION = 1
_READ_ERRORS = (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, KeyError, TypeError,
                AttributeError, ImportError, IndexError, zipfile.BadZipFile)


def optim_path(checkpoint: PathLike) -> Path:
    """``<checkpoint>.optim``: where webui and we keep a checkpoint's optimizer state."""
    return Path(str(checkpoint) + OPTIM_SUFFIX)


# ---- RNG state, as plain types and tensors only (weights_only loading) ----

def rng_state() -> Dict[str, Any]:
    """The global RNG states: torch CPU, every CUDA device (when initialised), python random, numpy."""
    state: Dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    version, internal, gauss = random.getstate()
    state["python"] = [version, list(internal), gauss]
    try:
        import numpy as np
    except ImportError:
        return state
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state["numpy"] = [kind, [int(k) for k in keys], int(pos), int(has_gauss), float(cached)]
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    """Restore what rng_state() returned; parts this machine cannot take (other CUDA devices) are skipped."""
    if "torch" in state:
        torch.set_rng_state(state["torch"].to("cpu", torch.uint8))
    cuda = state.get("cuda")
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.to("cpu", torch.uint8) for s in cuda])
    if "python" in state:
        version, internal, gauss = state["python"]
        random.setstate((int(version), tuple(int(v) for v in internal), gauss))
    if "numpy" in state:
        try:
            import numpy as np
        except ImportError:
            return
        kind, keys, pos, has_gauss, cached = state["numpy"]
        np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), int(pos), int(has_gauss), float(cached)))


# ---- writing ----

def write_optim(checkpoint: PathLike, optimizer_name: str, optimizer_state: dict,
                resume_state: Optional[dict] = None) -> Path:
    """Write ``<checkpoint>.optim`` atomically for the checkpoint file as it is on disk now."""
    data = {"optimizer_name": optimizer_name, "hash": short_hash(checkpoint), "optimizer_state_dict": optimizer_state}
    if resume_state is not None:
        data[STATE_KEY] = dict(resume_state, format_version=STATE_VERSION)
    from .formats.torch_zip import save_webui_safe  # a zip webui's safe unpickler accepts, whatever torch

    target = optim_path(checkpoint)
    with atomic_path(target) as tmp:
        save_webui_safe(data, tmp)
    return target


def save_checkpoint(network, path: PathLike, optimizer: Optional[torch.optim.Optimizer] = None,
                    optimizer_name: Optional[str] = None, resume_state: Optional[dict] = None) -> Path:
    """Write the network to ``path`` (format by suffix, atomic), then its ``.optim`` when an optimizer is given.

    The hash in the sidecar is taken from the file after its atomic rename, so it is the hash of the bytes
    webui will read. A failure while writing leaves any earlier file at ``path`` as it was.
    """
    from . import formats  # only saving needs the format writers; reading sidecars does not

    path = Path(formats.save(network, path))
    if optimizer is not None:
        write_optim(path, optimizer_name or type(optimizer).__name__, optimizer.state_dict(), resume_state)
    return path


# ---- reading and restoring ----

@dataclass
class OptimState:
    """A sidecar read back: webui's three keys, and our resume state (None in webui's own files)."""
    path: str
    optimizer_name: Optional[str]
    state_dict: Optional[dict]
    resume: Optional[dict]


def read_optim(checkpoint: PathLike) -> Tuple[Optional[OptimState], Optional[str]]:
    """(state, None) when ``<checkpoint>.optim`` exists, loads safely and its hash matches the checkpoint;
    otherwise (None, the reason, worded for the user). A missing sidecar gives (None, reason) as well."""
    checkpoint = Path(checkpoint)
    target = optim_path(checkpoint)
    if not target.is_file():
        return None, f"{target.name} does not exist"
    try:
        data = torch.load(target, map_location="cpu", weights_only=True)
    except _READ_ERRORS as err:
        return None, f"{target.name} cannot be read ({type(err).__name__}: {_short(err)})"
    if not isinstance(data, dict) or not isinstance(data.get("optimizer_state_dict"), dict):
        return None, f"{target.name} holds no optimizer state"
    expected = short_hash(checkpoint)
    if data.get("hash") != expected:
        return None, (f"{target.name} belongs to another version of {checkpoint.name} (its hash is "
                      f"{data.get('hash')!r}, the file's is {expected!r})")
    resume = data.get(STATE_KEY)
    return OptimState(str(target), data.get("optimizer_name"), data["optimizer_state_dict"],
                      resume if isinstance(resume, dict) else None), None


def restore_optimizer(optimizer: torch.optim.Optimizer, saved: OptimState, names: Iterable[str]) -> Optional[str]:
    """Load ``saved`` into ``optimizer``; None on success, else why not (``optimizer`` is then unchanged).

    ``names`` are the names the current optimizer answers to (config name, class name), compared ignoring case.
    """
    accepted = {str(n).lower() for n in names if n}
    if saved.optimizer_name is not None and str(saved.optimizer_name).lower() not in accepted:
        return f"it was written by optimizer {saved.optimizer_name}, this run uses {type(optimizer).__name__}"
    problem = _layout_problem(optimizer, saved.state_dict)
    if problem:
        return problem
    before = optimizer.state_dict()
    try:
        optimizer.load_state_dict(saved.state_dict)
    except (ValueError, KeyError, RuntimeError, TypeError, IndexError) as err:
        optimizer.load_state_dict(before)
        return f"the optimizer refused it ({type(err).__name__}: {_short(err)})"
    return None


def _layout_problem(optimizer: torch.optim.Optimizer, state_dict: dict) -> Optional[str]:
    """Why ``state_dict`` does not fit ``optimizer``'s parameters (group sizes, state tensor shapes), or None."""
    groups = state_dict.get("param_groups")
    if not isinstance(groups, list) or not isinstance(state_dict.get("state"), dict):
        return "it is not an optimizer state_dict"
    current = optimizer.param_groups
    saved_sizes = [len(g.get("params", ())) for g in groups]
    sizes = [len(g["params"]) for g in current]
    if saved_sizes != sizes:
        return f"it holds parameter groups of sizes {saved_sizes}, this network has {sizes}"
    params = {}
    for saved_group, group in zip(groups, current):
        params.update(zip(saved_group["params"], group["params"]))
    for key, entry in state_dict["state"].items():
        param = params.get(key)
        if param is None:
            return f"it has state for parameter {key!r}, which this network does not have"
        for name, value in (entry.items() if isinstance(entry, dict) else ()):
            if isinstance(value, torch.Tensor) and value.dim() == param.dim() and value.numel() > 1 \
                    and tuple(value.shape) != tuple(param.shape):
                return (f"its {name} for a parameter has shape {tuple(value.shape)}, the network's parameter has "
                        f"{tuple(param.shape)} (another network structure)")
    return None


def _short(err: BaseException, limit: int = 200) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return text[:limit]
