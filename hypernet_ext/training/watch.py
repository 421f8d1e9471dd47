"""Validation, the overtraining guard and the best snapshot, hooked into the trainer's loop.

Each step the trainer calls ``check`` (the validation when due, the guard's decision, the loss-log cells) and,
after its snapshot and preview, ``act`` (write ``<name>-best.pt`` on a new best, then carry out the guard's
action). A rollback restores the best snapshot the way a resume does (weights, step, a new optimizer loaded from
its .optim, scaler, RNG), keeps the guard's own history, and goes on at the lowered rate.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import List, Optional, Tuple

from ..checkpoint import set_aside_snapshots
from ..errors import HypernetError
from ..optim import optimizer_train_mode
from .guard import Guard, GuardEvent
from .resume import restore
from .validation import ValidationResult, build_validation

logger = logging.getLogger(__name__)

STOP, ROLLBACK = "stop", "rollback"


class Watch:
    """One run's validation set, guard and best snapshot (see the module docstring)."""

    def __init__(self, trainer):
        self.trainer = trainer
        config = trainer.config
        self.validation, trainer.dataset, text = build_validation(config.validation, trainer.dataset, trainer.host)
        if text:
            trainer.message(text)
        self.every = config.validation.every
        self.guard = Guard(config.guard, config.validation if self.validation is not None else None)
        self.events: List[GuardEvent] = []
        self._pending: Tuple[Optional[ValidationResult], bool, Optional[GuardEvent]] = (None, False, None)
        self._rolling_back = False

    @property
    def widths(self) -> Tuple[int, ...]:
        """The widths with their own log columns (those of the network, when validating)."""
        return tuple(sorted(self.trainer.network.widths)) if self.validation is not None else ()

    @property
    def best_path(self) -> Path:
        return self.trainer.out_dir / f"{self.trainer.name}-best.pt"

    def lr_at(self, index: int) -> float:
        """The rate of step ``index``: the schedule's (a pure function of the step) times the guard's factor."""
        return self.trainer.schedule.lr_at(index) * self.guard.lr_factor

    # ---- the loop's hooks ----

    def start(self, log) -> None:
        """Before the first step, when there is no best yet: a baseline evaluation, which is the first best."""
        if self.validation is None or self.guard.best_step is not None:
            return
        step = int(self.trainer.network.step)
        log.write_cells(dict(self.check(step, 0, force=True), step=step))
        self.act()

    def check(self, step: int, bad_streak: int, force: bool = False) -> dict:
        """Validate when due; the guard decides (its rate factor changes at once, so snapshots written before
        ``act`` already hold it). Returns the loss-log cells of the step."""
        cells = {"lr_factor": f"{self.guard.lr_factor:.8g}"}
        result, improved, event = None, False, None
        if self.validation is not None and (force or step % self.every == 0):
            result = self._validate(step)
            improved, event = self.guard.observe(result)
            cells.update(result.cells())
            self.trainer.network.extra["validation"] = {"step": result.step, "loss": result.loss,
                                                        "best_step": self.guard.best_step,
                                                        "best_loss": self.guard.best_loss}
        event = event or self.guard.diverging(step, bad_streak)
        if event is not None:
            cells["guard"] = event.action
        self._pending = (result, improved, event)
        return cells

    def act(self) -> Optional[str]:
        """Write the best snapshot when the last check found one; carry out the guard's action. Returns STOP
        when the run must end (at its best snapshot), ROLLBACK when the weights went back, else None."""
        result, improved, event = self._pending
        self._pending = (None, False, None)
        if improved:
            written = self.trainer._save(final=False, best=True)
            self.trainer.result.best_path = str(written)
            self.trainer.result.best = (result.step, result.loss)
        if event is None:
            return None
        self.events.append(event)
        verdict, done = None, "nothing else was changed (choose lower-lr, rollback or stop to act)"
        if event.action == "lower-lr":
            done = f"the learning rate is {event.lr_factor:g}x the schedule's from now on"
        elif event.action in (ROLLBACK, STOP):
            restored = self._restore_best()
            if event.action == STOP:
                verdict = STOP
                self.trainer.result.stopped_by_guard = True
                done = (f"the run ends at its best snapshot, step {self.guard.best_step} (validation loss "
                        f"{self.guard.best_loss:.6g})" if restored else "the run ends here (no best snapshot)")
            elif restored:
                verdict = ROLLBACK
                done = (f"weights and optimizer state of step {self.guard.best_step} restored from "
                        f"{self.best_path.name}; training goes on from there at {event.lr_factor:g}x the "
                        "schedule's rate")
            else:
                done = f"no best snapshot to go back to: the rate is {event.lr_factor:g}x the schedule's from now on"
        text = f"{event.text}: {done}"
        self.trainer.result.guard_events.append(text)
        self.trainer.message(text, warning=True)
        self.trainer.callbacks.on_guard(event.step, event.action, event.reason, text)
        return verdict

    # ---- state ----

    def state_dict(self) -> dict:
        return self.guard.state_dict()

    def load_state_dict(self, state) -> list:
        """The guard's state from a resumed checkpoint; a rollback keeps its own (it has just decided)."""
        return [] if self._rolling_back else self.guard.load_state_dict(state)

    # ---- inside ----

    def _validate(self, step: int) -> ValidationResult:
        trainer = self.trainer
        result = self.validation.evaluate(trainer.host, trainer.network, step, trainer.runner.autocast_dtype)
        width, effect = result.max_effect
        logger.info("validation at step %d: loss %.6g, effect size %.4g (width %s)", step, result.loss, effect, width)
        trainer.result.validation.append((result.step, result.loss))
        trainer.callbacks.on_validation(step, result.loss, dict(result.effect), dict(result.weight_norm))
        return result

    def _restore_best(self) -> bool:
        """Weights, step and optimizer state of the best snapshot, as a resume from it would set them."""
        trainer, path = self.trainer, self.best_path
        if self.guard.best_step is None or not path.is_file():
            return False
        from .. import formats

        try:
            best = formats.load(path)
        except (HypernetError, OSError) as err:
            trainer.message(f"the best snapshot {path} cannot be read ({err})", warning=True)
            return False
        if best.step != self.guard.best_step:
            trainer.message(f"{path} holds step {best.step}, not the best step {self.guard.best_step} (another "
                            "run wrote it?); it is not used", warning=True)
            return False
        trainer.network.load_state_dict(best.state_dict())
        trainer.network.step = trainer.result.step = best.step
        trainer.network.extra["validation"] = best.extra.get("validation")
        trainer.new_optimizer()
        self._rolling_back = True
        try:
            messages = restore(trainer, path)
        finally:
            self._rolling_back = False
        for text, warning in messages:
            trainer.message(text, warning)
        optimizer_train_mode(trainer.optimizer)
        self._set_aside_later_snapshots(best.step)
        return True

    def _set_aside_later_snapshots(self, best_step: int) -> None:
        """Rename the snapshots of the abandoned stretch (steps after the best) to ``<name>-<k>-rolled-back.pt``:
        kept for the user, but no longer a run's newest checkpoint, so resuming after a kill goes on from the
        weights the guard chose, not from the ones it rejected."""
        trainer = self.trainer
        moved, failed = set_aside_snapshots(trainer.out_dir, trainer.name, best_step, "rolled-back")
        for text in failed:
            trainer.message(f"{text}; a resume from the newest snapshot would pick it: resume from "
                            f"{self.best_path.name} instead", warning=True)
        if moved:
            trainer.message(f"snapshots after the best step set aside (kept, never resumed from by default): "
                            f"{', '.join(moved)}")
