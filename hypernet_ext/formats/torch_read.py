"""Reading torch files ourselves, never through ``torch.load`` (which, before torch 2.6, hands any zip holding
``constants.pkl`` to TorchScript and so runs code from the file). Zip format: only the records torch.save
writes, checked by name before anything is unpickled. Legacy format: magic, protocol, system info, the pickle,
the storage keys, then each storage's element count and bytes. Every storage is checked against its declared
size before anything is allocated; data written big-endian is byte-swapped, as torch does.
"""
from __future__ import annotations

import io
import logging
import pickle
import re
import struct
import sys
import zipfile
import zlib
from typing import Dict, Optional

import torch

from ..errors import FormatError, UnsafeFileError, excerpt
from . import pickle_tree, safe_pickle
from .common import Decline, Source
from .safe_pickle import MAX_PICKLE, WEIGHTS, Policy, StorageRef, TensorStub, one_pickle, unpickle

logger = logging.getLogger(__name__)

ZIP_MAGIC = b"PK\x03\x04"
LEGACY_MAGIC_NUMBER = 0x1950A86A20F9469CFC6C  # torch's legacy format starts with this pickled int
LEGACY_PROTOCOL = 1001
MAX_RECORDS = 65536             # zip records; an SD checkpoint has about 1,200
# What torch.save writes under the archive's folder: torch 2.1 the first five, torch >= 2.4 also the last two;
# '.data/version' is where torch's writer puts the version from format 6 on.
RECORDS = re.compile(r"^(data\.pkl|data/\d{1,20}|version|byteorder|\.data/serialization_id|\.data/version"
                     r"|\.format_version|\.storage_alignment)$", re.ASCII)
TORCHSCRIPT = re.compile(r"^(constants\.pkl|bytecode\.pkl|code/|extra/|.*\.debug_pkl$|.*\.py$|mobile_info\.json)")
_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, ValueError, struct.error, KeyError,
               NotImplementedError, UnicodeDecodeError, OverflowError, RuntimeError, IndexError, zlib.error)
_PICKLE_ERRORS = (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError, AttributeError,
                  OverflowError, UnicodeDecodeError, RecursionError, struct.error, ImportError)


def _read_into(f, buffer: bytearray) -> None:
    view, pos = memoryview(buffer), 0
    while pos < len(buffer):
        n = f.readinto(view[pos:pos + (1 << 24)])
        if not n:
            raise EOFError(f"a storage ends after {pos} of its {len(buffer)} bytes")
        pos += n


def _as_dtype(raw: bytearray, ref: StorageRef, swap: bool) -> torch.Tensor:
    """A 1-D tensor of ``ref.dtype`` over ``raw`` (shared memory), byte-swapped when ``swap``."""
    if not raw:
        return torch.empty(0, dtype=ref.dtype)
    data = torch.frombuffer(raw, dtype=torch.uint8)
    size = torch.empty((), dtype=ref.dtype).element_size()
    if swap and size > 1:
        data = data.view(-1, size).flip(1).reshape(-1)
    return data != 0 if ref.dtype == torch.bool else data.view(ref.dtype)  # bool: only 0 and 1 are valid


def _nbytes(ref: StorageRef) -> int:
    return ref.numel * torch.empty((), dtype=ref.dtype).element_size()


def _tree(src: Source, tree, storages: Dict[str, StorageRef], bases: Optional[dict]):
    def convert(ref):
        if bases is None:
            return TensorStub(ref.size, str(ref.storage.dtype).replace("torch.", ""))
        return bases[ref.storage.key].as_strided(ref.size, ref.stride, ref.offset)
    return pickle_tree.finish(tree, src.path, convert)


# ---- zip format ----

