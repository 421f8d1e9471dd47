"""prepare_dataset: from a folder of images to a LatentDataset. Finds and checks the images (DataError before any
encoding when nothing is usable), assigns buckets, encodes each image once (and its mirror image when flips are
on) through the host's ``encode``, batched per bucket, optionally through the on-disk cache.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import torch

from ..errors import DataError
from ..fileio import sha256_file
from . import images
from .buckets import Size, assign_bucket, make_buckets, size_conditioning
from .cache import cache_key, load_moments, save_moments
from .captions import load_template, read_caption
from .config import BUCKET_MODES, DataConfig
from .dataset import LatentDataset, LatentSource, Sample, generator

log = logging.getLogger(__name__)

Encode = Callable[[torch.Tensor], torch.Tensor]
Progress = Callable[[int, int], None]
SKIP_UNREADABLE = "unreadable"
SKIP_TOO_SMALL = "too small"
SKIP_TRANSPARENT = "fully transparent"


@dataclass
class DataSummary:
    """What preparation found and did; ``str()`` gives a line for the user."""
    folder: str
    found: int = 0                                           # image files (by suffix)
    used: int = 0
    skipped: Dict[str, List[str]] = field(default_factory=dict)   # reason -> paths
    ignored_files: int = 0                                   # other files in the folder (captions not counted)
    buckets: Dict[Size, int] = field(default_factory=dict)   # bucket -> images in it
    encoded: int = 0                                         # images (mirror images included) encoded
    from_cache: int = 0                                      # ... and loaded from the cache instead

    def skip(self, reason: str, path, detail: str = "") -> None:
        self.skipped.setdefault(reason, []).append(str(path))
        log.warning("skipping %s: %s%s", path, reason, f" ({detail})" if detail else "")

    @property
    def skipped_count(self) -> int:
        return sum(len(paths) for paths in self.skipped.values())

    def __str__(self) -> str:
        text = f"{self.found} images found in {self.folder}, {self.used} used"
        if self.skipped:
            text += ", skipped: " + "; ".join(f"{len(p)} {reason}" for reason, p in sorted(self.skipped.items()))
        if self.buckets:
            text += "; buckets " + ", ".join(f"{w}x{h}: {n}" for (w, h), n in sorted(self.buckets.items()))
        return text


@dataclass
class _Item:
    path: Path
    caption: str
    size: Size          # as used (after EXIF rotation)
    bucket: Size


def prepare_dataset(config: DataConfig, encode: Encode, scale_factor: float, model_id: str = "",
                    progress: Optional[Progress] = None, encode_batch_size: int = 4) -> LatentDataset:
    """Read, check, caption, bucket and encode the images of ``config.data_dir``.

    ``encode(pixels)`` takes (B, 3, H, W) float32 in [-1, 1] on the CPU and returns the VAE moments
    (B, 2C, h, w) = cat(mean, logvar), on any device; ``scale_factor`` multiplies every latent; ``model_id``
    names the encoding model in cache keys; ``progress(done, total)`` is called as images are prepared (it may
    raise to abort). Raises DataError for a missing or empty folder or when no image is usable.
    """
    lines = load_template(config.template)
    if config.name == "" and any("[name]" in line for line in lines):
        log.warning("the template uses [name] but no name is set: [name] becomes an empty string")
    folder, cache_dir, summary, items = _planned(config)
    variants = (False, True) if config.flip > 0 else (False,)
    per_call = max(1, encode_batch_size // len(variants))
    samples: List[Sample] = []
    done = 0
    if progress is not None:
        progress(0, len(items))
    by_bucket: Dict[Size, List[_Item]] = {}
    for item in items:
        by_bucket.setdefault(item.bucket, []).append(item)
    for bucket in sorted(by_bucket):
        group = by_bucket[bucket]
        for start in range(0, len(group), per_call):
            chunk = group[start:start + per_call]
            samples.extend(_prepare_chunk(chunk, variants, config, encode, cache_dir, model_id, summary))
            done += len(chunk)
            if progress is not None:
                progress(done, len(items))
    if not samples:
        raise DataError(f"data_dir: no usable image in {folder}: {summary}")
    summary.used = len(samples)
    for sample in samples:
        summary.buckets[sample.bucket] = summary.buckets.get(sample.bucket, 0) + 1
    log.info("data set ready: %s (%d encoded, %d from cache)", summary, summary.encoded, summary.from_cache)
    return LatentDataset(config, samples, lines, scale_factor, summary)


def count_images(config: DataConfig) -> DataSummary:
    """What ``prepare_dataset`` would use, from the file headers alone (nothing is decoded or encoded): images
    found, used, skipped and why, and how many go to each bucket. Raises DataError like prepare_dataset for a
    missing folder, a folder without images, or when no image is usable; images that turn out unreadable only
    when decoded are counted as used here."""
    load_template(config.template)
    _, _, summary, items = _planned(config)
    summary.used = len(items)
    for item in items:
        summary.buckets[item.bucket] = summary.buckets.get(item.bucket, 0) + 1
    return summary


def _planned(config: DataConfig) -> Tuple[Path, Optional[Path], DataSummary, List[_Item]]:
    """The folder, the cache folder, the summary so far and the usable images; DataError when there are none."""
    folder = _check_folder(config.data_dir)
    cache_dir = Path(config.cache_dir).expanduser() if config.cache_dir else None
    paths, others = images.find_images(folder, config.recursive, exclude=cache_dir)
    summary = DataSummary(folder=str(folder), found=len(paths), ignored_files=others)
    if not paths:
        where = "or its sub-folders" if config.recursive else "(sub-folders not searched: set recursive)"
        kinds = ", ".join(s[1:] for s in images.IMAGE_SUFFIXES)
        raise DataError(f"data_dir: no images in {folder} {where}; use {kinds} files ({others} other files ignored)")
    items = _plan(config, paths, summary)
    if not items:
        raise DataError(f"data_dir: no usable image in {folder}: {summary}")
    return folder, cache_dir, summary, items


def _check_folder(data_dir: str) -> Path:
    if not data_dir:
        raise DataError("data_dir: no folder given; choose the folder that holds the training images")
    folder = Path(data_dir).expanduser()
    if not folder.exists():
        raise DataError(f"data_dir: {folder} does not exist")
    if not folder.is_dir():
        raise DataError(f"data_dir: {folder} is a file, not a folder")
    return folder


def _plan(config: DataConfig, paths: List[Path], summary: DataSummary) -> List[_Item]:
    """Caption and bucket of every readable, large enough image, from file headers only (nothing decoded).

    In bucket mode, too small means both sides shorter than min_side: such an image would have to be enlarged
    more than any bucket needs. One short side alone is fine (a long thin image goes to a long thin bucket).
    Fixed mode stretches every image to width x height, as webui does; it skips only images without pixels."""
    if config.resize == "fixed":
        buckets = [(config.width, config.height)]
    else:
        buckets = make_buckets(config.pixel_budget, config.min_side, config.max_side, config.divisor)
    items = []
    for path in paths:
        try:
            width, height = images.image_size(path)
        except images.UNREADABLE as e:
            summary.skip(SKIP_UNREADABLE, path, str(e))
            continue
        if width < 1 or height < 1:
            summary.skip(SKIP_UNREADABLE, path, f"{width}x{height}: no pixels")
            continue
        if config.resize in BUCKET_MODES and max(width, height) < config.min_side:
            summary.skip(SKIP_TOO_SMALL, path, f"{width}x{height}, both sides below min_side {config.min_side}")
            continue
        try:
            caption = read_caption(path, config.filename_regex, config.filename_join)
        except DataError as e:
            summary.skip(SKIP_UNREADABLE, path, str(e))
            continue
        items.append(_Item(path, caption, (width, height), assign_bucket(width, height, buckets)))
    return items


@dataclass
class _Loaded:
    """One image of a chunk on its way to a Sample."""
    item: _Item
    sha: str
    moments: Dict[bool, torch.Tensor]           # flipped -> moments (2C, h, w), from the cache or the encoder
    need: List[bool]                            # variants still to encode
    pixels: Optional[torch.Tensor] = None       # (3, H, W), only when something is to be encoded
    alpha: Optional[object] = None              # the alpha channel fitted to the bucket (PIL image), if used


def _load(item: _Item, variants, config: DataConfig, cache_dir: Optional[Path], model_id: str,
          summary: DataSummary) -> Optional[_Loaded]:
    """The cached moments of an image's variants, and its pixels when some are missing (or its alpha is
    needed); None, with the reason counted, when the image cannot be used."""
    try:
        sha = sha256_file(item.path)
    except OSError as e:
        summary.skip(SKIP_UNREADABLE, item.path, str(e))
        return None
    loaded = _Loaded(item, sha, {}, [])
    for flipped in variants:
        key = cache_key(sha, config.resize, item.bucket, flipped, model_id)
        cached = load_moments(cache_dir, key) if cache_dir is not None else None
        if cached is None:
            loaded.need.append(flipped)
        else:
            loaded.moments[flipped] = cached
    if not loaded.need and not config.use_alpha_weight:
        return loaded
    try:
        rgb, alpha = images.load_image(item.path, want_alpha=config.use_alpha_weight)
    except images.UNREADABLE as e:
        summary.skip(SKIP_UNREADABLE, item.path, str(e))
        return None
    if images.fully_transparent(alpha):
        summary.skip(SKIP_TRANSPARENT, item.path, "alpha is 0 everywhere: nothing to learn with use_alpha_weight")
        return None
    if alpha is not None:
        loaded.alpha = images.fit_image(alpha, item.bucket, config.resize)
    if loaded.need:
        loaded.pixels = images.to_pixels(images.fit_image(rgb, item.bucket, config.resize))
    return loaded


def _prepare_chunk(chunk: List[_Item], variants, config: DataConfig, encode: Encode, cache_dir: Optional[Path],
                   model_id: str, summary: DataSummary) -> List[Sample]:
    """Samples for images of one bucket: moments from the cache where present, the rest encoded in one call."""
    loaded = [x for x in (_load(item, variants, config, cache_dir, model_id, summary) for item in chunk) if x]
    todo = [(x, flipped) for x in loaded for flipped in x.need]
    summary.from_cache += sum(len(x.moments) for x in loaded)
    if todo:
        out = _encode(encode, torch.stack([x.pixels.flip(-1) if f else x.pixels for x, f in todo]))
        summary.encoded += len(todo)
        for (x, flipped), moments in zip(todo, out):
            x.moments[flipped] = moments.clone()
            if cache_dir is not None:
                key = cache_key(x.sha, config.resize, x.item.bucket, flipped, model_id)
                save_moments(cache_dir, key, x.moments[flipped])
    samples = []
    for x in loaded:
        sources = tuple(_source(x.moments[f], config, x.sha, f) for f in variants)
        sizes = tuple(size_conditioning(x.item.size, x.item.bucket, config.resize, f) for f in variants)
        samples.append(Sample(str(x.item.path), x.item.caption, x.item.bucket, sources,
                              _weight(x, config, tuple(sources[0].mean.shape[-2:])), sizes))
    return samples


def _weight(x: _Loaded, config: DataConfig, hw) -> Optional[torch.Tensor]:
    """The loss weight (1, h, w) of an image: its alpha (padded with 0), else 0 on the padding around it in
    'bucket' mode; None when every latent pixel counts the same (ones when alpha weights are on)."""
    if x.alpha is not None:
        return images.alpha_weight(x.alpha, hw)
    mask = images.pad_mask(x.item.size, x.item.bucket, config.resize)
    if mask is not None:
        return images.alpha_weight(mask, hw)
    return torch.ones(1, *hw) if config.use_alpha_weight else None


def _encode(encode: Encode, pixels: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        out = encode(pixels)
    if not isinstance(out, torch.Tensor) or out.dim() != 4 or out.shape[0] != pixels.shape[0] or out.shape[1] % 2:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise DataError(f"encode returned {shape} for {tuple(pixels.shape)} pixels; expected VAE moments "
                        "(B, 2C, h, w) = cat(mean, logvar)")
    return out.detach().to("cpu", torch.float32)


def _source(moments: torch.Tensor, config: DataConfig, sha: str, flipped: bool) -> LatentSource:
    """The latent source of one image variant under config.latent_sampling (see DataConfig). The 'once' sample
    is drawn from (seed, file hash, flip), so every preparation of the same data draws the same one."""
    mean, logvar = moments.chunk(2, dim=0)
    mean = mean.clone()                                 # own storage: the logvar half is not kept alive
    if config.latent_sampling == "deterministic":
        return LatentSource(mean, None)
    std = torch.exp(0.5 * logvar.clamp(-30.0, 20.0))   # the clamp ldm's DiagonalGaussianDistribution applies
    if config.latent_sampling == "random":
        return LatentSource(mean, std.contiguous())
    noise = torch.randn(mean.shape, generator=generator(config.seed, "once", sha, flipped))
    return LatentSource(mean + std * noise, None)
