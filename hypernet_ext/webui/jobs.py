"""A training job's state as callers see it, and the trainer callbacks that keep it and webui's progress current.

``Job`` is written by the job's thread and read by anyone through ``view()`` (a plain dict, copied under its
lock). ``JobCallbacks`` forwards the trainer's progress to the job and to ``shared.state`` (step and total,
text with loss, learning rate and ETA, previews via ``assign_current_image``) and asks to stop on webui's
Interrupt, on ``Job.interrupt()``, and when webui's checkpoint setting or loaded model changed under the job.
"""
from __future__ import annotations

import html
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

from ..host import Callbacks

logger = logging.getLogger(__name__)

QUEUED, RUNNING, DONE, INTERRUPTED, FAILED = "queued", "running", "done", "interrupted", "failed"
STATES = (QUEUED, RUNNING, DONE, INTERRUPTED, FAILED)
HISTORY = 20000   # (step, loss, lr, seconds since training began) rows kept per job


@dataclass
class Job:
    """One training job (see the module docstring). Times are time.time() seconds."""
    id: str
    network: str
    task_id: str
    resume: bool = False
    state: str = QUEUED
    step: int = 0
    total: int = 0
    loss: Optional[float] = None
    learn_rate: Optional[float] = None
    eta_s: Optional[float] = None
    history: List[Tuple[int, Optional[float], float, float]] = field(default_factory=list)   # step, loss, lr, s
    validation: List[Tuple[int, float, float]] = field(default_factory=list)   # step, val loss, largest effect
    checkpoints: List[str] = field(default_factory=list)
    previews: List[Tuple[int, str]] = field(default_factory=list)
    files: List[str] = field(default_factory=list)
    messages: List[str] = field(default_factory=list)
    error: Optional[str] = None
    created: float = field(default_factory=time.time)
    started: Optional[float] = None
    finished: Optional[float] = None
    stop_requested: bool = False
    model_changed: Optional[str] = None
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def update(self, **values) -> None:
        with self.lock:
            for key, value in values.items():
                setattr(self, key, value)

    def add(self, kind: str, value) -> None:
        """Append to one of the lists (checkpoints, previews, files, messages, history)."""
        with self.lock:
            items = getattr(self, kind)
            items.append(value)
            if kind == "history" and len(items) > HISTORY:
                del items[: len(items) - HISTORY]

    def interrupt(self) -> None:
        """Ask the job to stop: a queued job never starts, a running one saves, then stops."""
        with self.lock:
            self.stop_requested = True

    @property
    def finished_state(self) -> bool:
        """True once the job has ended and webui's queue has let go of it."""
        return self.finished is not None

    def view(self, history: bool = False) -> dict:
        """A copy of the job's state as plain values (``history``: a row per step with its loss, learning rate and
        time in seconds since the first step began)."""
        with self.lock:
            out = {"job_id": self.id, "network": self.network, "task_id": self.task_id, "resume": self.resume,
                   "state": self.state, "step": self.step, "total": self.total, "loss": self.loss,
                   "learn_rate": self.learn_rate, "eta_s": self.eta_s, "checkpoints": list(self.checkpoints),
                   "validation": [{"step": s, "loss": loss, "effect": e} for s, loss, e in self.validation],
                   "previews": [{"step": s, "path": p} for s, p in self.previews], "files": list(self.files),
                   "messages": list(self.messages), "error": self.error, "created": self.created,
                   "started": self.started, "finished": self.finished}
            if history:
                out["history"] = [{"step": s, "loss": loss, "learn_rate": lr, "time": t}
                                  for s, loss, lr, t in self.history]
        return out


def progress_text(job: Job) -> str:
    """The HTML webui shows under its progress bar."""
    loss = "-" if job.loss is None else f"{job.loss:.5f}"
    lr = "-" if job.learn_rate is None else f"{job.learn_rate:.3g}"
    eta = "-" if job.eta_s is None else time.strftime("%H:%M:%S", time.gmtime(max(0.0, job.eta_s)))
    last = html.escape(job.checkpoints[-1]) if job.checkpoints else "-"
    return (f"<p>Training hypernetwork {html.escape(job.network)}: step {job.step}/{job.total}<br/>"
            f"Loss: {loss}, learning rate: {lr}, ETA: {eta}<br/>Last checkpoint: {last}</p>")


class JobCallbacks(Callbacks):
    """The trainer's callbacks for a job; ``preview`` renders one (set by the run when previews are on)."""

    def __init__(self, job: Job, state, preview=None, checkpoint_changed=lambda: None):
        self.job = job
        self.state = state          # webui's shared.state
        self.preview = preview      # callable(step, network) -> (path, image) or None
        self.checkpoint_changed = checkpoint_changed   # callable() -> the checkpoint now selected, or None
        self.t0: Optional[float] = None

    def on_progress(self, step, total, loss, lr, eta_s):
        job = self.job
        now = time.monotonic()
        if self.t0 is None:   # the first report comes after the first step: count from its estimated start
            self.t0 = now - (eta_s / max(1, total - step) if eta_s else 0.0)
        job.update(step=step, total=total, loss=loss, learn_rate=lr, eta_s=eta_s)
        job.add("history", (step, loss, lr, now - self.t0))
        self.state.job_count = total
        self.state.job_no = step
        self.state.textinfo = progress_text(job)

    def on_checkpoint(self, path, step):
        self.job.add("checkpoints", str(path))
        self.job.add("files", str(path))

    def on_preview(self, step, network):
        if self.preview is None:
            return
        result = self.preview(step, network)
        if result is None:
            return
        path, image = result
        self.job.add("previews", (step, str(path)))
        self.job.add("files", str(path))
        if image is not None:
            self.state.assign_current_image(image)

    def on_message(self, text):
        self.job.add("messages", str(text))

    def on_validation(self, step, val_loss, effect, weight_norm):
        self.job.add("validation", (step, val_loss, max(effect.values()) if effect else None))

    def should_stop(self) -> bool:
        changed = None if self.job.model_changed else self.checkpoint_changed()
        if changed:   # webui reloads the model when the queue is free: stop, so that it can
            text = (f"webui's checkpoint setting changed to {changed} during training: the job saves and stops, "
                    "then webui loads that checkpoint")
            self.job.update(model_changed=text)
            self.job.add("messages", text)
        return bool(self.job.stop_requested or self.job.model_changed or self.state.interrupted)