def _zip_records(src: Source, archive: zipfile.ZipFile, policy: Policy) -> Dict[str, zipfile.ZipInfo]:
    """The records under the archive's folder by name, after refusing anything torch.save does not write."""
    infos = archive.infolist()
    names = [i.filename for i in infos]
    script = [n for n in names if TORCHSCRIPT.match(n.split("/", 1)[-1])]
    if script:
        raise UnsafeFileError(src.path, f"holds TorchScript records ({excerpt(script[:3], 120)}), which torch.load "
                                        f"before torch 2.6 runs as code; {policy.what} never has them. It was "
                                        f"refused and nothing from the file ran. {policy.advice}")
    pkls = [n for n in names if n.count("/") == 1 and n.endswith("/data.pkl")]
    if not pkls:
        raise Decline("a zip archive without data.pkl, not a torch file")
    if len(pkls) > 1 or len(set(names)) != len(names):
        raise FormatError(src.path, "holds records twice (or several data.pkl); torch.save never writes that")
    prefix = pkls[0][:-len("data.pkl")]
    records = {}
    for info in infos:
        name = info.filename[len(prefix):] if info.filename.startswith(prefix) else None
        if name is None or not RECORDS.match(name):
            raise FormatError(src.path, f"holds a record named {excerpt(info.filename)}, which torch.save never "
                                        "writes; it was refused before anything was read")
        if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 1 or info.file_size != info.compress_size \
                or info.header_offset + info.file_size > src.size:
            raise FormatError(src.path, f"record {excerpt(name)} is compressed, encrypted or larger than the file; "
                                        "torch.save never writes that. The file is damaged or crafted")
        records[name] = info
    return records


def _byteorder(src: Source, archive, records) -> bool:
    """True when the data must be byte-swapped (written on a machine of the other byte order)."""
    if "byteorder" not in records:
        return sys.byteorder != "little"   # torch >= 2.1 reads a file without the record as little-endian
    order = archive.read(records["byteorder"])
    if order not in (b"little", b"big"):
        raise FormatError(src.path, f"its byteorder record says {excerpt(order)}; torch writes 'little' or 'big'")
    if order.decode() != sys.byteorder:
        logger.warning("%s: its tensors were written %s-endian; they were byte-swapped as torch does. If its weights "
                       "look wrong, the record is mislabelled", src.path, order.decode())
        return True
    return False


def _read_zip(src: Source, policy: Policy, tensors: bool):
    with open(src.path, "rb") as f:
        count = _zip_entries(f)
        if count is not None and count > MAX_RECORDS:
            raise FormatError(src.path, f"holds {count:,} zip records; a torch file of weights has a few thousand "
                                        "at most")
        with zipfile.ZipFile(f) as archive:
            records = _zip_records(src, archive, policy)
            pkl = records["data.pkl"]
            if pkl.file_size > MAX_PICKLE:
                raise FormatError(src.path, f"its pickle is {pkl.file_size:,} bytes, more than a file of weights "
                                            f"needs ({MAX_PICKLE:,} at most)")
            tree, storages = unpickle(src.path, archive.read(pkl), policy)
            data = {name[5:]: info for name, info in records.items() if name.startswith("data/")}
            for key, ref in storages.items():
                if key not in data:
                    raise FormatError(src.path, f"its pickle uses storage {key}, which the file does not hold")
                if data[key].file_size != _nbytes(ref):
                    raise FormatError(src.path, f"storage {key} holds {data[key].file_size:,} bytes where its "
                                                f"{ref.numel:,} values of {ref.dtype} need {_nbytes(ref):,}; the "
                                                "file is truncated or damaged")
            unused = sorted(set(data) - set(storages))
            if unused:
                raise FormatError(src.path, f"holds data records its pickle never uses (data/{unused[0]}); torch.save "
                                            "never writes that")
            bases = None
            if tensors:
                swap, bases = _byteorder(src, archive, records), {}
                for key, ref in storages.items():
                    raw = bytearray(_nbytes(ref))
                    with archive.open(data[key]) as record:
                        _read_into(record, raw)
                    bases[key] = _as_dtype(raw, ref, swap)
            return _tree(src, tree, storages, bases)


def _zip_entries(f) -> Optional[int]:
    """The record count the end-of-archive record declares (read before zipfile builds one object per record)."""
    end = zipfile._EndRecData(f)  # noqa: SLF001 (stable since Python 2; the public API has no cheaper way)
    f.seek(0)
    return None if end is None else end[zipfile._ECD_ENTRIES_TOTAL]


# ---- legacy format ----

