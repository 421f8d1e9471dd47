"""LatentDataset: prepared samples (latent moments on CPU, captions, alpha weights) and the data stream.

The stream is a pure function of (seed, index): ``micro_batch(i)`` gives the same batch in every run, so a run
resumed at step k sees exactly the batches a straight run would (optimizer step k with gradient accumulation a
uses micro-batches a*k .. a*k + a - 1). An epoch is every image ``repeats`` times, grouped into single-bucket
batches, in an order drawn from (seed, epoch); the per-sample choices (template line, tag shuffle and dropout,
flip, latent noise) are drawn from (seed, index, position in the batch).
"""
from __future__ import annotations

import hashlib
import numbers
import random
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple

import torch

from .buckets import Size, SizeCond
from .captions import make_prompt
from .config import DataConfig


def mix_seed(*keys) -> int:
    """A 63-bit seed from any tuple of ints and strings; nearby keys give unrelated seeds."""
    digest = hashlib.sha256(repr(keys).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "little") & (2 ** 63 - 1)


def generator(*keys) -> torch.Generator:
    """A CPU torch generator seeded from ``keys`` (the global RNG is never touched)."""
    return torch.Generator().manual_seed(mix_seed(*keys))


class LatentSource(NamedTuple):
    """How to get a latent (before scaling): ``mean`` when ``std`` is None, else mean + std * noise."""
    mean: torch.Tensor                  # (C, h, w) float32, CPU
    std: Optional[torch.Tensor]         # (C, h, w) for 'random' sampling, else None


@dataclass
class Sample:
    """One prepared image."""
    path: str
    caption: str
    bucket: Size
    latents: Tuple[LatentSource, ...]   # [0]: as is; [1]: flipped horizontally (present when flip > 0)
    weight: Optional[torch.Tensor]      # (1, h, w) loss weight with mean 1 (alpha, 0 on padding), or None
    sizes: Tuple[SizeCond, ...] = ()    # SDXL's size conditioning per entry of latents (flipped: crop mirrored)


@dataclass
class Batch:
    """One micro-batch (the trainer's step accumulates grad_accum of them). Tensors are float32 on CPU."""
    index: int                          # the micro-batch index it was made for
    epoch: int
    latents: torch.Tensor               # (B, C, h, w), already multiplied by the scale factor
    prompts: List[str]
    weights: Optional[torch.Tensor]     # (B, 1, h, w) loss weights (alpha, padding) when a sample has one, else None
    paths: List[str]
    flipped: List[bool]
    sizes: List[SizeCond] = field(default_factory=list)   # SDXL's size conditioning per sample (when known)

    def __len__(self) -> int:
        return len(self.prompts)


class LatentDataset:
    """Prepared samples and the deterministic batch stream over them. Build it with prepare_dataset."""

    def __init__(self, config: DataConfig, samples: Sequence[Sample], template_lines: Sequence[str],
                 scale_factor: float, summary=None):
        if not samples:
            raise ValueError("a LatentDataset needs at least one sample")
        self.config = config
        self.samples = list(samples)
        self.template_lines = list(template_lines)
        self.scale_factor = float(scale_factor)
        self.summary = summary
        groups: Dict[Size, List[int]] = {}
        for i, sample in enumerate(self.samples):
            groups.setdefault(tuple(sample.bucket), []).append(i)
        self.groups = dict(sorted(groups.items()))
        per_bucket = [-(-len(ids) * config.repeats // config.batch_size) for ids in self.groups.values()]
        self.steps_per_epoch = sum(per_bucket)
        self._plan: Tuple[int, List[List[int]]] = (-1, [])

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def buckets(self) -> List[Size]:
        """The bucket sizes in use, sorted."""
        return list(self.groups)

    def epoch_plan(self, epoch: int) -> List[List[int]]:
        """The batches of one epoch as lists of sample indices. Each bucket's images, each ``repeats`` times,
        are shuffled and cut into batches of batch_size (the last one of a bucket may be smaller, so every
        image is used exactly ``repeats`` times); then the order of all batches is shuffled."""
        if self._plan[0] == epoch:
            return self._plan[1]
        rng = random.Random(mix_seed(self.config.seed, "epoch", epoch))
        size = self.config.batch_size
        batches = []
        for ids in self.groups.values():
            items = list(ids) * self.config.repeats
            rng.shuffle(items)
            batches.extend(items[i:i + size] for i in range(0, len(items), size))
        rng.shuffle(batches)
        self._plan = (epoch, batches)
        return batches

    def micro_batch(self, index: int) -> Batch:
        """Micro-batch ``index`` (0-based) of the stream: a pure function of the config's seed and ``index``.
        Optimizer step k with gradient accumulation a trains on micro-batches a*k .. a*k + a - 1."""
        if isinstance(index, bool) or not isinstance(index, numbers.Integral) or index < 0:
            raise ValueError(f"index must be a whole number >= 0, not {index!r}")
        index = int(index)
        epoch, position = divmod(index, self.steps_per_epoch)
        members = self.epoch_plan(epoch)[position]
        cfg = self.config
        latents, prompts, weights, paths, flipped, sizes = [], [], [], [], [], []
        for slot, member in enumerate(members):
            sample = self.samples[member]
            rng = random.Random(mix_seed(cfg.seed, "sample", index, slot))
            prompts.append(make_prompt(self.template_lines, cfg.name, sample.caption, cfg.shuffle_tags,
                                       cfg.tag_dropout, rng))
            flip = cfg.flip > 0 and len(sample.latents) > 1 and rng.random() < cfg.flip
            source = sample.latents[1 if flip else 0]
            latent = source.mean
            if source.std is not None:
                noise = torch.randn(source.mean.shape, generator=generator(cfg.seed, "noise", index, slot))
                latent = source.mean + source.std * noise
            latents.append(latent * self.scale_factor)
            weights.append(None if sample.weight is None else sample.weight.flip(-1) if flip else sample.weight)
            paths.append(sample.path)
            flipped.append(flip)
            if sample.sizes:
                sizes.append(sample.sizes[1 if flip else 0])
        stacked_weights = None
        if any(w is not None for w in weights):   # alpha, or padding: the others in the batch weigh 1
            ones = torch.ones((1,) + tuple(latents[0].shape[-2:]))
            stacked_weights = torch.stack([ones if w is None else w for w in weights])
        return Batch(index=index, epoch=epoch, latents=torch.stack(latents), prompts=prompts,
                     weights=stacked_weights, paths=paths, flipped=flipped,
                     sizes=sizes if len(sizes) == len(members) else [])

    def iter_batches(self, start: int = 0, end: Optional[int] = None) -> Iterator[Batch]:
        """micro_batch(i) for i = start, start + 1, ... (up to end, exclusive, when given)."""
        index = start
        while end is None or index < end:
            yield self.micro_batch(index)
            index += 1

    def __repr__(self) -> str:
        buckets = ", ".join(f"{w}x{h}: {len(ids)}" for (w, h), ids in self.groups.items())
        return (f"LatentDataset({len(self.samples)} images, {self.steps_per_epoch} steps per epoch, "
                f"buckets {buckets})")
