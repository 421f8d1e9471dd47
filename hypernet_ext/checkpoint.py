"""Training checkpoints: the network file, its ``.optim`` sidecar, RNG state, and restoring an optimizer.

The sidecar has webui's keys (``optimizer_name``, ``hash`` = fileio.short_hash of the checkpoint file as written,
``optimizer_state_dict``) so webui resumes from our files and we from its, plus our resume state under
``hypernet_ext``. A checkpoint and its sidecar are written as one unit (the network becomes visible only with
its sidecar); sidecars are read by formats.torch_read like every torch file, never by torch.load.
"""
from __future__ import annotations

import logging
import os
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Tuple

import torch

from .errors import FormatError, HypernetError, UnsafeFileError, excerpt
from .fileio import PathLike, atomic_path, short_hash

logger = logging.getLogger(__name__)

OPTIM_SUFFIX = ".optim"
STATE_KEY = "hypernet_ext"
STATE_VERSION = 1
STATE_FACTOR = 16   # an optimizer keeps a few values per parameter (Adam 2, Prodigy 4); more is not a state
# atomic_path's temporary names: ".<target>.<8 random characters>.tmp"
TEMP_NAME = re.compile(r"^\.(?P<target>.+)\.[a-z0-9_]{8}\.tmp$")


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
                resume_state: Optional[dict] = None, digest: Optional[str] = None) -> Path:
    """Write ``<checkpoint>.optim`` atomically; its hash is ``digest`` (the short hash of the checkpoint's bytes)
    or, without one, that of the checkpoint file as it is on disk now."""
    data = {"optimizer_name": optimizer_name, "hash": digest or short_hash(checkpoint),
            "optimizer_state_dict": optimizer_state}
    if resume_state is not None:
        data[STATE_KEY] = dict(resume_state, format_version=STATE_VERSION)
    from .formats.torch_zip import save_webui_safe  # a zip webui's safe unpickler accepts, whatever torch

    target = optim_path(checkpoint)
    with atomic_path(target) as tmp:
        save_webui_safe(data, tmp)
    return target


def save_checkpoint(network, path: PathLike, optimizer: Optional[torch.optim.Optimizer] = None,
                    optimizer_name: Optional[str] = None, resume_state: Optional[dict] = None) -> Path:
    """Write the network to ``path`` (format by suffix) and, when an optimizer is given, its ``.optim``, as one
    unit: the network goes to a temporary file, the sidecar is written atomically with the hash of those bytes,
    then the network is renamed into place. A kill at any point leaves no network file without its sidecar
    (a new name appears complete or not at all; an overwritten one may meet a sidecar that no longer matches,
    which resume reports). A failure leaves any earlier file at ``path`` as it was."""
    from . import formats  # only saving needs the format writers

    path = Path(path).expanduser()

    def sidecar(tmp: Path) -> None:
        if optimizer is not None:
            write_optim(path, optimizer_name or type(optimizer).__name__, optimizer.state_dict(), resume_state,
                        digest=short_hash(tmp))

    return Path(formats.save(network, path, before_rename=sidecar))


