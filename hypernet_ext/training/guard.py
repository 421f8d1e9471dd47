"""The overtraining guard's decisions: the best validation loss so far, when to trigger, and the rate factor.

Guard sees each validation result and each divergence streak and says whether to act (a GuardEvent). Its
state (best loss and step, the streak above the best, the learning-rate factor, actions taken) is plain data
that goes into every checkpoint's resume state, so a resumed run decides exactly as a straight one. The rate
is the schedule's (a pure function of the step) times ``lr_factor``; lower-lr and rollback lower the factor.
Carrying out an action (restoring the best snapshot) is training.watch's job.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

from .config import GuardConfig, ValidationConfig
from .validation import ValidationResult

LOWERS_RATE = ("lower-lr", "rollback")


@dataclass
class GuardEvent:
    """One trigger: at ``step``, for ``reason`` (validation, effect, diverging), ``action`` is taken."""
    step: int
    reason: str
    action: str
    detail: str          # the numbers that triggered it
    lr_factor: float     # the factor from the next step on

    @property
    def text(self) -> str:
        return f"overtraining guard at step {self.step}: {self.detail}; action: {self.action}"


class Guard:
    """State and decisions of the overtraining guard for one run (see the module docstring)."""

    def __init__(self, config: GuardConfig, validation: Optional[ValidationConfig] = None):
        self.config = config
        # what makes two validation losses comparable (how often they are computed does not)
        self.signature = None if validation is None else {k: v for k, v in validation.to_dict().items()
                                                           if k not in ("every", "config_version")}
        self.best_loss: Optional[float] = None
        self.best_step: Optional[int] = None
        self.streak = 0          # evaluations in a row above best * (1 + margin)
        self.lr_factor = 1.0
        self.actions = 0         # lower-lr and rollback actions taken

    def observe(self, result: ValidationResult) -> Tuple[bool, Optional[GuardEvent]]:
        """(is a new best, the event it triggers or None) for a validation result."""
        config = self.config
        width, effect = result.max_effect
        over_bound = bool(config.max_effect) and effect > config.max_effect
        # a state past the effect bound is never the best: rollback and stop must not return to it
        improved = not over_bound and (self.best_loss is None or result.loss < self.best_loss)
        if improved:
            self.best_loss, self.best_step, self.streak = result.loss, result.step, 0
        elif self.best_loss is not None and result.loss > self.best_loss * (1 + config.margin):
            self.streak += 1
        else:
            self.streak = 0
        if self.streak >= config.patience:
            self.streak = 0
            return improved, self._event(result.step, "validation", (
                f"the validation loss {result.loss:.6g} has been more than {config.margin * 100:g}% above its best "
                f"{self.best_loss:.6g} (step {self.best_step}) for {config.patience} evaluations in a row"))
        if over_bound:
            best = "no best yet" if self.best_step is None else f"best {self.best_loss:.6g} at step {self.best_step}"
            return improved, self._event(result.step, "effect", (
                f"the effect size at width {width} is {effect:.4g}, above the bound {config.max_effect:g} "
                f"(validation loss {result.loss:.6g}, {best})"))
        return improved, None

    def diverging(self, step: int, streak: int) -> Optional[GuardEvent]:
        """The event for ``streak`` non-finite steps in a row, every ``diverge_steps`` of them."""
        every = self.config.diverge_steps
        if not every or not streak or streak % every:
            return None
        return self._event(step, "diverging", f"{streak} steps in a row had a non-finite loss or gradient")

    def _event(self, step: int, reason: str, detail: str) -> GuardEvent:
        action = self.config.action
        if action in LOWERS_RATE:
            if self.actions >= self.config.max_actions:
                detail += (f"; the guard has lowered the rate {self.actions} times already, the most max_actions "
                           "allows")
                action = "stop"
            else:
                self.actions += 1
                self.lr_factor *= self.config.lr_factor
        return GuardEvent(step, reason, action, detail, self.lr_factor)

    def best(self, loss: float, step: int) -> None:
        """Forget the history: ``loss`` at ``step`` is the best (after a rollback that could not be made)."""
        self.best_loss, self.best_step, self.streak = loss, step, 0

    # ---- resume ----

    def state_dict(self) -> dict:
        return {"best_loss": self.best_loss, "best_step": self.best_step, "streak": self.streak,
                "lr_factor": self.lr_factor, "actions": self.actions, "validation": self.signature}

    def load_state_dict(self, state: Optional[dict]) -> list:
        """Continue from a checkpoint's guard state; returns (text, is_warning) messages."""
        if not isinstance(state, dict):
            return []
        messages = []
        self.lr_factor = float(state.get("lr_factor") or 1.0)
        self.actions = int(state.get("actions") or 0)
        if self.lr_factor != 1.0:
            messages.append((f"the overtraining guard had lowered the learning rate to {self.lr_factor:g}x the "
                             "schedule's; it stays lowered", False))
        if self.signature is None or state.get("best_step") is None or state.get("validation") != self.signature:
            if self.signature is not None and state.get("best_step") is not None:
                messages.append(("the validation settings changed since the checkpoint: its best validation "
                                 "loss is not comparable, the best starts anew", True))
            return messages
        self.best_loss, self.best_step = float(state["best_loss"]), int(state["best_step"])
        self.streak = int(state.get("streak") or 0)
        return messages
