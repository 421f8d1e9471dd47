"""The restricted unpickler for torch files: it knows plain containers, tensors and storages and refuses every
other global before anything is imported, so no code from a file ever runs. Tensors come out as TensorRef
(storage, offset, size, stride), checked against their storage's declared size; pickle_tree.finish then
bounds the tree and swaps each TensorRef for a real tensor or a shape stub. Pickles are walked by
pickletools before they are unpickled, so declared lengths and memo indices are checked first.
"""
from __future__ import annotations

import collections
import io
import logging
import pickle
import pickletools
from dataclasses import dataclass
from typing import Callable, Dict, Tuple

import torch

from ..errors import UnsafeFileError, excerpt

logger = logging.getLogger(__name__)

STORAGE_DTYPES = {
    "FloatStorage": torch.float32, "HalfStorage": torch.float16, "BFloat16Storage": torch.bfloat16,
    "DoubleStorage": torch.float64, "LongStorage": torch.int64, "IntStorage": torch.int32,
    "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8, "BoolStorage": torch.bool,
}
MAX_PICKLE = 16 * 1024 * 1024   # bytes of one pickle; weights files have KBs, SD checkpoints under 1 MB
MAX_DIMS = 16                   # dimensions of one tensor
WEIGHTS_ADVICE = ("Only load files from sources you trust; ask the author for a .safetensors version")
CHECKPOINT_ADVICE = ("Convert the checkpoint to .safetensors with a tool you trust, or use its .safetensors "
                     "release")


class Refusal(pickle.UnpicklingError):
    """A check of ours failed while unpickling (the message says which); the file is damaged or crafted."""


@dataclass(frozen=True)
class TensorStub:
    """A tensor as the pickle describes it, without its data."""
    shape: Tuple[int, ...]
    dtype: str


@dataclass(frozen=True)
class StorageRef:
    """A storage the pickle refers to: its record key, element type and declared element count."""
    key: str
    dtype: torch.dtype
    numel: int


class TensorRef:
    """A tensor the pickle builds: a view (offset, size, stride) of a storage; unhashable, like a tensor in
    a state dict should be (a tensor used as a dict key fails the unpickling)."""
    __slots__ = ("storage", "offset", "size", "stride")
    __hash__ = None

    def __init__(self, storage: StorageRef, offset: int, size: Tuple[int, ...], stride: Tuple[int, ...]):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride

    def __setstate__(self, state):  # BUILD on a tensor: torch would call Tensor.__setstate__ (set_, attributes)
        raise Refusal("the pickle sets the state of a tensor, which torch.save never writes")


class _StorageKind:
    __slots__ = ("dtype",)

    def __init__(self, dtype):
        self.dtype = dtype


class Inert:
    """Stands in for a harmless class named in SD checkpoints (numpy scalars, Lightning's ModelCheckpoint):
    created with any arguments, never constructed for real, never called; its state is dropped."""

    def __new__(cls, *args, **kwargs):
        return object.__new__(cls)

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass

    def __repr__(self):
        return f"<{type(self).__name__} placeholder>"


_INERT_TYPES: Dict[str, type] = {}


def _inert(module: str, name: str) -> type:
    key = f"{module}.{name}"
    if key not in _INERT_TYPES:
        _INERT_TYPES[key] = type(key, (Inert,), {"__slots__": ()})
    return _INERT_TYPES[key]


def _ints(value, what: str) -> Tuple[int, ...]:
    if not isinstance(value, (tuple, list)) or len(value) > MAX_DIMS \
            or not all(type(v) is int and v >= 0 for v in value):
        raise Refusal(f"a tensor's {what} is {excerpt(value)}, not up to {MAX_DIMS} whole numbers >= 0")
    return tuple(value)


def _rebuild_tensor(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                    metadata=None):
    if not isinstance(storage, StorageRef) or type(storage_offset) is not int or storage_offset < 0:
        raise Refusal("a tensor is built from something other than a stored array")
    size, stride = _ints(size, "size"), _ints(stride, "stride")
    if len(size) != len(stride):
        raise Refusal(f"a tensor has size {size} but stride {stride}")
    numel, last = 1, storage_offset
    for n, s in zip(size, stride):
        numel *= n
        last += (n - 1) * s
    if storage_offset > storage.numel or (numel and (last >= storage.numel or numel > storage.numel)):
        # past the end, or a view that repeats elements (an expanded tensor would multiply memory when copied)
        raise Refusal(f"a tensor of size {size}, stride {stride} at offset {storage_offset} does "
                                     f"not fit its storage of {storage.numel} elements")
    return TensorRef(storage, storage_offset, size, stride)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, state=None):
    if not isinstance(data, TensorRef):
        raise Refusal("a parameter is built from something other than a tensor")
    return data


def _size(*args):
    return _ints(args[0] if args else (), "size")


