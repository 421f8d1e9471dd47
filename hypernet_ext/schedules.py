"""Learning-rate and gradient-clip schedules, each a pure function of the optimizer step.

Owns webui's schedule strings ("5e-6:12000, 5e-7:-1"), linear warmup, cosine annealing with warm restarts,
ScheduleConfig, and LRSchedule, which the trainer asks for the rate and clip value of step k (k = steps done).
"""
from __future__ import annotations

import bisect
import logging
import math
from dataclasses import dataclass, field
from typing import Optional, Tuple

from .config import ConfigMixin
from .errors import ConfigError

logger = logging.getLogger(__name__)

END = -1  # webui's step for "until max steps"
KINDS = ("webui", "cosine")
CLIP_MODES = ("none", "value", "norm")
_CLIP_ALIASES = {"disabled": "none", "": "none", "off": "none"}  # webui's dropdown says "disabled"
_EXAMPLE = "'1e-5', or rate:step pieces such as '1e-5:1000, 1e-6:-1'"


@dataclass(frozen=True)
class Piece:
    """One comma-separated piece of a schedule string, as written (step None: a rate without a step)."""

    text: str
    rate: float
    step: Optional[int]

    @property
    def runs_to_end(self) -> bool:
        return self.step is None or self.step == END


def parse_pieces(text) -> Tuple[Piece, ...]:
    """Checks a schedule string without knowing max steps; raises ConfigError naming the first bad piece.

    As webui v1.10.1 does, empty pieces (a leading, trailing or doubled comma) are skipped. Pieces after one
    that runs to the end (a bare rate or ``rate:-1``) are returned too: webui never reads them, so they are
    not checked for order, but each must still be a valid piece (a non-number there is surely a typo).
    """
    if isinstance(text, bool) or not isinstance(text, (str, int, float)):
        raise ConfigError(f"{text!r} is not a schedule; write {_EXAMPLE}")
    text = str(text)
    chunks = [chunk for chunk in text.split(",") if chunk.strip()]
    if not chunks:
        only = " (it holds only commas)" if text.strip() else ""
        raise ConfigError(f"the schedule is empty{only}; write {_EXAMPLE}")
    pieces = []
    ended = False
    for chunk in chunks:
        piece = _parse_piece(chunk)
        if pieces and not ended:
            _check_order(pieces[-1], piece)
        ended = ended or piece.runs_to_end
        pieces.append(piece)
    return tuple(pieces)


def _parse_piece(chunk: str) -> Piece:
    text = chunk.strip()
    parts = text.split(":")
    if len(parts) > 2:
        raise ConfigError(f"'{text}': a piece holds one ':' (rate:step); separate pieces with commas")
    rate = _rate(text, parts[0].strip())
    step = _step(text, parts[1].strip()) if len(parts) == 2 else None
    return Piece(text, rate, step)


def _rate(piece: str, text: str) -> float:
    if not text:
        raise ConfigError(f"'{piece}': the rate before ':' is missing; write rate:step, e.g. 1e-5:1000")
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(f"'{piece}': the rate must be a number such as 1e-5, not '{text}'") from None
    if not math.isfinite(value):
        raise ConfigError(f"'{piece}': the rate must be a finite number, not '{text}'")
    if value == 0:
        raise ConfigError(f"'{piece}': a rate of 0 changes nothing; give a rate above 0")
    if value < 0:
        raise ConfigError(f"'{piece}': the rate {value:g} is negative; give a rate above 0")
    return value


def _step(piece: str, text: str) -> int:
    if not text:
        raise ConfigError(f"'{piece}': the step after ':' is missing; write rate:step, or the rate alone to keep "
                          "it until the end")
    try:
        value = int(text)   # what webui uses: '100', ' +100', '1_000' pass; '1e3', '100.0' do not
    except ValueError:
        hint = ""
        try:
            as_float = float(text)
            hint = f" (write {int(as_float)})" if as_float.is_integer() else ""
        except ValueError:
            pass
        raise ConfigError(f"'{piece}': the step must be an integer (a step number, or -1 for the end), "
                          f"not '{text}'{hint}") from None
    if value == 0:
        raise ConfigError(f"'{piece}': a piece that ends at step 0 never applies; give a step above 0")
    if value < 0 and value != END:
        raise ConfigError(f"'{piece}': the step {value} is negative; give a step above 0, or -1 for the end")
    return value


def _check_order(previous: Piece, piece: Piece) -> None:
    if piece.runs_to_end:
        return
    if piece.step == previous.step:
        raise ConfigError(f"'{piece.text}': ends at step {piece.step}, the same step as '{previous.text}'; "
                          "steps must increase from piece to piece")
    if piece.step < previous.step:
        raise ConfigError(f"'{piece.text}': ends at step {piece.step}, before '{previous.text}' (step "
                          f"{previous.step}); steps must increase from piece to piece")