def remove_stale_temps(folder: PathLike, name: str) -> List[Path]:
    """Delete the temporary files a killed run named ``name`` left in ``folder`` (``.<name>[-<step>|-best].pt.*.tmp``,
    their ``.optim`` and ``.safetensors`` kin); returns what was removed. Other runs' files are not touched."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    ours = re.compile(re.escape(name) + r"(-\d+|-best)?\.(pt|pt\.optim|safetensors)")
    removed = []
    for entry in folder.iterdir():
        match = TEMP_NAME.match(entry.name)
        if match and ours.fullmatch(match["target"]) and entry.is_file():
            entry.unlink()
            removed.append(entry)
            logger.info("removed %s, left by an interrupted save", entry)
    return removed


def set_aside_snapshots(folder: PathLike, name: str, after_step: int, label: str,
                        best: bool = False) -> Tuple[List[str], List[str]]:
    """Rename the snapshots ``<name>-<k>.pt`` in ``folder`` with ``k > after_step`` (and ``<name>-best.pt`` when
    ``best``), with their ``.optim``, to ``<name>-<k>-<label>.pt`` (``-<label>-2`` and on when taken): kept for
    the user and usable in prompts, but no longer a checkpoint ``newest_complete`` picks. Returns (the new names,
    one text per file that could not be moved)."""
    folder = Path(folder)
    pattern = re.compile(re.escape(name) + (r"-(\d+|best)\.pt" if best else r"-(\d+)\.pt"))
    moved, failed = [], []
    for path in sorted(folder.iterdir()) if folder.is_dir() else ():
        match = pattern.fullmatch(path.name)
        if not match or (match.group(1) != "best" and int(match.group(1)) <= after_step) or not path.is_file():
            continue
        target, count = path.with_name(f"{path.stem}-{label}.pt"), 1
        while target.exists() or optim_path(target).exists():
            count += 1
            target = path.with_name(f"{path.stem}-{label}-{count}.pt")
        try:
            sidecar = optim_path(path)
            if sidecar.is_file():
                os.replace(sidecar, optim_path(target))
            os.replace(path, target)
        except OSError as err:
            failed.append(f"{path.name} could not be renamed ({err})")
            continue
        moved.append(target.name)
    return moved, failed


def newest_complete(folder: PathLike, name: str) -> Optional[Path]:
    """The checkpoint of run ``name`` in ``folder`` (``<name>.pt`` or ``<name>-<step>.pt``) holding the highest
    step whose ``.optim`` exists and matches it (then the newest by time); None when there is none. Use it to
    resume from the newest snapshot that resumes exactly."""
    from . import formats

    folder = Path(folder)
    ours = re.compile(re.escape(name) + r"(-\d+)?\.pt")
    found = []
    for path in (folder.iterdir() if folder.is_dir() else ()):
        recorded = _sidecar_hash(path) if ours.fullmatch(path.name) else None
        if recorded is None or recorded != _hash_or_none(path):
            continue
        try:
            found.append((formats.describe(path).step, path.stat().st_mtime, path.name, path))
        except (HypernetError, OSError):
            continue
    return max(found)[3] if found else None


def _hash_or_none(path: Path) -> Optional[str]:
    try:
        return short_hash(path)
    except OSError:
        return None


def _sidecar_hash(checkpoint: Path) -> Optional[str]:
    """The hash a checkpoint's sidecar records (its tensors are not read), or None."""
    from .formats.common import Decline, Source
    from .formats.torch_read import read

    target = optim_path(checkpoint)
    try:
        data = read(Source(target), tensors=False) if target.is_file() else None
    except (HypernetError, Decline, OSError):
        return None
    value = data.get("hash") if isinstance(data, dict) else None
    return value if isinstance(value, str) else None


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
    from .formats.torch_read import read_file

    try:
        data = read_file(target, what="an optimizer state file")
        expected = short_hash(checkpoint)
    except UnsafeFileError as err:
        return None, f"{target.name} was refused ({err.problem})"
    except FormatError as err:
        return None, f"{target.name} cannot be read ({err.problem})"
    except OSError as err:
        return None, f"{target.name} cannot be read ({os.strerror(err.errno) if err.errno else err})"
    if not isinstance(data, dict) or not isinstance(data.get("optimizer_state_dict"), dict):
        return None, f"{target.name} holds no optimizer state"
    if data.get("hash") != expected:
        return None, (f"{target.name} belongs to another version of {checkpoint.name} (its hash is "
                      f"{excerpt(data.get('hash'), 30)}, the file's is {expected!r})")
    resume = data.get(STATE_KEY)
    return OptimState(str(target), data.get("optimizer_name"), data["optimizer_state_dict"],
                      resume if isinstance(resume, dict) else None), None


def restore_optimizer(optimizer: torch.optim.Optimizer, saved: OptimState, names: Iterable[str]) -> Optional[str]:
    """Load ``saved`` into ``optimizer``; None on success, else why not (``optimizer`` is then unchanged).

    ``names`` are the names the current optimizer answers to (config name, class name), compared ignoring case.
    """
    accepted = {str(n).lower() for n in names if n}
    if saved.optimizer_name is not None and str(saved.optimizer_name).lower() not in accepted:
        return (f"it was written by optimizer {str(saved.optimizer_name)[:40]}, this run uses "
                f"{type(optimizer).__name__}")
    problem = _layout_problem(optimizer, saved.state_dict)
    if problem:
        return problem
    before = optimizer.state_dict()
    try:
        optimizer.load_state_dict(saved.state_dict)
    except (ValueError, KeyError, RuntimeError, TypeError, IndexError, AttributeError) as err:
        optimizer.load_state_dict(before)
        return f"the optimizer refused it ({type(err).__name__}: {_short(err)})"
    return None


def _layout_problem(optimizer: torch.optim.Optimizer, state_dict: dict) -> Optional[str]:
    """Why ``state_dict`` does not fit ``optimizer``'s parameters (group sizes, state tensor shapes), or None."""
    groups = state_dict.get("param_groups")
    if not isinstance(groups, list) or not isinstance(state_dict.get("state"), dict) or not all(
            isinstance(g, dict) and isinstance(g.get("params"), list) and all(type(i) is int for i in g["params"])
            for g in groups):
        return "it is not an optimizer state_dict"
    current = optimizer.param_groups
    saved_sizes = [len(g["params"]) for g in groups]
    sizes = [len(g["params"]) for g in current]
    if saved_sizes != sizes:
        return f"it holds parameter groups of sizes {saved_sizes}, this network has {sizes}"
    params = {}
    for saved_group, group in zip(groups, current):
        params.update(zip(saved_group["params"], group["params"]))
    for key, entry in state_dict["state"].items():
        param = params.get(key)
        if param is None:
            return f"it has state for parameter {excerpt(key, 30)}, which this network does not have"
        for name, value in (entry.items() if isinstance(entry, dict) else ()):
            if isinstance(value, torch.Tensor) and value.dim() == param.dim() and value.numel() > 1 \
                    and tuple(value.shape) != tuple(param.shape):
                return (f"its {excerpt(name, 30)} for a parameter has shape {tuple(value.shape)}, the network's "
                        f"parameter has {tuple(param.shape)} (another network structure)")
    values = sum(v.numel() for e in state_dict["state"].values() if isinstance(e, dict) for v in e.values()
                 if isinstance(v, torch.Tensor))
    if values > STATE_FACTOR * sum(p.numel() for p in params.values()) + 1024:
        return f"it holds {values:,} state values, far more than an optimizer keeps for this network"
    return None


def _short(err: BaseException, limit: int = 200) -> str:
    text = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return text[:limit]
