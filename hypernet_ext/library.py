"""A folder of hypernetworks as webui sees its own: names, descriptors, loaded networks, new files, newest
checkpoint. Owned by a host's session (webui's, the standalone app's), which keeps the one instance.

Names are file stems, found recursively as webui finds its ``.pt`` files, plus ``.safetensors`` files that have
no ``.pt`` beside them; later paths (sorted ignoring case) win a name, as in webui's list. Every name from a
request or a prompt passes ``fileio.check_name`` and must be listed; files whose real path leaves the folder
(symlinks out) are not listed. Descriptors are cached by (mtime, size), loaded networks by path and mtime.
"""
from __future__ import annotations

import logging
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

from . import checkpoint as ckpt
from . import fileio, formats
from .config import NetworkConfig
from .errors import ConfigError, HypernetError
from .fileio import clean_name
from .network import Hypernetwork

logger = logging.getLogger(__name__)

SUFFIXES = (".pt", ".safetensors")


class UnknownNetwork(ConfigError):
    """A name that is not in the hypernetwork folder (the REST API answers 404)."""


@dataclass
class Entry:
    """One listed file."""
    name: str
    path: Path
    mtime: float
    size: int


def _inside(path: Path, folder: Path) -> bool:
    real, base = path.resolve(), folder.resolve()
    return real == base or base in real.parents


