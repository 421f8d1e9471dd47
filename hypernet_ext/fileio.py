"""Atomic file writes, content hashes, and file names that stay inside their folder.

Every file we write goes to a temporary name in the same folder and is renamed over the target only when
complete, so a crash never leaves a truncated file or replaces a good one. Names that become file names (a
network's name, a CLI option, a name read from a file) pass ``check_name`` and ``child``.
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

from .errors import ConfigError

PathLike = Union[str, os.PathLike]
MAX_NAME = 200  # characters; file systems allow 255 bytes, and suffixes such as "-12000.pt.optim" follow
NAME_CHARS = "._- "   # what webui keeps of a hypernetwork name besides letters and digits


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


def check_name(name, what: str = "name") -> str:
    """``name`` (stripped) when it can name a file inside a folder; ConfigError saying why otherwise.

    Refused: empty names, path separators, a leading dot (``..``, hidden files), control characters, and
    names longer than MAX_NAME. The rule is the same wherever the name comes from (user, option, file).
    """
    text = str(name if name is not None else "").strip()
    if not text:
        raise ConfigError(f"{what}: give a name; it names the files written")
    problem = None
    if "/" in text or "\\" in text or (os.altsep and os.altsep in text):
        problem = "contains a path separator"
    elif text.startswith("."):
        problem = "starts with a dot (a hidden file, or a step out of the folder)"
    elif any(ord(c) < 32 or ord(c) == 127 for c in text):
        problem = "contains control characters"
    elif len(text) > MAX_NAME:
        problem = f"is {len(text)} characters long (at most {MAX_NAME})"
    if problem:
        raise ConfigError(f"{what}: {text[:80]!r} {problem}; a name must be a plain file name such as "
                          "'my-style', which stays inside its folder")
    return text


def clean_name(name, what: str = "name") -> str:
    """A network name made ready to name files, the same way wherever it comes from (TrainConfig, a CLI option,
    a name read from a file): what check_name refuses (path separators, a leading dot, ...) is an error; then,
    as webui's create tab does, only letters, digits and '._- ' are kept (``'style: v2?'`` -> ``'style v2'``),
    and the result is checked again (it must not end up empty or start with a dot)."""
    text = check_name(name, what)
    cleaned = "".join(c for c in text if c.isalnum() or c in NAME_CHARS).strip()
    if not cleaned:
        raise ConfigError(f"{what}: {text[:80]!r} has no letters or digits; a name keeps only letters, digits and "
                          f"'{NAME_CHARS}' (as in webui), e.g. 'my-style'")
    return check_name(cleaned, what)


def _blocking_file(path: Path, what: str):
    """The first existing path among ``path`` and its parents when it is not a folder (None when it is)."""
    for candidate in (path, *path.parents):
        try:
            mode = candidate.stat().st_mode
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as err:
            raise ConfigError(f"{what}: {path} cannot be checked ({err.strerror or err})") from None
        return None if stat.S_ISDIR(mode) else candidate
    return None


def check_folder(path: PathLike, what: str = "folder") -> Path:
    """``path`` when it is a folder or can become one (nothing on the way is a file); ConfigError otherwise.
    Called before expensive work, so a mistyped output folder fails at once, not at the first save."""
    path = Path(path).expanduser()
    blocking = _blocking_file(path, what)
    if blocking == path:
        raise ConfigError(f"{what}: {path} is a file, not a folder; choose a folder")
    if blocking is not None:
        raise ConfigError(f"{what}: {path} would be inside {blocking}, which is a file, not a folder; choose "
                          "another place")
    return path


def check_file_target(path: PathLike, what: str = "path") -> Path:
    """``path`` when a file can be written there: it is no folder and no file stands where a folder must be."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise ConfigError(f"{what}: {path} is a folder; give the path of a file")
    blocking = _blocking_file(path.parent, what)
    if blocking is not None:
        raise ConfigError(f"{what}: {path} would be inside {blocking}, which is a file, not a folder; choose "
                          "another place")
    return path


def child(folder: PathLike, file_name: str, what: str = "name") -> Path:
    """``folder / file_name`` after checking that it stays inside ``folder`` once symlinks are resolved."""
    folder = Path(folder)
    path = folder / check_name(file_name, what)
    base = folder.resolve()
    resolved = path.resolve()
    if resolved != base and base not in resolved.parents:
        raise ConfigError(f"{what}: {file_name!r} leads outside {folder} (to {resolved}); choose another name")
    return path