def _read_legacy(src: Source, policy: Policy, tensors: bool):
    with open(src.path, "rb") as f:
        magic = unpickle(src.path, one_pickle(f), WEIGHTS)[0]
        if magic != LEGACY_MAGIC_NUMBER:
            raise Decline(f"a pickle of a {type(magic).__name__}, not a torch file")
        protocol, info = (unpickle(src.path, one_pickle(f), WEIGHTS)[0] for _ in range(2))
        if protocol != LEGACY_PROTOCOL or not isinstance(info, dict):
            raise FormatError(src.path, f"has torch's legacy header but protocol {excerpt(protocol)}; torch "
                                        f"writes {LEGACY_PROTOCOL}")
        tree, storages = unpickle(src.path, one_pickle(f), policy, legacy=True)
        keys = unpickle(src.path, one_pickle(f), WEIGHTS)[0]
        if not isinstance(keys, list) or len(keys) != len(storages) or set(keys) != set(storages):
            raise FormatError(src.path, "its list of storages does not match what its pickle uses; the file is "
                                        "damaged")
        bases = {} if tensors else None
        for key in keys:
            ref = storages[key]
            head = f.read(8)
            count = struct.unpack("<q", head)[0] if len(head) == 8 else -1
            if count != ref.numel or _nbytes(ref) > src.size - f.tell():
                raise FormatError(src.path, f"storage {key} is cut short or does not hold the {ref.numel:,} values "
                                            "its pickle declares; the file is truncated or damaged")
            if tensors:
                buffer = bytearray(_nbytes(ref))
                _read_into(f, buffer)
                bases[key] = _as_dtype(buffer, ref, sys.byteorder != "little")  # legacy data is little-endian
            else:
                f.seek(_nbytes(ref), io.SEEK_CUR)
        if f.tell() != src.size:
            raise FormatError(src.path, f"has {src.size - f.tell():,} bytes after its last storage; torch.save "
                                        "never writes that")
        return _tree(src, tree, storages, bases)


# ---- entry points ----

def read(src: Source, policy: Policy = WEIGHTS, tensors: bool = True):
    """The object a torch file holds: real tensors (CPU) when ``tensors``, else TensorStub (no tensor data read).

    Decline when the file is not a torch file at all; UnsafeFileError when it asks for code (TorchScript
    records, a refused global); FormatError when it is damaged, crafted or cut short. Nothing else escapes.
    """
    head = src.head
    if head.startswith(ZIP_MAGIC):
        reader = _read_zip
    elif len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        reader = _read_legacy
    elif src.size == 0:
        raise Decline("the file is empty")
    else:
        raise Decline(_old_pickle(src, policy))
    try:
        return reader(src, policy, tensors)
    except (Decline, FormatError):
        raise
    except safe_pickle.Refusal as err:
        raise FormatError(src.path, f"{excerpt(str(err), 200, quote=False)}; the file is damaged or crafted") from None
    except MemoryError:   # sizes were checked against the file: the file is larger than the free memory
        raise FormatError(src.path, f"needs more memory than is free to read its {src.size:,} bytes") from None
    except (_ZIP_ERRORS + _PICKLE_ERRORS) as err:
        raise FormatError(src.path, f"is truncated or corrupt: it cannot be read ({type(err).__name__}: "
                                    f"{excerpt(str(err), 120, quote=False)}); copy or download it again") from None


def scan(src: Source):
    """``read`` without tensor data (TensorStub for tensors), cached on ``src``."""
    if "scan" not in src.cache:
        src.cache["scan"] = read(src, WEIGHTS, tensors=False)
    return src.cache["scan"]


def load_tensors(src: Source):
    """``read`` with real tensors, cached on ``src``."""
    if "tensors" not in src.cache:
        src.cache["tensors"] = read(src, WEIGHTS, tensors=True)
    return src.cache["tensors"]


def read_file(path, policy: Policy = WEIGHTS, what: str = "a torch file"):
    """``read`` of the file at ``path`` with real tensors; a file that is not a torch file is a FormatError."""
    src = Source(path)
    try:
        return read(src, policy, tensors=True)
    except Decline as why:
        raise FormatError(src.path, f"is not {what}: {why}") from None


def _old_pickle(src: Source, policy: Policy) -> str:
    """Why a file without a zip or pickle-2 header is not ours; UnsafeFileError when it is a protocol 0/1 pickle
    asking for code. torch never writes those, but hand-made payloads often are; the restricted unpickler runs
    nothing (every global is refused before anything is imported), so the user hears the file is unsafe."""
    with open(src.path, "rb") as f:
        try:
            obj = unpickle(src.path, one_pickle(f), policy)[0]
        except UnsafeFileError:
            raise
        except (FormatError,) + _PICKLE_ERRORS:
            return "neither a torch zip archive nor a pickle"
    return f"an old-protocol pickle of {safe_pickle.describe_tree(obj)}, not a torch file"
