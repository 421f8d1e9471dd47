"""LatentDataset: prepared samples (latent moments on CPU, captions, alpha weights) and the data stream.

The stream is a pure function of (seed, step): ``batch(step)`` gives the same batch in every run, so a run
resumed at step k sees exactly the batches a straight run would. An epoch is every image ``repeats`` times,
grouped into single-bucket batches, in an order drawn from (seed, epoch); the per-sample choices (template
line, tag shuffle and dropout, flip, latent noise) are drawn from (seed, step, position in the batch).
"""
from __future__ import annotations

import hashlib
import numbers
import random
from dataclasses import dataclass
from typing import Dict, Iterator, List, NamedTuple, Optional, Sequence, Tuple

import torch

from .buckets import Size
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
    weight: Optional[torch.Tensor]      # (1, h, w) alpha loss weight with mean 1, or None


@dataclass
class Batch:
    """What the trainer gets for one step. Tensors are float32 on CPU."""
    step: int
    epoch: int
    latents: torch.Tensor               # (B, C, h, w), already multiplied by the scale factor
    prompts: List[str]
    weights: Optional[torch.Tensor]     # (B, 1, h, w) when use_alpha_weight, else None
    paths: List[str]
    flipped: List[bool]

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

    def epoch_of(self, step: int) -> int:
        return step // self.steps_per_epoch

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

    def batch(self, step: int) -> Batch:
        """The batch of optimizer step ``step`` (0-based): a pure function of the config's seed and ``step``."""
        if isinstance(step, bool) or not isinstance(step, numbers.Integral) or step < 0:
            raise ValueError(f"step must be a whole number >= 0, not {step!r}")
        step = int(step)
        epoch, position = divmod(step, self.steps_per_epoch)
        indices = self.epoch_plan(epoch)[position]
        cfg = self.config
        latents, prompts, weights, paths, flipped = [], [], [], [], []
        for slot, index in enumerate(indices):
            sample = self.samples[index]
            rng = random.Random(mix_seed(cfg.seed, "sample", step, slot))
            prompts.append(make_prompt(self.template_lines, cfg.name, sample.caption, cfg.shuffle_tags,
                                       cfg.tag_dropout, rng))
            flip = cfg.flip > 0 and len(sample.latents) > 1 and rng.random() < cfg.flip
            source = sample.latents[1 if flip else 0]
            latent = source.mean
            if source.std is not None:
                noise = torch.randn(source.mean.shape, generator=generator(cfg.seed, "noise", step, slot))
                latent = source.mean + source.std * noise
            latents.append(latent * self.scale_factor)
            if sample.weight is not None:
                weights.append(sample.weight.flip(-1) if flip else sample.weight)
            paths.append(sample.path)
            flipped.append(flip)
        stacked_weights = torch.stack(weights) if cfg.use_alpha_weight and weights else None
        return Batch(step=step, epoch=epoch, latents=torch.stack(latents), prompts=prompts,
                     weights=stacked_weights, paths=paths, flipped=flipped)

    def iter_batches(self, start_step: int = 0, end_step: Optional[int] = None) -> Iterator[Batch]:
        """batch(k) for k = start_step, start_step + 1, ... (up to end_step, exclusive, when given)."""
        step = start_step
        while end_step is None or step < end_step:
            yield self.batch(step)
            step += 1

    def __repr__(self) -> str:
        buckets = ", ".join(f"{w}x{h}: {len(ids)}" for (w, h), ids in self.groups.items())
        return (f"LatentDataset({len(self.samples)} images, {self.steps_per_epoch} steps per epoch, "
                f"buckets {buckets})")