WEIGHTS_GLOBALS: Dict[Tuple[str, str], Callable] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch", "Size"): _size,
}
# What webui v1.10.1's modules/safe.py lets through beyond that, for SD checkpoints: placeholders only.
CHECKPOINT_INERT = frozenset({
    ("numpy.core.multiarray", "scalar"), ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray",
                                                                                    "scalar"),
    ("numpy._core.multiarray", "_reconstruct"), ("numpy", "dtype"), ("numpy", "ndarray"), ("_codecs", "encode"),
    ("pytorch_lightning.callbacks", "model_checkpoint"),
    ("pytorch_lightning.callbacks.model_checkpoint", "ModelCheckpoint"), ("__builtin__", "set"), ("builtins", "set"),
    ("torch.nn.modules.container", "ParameterDict"), ("torch", "float32"),
    ("torch._utils", "_rebuild_device_tensor_from_numpy"),
})


@dataclass(frozen=True)
class Policy:
    """Which globals a kind of file may name (all else is UnsafeFileError) and what to tell the user."""
    what: str                       # "a file of weights", "a Stable Diffusion checkpoint"
    advice: str
    inert: frozenset = frozenset()


WEIGHTS = Policy("a file of weights", WEIGHTS_ADVICE)
CHECKPOINT = Policy("a Stable Diffusion checkpoint", CHECKPOINT_ADVICE, CHECKPOINT_INERT)


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles plain data, TensorRef for tensors and StorageRef for storages; refuses any other global
    with UnsafeFileError before anything is imported."""

    def __init__(self, file, path, policy: Policy = WEIGHTS, legacy: bool = False):
        super().__init__(file, encoding="utf-8")
        self.path, self.policy, self.legacy = path, policy, legacy
        self.storages: Dict[str, StorageRef] = {}

    def find_class(self, module, name):
        if (module, name) in WEIGHTS_GLOBALS:
            return WEIGHTS_GLOBALS[(module, name)]
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageKind(STORAGE_DTYPES[name])
        if (module, name) in self.policy.inert:
            return _inert(module, name)
        wanted = f"{excerpt(module, 50, quote=False)}.{excerpt(name, 50, quote=False)}"
        raise UnsafeFileError(self.path, f"its pickle asks for '{wanted}', which {self.policy.what} never needs and "
                                         "which could run code; it was refused and nothing from the file ran. "
                                         f"{self.policy.advice}")

    def persistent_load(self, pid):
        size = 6 if self.legacy else 5
        if not (isinstance(pid, tuple) and len(pid) == size and pid[0] == "storage"):
            raise Refusal(f"its pickle refers to an unknown kind of stored object ({excerpt(pid)})")
        kind, key, location, numel = pid[1:5]
        key_ok = isinstance(key, str) and key.isascii() and key.isdigit() and len(key) <= 20
        if not key_ok or not isinstance(kind, _StorageKind) or not isinstance(location, str) \
                or type(numel) is not int or numel < 0:
            raise Refusal(f"its pickle describes a storage as {excerpt(pid)}")
        if self.legacy and pid[5] is not None:
            raise Refusal("it holds storage views, written by torch before 1.0; re-save it")
        ref = StorageRef(key, kind.dtype, numel)
        if self.storages.setdefault(key, ref) != ref:
            raise Refusal(f"storage {key} is declared twice with different types or sizes")
        return self.storages[key]


class _Bounded(io.RawIOBase):
    """A read-only view of a binary file that hands out at most ``limit`` more bytes."""

    def __init__(self, f, limit: int):
        super().__init__()
        self.f, self.left = f, limit

    def readable(self):
        return True

    def tell(self):  # pickletools asks for positions
        return self.f.tell()

    def readinto(self, buffer):
        n = self.f.readinto(memoryview(buffer)[:max(0, self.left)]) or 0
        self.left -= n
        return n

    def readline(self, size=-1):
        line = self.f.readline(self.left if size is None or size < 0 else min(size, self.left))
        self.left -= len(line)
        return line


def one_pickle(f) -> bytes:
    """The bytes of the pickle starting at ``f``'s position (left just after it), at most MAX_PICKLE. pickletools
    walks the opcodes without building anything, so a declared length larger than what follows fails here."""
    start, bounded = f.tell(), _Bounded(f, MAX_PICKLE)
    for _ in pickletools.genops(bounded):
        pass
    f.seek(start)
    return f.read(MAX_PICKLE - bounded.left)


def unpickle(path, data: bytes, policy: Policy = WEIGHTS, legacy: bool = False):
    """(object, storages) of the pickle ``data``. It is walked first, building nothing: a declared length must fit
    in the bytes that follow, and a memo index cannot run ahead of the values stored so far (the unpickler
    would size its memo by the largest index it meets)."""
    for count, (op, arg, _) in enumerate(pickletools.genops(data)):
        if op.name in ("PUT", "BINPUT", "LONG_BINPUT") and not (isinstance(arg, int) and 0 <= arg <= count):
            raise Refusal(f"its pickle stores a value under index {excerpt(arg, 30)} after only {count} steps")
    unpickler = RestrictedUnpickler(io.BytesIO(data), path, policy, legacy)
    return unpickler.load(), unpickler.storages


def describe_tree(tree) -> str:
    """A short description of what a pickled object is, for 'not mine' messages."""
    if isinstance(tree, (TensorStub, torch.Tensor)):
        return f"a single tensor of shape {tuple(tree.shape)}"
    return f"a {type(tree).__name__}"
