"""The Hypernetwork: one (k, v) module pair per attention width, plus the facts stored beside the weights.

All weights live in ``self.layers`` (a ModuleDict keyed by width), so ``state_dict`` holds everything and
saving is a walk over ``pairs()``. Strength is not stored here: attach() passes it per use.
"""
from __future__ import annotations

import datetime
import secrets
from typing import Dict, Iterator, Optional, Tuple

import torch
from torch import nn

from .config import NetworkConfig
from .errors import ConfigError
from .layers import HypernetworkModule


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()


class Hypernetwork(nn.Module):
    """A hypernetwork: ``layers[str(width)]`` is a ModuleList ``[k, v]`` of HypernetworkModule."""

    def __init__(self, config: NetworkConfig, name: str = "hypernetwork", *, init: bool = True):
        super().__init__()
        if not isinstance(config, NetworkConfig):
            raise ConfigError(f"config: expected a NetworkConfig, got {type(config).__name__}")
        if init and config.seed is None:
            config = config.replace(seed=secrets.randbits(63))  # recorded, so the start can be reproduced
        self.config = config
        self.name = name
        self.step = 0
        self.sd_checkpoint: Optional[str] = None
        self.sd_checkpoint_name: Optional[str] = None
        self.created: Optional[str] = _now() if init else None
        self.extra: Dict[str, object] = {}  # training settings and other metadata, kept through save/load
        gen = None
        if init:
            gen = torch.Generator(device="cpu")
            gen.manual_seed(int(config.seed))
        self.layers = nn.ModuleDict()
        # torch's default Linear init draws from the global RNG; fork it so creating a network never
        # changes the caller's random stream (our own init uses only ``gen``).
        with torch.random.fork_rng(devices=[]):
            for width in config.sizes:
                self.layers[str(width)] = nn.ModuleList([HypernetworkModule(width, config, gen),
                                                         HypernetworkModule(width, config, gen)])
        self.eval()

    @classmethod
    def create(cls, config: Optional[NetworkConfig] = None, name: str = "hypernetwork", **fields) -> "Hypernetwork":
        """A new network with freshly initialised weights; ``fields`` override the config's."""
        config = (config or NetworkConfig()).replace(**fields) if fields else (config or NetworkConfig())
        return cls(config, name=name)

    @property
    def widths(self) -> Tuple[int, ...]:
        return tuple(int(w) for w in self.layers.keys())

    def pair(self, width: int) -> Optional[Tuple[HypernetworkModule, HypernetworkModule]]:
        """The (k, v) modules for ``width``, or None when this network does not cover it."""
        pair = self.layers[str(width)] if str(width) in self.layers else None
        return (pair[0], pair[1]) if pair is not None else None

    def pairs(self) -> Iterator[Tuple[int, HypernetworkModule, HypernetworkModule]]:
        for width, pair in self.layers.items():
            yield int(width), pair[0], pair[1]

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def metadata(self) -> dict:
        """Everything but the weights, as plain JSON-able values."""
        return {
            "name": self.name, "step": int(self.step), "sd_checkpoint": self.sd_checkpoint,
            "sd_checkpoint_name": self.sd_checkpoint_name, "created": self.created,
            "config": self.config.to_dict(), "extra": dict(self.extra),
        }

    def forward(self, context: torch.Tensor, strength: float = 1.0) -> Tuple[torch.Tensor, torch.Tensor]:
        """(k-context, v-context) for ``context``; unchanged when its width is not covered."""
        pair = self.pair(context.shape[-1])
        if pair is None:
            return context, context
        return pair[0](context, strength), pair[1](context, strength)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, step={self.step}, widths={list(self.widths)}"
