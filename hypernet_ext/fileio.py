"""Atomic file writes and content hashes.

Every file we write goes to a temporary name in the same folder and is renamed over the target only when
complete, so a crash never leaves a truncated file or replaces a good one.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import os
import stat
import tempfile
from pathlib import Path
from typing import Iterator, Union

PathLike = Union[str, os.PathLike]


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``, on error it is deleted."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, _mode_for(path))
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _mode_for(path: Path) -> int:
    """The permissions a replaced file keeps; a new one gets what open() would give it (0o666 less the umask).
    mkstemp makes its files 0o600, which would hide our files from a webui running as another user."""
    try:
        return stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return 0o666 & ~_umask()


@functools.lru_cache(maxsize=1)
def _umask() -> int:
    # os.umask can only be read by setting it; done once per process, the first time a new file is written
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def sha256_file(path: PathLike, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's bytes (webui's hashes.sha256 computes the same)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def short_hash(path: PathLike) -> str:
    """First 10 hex digits of the file's SHA-256: what webui stores and compares in ``.optim`` files."""
    return sha256_file(path)[:10]
