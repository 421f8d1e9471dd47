"""A training job inside webui: hypernet_ext.training.jobs' Job, and callbacks that also drive webui's progress.

``JobCallbacks`` records the trainer's progress in the job (JobRecorder) and in ``shared.state`` (step and total,
text with loss, learning rate and ETA, previews via ``assign_current_image``), and asks to stop on webui's
Interrupt, on ``Job.interrupt()``, and when webui's checkpoint setting or loaded model changed under the job.
"""
from __future__ import annotations

import logging
import os
import time

from ..training.jobs import (  # noqa: F401 - the job API as webui's code uses it
    DONE,
    FAILED,
    FIND_LR,
    HISTORY,
    INTERRUPTED,
    QUEUED,
    RUNNING,
    STATES,
    TRAIN,
    Job,
    JobRecorder,
    curve_view,
)

logger = logging.getLogger(__name__)


def progress_text(job: Job) -> str:
    """The one line webui's progress bar shows beside its percentage (its progressbar.js puts ``textinfo`` there as
    plain text, and only when it has no line break)."""
    loss = "-" if job.loss is None else f"{job.loss:.5f}"
    lr = "-" if job.learn_rate is None else f"{job.learn_rate:.3g}"
    eta = "-" if job.eta_s is None else time.strftime("%H:%M:%S", time.gmtime(max(0.0, job.eta_s)))
    last = os.path.basename(job.checkpoints[-1]) if job.checkpoints else "none yet"
    what = "Learning-rate range test of" if job.kind == FIND_LR else "Training hypernetwork"
    return (f"{what} {job.network}: step {job.step}/{job.total}, loss {loss}, learning rate {lr}, ETA {eta}, "
            f"last checkpoint {last}")


class JobCallbacks(JobRecorder):
    """The trainer's callbacks for a job inside webui; ``preview`` renders one (set by the run when previews are
    on)."""

    def __init__(self, job: Job, state, preview=None, checkpoint_changed=lambda: None):
        super().__init__(job, preview)
        self.state = state          # webui's shared.state
        self.checkpoint_changed = checkpoint_changed   # callable() -> the checkpoint now selected, or None

    def on_progress(self, step, total, loss, lr, eta_s):
        super().on_progress(step, total, loss, lr, eta_s)
        self.state.job_count = total
        self.state.job_no = step
        self.state.textinfo = progress_text(self.job)

    def on_preview(self, step, network):
        image = super().on_preview(step, network)
        if image is not None:
            self.state.assign_current_image(image)
        return image

    def should_stop(self) -> bool:
        changed = None if self.job.model_changed else self.checkpoint_changed()
        if changed:   # webui reloads the model when the queue is free: stop, so that it can
            text = (f"webui's checkpoint setting changed to {changed} during training: the job saves and stops, "
                    "then webui loads that checkpoint")
            self.job.update(model_changed=text)
            self.job.add("messages", text)
        return bool(self.job.stop_requested or self.job.model_changed or self.state.interrupted)
