"""A training job's state as callers (the REST API, the Train tab) see it, and the callbacks that keep it current.

``Job`` is written by the job's thread and read by anyone through ``view()`` (plain values, copied under its
lock). ``JobRecorder`` is the trainer's Callbacks for a job: progress (a history row per step), checkpoints,
previews, messages, validation results and guard actions go into the job, and a stop request on the job stops
the trainer. Hosts subclass it to also drive their own progress display (webui's ``shared.state``).
``run_job(job, work)`` runs a job's body and turns every outcome into the job's state and a readable error.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import torch

from ..errors import HypernetError
from ..host import Callbacks

logger = logging.getLogger(__name__)

QUEUED, RUNNING, DONE, INTERRUPTED, FAILED = "queued", "running", "done", "interrupted", "failed"
STATES = (QUEUED, RUNNING, DONE, INTERRUPTED, FAILED)
TRAIN, FIND_LR = "train", "find_lr"
HISTORY = 20000   # (step, loss, lr, seconds since training began) rows kept per job


@dataclass
class Job:
    """One job: a training run (``kind`` train) or a learning-rate range test (find_lr). Times are time.time()."""
    id: str
    network: str
    task_id: str
    resume: bool = False
    kind: str = TRAIN
    state: str = QUEUED
    step: int = 0
    total: int = 0
    loss: Optional[float] = None
    learn_rate: Optional[float] = None
    eta_s: Optional[float] = None
    history: List[Tuple[int, Optional[float], float, float]] = field(default_factory=list)   # step, loss, lr, s
    # step, val loss, largest effect, history rows recorded before it (places it among the rows after a rollback)
    validation: List[Tuple[int, float, Optional[float], int]] = field(default_factory=list)
    guard: List[Tuple[int, str, str, str, int]] = field(default_factory=list)   # step, action, reason, text, rows
    checkpoints: List[str] = field(default_factory=list)
    previews: List[Tuple[int, str]] = field(default_factory=list)
    files: List[str] = field(default_factory=list)
    messages: List[str] = field(default_factory=list)
    lr_find: Optional[dict] = None    # the range test's curve and suggestion (LRFinderResult as plain values)
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
        """Append to one of the lists (checkpoints, previews, files, messages, history, validation, guard)."""
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
        """True once the job has ended and its host's queue has let go of it."""
        return self.finished is not None

    def view(self, history: bool = False) -> dict:
        """A copy of the job's state as plain values (``history``: a row per step with its loss, learning rate and
        time in seconds since the first step began). Validation results and guard actions carry ``row``: how many
        history rows came before them (after a rollback the steps go back, so the step alone cannot place them)."""
        with self.lock:
            out = {"job_id": self.id, "network": self.network, "task_id": self.task_id, "resume": self.resume,
                   "kind": self.kind, "state": self.state, "step": self.step, "total": self.total,
                   "loss": self.loss, "learn_rate": self.learn_rate, "eta_s": self.eta_s,
                   "checkpoints": list(self.checkpoints),
                   "validation": [{"step": s, "loss": loss, "effect": e, "row": r}
                                  for s, loss, e, r in self.validation],
                   "guard": [{"step": s, "action": a, "reason": why, "text": t, "row": r}
                             for s, a, why, t, r in self.guard],
                   "previews": [{"step": s, "path": p} for s, p in self.previews], "files": list(self.files),
                   "messages": list(self.messages), "lr_find": dict(self.lr_find) if self.lr_find else None,
                   "error": self.error, "created": self.created, "started": self.started, "finished": self.finished}
            if history:
                out["history"] = [{"step": s, "loss": loss, "learn_rate": lr, "time": t}
                                  for s, loss, lr, t in self.history]
        return out


def curve_view(curve) -> Dict[str, object]:
    """An LRFinderResult as plain values (the job view's ``lr_find``)."""
    return {"rates": list(curve.rates), "losses": list(curve.losses), "smoothed": list(curve.smoothed),
            "suggestion": curve.suggestion, "schedule": curve.schedule, "blew_up_at": curve.blew_up_at,
            "best_rate": curve.best_rate, "note": curve.note, "summary": curve.summary()}


class JobRecorder(Callbacks):
    """The trainer's callbacks for a job (see the module docstring); ``preview(step, network)`` renders a preview
    and returns (path, image) or None."""

    def __init__(self, job: Job, preview: Optional[Callable] = None):
        self.job = job
        self.preview = preview
        self.t0: Optional[float] = None

    def on_progress(self, step, total, loss, lr, eta_s):
        now = time.monotonic()
        if self.t0 is None:   # the first report comes after the first step: count from its estimated start
            self.t0 = now - (eta_s / max(1, total - step) if eta_s else 0.0)
        self.job.update(step=step, total=total, loss=loss, learn_rate=lr, eta_s=eta_s)
        self.job.add("history", (step, loss, lr, now - self.t0))

    def on_checkpoint(self, path, step):
        self.job.add("checkpoints", str(path))
        self.job.add("files", str(path))

    def on_preview(self, step, network):
        if self.preview is None:
            return None
        result = self.preview(step, network)
        if result is None:
            return None
        path, image = result
        self.job.add("previews", (step, str(path)))
        self.job.add("files", str(path))
        return image

    def on_message(self, text):
        self.job.add("messages", str(text))

    def on_validation(self, step, val_loss, effect, weight_norm):
        largest = max(effect.values()) if effect else None
        self.job.add("validation", (step, val_loss, largest, len(self.job.history)))

    def on_guard(self, step, action, reason, text):
        self.job.add("guard", (step, action, reason, str(text), len(self.job.history)))

    def should_stop(self) -> bool:
        return bool(self.job.stop_requested)


class JobStopped(Exception):
    """The job was asked to stop before training began (nothing was trained)."""


OOM_ADVICE = ("lower the batch size or the image size, turn on gradient checkpointing, or move the VAE and text "
              "encoder to the CPU")


def run_job(job: Job, work: Callable[[], bool]) -> None:
    """Run ``work`` (which returns True when the run was interrupted) as ``job``'s body: the job is running
    meanwhile, then done, interrupted or failed with a message that says what to do; never raises."""
    job.update(state=RUNNING, started=time.time())
    try:
        interrupted = work()
    except JobStopped as why:
        job.add("messages", str(why))
        job.update(state=INTERRUPTED)
    except HypernetError as err:
        job.update(state=FAILED, error=str(err))
        job.add("messages", str(err))
        logger.error("hypernetwork %s failed: %s", job.kind, err)
    except torch.cuda.OutOfMemoryError as err:
        text = f"out of GPU memory ({str(err).splitlines()[0]}); {OOM_ADVICE}"
        job.update(state=FAILED, error=text)
        logger.error("hypernetwork %s failed: %s", job.kind, text)
    except Exception as err:   # noqa: BLE001 - a bug: the job fails with the error, the console gets the trace
        job.update(state=FAILED, error=f"{type(err).__name__}: {err}")
        logger.exception("hypernetwork %s failed", job.kind)
    else:
        job.update(state=INTERRUPTED if interrupted else DONE)
