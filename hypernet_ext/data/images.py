"""Image files: finding them, reading their size cheaply, decoding them (EXIF rotation applied, alpha kept
apart), fitting them to a bucket or a fixed size, and turning them into pixel tensors and alpha loss weights.
"""
from __future__ import annotations

import logging
import struct
import zlib
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np
import torch
from PIL import Image, ImageOps

from .buckets import Size, contain_pad, cover_crop

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
# what PIL raises for files that are not images, truncated or corrupt
UNREADABLE = (OSError, ValueError, SyntaxError, EOFError, struct.error, zlib.error, Image.DecompressionBombError)
_RESAMPLE = getattr(Image, "Resampling", Image)
_SWAPPING_ORIENTATIONS = (5, 6, 7, 8)   # EXIF orientations that turn the image by 90 degrees


def find_images(folder: Path, recursive: bool, exclude: Optional[Path] = None) -> Tuple[List[Path], int]:
    """Image files in ``folder`` (sub-folders too when ``recursive``), sorted, plus how many other files were
    ignored (captions not counted). Hidden files and folders and the ``exclude`` folder are left out."""
    pattern = "**/*" if recursive else "*"
    images, others = [], 0
    exclude = exclude.resolve() if exclude is not None else None
    for path in sorted(folder.glob(pattern)):
        rel = path.relative_to(folder)
        if any(part.startswith(".") for part in rel.parts) or not path.is_file():
            continue
        if exclude is not None and (path.resolve() == exclude or exclude in path.resolve().parents):
            continue
        suffix = path.suffix.lower()
        if suffix in IMAGE_SUFFIXES:
            images.append(path)
        elif suffix != ".txt":
            others += 1
    return images, others


def image_size(path: Path) -> Size:
    """(width, height) as the image will be used (after EXIF rotation), from the file header only."""
    with Image.open(path) as img:
        width, height = img.size
        orientation = img.getexif().get(0x0112, 1)
    return (height, width) if orientation in _SWAPPING_ORIENTATIONS else (width, height)


def load_image(path: Path, want_alpha: bool) -> Tuple[Image.Image, Optional[Image.Image]]:
    """The decoded RGB image and, when asked for and present, its alpha channel (mode L). Palette and
    single-colour transparency count as alpha too. The RGB pixels under transparent parts are kept as
    stored (webui does the same)."""
    with Image.open(path) as img:
        img.load()
        img = ImageOps.exif_transpose(img)
        has_alpha = img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info
        if has_alpha:
            rgba = img.convert("RGBA")
            return rgba.convert("RGB"), rgba.getchannel("A") if want_alpha else None
        return img.convert("RGB"), None


def fit_image(img: Image.Image, bucket: Size, mode: str) -> Image.Image:
    """``img`` at the bucket's size: stretched in 'fixed' mode (as webui does); in 'bucket-crop' mode resized to
    cover the bucket with its aspect ratio kept and centre-cropped; in 'bucket' mode resized to fit inside whole
    and padded: an RGB image by repeating its edge pixels (no hard border for the VAE to encode), an alpha
    channel (mode L) with 0. pad_mask tells the padding apart."""
    if img.size == tuple(bucket):
        return img
    if mode == "fixed":
        return img.resize(tuple(bucket), _RESAMPLE.BICUBIC)
    if mode == "bucket-crop":
        resized, box = cover_crop(img.size[0], img.size[1], bucket)
        return img.resize(resized, _RESAMPLE.BICUBIC).crop(box)
    resized, (left, top, right, bottom) = contain_pad(img.size[0], img.size[1], bucket)
    array = np.asarray(img.resize(resized, _RESAMPLE.BICUBIC))
    widths = ((top, bucket[1] - bottom), (left, bucket[0] - right)) + ((0, 0),) * (array.ndim - 2)
    if img.mode == "L":
        return Image.fromarray(np.pad(array, widths, mode="constant", constant_values=0), "L")
    return Image.fromarray(np.pad(array, widths, mode="edge"), img.mode)


def pad_mask(size: Size, bucket: Size, mode: str) -> Optional[Image.Image]:
    """Where an image of ``size`` lies in its bucket (mode L: 255 on the image, 0 on the padding), or None when
    it fills the bucket (every mode but 'bucket', or an exact fit)."""
    if mode != "bucket" or tuple(size) == tuple(bucket):
        return None
    _, box = contain_pad(size[0], size[1], bucket)
    if box == (0, 0) + tuple(bucket):
        return None
    mask = Image.new("L", tuple(bucket), 0)
    mask.paste(255, box)
    return mask


def to_pixels(img: Image.Image) -> torch.Tensor:
    """An RGB image as a float32 tensor (3, H, W) in [-1, 1]."""
    array = np.asarray(img, dtype=np.uint8).astype(np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def alpha_weight(alpha: Image.Image, latent_hw: Tuple[int, int]) -> torch.Tensor:
    """A per-pixel loss weight (1, h, w) from an alpha channel (or a pad_mask) already fitted to the bucket:
    opacity averaged over each latent pixel's area, scaled so the mean weight is 1 (the loss stays on the same
    scale as an image without alpha). Fully transparent images are skipped before this (see fully_transparent).

    webui also subtracts the smallest opacity first; we do not, so a uniformly half-transparent image weighs
    like an opaque one instead of dividing by zero, and the weight stays proportional to opacity."""
    h, w = latent_hw
    small = alpha.convert("F").resize((w, h), _RESAMPLE.BOX)
    weight = torch.from_numpy(np.asarray(small, dtype=np.float32) / 255.0)
    mean = float(weight.mean())
    if mean <= 0.0:
        return torch.ones(1, h, w)
    return (weight / mean).unsqueeze(0)


def fully_transparent(alpha: Optional[Image.Image]) -> bool:
    """True when an alpha channel is zero everywhere."""
    return alpha is not None and alpha.getextrema()[1] == 0
