"""Learning-rate and gradient-clip schedules, each a pure function of the optimizer step.

Owns linear warmup, cosine annealing with warm restarts, ScheduleConfig, and LRSchedule, which the trainer asks
for the rate and clip value of step k (k = steps done). webui's schedule strings live in schedule_strings.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Optional, Tuple

from .config import ConfigMixin, real_number, whole_number
from .errors import ConfigError
from .schedule_strings import END, Piece, Schedule, _step_index, parse_pieces, parse_schedule

__all__ = ["END", "KINDS", "CLIP_MODES", "Piece", "Schedule", "parse_pieces", "parse_schedule", "warmup_factor",
           "CosineRestarts", "ScheduleConfig", "LRSchedule"]

logger = logging.getLogger(__name__)

KINDS = ("webui", "cosine")
CLIP_MODES = ("none", "value", "norm")
_CLIP_ALIASES = {"disabled": "none", "": "none", "off": "none"}  # webui's dropdown says "disabled"



def warmup_factor(step: int, warmup_steps: int, start: float = 0.0) -> float:
    """Linear warmup over the first ``warmup_steps`` steps: step k < warmup_steps gets
    ``start + (1 - start) * (k + 1) / warmup_steps``, so the first step already moves the weights and step
    ``warmup_steps - 1`` runs at the full rate; 1 from then on."""
    step = _step_index(step)
    if step >= warmup_steps:
        return 1.0
    return start + (1.0 - start) * (step + 1) / warmup_steps


@dataclass(frozen=True)
class CosineRestarts:
    """Cosine annealing with warm restarts (SGDR), as the peer extension offers it, as pure functions.

    Cycle i has ``round(cycle_steps * cycle_mult**i)`` steps. Inside a cycle, t steps after its start, the
    peak is ``peak * gamma**i``; for t < cycle_warmup the rate rises linearly from min_lr (t = 0) to the peak
    (t = cycle_warmup), then follows half a cosine from the peak down towards min_lr at the cycle's end.
    min_lr is a floor: a peak below it gives min_lr.
    """

    cycle_steps: int
    cycle_mult: float = 1.0
    cycle_warmup: int = 0
    min_lr: float = 0.0
    gamma: float = 1.0

    def cycle_at(self, step: int) -> Tuple[int, int, int]:
        """(cycle index, steps since the cycle started, cycle length) of ``step``."""
        step = _step_index(step)
        if self.cycle_mult == 1.0:
            index, offset = divmod(step, self.cycle_steps)
            return index, offset, self.cycle_steps
        index, start, length = 0, 0, self.cycle_steps
        while step >= start + length:
            start += length
            index += 1
            length = round(self.cycle_steps * self.cycle_mult ** index)
        return index, step - start, length

    def value_at(self, step: int, peak: float) -> float:
        index, offset, length = self.cycle_at(step)
        top = peak * self.gamma ** index
        low, warm = self.min_lr, self.cycle_warmup
        if offset < warm:
            value = low + (top - low) * offset / warm
        else:
            value = low + (top - low) * 0.5 * (1.0 + math.cos(math.pi * (offset - warm) / (length - warm)))
        return max(value, low)


@dataclass
class ScheduleConfig(ConfigMixin):
    """How the learning rate and the gradient-clip value change over the optimizer steps."""

    learn_rate: str = field(default="0.00001", metadata={
        "help": "webui schedule string: a rate ('1e-5'), or rate:step pieces ('5e-6:12000, 5e-7:-1'); a rate "
                "applies until its step, -1 = until max steps. Training stops at the last step listed."})
    kind: str = field(default="webui", metadata={
        "help": "webui: the schedule string as is; cosine: cosine annealing with warm restarts whose peak is "
                "the schedule string's rate at that step."})
    warmup_steps: int = field(default=0, metadata={
        "help": "Linear warmup over the first N steps (0: none); multiplies whatever the schedule gives."})
    warmup_start: float = field(default=0.0, metadata={
        "help": "Warmup starts from this fraction of the rate (0 to 1) and rises linearly: the first step runs "
                "at start + (1 - start) / N of the rate, the N-th at the full rate."})
    cycle_steps: int = field(default=1000, metadata={"help": "Cosine: steps in the first cycle."})
    cycle_mult: float = field(default=1.0, metadata={
        "help": "Cosine: each cycle is this many times longer than the one before (1 or more)."})
    cycle_warmup: int = field(default=0, metadata={
        "help": "Cosine: steps at the start of every cycle that rise linearly from the minimum to the peak."})
    min_lr: float = field(default=0.0, metadata={"help": "Cosine: the lowest learning rate (0 or more)."})
    gamma: float = field(default=1.0, metadata={
        "help": "Cosine: each cycle's peak is this times the previous one's (0 < gamma <= 1; 1: no decay)."})
    clip_grad_mode: str = field(default="none", metadata={
        "help": "Gradient clipping: none, value (clip each gradient element) or norm (clip the total norm)."})
    clip_grad_value: str = field(default="0.1", metadata={
        "help": "Clip value or norm, as a schedule string like the learning rate ('0.1', '0.5:1000, 0.1:-1'); "
                "after its last step it keeps its last value."})

    def __post_init__(self):
        kind = str(self.kind or "webui").strip().lower()
        if kind not in KINDS:
            raise ConfigError(f"kind: {self.kind!r} is unknown; choose one of {', '.join(KINDS)}")
        self.kind = kind
        mode = str(self.clip_grad_mode if self.clip_grad_mode is not None else "none").strip().lower()
        mode = _CLIP_ALIASES.get(mode, mode)
        if mode not in CLIP_MODES:
            raise ConfigError(f"clip_grad_mode: {self.clip_grad_mode!r} is unknown; choose one of "
                              f"{', '.join(CLIP_MODES)}")
        self.clip_grad_mode = mode
        self.learn_rate = _schedule_text("learn_rate", self.learn_rate)
        if mode != "none":
            self.clip_grad_value = _schedule_text("clip_grad_value", self.clip_grad_value)
        self.warmup_steps = whole_number("warmup_steps", self.warmup_steps, 0)
        self.warmup_start = real_number("warmup_start", self.warmup_start, 0.0, 1.0)
        self.cycle_steps = whole_number("cycle_steps", self.cycle_steps, 1)
        self.cycle_mult = real_number("cycle_mult", self.cycle_mult, 1.0, None)
        self.cycle_warmup = whole_number("cycle_warmup", self.cycle_warmup, 0)
        if self.cycle_warmup >= self.cycle_steps:
            raise ConfigError(f"cycle_warmup: {self.cycle_warmup} must be below cycle_steps ({self.cycle_steps}); "
                              "a cycle needs steps left to anneal")
        self.min_lr = real_number("min_lr", self.min_lr, 0.0, None)
        self.gamma = real_number("gamma", self.gamma, 0.0, 1.0)
        if self.gamma == 0:
            raise ConfigError("gamma: 0 would make every cycle after the first flat at min_lr; give 0 < gamma <= 1")


@dataclass(frozen=True)
class LRSchedule:
    """The learning rate and clip value of every optimizer step of one run (``max_steps`` steps at most)."""

    config: ScheduleConfig
    rates: Schedule
    clip: Optional[Schedule] = None
    cosine: Optional[CosineRestarts] = None

    @classmethod
    def from_config(cls, config, max_steps: int) -> "LRSchedule":
        if isinstance(config, dict):
            config = ScheduleConfig.from_dict(config)
        rates = parse_schedule(config.learn_rate, max_steps)
        clip = parse_schedule(config.clip_grad_value, max_steps) if config.clip_grad_mode != "none" else None
        cosine = None
        if config.kind == "cosine":
            top = max(rate for rate, _ in rates.spans)
            if config.min_lr >= top:
                raise ConfigError(f"min_lr: {config.min_lr:g} is not below the learning rates of "
                                  f"'{rates.text}' (highest {top:g}); the cosine would stay flat at min_lr")
            cosine = CosineRestarts(config.cycle_steps, config.cycle_mult, config.cycle_warmup, config.min_lr,
                                    config.gamma)
        return cls(config, rates, clip, cosine)

    def lr_at(self, step: int) -> float:
        """Learning rate of step ``step``: schedule string, then cosine (peak = that rate), times warmup."""
        value = self.rates.value_at(step)
        if self.cosine is not None:
            value = self.cosine.value_at(step, value)
        return value * warmup_factor(step, self.config.warmup_steps, self.config.warmup_start)

    def clip_at(self, step: int) -> Optional[float]:
        """Clip value (mode 'value') or max norm (mode 'norm') of step ``step``; None when clipping is off."""
        return None if self.clip is None else self.clip.value_at(step)

    @property
    def clip_mode(self) -> str:
        return self.config.clip_grad_mode

    @property
    def max_steps(self) -> int:
        return self.rates.max_steps

    @property
    def end_step(self) -> int:
        return self.rates.end_step

    @property
    def ends_early(self) -> bool:
        return self.rates.ends_early

    @property
    def end_message(self) -> Optional[str]:
        return self.rates.end_message

    def describe(self) -> str:
        """The schedule in words, as the Train tab shows it back before a run: '0.001 until step 100, then 1e-5
        until step 1000', with warmup, cosine cycles, pieces not used, an early end and clipping when set."""
        c = self.config
        parts = [", then ".join(f"{number_text(rate)} until step {end}" for rate, end in self.rates.spans)]
        if self.cosine is not None:
            cycles = f"cosine cycles of {c.cycle_steps} steps"
            if c.cycle_mult != 1:
                cycles += f", each {c.cycle_mult:g} times longer"
            if c.cycle_warmup:
                cycles += f", rising over their first {c.cycle_warmup} steps"
            if c.gamma != 1:
                cycles += f", peaks times {c.gamma:g} per cycle"
            parts.append(f"each rate the peak of {cycles}, down to {number_text(c.min_lr)}")
        if c.warmup_steps:
            parts.insert(0, f"warmup over {c.warmup_steps} steps from {c.warmup_start:g} of the rate")
        if self.rates.unused:
            parts.append(f"not used ({self.rates.unused_reason}): {', '.join(self.rates.unused)}")
        if self.ends_early:
            parts.append(f"training stops at step {self.end_step}, before max steps {self.max_steps}")
        if self.clip is not None:
            clip = ", then ".join(f"{number_text(value)} until step {end}" for value, end in self.clip.spans)
            parts.append(f"gradients clipped by {self.clip_mode} at {clip}")
        return "; ".join(parts)


def number_text(value: float) -> str:
    """A rate as people write it: 0.001, 1e-5 (not 1e-05)."""
    text = f"{value:g}"
    if "e" in text:
        mantissa, exponent = text.split("e")
        text = f"{mantissa}e{int(exponent)}"
    return text


def _schedule_text(name: str, value) -> str:
    try:
        parse_pieces(value)
    except ConfigError as err:
        raise ConfigError(f"{name}: {err}") from None
    return str(value).strip()
