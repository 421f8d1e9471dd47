"""The learning-rate range test: a short run on a copy of the network with the rate rising exponentially.

``find_lr(host, network, dataset, config)`` trains a deep copy of ``network`` (the caller's network and its file
are never touched; nothing is written) with the run's optimizer, data and loss, the rate going from
``FindLRConfig.start`` to ``end`` over ``steps`` steps, and stops when the smoothed loss blows up. It suggests a
starting rate (a tenth of the rate with the lowest smoothed loss) and a webui schedule string.
"""
from __future__ import annotations

import copy
import logging
import math
import tempfile
import time
from dataclasses import dataclass, field
from typing import List, Optional

from ..host import Callbacks
from .config import FindLRConfig, GuardConfig, TrainConfig, ValidationConfig
from .trainer import Trainer

logger = logging.getLogger(__name__)


@dataclass
class LRFinderResult:
    """The curve (one entry per step run) and what it suggests."""
    rates: List[float] = field(default_factory=list)
    losses: List[float] = field(default_factory=list)
    smoothed: List[float] = field(default_factory=list)      # bias-corrected moving average of the losses
    suggestion: Optional[float] = None                       # a starting learning rate
    schedule: str = ""                                       # a webui schedule string starting at the suggestion
    blew_up_at: Optional[float] = None                       # the rate at which the loss blew up (None: never)
    note: str = ""                                           # what the user should know about the curve

    @property
    def best_rate(self) -> Optional[float]:
        """The rate with the lowest smoothed loss."""
        finite = [(s, r) for s, r in zip(self.smoothed, self.rates) if math.isfinite(s)]
        return min(finite)[1] if finite else None

    def summary(self) -> str:
        """A few lines for the user: the suggestion, the schedule and where the loss blew up."""
        blew = f"the loss blew up at lr {self.blew_up_at:.3g}" if self.blew_up_at is not None else \
            f"the loss did not blow up up to lr {self.rates[-1]:.3g}" if self.rates else "no step was run"
        lines = [f"range test: {len(self.rates)} steps; {blew}"]
        if self.suggestion is not None:
            lines.append(f"lowest smoothed loss at lr {self.best_rate:.3g}; suggested learning rate "
                         f"{self.suggestion:.2g}, schedule '{self.schedule}'")
        if self.note:
            lines.append(self.note)
        return "\n".join(lines)

    def table(self, rows: int = 12) -> str:
        """About ``rows`` evenly spaced (rate, loss, smoothed loss) lines."""
        every = max(1, len(self.rates) // rows)
        picked = sorted(set(range(0, len(self.rates), every)) | ({len(self.rates) - 1} if self.rates else set()))
        lines = [f"{'lr':>10} {'loss':>10} {'smoothed':>10}"]
        lines += [f"{self.rates[i]:10.3g} {self.losses[i]:10.5g} {self.smoothed[i]:10.5g}" for i in picked]
        return "\n".join(lines)

    def plot(self, size=(640, 360)):
        """Loss (grey) and smoothed loss (blue) against the rate on a log axis; the suggestion in green and
        the blow-up in red. A PIL image."""
        from .plots import Marker, Panel, Series, chart

        markers = []
        if self.suggestion is not None:
            markers.append(Marker(self.suggestion, (40, 150, 60), f"suggested {self.suggestion:.2g}"))
        if self.blew_up_at is not None:
            markers.append(Marker(self.blew_up_at, (200, 40, 40), f"blew up {self.blew_up_at:.2g}"))
        panel = Panel([Series(self.rates, self.losses, (170, 170, 170)),
                       Series(self.rates, self.smoothed, (30, 90, 200), width=2)],
                      title="learning-rate range test: loss against the rate", x_label="lr", log_x=True,
                      markers=markers)
        return chart([panel], size)


class _RangeTest(Trainer):
    """A Trainer whose rate is the range test's and whose loop stops when the loss blows up; nothing is saved."""

    def __init__(self, host, network, dataset, config: TrainConfig, finder: FindLRConfig, callbacks, out_dir: str):
        run = config.replace(out_dir=out_dir, steps=finder.steps, save_every=0, preview_every=0, tensorboard=False,
                             validation=ValidationConfig(), guard=GuardConfig(diverge_steps=0),
                             max_bad_steps=finder.steps)
        run.schedule = run.schedule.replace(learn_rate=f"{finder.start!r}")   # only its clip value is used
        super().__init__(host, copy.deepcopy(network), dataset, run, callbacks)
        self.network.step = 0
        self.finder = finder
        self.curve = LRFinderResult()

    def rate(self, index: int) -> float:
        finder = self.finder
        return finder.start * (finder.end / finder.start) ** (index / (finder.steps - 1))

    def _loop(self, end, log):
        curve, beta = self.curve, self.finder.smoothing
        average, lowest, started = 0.0, math.inf, time.monotonic()
        for index in range(self.finder.steps):
            if self.callbacks.should_stop():
                curve.note = f"stopped on request after {index} steps"
                break
            lr = self.rate(index)
            outcome = self._step(index, lr)
            average = beta * average + (1 - beta) * outcome.loss
            smoothed = average / (1 - beta ** (index + 1))
            curve.rates.append(lr)
            curve.losses.append(outcome.loss)
            curve.smoothed.append(smoothed)
            eta = (time.monotonic() - started) / (index + 1) * (self.finder.steps - index - 1)
            self.callbacks.on_progress(index + 1, self.finder.steps, outcome.loss if math.isfinite(outcome.loss)
                                       else None, lr, eta)
            if not math.isfinite(smoothed) or smoothed > self.finder.blowup * lowest:
                curve.blew_up_at = lr
                break
            lowest = min(lowest, smoothed)
        return None


def find_lr(host, network, dataset, config: TrainConfig, finder: Optional[FindLRConfig] = None,
            callbacks: Optional[Callbacks] = None) -> LRFinderResult:
    """Run the range test (see the module docstring) with ``config``'s optimizer, loss and precision settings on
    a copy of ``network``; progress goes to ``callbacks.on_progress`` (step, steps, loss, lr, eta) and a stop
    request ends it early. Returns the curve with the suggested rate and schedule string."""
    finder = finder or FindLRConfig()
    with tempfile.TemporaryDirectory(prefix="hypernet-lr-find-") as scratch:   # the loop's log: left empty
        test = _RangeTest(host, network, dataset, config, finder, callbacks, scratch)
        test._setup()
        try:
            test._run(finder.steps)
        finally:
            test._finish_network()
    curve = test.curve
    _suggest(curve, config.steps, finder)
    logger.info("%s", curve.summary())
    return curve


def _suggest(curve: LRFinderResult, steps: int, finder: FindLRConfig) -> None:
    """A tenth of the rate with the lowest smoothed loss, and a schedule: that rate for the first half of the
    run, a tenth of it for the rest."""
    best = curve.best_rate
    if best is None:
        curve.note = "no finite loss: lower the start rate or check the data"
        return
    curve.suggestion = best / 10
    curve.schedule = f"{curve.suggestion:.2g}:{max(1, steps // 2)}, {curve.suggestion / 10:.2g}:-1"
    if curve.blew_up_at is None:
        curve.note = (f"the loss did not blow up: raise end above {finder.end:g} (or steps) to see where it does; "
                      "the suggestion may be too low")
    elif best == curve.rates[0]:
        curve.note = f"the loss was lowest at the first rate: lower start below {finder.start:g} and run again"
