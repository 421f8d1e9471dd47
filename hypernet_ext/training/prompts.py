"""Conditioning computed once per distinct prompt: the prompts a data set can give, and a HostModel wrapper that
answers ``encode_prompts`` from a cache, so the text encoder runs once per prompt and can then leave the GPU;
``conditioning`` adds each image's size conditioning on hosts that have it (SDXL), after the cache.

Rows of different lengths in one batch (prompts past 75 tokens have more chunks) are padded by repeating their
last vector, as webui's own trainer stacks cached conditioning (``stack_conds``).
"""
from __future__ import annotations

import logging
import random
from typing import Any, Callable, Dict, List, Optional, Sequence

import torch

from ..data.captions import make_prompt
from ..errors import TrainingError

logger = logging.getLogger(__name__)

PROMPT_LIMIT = 4096   # distinct prompts worth encoding ahead of a run (27 template lines x 150 captions)


def dataset_prompts(dataset, limit: int = PROMPT_LIMIT) -> Optional[List[str]]:
    """Every prompt ``dataset`` can put in a batch, in a stable order; None when they cannot be listed (tag
    shuffle or tag dropout make them unbounded) or there are more than ``limit``."""
    config = dataset.config
    if config.shuffle_tags or config.tag_dropout > 0:
        return None
    lines = dataset.template_lines
    unused = random.Random(0)   # a fixed line and no shuffle or dropout: make_prompt draws nothing
    prompts: Dict[str, None] = {}
    for sample in dataset.samples:
        for line in range(len(lines)):
            prompts[make_prompt(lines, config.name, sample.caption, False, 0.0, unused, line=line)] = None
            if len(prompts) > limit:
                return None
    return list(prompts)


def conditioning(host, prompts: Sequence[str], sizes: Optional[Sequence] = None) -> Any:
    """The conditioning of a batch: ``host.encode_prompts(prompts)``, then, for hosts with size conditioning
    (SDXL: ``size_conditioning(cond, sizes)``), each image's original size, crop and target size."""
    cond = host.encode_prompts(list(prompts))
    add_sizes = getattr(host, "size_conditioning", None)
    return add_sizes(cond, list(sizes)) if add_sizes is not None and sizes else cond


def stack_rows(rows: Sequence[Any]) -> Any:
    """One batch from per-prompt rows (tensors (T, C), or dicts of them as SDXL gives); shorter rows of a tensor
    are padded to the longest by repeating their last vector."""
    if isinstance(rows[0], dict):
        return {key: stack_rows([row[key] for row in rows]) for key in rows[0]}
    length = max(row.shape[0] for row in rows) if rows[0].dim() >= 2 else None
    if length is not None:
        rows = [row if row.shape[0] == length else
                torch.cat([row, row[-1:].expand(length - row.shape[0], *row.shape[1:])]) for row in rows]
    return torch.stack(list(rows))


def _split(cond: Any, count: int) -> List[Any]:
    if isinstance(cond, dict):
        parts = {key: _split(value, count) for key, value in cond.items()}
        return [{key: parts[key][i] for key in parts} for i in range(count)]
    if not isinstance(cond, torch.Tensor) or cond.shape[0] != count:
        raise TrainingError(f"the model's conditioning for {count} prompts is {type(cond).__name__} "
                            f"{tuple(getattr(cond, 'shape', ()))}; expected one row per prompt")
    return [row.detach() for row in cond]


class CachedConditioning:
    """A HostModel that takes ``encode_prompts`` from a per-prompt cache; everything else is ``host``'s.

    ``fill(prompts)`` encodes ahead of the run; a prompt not yet cached is encoded by ``host`` when asked for,
    unless ``sealed`` (the text encoder is gone), which makes a miss a TrainingError.
    """

    def __init__(self, host, batch_size: int = 8):
        self.host = host
        self.batch_size = max(1, int(batch_size))
        self.rows: Dict[str, Any] = {}
        self.sealed = False
        self.encoded = 0   # prompts the host encoded

    def __getattr__(self, name):   # only called for what this class does not define
        return getattr(self.host, name)

    def fill(self, prompts: Sequence[str], progress: Optional[Callable[[int, int], None]] = None) -> None:
        """Encode every prompt of ``prompts`` not cached yet, ``batch_size`` at a time."""
        todo = [p for p in dict.fromkeys(prompts) if p not in self.rows]
        for start in range(0, len(todo), self.batch_size):
            self._encode(todo[start:start + self.batch_size])
            if progress is not None:
                progress(min(start + self.batch_size, len(todo)), len(todo))

    def _encode(self, prompts: List[str]) -> None:
        if self.sealed:
            raise TrainingError(f"no cached conditioning for {prompts[0]!r} and the text encoder was moved "
                                "off the device; turn off moving the text encoder to the CPU")
        with torch.no_grad():
            cond = self.host.encode_prompts(list(prompts))
        for prompt, row in zip(prompts, _split(cond, len(prompts))):
            self.rows[prompt] = row
        self.encoded += len(prompts)

    def encode_prompts(self, prompts: List[str]) -> Any:
        missing = [p for p in dict.fromkeys(prompts) if p not in self.rows]
        if missing:
            self._encode(missing)
        return stack_rows([self.rows[p] for p in prompts])


def cache_conditioning(host, dataset, progress: Optional[Callable[[int, int], None]] = None):
    """``(CachedConditioning over host, number of prompts encoded ahead or None)``: every prompt ``dataset`` can
    give is encoded before the run, in a fixed order and batches, so a run and its resume see the same rows; when
    the prompts cannot be listed (tag shuffle or dropout) they are encoded as they come and not kept."""
    prompts = dataset_prompts(dataset)
    if prompts is None:
        return host, None
    cached = CachedConditioning(host)
    cached.fill(prompts, progress)
    logger.info("%d distinct prompts encoded once", len(prompts))
    return cached, len(prompts)
