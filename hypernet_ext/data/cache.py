"""On-disk cache of VAE moments, one file per (image content, fit, flip, model): a second preparation of the
same data with the same settings loads them instead of encoding. Files are written atomically and read by
formats.torch_read (never torch.load); a damaged or mismatched file is ignored (and rewritten), never trusted.
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Optional, Tuple

import torch

from ..fileio import atomic_path

log = logging.getLogger(__name__)

CACHE_VERSION = 2   # 2: 'bucket' pads instead of cropping (version 1's crops are 'bucket-crop' now)


def cache_key(file_sha256: str, mode: str, bucket: Tuple[int, int], flipped: bool, model_id: str) -> str:
    """Everything that decides the moments of one encoded image: its bytes, how it was fitted (fixed stretch,
    pad or cover-crop, and to which size), whether it was flipped, and the encoding model."""
    return (f"hypernet_ext-latents v{CACHE_VERSION}|{file_sha256}|{mode}|{bucket[0]}x{bucket[1]}|"
            f"{'flipped' if flipped else 'plain'}|{model_id}")


def cache_file(cache_dir: Path, key: str) -> Path:
    return Path(cache_dir) / f"{hashlib.sha256(key.encode('utf-8')).hexdigest()}.pt"


def load_moments(cache_dir: Path, key: str) -> Optional[torch.Tensor]:
    """The cached moments (2C, h, w) for ``key``, or None when absent, unreadable or not for this key."""
    path = cache_file(cache_dir, key)
    if not path.is_file():
        return None
    from ..errors import FormatError
    from ..formats.torch_read import read_file

    try:
        data = read_file(path, what="a latent cache file")
    except (FormatError, OSError) as e:
        log.warning("ignoring unreadable latent cache file %s: %s", path, e)
        return None
    moments = data.get("moments") if isinstance(data, dict) else None
    if not isinstance(moments, torch.Tensor) or data.get("key") != key or moments.dim() != 3:
        log.warning("ignoring latent cache file %s: it does not hold moments for this image", path)
        return None
    return moments.float()


def save_moments(cache_dir: Path, key: str, moments: torch.Tensor) -> None:
    """Write the moments (2C, h, w) for ``key``; the file appears complete or not at all."""
    path = cache_file(cache_dir, key)
    with atomic_path(path) as tmp:
        torch.save({"key": key, "moments": moments.detach().to("cpu", torch.float32).clone()}, tmp)