@dataclass(frozen=True)
class Schedule:
    """A parsed schedule string. ``spans[i] = (rate, end)``: the rate of every step k (k = optimizer steps
    already done) with ``spans[i-1].end <= k < end``. Past ``end_step`` the last rate is kept (the clip
    schedule keeps its last value; training with the learning-rate schedule stops at ``end_step``)."""

    text: str
    max_steps: int
    spans: Tuple[Tuple[float, int], ...]
    unused: Tuple[str, ...] = ()    # pieces after the one that reaches max steps (or runs to the end): never applied
    unused_reason: str = ""         # why they are not used, for describe()

    def value_at(self, step: int) -> float:
        """The rate of optimizer step ``step`` (0-based: the number of steps already done)."""
        index = bisect.bisect_right([end for _, end in self.spans], _step_index(step))
        return self.spans[min(index, len(self.spans) - 1)][0]

    @property
    def end_step(self) -> int:
        """Steps done when the schedule ends: its last listed step, capped at max steps."""
        return self.spans[-1][1]

    @property
    def ends_early(self) -> bool:
        return self.end_step < self.max_steps

    @property
    def end_message(self) -> Optional[str]:
        """For the log and UI when the schedule stops training before max steps; None otherwise."""
        if not self.ends_early:
            return None
        return (f"Training stops after {self.end_step} steps, before max steps {self.max_steps}: the schedule "
                f"'{self.text}' ends there. Add a piece such as ', {self.spans[-1][0]:g}:-1' to train until "
                "max steps.")

    def steps_left(self, initial_step: int) -> int:
        """Optimizer steps a run resumed at ``initial_step`` takes before the schedule ends."""
        return max(0, self.end_step - _step_index(initial_step))

    def check_resume(self, initial_step: int) -> None:
        """ConfigError when a network already trained ``initial_step`` steps has nothing left to train."""
        if self.steps_left(initial_step) == 0:
            raise ConfigError(f"the network has already trained {initial_step} steps and the schedule "
                              f"'{self.text}' ends at step {self.end_step}; raise its last step or max steps, "
                              "or end it with ':-1'")

    def describe(self) -> str:
        out = ", ".join(f"{rate:g} until step {end}" for rate, end in self.spans)
        if self.unused:
            out += f" (not used, {self.unused_reason}: {', '.join(self.unused)})"
        return out


def parse_schedule(text, max_steps: int) -> Schedule:
    """Parse a webui schedule string for a run of ``max_steps`` optimizer steps.

    webui v1.10.1 semantics (learn_schedule.py, LearnRateScheduler.apply(optimizer, hypernetwork.step) before
    every step): empty pieces are skipped; ``rate:step`` applies to steps k < step from the previous piece's
    step on; ``rate:-1`` and a bare ``rate`` last until max steps, and webui reads no piece after them (nor
    do we: they are kept in ``unused`` with a warning); steps are capped at max steps and pieces after the one
    reaching max steps are never used. On resume, pieces already passed are skipped, which is what
    ``value_at(k)`` for k >= the resume step gives. One deviation: when a piece ends exactly at max steps and
    another follows, webui takes one extra step (k = max steps) at the next rate; we stop at max.
    """
    max_steps = _int("max_steps", max_steps, 1)
    pieces = parse_pieces(text)
    shown = str(text).strip()
    _warn_after_the_end(shown, pieces)
    spans = []
    for index, piece in enumerate(pieces):
        end = max_steps if piece.runs_to_end else min(piece.step, max_steps)
        spans.append((piece.rate, end))
        if end == max_steps:
            unused = tuple(p.text for p in pieces[index + 1:])
            if not unused:
                break
            if piece.runs_to_end:
                reason = f"after '{piece.text}', which runs until the end"
            else:
                reason = f"past max steps {max_steps}"
                logger.info("schedule %r: %s start after max steps %d and are not used", shown, unused, max_steps)
            return Schedule(shown, max_steps, tuple(spans), unused, reason)
    return Schedule(shown, max_steps, tuple(spans))


def _warn_after_the_end(shown: str, pieces: Tuple[Piece, ...]) -> None:
    """One warning naming the pieces after the first one that runs to the end: webui stops reading there."""
    ends = next((i for i, piece in enumerate(pieces) if piece.runs_to_end), len(pieces))
    ignored = [f"'{p.text}'" for p in pieces[ends + 1:]]
    if ignored:
        last = pieces[ends].text
        logger.warning("schedule '%s': %s come after '%s', which runs until the end, so they are not used (webui "
                       "ignores them too); remove them or give '%s' a step", shown, ", ".join(ignored), last, last)


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
        self.warmup_steps = _int("warmup_steps", self.warmup_steps, 0)
        self.warmup_start = _number("warmup_start", self.warmup_start, 0.0, 1.0)
        self.cycle_steps = _int("cycle_steps", self.cycle_steps, 1)
        self.cycle_mult = _number("cycle_mult", self.cycle_mult, 1.0, None)
        self.cycle_warmup = _int("cycle_warmup", self.cycle_warmup, 0)
        if self.cycle_warmup >= self.cycle_steps:
            raise ConfigError(f"cycle_warmup: {self.cycle_warmup} must be below cycle_steps ({self.cycle_steps}); "
                              "a cycle needs steps left to anneal")
        self.min_lr = _number("min_lr", self.min_lr, 0.0, None)
        self.gamma = _number("gamma", self.gamma, 0.0, 1.0)
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


def _schedule_text(name: str, value) -> str:
    try:
        parse_pieces(value)
    except ConfigError as err:
        raise ConfigError(f"{name}: {err}") from None
    return str(value).strip()


def _step_index(step) -> int:
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"a step is a whole number >= 0, not {step!r}")
    return step


def _int(name: str, value, minimum: int) -> int:
    number = _number(name, value, minimum, None, kind="a whole number")
    if number != int(number):
        raise ConfigError(f"{name}: {value!r} must be a whole number >= {minimum}")
    return int(number)


def _number(name: str, value, low: float, high: Optional[float], kind: str = "a number") -> float:
    try:
        number = None if isinstance(value, bool) else float(value)
    except (TypeError, ValueError):
        number = None
    if number is None or not math.isfinite(number) or number < low or (high is not None and number > high):
        bounds = f"between {low:g} and {high:g}" if high is not None else f">= {low:g}"
        raise ConfigError(f"{name}: {value!r} must be {kind} {bounds}")
    return number
