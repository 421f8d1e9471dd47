"""webui's schedule strings ("5e-6:12000, 5e-7:-1"): parsing with webui v1.10.1's rules, and Schedule, the
rate of every step of a run. Errors name the bad piece. Used for the learning rate and the gradient-clip value.
"""
from __future__ import annotations

import bisect
import logging
import math
from dataclasses import dataclass
from typing import Optional, Tuple

from .errors import ConfigError

logger = logging.getLogger(__name__)

END = -1  # webui's step for "until max steps"
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
    max_steps = _max_steps(max_steps)
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


def _step_index(step) -> int:
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"a step is a whole number >= 0, not {step!r}")
    return step


def _max_steps(value) -> int:
    try:
        number = None if isinstance(value, bool) else float(value)
    except (TypeError, ValueError):
        number = None
    if number is None or not math.isfinite(number) or number < 1 or number != int(number):
        raise ConfigError(f"max_steps: {value!r} must be a whole number >= 1")
    return int(number)
