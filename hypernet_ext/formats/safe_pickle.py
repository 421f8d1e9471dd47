"""Reading torch pickles without running code: a restricted unpickler that refuses every global but plain
containers, tensors and storages, and that stands in shape/dtype stubs for tensors, so a file can be checked
and described without reading its tensor data. Covers torch's zip format and the legacy pickle format.
"""
from __future__ import annotations

import collections
import logging
import pickle
import re
import warnings
import zipfile
from dataclasses import dataclass
from typing import Tuple

import torch

from ..errors import FormatError, UnsafeFileError
from .common import Decline, Source

logger = logging.getLogger(__name__)

ZIP_MAGIC = b"PK\x03\x04"
LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C  # torch's legacy format starts with this pickled int
DATA_PKL = re.compile(r"^([^/]+)/data\.pkl$")
STORAGE_DTYPES = {
    "FloatStorage": "float32", "HalfStorage": "float16", "BFloat16Storage": "bfloat16",
    "DoubleStorage": "float64", "LongStorage": "int64", "IntStorage": "int32", "ShortStorage": "int16",
    "CharStorage": "int8", "ByteStorage": "uint8", "BoolStorage": "bool",
}
_READ_ERRORS = (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError, AttributeError,
                RuntimeError, OverflowError, MemoryError, UnicodeDecodeError, zipfile.BadZipFile)


@dataclass(frozen=True)
class TensorStub:
    """A tensor as the pickle describes it, without its data."""
    shape: Tuple[int, ...]
    dtype: str


@dataclass(frozen=True)
class _StorageKind:
    dtype: str


@dataclass(frozen=True)
class _StorageStub:
    dtype: str


def _rebuild_tensor(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                    metadata=None):
    return TensorStub(tuple(int(s) for s in size), storage.dtype)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    return data


def _size(*args):
    return tuple(*args)


_ALLOWED = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch", "Size"): _size,
}


class StubUnpickler(pickle.Unpickler):
    """Unpickles plain data; refuses any other global with UnsafeFileError before anything is imported."""

    def __init__(self, file, path):
        super().__init__(file)
        self.path = path

    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageKind(STORAGE_DTYPES[name])
        raise UnsafeFileError(self.path, f"its pickle asks for '{module}.{name}', which a file of weights never "
                                         "needs and which could run code; it was refused and nothing from the "
                                         "file ran. Only load files from sources you trust; ask the author for "
                                         "a .safetensors version")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"
                and isinstance(pid[1], _StorageKind)):
            raise FormatError(self.path, f"its pickle refers to an unknown kind of stored object ({pid!r:.80}); "
                                         "it is not a torch file of weights")
        return _StorageStub(pid[1].dtype)


def _zip_scan(src: Source):
    try:
        with zipfile.ZipFile(src.path) as archive:
            names = [n for n in archive.namelist() if DATA_PKL.match(n)]
            if not names:
                raise Decline("a zip archive without data.pkl, not a torch file")
            if len(names) > 1:
                raise FormatError(src.path, f"holds {len(names)} data.pkl records ({names[:3]}); a torch file has "
                                            "one. It was not written by torch.save")
            with archive.open(names[0]) as f:
                return StubUnpickler(f, src.path).load()
    except zipfile.BadZipFile as err:
        raise FormatError(src.path, f"is truncated or corrupt ({err}); copy or download it again") from None


def _legacy_scan(src: Source):
    with open(src.path, "rb") as f:
        unpickler = StubUnpickler(f, src.path)
        magic = unpickler.load()
        if magic != LEGACY_MAGIC_NUMBER:
            raise Decline(f"a pickle of a {type(magic).__name__}, not a torch file")
        unpickler.load()  # protocol version
        unpickler.load()  # sys info
        return unpickler.load()


def scan(src: Source):
    """The pickled object of a torch file, with TensorStub for tensors; cached on ``src``.

    Raises Decline when the file is not a torch file at all, UnsafeFileError when the pickle asks for code,
    FormatError when it is a torch file that cannot be read.
    """
    if "scan" in src.cache:
        return src.cache["scan"]
    head = src.head
    if head.startswith(ZIP_MAGIC):
        reader = _zip_scan
    elif len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        reader = _legacy_scan
    elif src.size == 0:
        raise Decline("the file is empty")
    else:
        raise Decline(_old_pickle(src))
    try:
        tree = reader(src)
    except (Decline, FormatError):
        raise
    except _READ_ERRORS as err:
        raise FormatError(src.path, f"is truncated or corrupt: its pickle cannot be read ({type(err).__name__}: "
                                    f"{err}); copy or download it again") from None
    src.cache["scan"] = tree
    return tree


def _old_pickle(src: Source) -> str:
    """Why a file without a zip or pickle-2 header is not ours; UnsafeFileError when it is a protocol 0/1 pickle
    asking for code. torch never writes those, but hand-made payloads often are; StubUnpickler runs nothing
    (every global is refused before anything is imported), so the user hears the file is unsafe."""
    with open(src.path, "rb") as f:
        try:
            obj = StubUnpickler(f, src.path).load()
        except UnsafeFileError:
            raise
        except (FormatError,) + _READ_ERRORS:
            return "neither a torch zip archive nor a pickle"
    return f"an old-protocol pickle of {describe_tree(obj)}, not a torch file"


def load_tensors(src: Source):
    """The file's object with real tensors (on the CPU), read by ``torch.load(weights_only=True)`` after
    ``scan`` has checked that the pickle asks for nothing but data."""
    if "tensors" in src.cache:
        return src.cache["tensors"]
    scan(src)
    try:
        with warnings.catch_warnings():  # torch 2.1's own loader touches its deprecated TypedStorage
            warnings.filterwarnings("ignore", message="TypedStorage is deprecated")
            tree = torch.load(src.path, map_location="cpu", weights_only=True)
    except _READ_ERRORS + (OSError,) as err:
        raise FormatError(src.path, f"is truncated or corrupt: torch cannot read its weights "
                                    f"({type(err).__name__}: {str(err)[:300]}); copy or download it again") from None
    src.cache["tensors"] = tree
    return tree


def describe_tree(tree) -> str:
    """A short description of what a pickled object is, for 'not mine' messages."""
    if isinstance(tree, (TensorStub, torch.Tensor)):
        return f"a single tensor of shape {tuple(tree.shape)}"
    return f"a {type(tree).__name__}"
