"""Writing ``.pt`` files that webui v1.10.1's safe-unpickle check accepts whatever torch version writes them.

webui's ``modules/safe.py`` accepts only zip entries named ``<dir>/data.pkl``, ``<dir>/data/<n>``,
``<dir>/version``, ``<dir>/byteorder`` and ``<dir>/.data/serialization_id``; newer torch adds
``.format_version`` and ``.storage_alignment``, so we re-pack torch's archive without them, keeping every
record 64-byte aligned the way torch does (padding in a local-header extra field).
"""
from __future__ import annotations

import io
import logging
import re
import struct
import zipfile
from pathlib import Path
from typing import List

import torch

logger = logging.getLogger(__name__)

# The zip entry names webui v1.10.1 accepts (modules/safe.py, allowed_zip_names_re).
WEBUI_ZIP_NAME = re.compile(r"^([^/]+)/((data/\d+)|version|byteorder|(\.data/serialization_id)|(data\.pkl))$")
ALIGNMENT = 64  # torch aligns record data to 64 bytes (needed by mmap loading)
_PAD_HEADER_ID = 0x4246  # 'FB': the extra-field id torch uses for its padding
_LOCAL_HEADER_SIZE = 30
_ZIP64_EXTRA_SIZE = 20


def _aligned_info(name: str, size: int, offset: int) -> zipfile.ZipInfo:
    """A ZipInfo for a stored record whose data will start on an ALIGNMENT boundary when written at ``offset``."""
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_STORED
    info.create_system = 0  # the same bytes on every platform
    info.external_attr = 0
    zip64 = size * 1.05 > zipfile.ZIP64_LIMIT  # zipfile's own rule for adding a zip64 extra field
    start = offset + _LOCAL_HEADER_SIZE + len(name.encode("utf-8")) + 4 + (_ZIP64_EXTRA_SIZE if zip64 else 0)
    pad = (-start) % ALIGNMENT
    info.extra = struct.pack("<HH", _PAD_HEADER_ID, pad) + b"Z" * pad
    return info


def repack(data: bytes, out, keep=WEBUI_ZIP_NAME.match) -> List[str]:
    """Copy the torch zip archive ``data`` into the binary file ``out``, keeping only the records ``keep``
    accepts, each stored and 64-byte aligned. Returns the names dropped."""
    dropped = []
    with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
        for record in src.infolist():
            if not keep(record.filename):
                dropped.append(record.filename)
                continue
            payload = src.read(record)
            dst.writestr(_aligned_info(record.filename, len(payload), out.tell()), payload)
    return dropped


def save_webui_safe(obj, path: Path) -> None:
    """``torch.save(obj)`` to ``path`` as a zip archive holding only what webui's safe unpickler accepts."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    with open(path, "wb") as out:
        dropped = repack(buffer.getvalue(), out)
    if dropped:
        logger.debug("%s: left out %s (webui's safe-unpickle check refuses them)", path, ", ".join(dropped))


def webui_rejected_names(path: Path) -> List[str]:
    """The zip entries of ``path`` webui v1.10.1's safe-unpickle check would refuse ([] for a clean file)."""
    with zipfile.ZipFile(path) as archive:
        return [n for n in archive.namelist() if not WEBUI_ZIP_NAME.match(n)]
