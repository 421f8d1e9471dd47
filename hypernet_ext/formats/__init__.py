"""Reading and writing hypernetwork files: ``load``, ``save``, ``describe``, ``list_networks``.

Readers (safetensors, the peer's beta .pt, webui's .pt) each decline files that are not theirs; when none
accepts a file, the error lists what each said. Loading never runs code from a file. Writers pick the
format from the suffix and write atomically.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

from ..devices import check_device
from ..errors import FormatError
from ..fileio import PathLike, atomic_path, check_file_target
from ..network import Hypernetwork
from .common import PEER_PT, SAFETENSORS, WEBUI_PT, Decline, Parsed, Source, build_network, move
from .descriptor import NetworkFile
from .pt import INEXPRESSIBLE, PeerPtReader, WebuiPtReader, write_pt
from .safetensors_io import SafetensorsReader, write_safetensors

__all__ = ["load", "save", "describe", "list_networks", "NetworkFile", "READERS", "WRITERS", "SUFFIXES",
           "WEBUI_PT", "PEER_PT", "SAFETENSORS"]

logger = logging.getLogger(__name__)

# Tried in this order; the peer reader must come before webui's (its files are webui's plus two keys).
READERS = (SafetensorsReader(), PeerPtReader(), WebuiPtReader())
WRITERS: Dict[str, Callable[[Hypernetwork, Path], None]] = {".pt": write_pt, ".safetensors": write_safetensors}
SUFFIXES = tuple(WRITERS)


def _read(path: PathLike, tensors: bool) -> Tuple[Source, object, Parsed]:
    src = Source(path)
    tried = []
    for reader in READERS:
        try:
            return src, reader, reader.read(src, tensors)
        except Decline as why:
            tried.append(f"{reader.name}: {why}")
    raise FormatError(src.path, "is not a hypernetwork file. Tried " + "; ".join(tried)
                      + ". Hypernetworks are .pt files saved by webui (or the peer extension) or .safetensors files "
                        "saved by hypernet_ext")


def load(path: PathLike, map_location="cpu") -> Hypernetwork:
    """The hypernetwork in ``path`` (any supported format), in eval mode, on ``map_location``.

    Raises UnsafeFileError when a .pt file asks to run code (nothing from it runs), FormatError when the file is
    not a hypernetwork, is truncated or corrupt, or its weights do not fit its declared structure, and
    ConfigError for a ``map_location`` this machine does not have (checked before the file is read). Weights
    that are NaN or infinite load with a warning naming width, k/v and layer.
    """
    device = check_device("cpu" if map_location is None else map_location, "map_location")
    src, reader, parsed = _read(path, tensors=True)
    network = build_network(src.path, parsed)
    logger.debug("loaded %s (%s, widths %s)", src.path, reader.format, list(network.widths))
    return move(network, device)


def describe(path: PathLike) -> NetworkFile:
    """What ``path`` holds, read without loading its tensors (the header of a safetensors file, the pickle of a
    .pt with stand-ins for tensors). Raises like ``load`` for files that are not hypernetworks."""
    src, reader, parsed = _read(path, tensors=False)
    meta = parsed.meta
    metadata = dict(meta, config=parsed.config.to_dict())
    return NetworkFile(path=str(src.path), size=src.size, format=reader.format, name=meta["name"],
                       widths=tuple(parsed.config.sizes), config=parsed.config, metadata=metadata,
                       step=meta["step"], sd_checkpoint=meta["sd_checkpoint"],
                       sd_checkpoint_name=meta["sd_checkpoint_name"], created=meta["created"], mtime=src.mtime)


def save(network: Hypernetwork, path: PathLike, before_rename: Optional[Callable[[Path], None]] = None) -> Path:
    """Write ``network`` to ``path``: webui's layout for ``.pt`` (the peer's for skip connections, with a
    warning), or ``.safetensors``. The write is atomic: a failure leaves any earlier file untouched.
    ``before_rename(tmp)`` runs once the complete file is in its temporary place, before it becomes ``path``
    (checkpoint.save_checkpoint writes the .optim sidecar there). A path inside a file is a ConfigError."""
    path = check_file_target(path, "path")
    writer = WRITERS.get(path.suffix.lower())
    if writer is None:
        raise FormatError(path, f"cannot be written: unknown suffix {path.suffix!r}; use .pt (loads in webui) or "
                                ".safetensors")
    if not isinstance(network, Hypernetwork):
        raise TypeError(f"save() takes a Hypernetwork, not {type(network).__name__}")
    if writer is write_pt and not network.config.webui_expressible:
        logger.warning("%s: %s", path, INEXPRESSIBLE)
    with atomic_path(path) as tmp:
        writer(network, tmp)
        if before_rename is not None:
            before_rename(tmp)
    logger.debug("saved %s", path)
    return path


def list_networks(folder: PathLike, recursive: bool = True) -> List[NetworkFile]:
    """Descriptors of the hypernetwork files (.pt, .safetensors) in ``folder``, sorted by path ignoring case.

    Files that are not hypernetworks (or cannot be read) are skipped with a warning; a missing folder gives [].
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    candidates = folder.rglob("*") if recursive else folder.iterdir()
    paths = sorted((p for p in candidates if p.suffix.lower() in SUFFIXES and not p.name.startswith(".")
                    and p.is_file()), key=lambda p: str(p).lower())
    found = []
    for p in paths:
        try:
            found.append(describe(p))
        except FormatError as err:  # UnsafeFileError included: listed nowhere, reported once
            logger.warning("skipping %s", err)
        except OSError as err:
            logger.warning("skipping %s: %s", p, os.strerror(err.errno) if err.errno else err)
    return found
