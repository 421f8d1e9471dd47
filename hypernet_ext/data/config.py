"""DataConfig: every setting of the training data set (folder, captions, prompts, buckets, latents, cache).

Validation in ``__post_init__`` raises ConfigError naming the field; whether the folder and template exist is
checked when the data set is prepared (DataError), because a config may be built before they do.
"""
from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field
from typing import Optional

from ..config import ConfigMixin, real_number, whole_number
from ..errors import ConfigError
from .captions import DEFAULT_JOIN, DEFAULT_TEMPLATE, DEFAULT_WORD_REGEX

RESIZE_MODES = ("bucket", "bucket-crop", "fixed")
BUCKET_MODES = ("bucket", "bucket-crop")
LATENT_SAMPLING = ("once", "deterministic", "random")
VAE_FACTOR = 8   # every SD VAE downsamples by 8: image sides must be multiples of it


@dataclass
class DataConfig(ConfigMixin):
    """The training images and how they become (latent, prompt, weight) samples."""

    data_dir: str = field(default="", metadata={"help": "Folder with the training images (png, jpg, webp, bmp)."})
    recursive: bool = field(default=False, metadata={"help": "Also use images in sub-folders."})
    name: str = field(default="", metadata={"help": "The word that replaces [name] in the prompt template."})
    template: str = field(default=DEFAULT_TEMPLATE, metadata={
        "help": "Prompt template: a shipped name (hypernetwork, captions_only, none, style, style_filewords, "
                "subject, subject_filewords) or the path of a .txt file, one prompt per line with [name] / "
                "[filewords]."})
    resize: str = field(default="bucket", metadata={
        "help": "bucket: each image whole in the aspect-ratio bucket closest to it, scaled to fit inside; the "
                "strip left over is padding with loss weight 0. bucket-crop: scaled to cover the bucket and "
                "centre-cropped (loses up to about a tenth of the longer side). fixed: stretch every image to "
                "width x height, as webui does."})
    width: int = field(default=512, metadata={"help": "Image width in fixed mode; with height, the bucket area."})
    height: int = field(default=512, metadata={"help": "Image height in fixed mode; with width, the bucket area."})
    bucket_pixels: Optional[int] = field(default=None, metadata={
        "help": "Most pixels of a bucket (width x height). Empty: width * height."})
    min_side: int = field(default=256, metadata={
        "help": "Shortest bucket side. In bucket mode, images whose sides are both shorter than this are skipped; "
                "fixed mode stretches every image, as webui does."})
    max_side: int = field(default=1024, metadata={"help": "Longest bucket side."})
    divisor: int = field(default=64, metadata={"help": "Bucket sides are multiples of this (a multiple of 8)."})
    batch_size: int = field(default=1, metadata={"help": "Images per batch; a batch holds one bucket only."})
    repeats: int = field(default=1, metadata={"help": "How many times each image is used per epoch."})
    flip: float = field(default=0.0, metadata={
        "help": "Probability of a horizontal flip per sample (0.5: random flips). Flipped images are encoded too."})
    shuffle_tags: bool = field(default=False, metadata={
        "help": "Shuffle the comma-separated tags of the caption for every sample."})
    tag_dropout: float = field(default=0.0, metadata={
        "help": "Probability of leaving out each tag of the caption, drawn for every sample (0 to 1)."})
    latent_sampling: str = field(default="once", metadata={
        "help": "once: one latent sample per image, drawn at preparation; deterministic: the VAE mean; "
                "random: a fresh sample every time the image is used."})
    use_alpha_weight: bool = field(default=False, metadata={
        "help": "Use the PNG alpha channel as a per-pixel loss weight (transparent parts count less)."})
    filename_regex: str = field(default=DEFAULT_WORD_REGEX, metadata={
        "help": "Without a .txt caption: the words of the file name this regex finds form the caption "
                "(webui's dataset_filename_word_regex, empty by default). Empty: the whole name, commas kept."})
    filename_join: str = field(default=DEFAULT_JOIN, metadata={
        "help": "String that joins the words found in a file name (webui's dataset_filename_join_string)."})
    cache_dir: Optional[str] = field(default=None, metadata={
        "help": "Folder for cached latents, keyed by file content and settings. Empty: keep them in memory only."})
    seed: int = field(default=0, metadata={
        "help": "Seed of the data order, prompts, flips and latent noise; step k is the same in every run."})

    def __post_init__(self):
        self.data_dir = "" if self.data_dir is None else os.fspath(self.data_dir)
        self.cache_dir = os.fspath(self.cache_dir) if self.cache_dir not in (None, "") else None
        for name in ("recursive", "shuffle_tags", "use_alpha_weight"):
            setattr(self, name, bool(getattr(self, name)))
        self.name = "" if self.name is None else str(self.name)
        self.template = "" if self.template is None else str(self.template).strip()
        if not self.template:
            raise ConfigError("template: give a shipped template name (e.g. hypernetwork) or a .txt file path")
        self.resize = _choice("resize", self.resize, RESIZE_MODES)
        self.latent_sampling = _choice("latent_sampling", self.latent_sampling, LATENT_SAMPLING)
        for name in ("width", "height"):
            value = whole_number(name, getattr(self, name), 8)
            if value % VAE_FACTOR:
                raise ConfigError(f"{name}: {value} is not a multiple of {VAE_FACTOR} (the VAE works in 8x8 blocks)")
            setattr(self, name, value)
        self.divisor = whole_number("divisor", self.divisor, VAE_FACTOR)
        if self.divisor % VAE_FACTOR:
            raise ConfigError(f"divisor: {self.divisor} must be a multiple of {VAE_FACTOR}, e.g. 64")
        self.min_side = whole_number("min_side", self.min_side, 1)
        self.max_side = whole_number("max_side", self.max_side, 1)
        if self.bucket_pixels in (None, "", 0):
            self.bucket_pixels = None
        else:
            self.bucket_pixels = whole_number("bucket_pixels", self.bucket_pixels, 1)
        self.batch_size = whole_number("batch_size", self.batch_size, 1)
        self.repeats = whole_number("repeats", self.repeats, 1)
        self.seed = whole_number("seed", self.seed, None)
        self.flip = real_number("flip", self.flip, 0.0, 1.0)
        self.tag_dropout = real_number("tag_dropout", self.tag_dropout, 0.0, 1.0)
        self.filename_regex = "" if self.filename_regex is None else str(self.filename_regex)
        self.filename_join = "" if self.filename_join is None else str(self.filename_join)
        if self.filename_regex:
            try:
                groups = re.compile(self.filename_regex).groups
            except re.error as e:
                raise ConfigError(f"filename_regex: {self.filename_regex!r} is not a valid regular expression "
                                  f"({e}); leave it empty for the whole file name (webui's default) or give "
                                  "one like [\\w]+ for its words") from None
            if groups > 1:   # re.findall would give tuples, which cannot be joined (webui fails there too)
                raise ConfigError(f"filename_regex: {self.filename_regex!r} has {groups} groups; use at most one "
                                  "(its text is what is kept), e.g. (?:...) for the others")
        if self.resize in BUCKET_MODES:
            self._check_buckets()

    def _check_buckets(self):
        lo = math.ceil(self.min_side / self.divisor) * self.divisor
        hi = self.max_side // self.divisor * self.divisor
        if hi < lo:
            raise ConfigError(f"max_side: {self.max_side} leaves no bucket side between min_side {self.min_side} "
                              f"and it in steps of divisor {self.divisor}; raise max_side or lower min_side")
        if lo * lo > self.pixel_budget:
            raise ConfigError(f"bucket_pixels: {self.pixel_budget} pixels cannot hold even a {lo}x{lo} bucket "
                              f"(min_side {self.min_side}, divisor {self.divisor}); raise it or lower min_side")

    @property
    def pixel_budget(self) -> int:
        """The most pixels a bucket may have."""
        return self.bucket_pixels if self.bucket_pixels is not None else self.width * self.height


def _choice(name: str, value, allowed) -> str:
    text = str(value).strip().lower() if value is not None else ""
    if text not in allowed:
        raise ConfigError(f"{name}: {value!r} is not one of {', '.join(allowed)}")
    return text