class NetworkLibrary:
    """Files in ``folder()`` (a callable, so a changed --hypernetwork-dir or a test's folder is seen at once)."""

    def __init__(self, folder: Callable[[], str], cache_size: Callable[[], int] = lambda: 4,
                 listed_where: str = "the network list"):
        self.folder = folder
        self.cache_size = cache_size
        self.listed_where = listed_where   # where the user finds the names (for errors)
        self._lock = threading.RLock()
        self._descriptors: Dict[Path, Tuple[Tuple[float, int], object]] = {}
        self._loaded: "OrderedDict[Path, Tuple[Tuple[float, int], object]]" = OrderedDict()
        self._skipped: Dict[Path, Tuple[float, int]] = {}

    @property
    def root(self) -> Path:
        return Path(self.folder())

    # ---- listing and names ----

    def scan(self) -> Dict[str, Entry]:
        """name -> Entry for every usable file (see the module docstring)."""
        root = self.root
        if not root.is_dir():
            return {}
        files = sorted((p for p in root.rglob("*") if p.suffix.lower() in SUFFIXES and not p.name.startswith(".")),
                       key=lambda p: str(p).lower())
        found: Dict[str, Entry] = {}
        for path in files:
            if path.suffix.lower() == ".safetensors" and path.with_suffix(".pt").is_file():
                continue   # the export of a .pt network: the .pt is the one listed
            if path.stem == "None" or not path.is_file():
                continue
            if not _inside(path, root):
                self._skip_once(path, "its real path is outside the hypernetwork folder (a symlink out)")
                continue
            stat = path.stat()
            found[path.stem] = Entry(path.stem, path, stat.st_mtime, stat.st_size)
        return found

    def _skip_once(self, path: Path, why: str) -> None:
        stamp = self._stamp(path)
        if self._skipped.get(path) != stamp:
            self._skipped[path] = stamp
            logger.warning("hypernetwork list: skipping %s: %s", path, why)

    @staticmethod
    def _stamp(path: Path) -> Tuple[float, int]:
        try:
            stat = path.stat()
        except OSError:
            return (0.0, -1)
        return (stat.st_mtime, stat.st_size)

    def resolve(self, name, what: str = "network") -> Entry:
        """The listed file called ``name``; UnknownNetwork when there is none, ConfigError for a bad name."""
        name = fileio.check_name(name, what)
        entry = self.scan().get(name)
        if entry is None:
            raise UnknownNetwork(f"{what}: {name!r} is not a hypernetwork in {self.root}; see {self.listed_where}")
        return entry

    def describe(self, path: Path):
        """The file's NetworkFile descriptor (cached by mtime and size); FormatError when it is not a network."""
        path = Path(path)
        stamp = self._stamp(path)
        with self._lock:
            cached = self._descriptors.get(path)
            if cached is not None and cached[0] == stamp:
                return cached[1]
        descriptor = formats.describe(path)
        with self._lock:
            self._descriptors[path] = (stamp, descriptor)
        return descriptor

    def listing(self) -> List[Tuple[Entry, object]]:
        """(entry, descriptor) of every listed file that reads as a hypernetwork; others are logged once."""
        out = []
        for entry in self.scan().values():
            try:
                out.append((entry, self.describe(entry.path)))
            except (HypernetError, OSError) as err:
                self._skip_once(entry.path, str(err))
        return out

    # ---- loading ----

    def load(self, entry: Entry, device) -> object:
        """The network in ``entry`` on ``device`` (eval mode, no gradients), from the cache when the file is
        unchanged; the cache keeps the ``cache_size()`` networks used last."""
        stamp = self._stamp(entry.path)
        with self._lock:
            cached = self._loaded.get(entry.path)
            if cached is not None and cached[0] == stamp:
                self._loaded.move_to_end(entry.path)
                return cached[1].to(device)
        network = formats.load(entry.path, map_location="cpu").to(device)
        with self._lock:
            self._loaded[entry.path] = (stamp, network)
            self._loaded.move_to_end(entry.path)
            while len(self._loaded) > max(1, int(self.cache_size())):
                self._loaded.popitem(last=False)
        return network

    def forget(self) -> None:
        """Drop every cached network and descriptor (on script unload)."""
        with self._lock:
            self._loaded.clear()
            self._descriptors.clear()

    def move_loaded(self, device) -> None:
        with self._lock:
            for _, network in self._loaded.values():
                network.to(device)

    # ---- writing ----

    def new_path(self, name, overwrite: bool) -> Path:
        """Where a new network called ``name`` goes: ``<folder>/<name>.pt``; ConfigError for names webui would
        change or that leave the folder, and for an existing file unless ``overwrite``."""
        name = fileio.check_name(name, "name")
        cleaned = clean_name(name, "name")
        if cleaned != name:
            raise ConfigError(f"name: {name!r} has characters webui drops from hypernetwork names; use letters, "
                              f"digits and '._- ' only, e.g. {cleaned!r}")
        path = fileio.child(self.root, f"{name}.pt", "name")
        if not overwrite:
            taken = self.scan().get(name)
            if path.exists() or taken is not None:
                where = taken.path if taken is not None else path
                raise FileExistsError(f"name: {where} already exists; choose another name or set overwrite to true")
        return path

    def create(self, name, overwrite: bool, default_sizes: Callable[[], List[int]], **fields) -> Path:
        """Write a new network ``<folder>/<name>.pt`` from NetworkConfig fields (sizes default to
        ``default_sizes()``, the model's widths); ConfigError (with ``field``) / FileExistsError on bad input."""
        path = self.new_path(name, overwrite)
        if fields.get("sizes") in (None, "", "auto", [], ()):
            fields["sizes"] = list(default_sizes())
        unknown = sorted(set(fields) - {f for f in NetworkConfig.__dataclass_fields__ if f != "lenient"})
        if unknown:
            error = ConfigError(f"{unknown[0]}: not an option of a new network")
            error.field = unknown[0]
            raise error
        config = NetworkConfig(**fields)
        replaced = path.exists()
        formats.save(Hypernetwork(config, name=path.stem), path)
        logger.info("created hypernetwork %s (widths %s)", path, list(config.sizes))
        if replaced:   # the old network's snapshots must not be resumed from or compared as the new one's
            moved, failed = ckpt.set_aside_snapshots(path.parent, path.stem, -1, "replaced", best=True)
            if moved:
                logger.info("snapshots of the network %s replaced renamed (kept): %s", path.name, ", ".join(moved))
            for text in failed:
                logger.warning("%s: a resume of %s could start from it", text, path.stem)
        return path

    # ---- checkpoints ----

    def snapshots(self, name) -> List[Tuple[Entry, int]]:
        """The listed files of run ``name`` with their steps, by step: the snapshots ``<name>-<step>`` in its
        folder, ``<name>-best`` and ``<name>`` itself (rolled-back snapshots are left out); what Compare shows."""
        entry = self.resolve(name)
        ours = re.compile(re.escape(entry.name) + r"(-\d+|-best)?")
        out = []
        for other in self.scan().values():
            if other.path.parent != entry.path.parent or not ours.fullmatch(other.name):
                continue
            try:
                out.append((other, int(self.describe(other.path).step)))
            except (HypernetError, OSError) as err:
                self._skip_once(other.path, str(err))
        return sorted(out, key=lambda item: (item[1], item[0].name == entry.name, item[0].name))

    def newest_checkpoint(self, entry: Entry) -> Optional[Path]:
        """The checkpoint a resume of ``entry``'s network starts from: hypernet_ext.checkpoint.newest_complete in
        its folder (``<name>.pt`` or a snapshot ``<name>-<step>.pt`` with the highest step whose .optim belongs
        to it), when it stays inside the hypernetwork folder; None when there is none."""
        path = ckpt.newest_complete(entry.path.parent, entry.name)
        return path if path is not None and _inside(path, self.root) else None
