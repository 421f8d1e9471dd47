"""Aspect-ratio buckets as pure functions of image sizes.

``make_buckets`` lists the bucket sizes a pixel budget allows, ``assign_bucket`` picks the one whose aspect
ratio is closest to an image's; ``contain_pad`` says how to resize the image to fit inside it whole (the rest is
padding), ``cover_crop`` how to resize it to cover the bucket and centre-crop; ``size_conditioning`` what SDXL is
told about the image (original size, crop, target size).
"""
from __future__ import annotations

import math
from typing import List, NamedTuple, Sequence, Tuple

from ..errors import ConfigError

Size = Tuple[int, int]                 # (width, height)
Box = Tuple[int, int, int, int]        # (left, top, right, bottom), PIL's crop box


def make_buckets(pixel_budget: int, min_side: int, max_side: int, divisor: int) -> List[Size]:
    """Every (w, h) with sides multiples of ``divisor`` in [min_side, max_side] and w * h <= pixel_budget that is
    the largest such bucket for its width or its height, plus the largest square. Sorted, no duplicates.

    For each width the height is as large as the budget allows, so every bucket uses the budget as fully as the
    divisor permits; the transposes make the list symmetric (portrait and landscape alike).
    """
    if divisor <= 0 or pixel_budget <= 0:
        raise ConfigError(f"buckets: divisor {divisor} and pixel budget {pixel_budget} must be positive")
    lo = math.ceil(min_side / divisor) * divisor
    hi = max_side // divisor * divisor
    found = set()
    square = min(hi, math.isqrt(pixel_budget) // divisor * divisor)
    if square >= lo:
        found.add((square, square))
    for w in range(lo, hi + 1, divisor):
        h = min(hi, pixel_budget // w // divisor * divisor)
        if h >= lo:
            found.add((w, h))
            found.add((h, w))
    if not found:
        raise ConfigError(f"buckets: no bucket fits a budget of {pixel_budget} pixels with sides between "
                          f"{min_side} and {max_side} in steps of {divisor}")
    return sorted(found)


def assign_bucket(width: int, height: int, buckets: Sequence[Size]) -> Size:
    """The bucket whose aspect ratio is closest to width:height (compared as log ratios, so 2:1 and 1:2 are
    equally far from 1:1); ties go to the larger bucket, then the narrower one. Deterministic."""
    if width <= 0 or height <= 0:
        raise ValueError(f"image size {width}x{height} must be positive")
    if not buckets:
        raise ValueError("no buckets to choose from")
    target = math.log(width / height)
    return min(buckets, key=lambda b: (abs(math.log(b[0] / b[1]) - target), -b[0] * b[1], b[0]))


def cover_crop(width: int, height: int, bucket: Size) -> Tuple[Size, Box]:
    """How to fit a width x height image to ``bucket``: the size to resize it to (the smallest that covers the
    bucket with the aspect ratio kept) and the centred crop box that cuts the bucket out of the resized image."""
    bw, bh = bucket
    scale = max(bw / width, bh / height)
    rw = max(bw, round(width * scale))
    rh = max(bh, round(height * scale))
    left = (rw - bw) // 2
    top = (rh - bh) // 2
    return (rw, rh), (left, top, left + bw, top + bh)


def contain_pad(width: int, height: int, bucket: Size) -> Tuple[Size, Box]:
    """How to fit a width x height image to ``bucket`` whole: the size to resize it to (the largest that fits
    inside the bucket with the aspect ratio kept) and the centred box it takes in the bucket; the rest of the
    bucket is padding."""
    bw, bh = bucket
    scale = min(bw / width, bh / height)
    rw = min(bw, max(1, round(width * scale)))
    rh = min(bh, max(1, round(height * scale)))
    left = (bw - rw) // 2
    top = (bh - rh) // 2
    return (rw, rh), (left, top, left + rw, top + rh)


class SizeCond(NamedTuple):
    """SDXL's size conditioning of one training image, in pixels, as (height, width) / (top, left) pairs: the
    image's size before resizing, where the crop cut the bucket out of the resized image, and the bucket."""
    original: Tuple[int, int]
    crop: Tuple[int, int]
    target: Tuple[int, int]


def size_conditioning(size: Size, bucket: Size, mode: str, flipped: bool = False) -> SizeCond:
    """The SizeCond of a width x height image fitted to ``bucket`` in resize ``mode``, as SDXL was trained: the
    original size, the crop's top-left corner in the resized image (zero when nothing is cut off: 'bucket' pads,
    'fixed' stretches) and the bucket as target. A flipped image's crop is mirrored, as the pixels are."""
    width, height = size
    top = left = 0
    if mode == "bucket-crop":
        (resized_w, _), (left, top, _, _) = cover_crop(width, height, bucket)
        if flipped:
            left = resized_w - bucket[0] - left
    return SizeCond((int(height), int(width)), (int(top), int(left)), (int(bucket[1]), int(bucket[0])))
