"""The training loop: a hypernetwork on a frozen host model, from a prepared data set, to checkpoint files.

Talks to the model only through HostModel and to the caller only through Callbacks. Per step: learning rate
and clip value from the schedule (pure functions of the step; the rate times the guard's factor), one
StepRunner step, the validation and the guard's decision when due (training.watch), the loss log, progress
(with d * lr for LR-free optimizers), then a checkpoint, a preview, the best snapshot and the guard's action.
Non-finite steps are skipped; too many in a row stop the run (fp16 loss-scale overflows count only once the
scale has fallen below 1).
"""
from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Optional, Tuple

import torch

from .. import checkpoint as ckpt
from ..attach import attach, attention_modules
from ..errors import TrainingError
from ..families import check_fit
from ..fileio import check_folder, child, clean_name
from ..host import Callbacks
from ..optim import build_optimizer, effective_lr, is_lr_free, optimizer_eval_mode, optimizer_train_mode, set_lr
from ..schedules import LRSchedule
from .config import TrainConfig
from .logs import TrainingLog
from .recompute import disable_builtin_checkpointing, enable_gradient_checkpointing
from .result import TrainResult
from .resume import restore, resume_state
from .step import OVERFLOW, StepOutcome, StepRunner, cuda_devices, resolve_precision
from .watch import ROLLBACK, STOP, Watch

logger = logging.getLogger(__name__)


def check_fit_on_host(name: str, network_widths, host) -> Optional[str]:
    """The warning for a network that fits ``host``'s model only in part (None when it fits whole); TrainingError,
    naming the family the network was made for, when none of its widths is in the model."""
    model_widths = {width for _, _, width in attention_modules(host.attention_root())}
    try:
        _, warning = check_fit(name, network_widths, model_widths, getattr(host, "family", None))
    except ValueError as err:
        raise TrainingError(str(err)) from None
    return warning


class Trainer:
    """Trains ``network`` on ``dataset`` through ``host``; ``train()`` runs (or resumes) the whole job."""

    def __init__(self, host, network, dataset, config: TrainConfig, callbacks: Optional[Callbacks] = None):
        self.host = host
        self.network = network
        self.dataset = dataset
        self.config = config
        self.callbacks = callbacks or Callbacks()
        self.out_dir = Path(config.out_dir)
        self.name = config.name or self._name_of(network)
        child(self.out_dir, f"{self.name}.pt", "name")   # the files stay in out_dir (symlinks resolved), or stop now
        self.schedule = LRSchedule.from_config(config.schedule, config.steps)
        self.optimizer: Optional[torch.optim.Optimizer] = None
        self.lr_free = False    # Prodigy / D-Adaptation: the schedule's rate multiplies the optimizer's own d
        self.runner: Optional[StepRunner] = None
        self._precision: Tuple[str, Optional[torch.dtype]] = ("no", None)   # (mode, autocast dtype), set up later
        self.watch: Optional[Watch] = None
        self.result = TrainResult(step=int(network.step))
        self._last_checkpoint: Optional[str] = None

    @staticmethod
    def _name_of(network) -> str:
        """The network's own name (it may come from a file) under the rule TrainConfig.name follows."""
        if not str(network.name or "").strip():
            raise TrainingError("the run has no name: set TrainConfig.name (it names the checkpoint files)")
        return clean_name(network.name, "the network's name (TrainConfig.name is empty, so it names the files)")

    def message(self, text: str, warning: bool = False) -> None:
        """Tell the user: the log and callbacks.on_message."""
        (logger.warning if warning else logger.info)("%s", text)
        self.callbacks.on_message(text)

    # ---- set-up ----

    def _check_widths(self) -> None:
        """A network with none of the model's widths stops here, naming the family it was made for; one that
        fits only in part trains there and gets a warning naming what is left out."""
        warning = check_fit_on_host(self.name, self.network.widths, self.host)
        if warning:
            self.message(f"{warning}; only those widths are trained", warning=True)

    def _setup(self) -> None:
        host, network, config = self.host, self.network, self.config
        self._check_widths()
        device = torch.device(host.device)
        precision, dtype, note = resolve_precision(config.mixed_precision, device)
        if note:
            self.message(note, warning=True)
        host.freeze()
        network.to(device=device, dtype=torch.float32)
        network.train()
        params = list(network.parameters())
        for param in params:
            param.requires_grad_(True)
        network.name = self.name
        network.sd_checkpoint = getattr(host, "model_hash", None) or network.sd_checkpoint
        network.sd_checkpoint_name = getattr(host, "model_name", None) or network.sd_checkpoint_name
        self._precision = (precision, dtype)
        self.new_optimizer()
        self.watch = Watch(self)

    def new_optimizer(self) -> None:
        """A fresh optimizer and step runner (gradient scaler) for the network's parameters."""
        config, params = self.config, list(self.network.parameters())
        start = min(int(self.network.step), self.schedule.max_steps - 1)
        self.optimizer = build_optimizer(params, config.optimizer, lr=self.schedule.lr_at(start))
        self.lr_free = is_lr_free(self.optimizer)
        self.runner = StepRunner(self.host, params, self.optimizer, *self._precision, config.grad_accum,
                                 config.seed, config.min_snr_gamma, config.noise_offset, self.schedule.clip_mode)

    def _restore(self, resume_from) -> None:
        for text, warning in restore(self, resume_from):
            self.message(text, warning)

    # ---- the job ----

    def train(self, resume_from=None) -> TrainResult:
        """Train until ``config.steps`` (or the schedule's end); ``resume_from``: the checkpoint ``network`` was
        loaded from, whose ``.optim`` gives optimizer, scaler, RNG and data state (any problem: a warning and a
        fresh optimizer). Returns what was done; raises TrainingError when the run diverges."""
        check_folder(self.out_dir, "out_dir")
        ckpt.remove_stale_temps(self.out_dir, self.name)   # left by a run killed while saving
        end = self.schedule.end_step
        if self.schedule.end_message:
            self.message(self.schedule.end_message)
        if self.network.step >= end:
            self.message(f"{self.name} has already trained {self.network.step} steps; the run ends at step {end}. "
                         "Raise steps (or extend the schedule) to train further.")
            return self.result
        if resume_from is not None:
            self._last_checkpoint = str(resume_from)
        else:
            self._set_aside_other_runs_snapshots()
        self._setup()
        try:
            if resume_from is not None:
                self._restore(resume_from)
            self._run(end)
            self.result.final_path = str(self._save(final=True))
        finally:
            self._finish_network()
        return self.result

    def _set_aside_other_runs_snapshots(self) -> None:
        """A fresh run from step s: snapshots of this name past s come from another run (a network since replaced,
        or a run not resumed). Renamed to ``<name>-<k>-earlier-run.pt``, so that a resume of this run never starts
        from them; kept for the user."""
        moved, failed = ckpt.set_aside_snapshots(self.out_dir, self.name, self.network.step, "earlier-run")
        if moved:
            self.message(f"snapshots of an earlier run past step {self.network.step} renamed (kept, never resumed "
                         f"from): {', '.join(moved)}")
        for text in failed:
            self.message(f"{text}: a resume of {self.name} could start from it", warning=True)

    def _run(self, end: int) -> None:
        """The loop with the network attached (and checkpointing on); raises TrainingError when it diverged."""
        optimizer_train_mode(self.optimizer)
        root = self.host.attention_root()
        # the context cache shares one transformed context between blocks; recomputed blocks must not share
        handles = [attach(root, [(self.network, 1.0)], cache=not self.config.grad_checkpointing)]
        log = TrainingLog(self.config.log_dir or self.out_dir, self.config.log_every, self.config.tensorboard,
                          widths=self.watch.widths)
        try:
            # ldm's own use_checkpoint (on in the SD yamls and webui's sd_model) gives a hypernetwork no gradient
            handles.append(disable_builtin_checkpointing(root))
            if self.config.grad_checkpointing:
                handles.append(enable_gradient_checkpointing(root))
            diverged = self._loop(end, log)
        except KeyboardInterrupt:
            self.result.interrupted = True
            self.optimizer.zero_grad(set_to_none=True)
            self.message(f"interrupted at step {self.network.step}; saving")
            diverged = None
        finally:
            for handle in reversed(handles):
                handle.remove()
            log.close()
        if diverged is not None:
            raise diverged

    def _loop(self, end: int, log: TrainingLog) -> Optional[TrainingError]:
        bad_streak = 0
        started, first = time.monotonic(), self.network.step
        self.watch.start(log)
        while self.network.step < end:
            if self.callbacks.should_stop():
                self.result.interrupted = True
                self.message(f"stop requested at step {self.network.step}; saving")
                break
            index = self.network.step
            lr = self.watch.lr_at(index)
            outcome = self._step(index, lr)
            self.network.step = step = index + 1
            if not outcome.skipped:
                bad_streak = 0
            elif outcome.diverging:   # an fp16 overflow while the scaler calibrates leaves the streak as it is
                bad_streak += 1
            cells = self.watch.check(step, bad_streak)
            self._report(outcome, lr, log, started, first, end, cells)
            if outcome.skipped:
                self.result.skipped_steps += 1
                self._report_skip(outcome, step, bad_streak)
                if bad_streak >= self.config.max_bad_steps:
                    return self._diverged(bad_streak, step)
            if self.config.save_every and step % self.config.save_every == 0:
                if bad_streak:   # the weights are those of the last good step; keep that step's file the last
                    self.message(f"no snapshot for step {step}: the step was skipped")
                else:
                    self._save(final=False)
            if self.config.preview_every and step % self.config.preview_every == 0:
                self._preview(step)
            verdict = self.watch.act()
            if verdict == STOP:
                break
            bad_streak = 0 if verdict == ROLLBACK else bad_streak
        return None

    def _report_skip(self, outcome: StepOutcome, step: int, bad_streak: int) -> None:
        total = self.result.skipped_steps
        if outcome.skipped == OVERFLOW and not outcome.diverging:
            # normal while the scaler calibrates (mostly the first steps of an fp16 run): not a divergence
            self.message(f"step {step}: {OVERFLOW} (loss {outcome.loss:.4g}); skipped, no update: the fp16 "
                         f"gradient scaler lowered its scale to {outcome.loss_scale:g}, which is normal calibration, "
                         f"not counted as a bad step ({total} skipped in this run)")
            return
        scale = f", loss scale {outcome.loss_scale:g}" if outcome.loss_scale is not None else ""
        self.message(f"step {step}: {outcome.skipped} (loss {outcome.loss}{scale}); skipped, no update "
                     f"({bad_streak} in a row, {total} in this run)", warning=True)

    def _step(self, index: int, lr: float) -> StepOutcome:
        set_lr(self.optimizer, lr)
        accum = self.config.grad_accum
        batches = [self.dataset.micro_batch(index * accum + micro) for micro in range(accum)]
        return self.runner.run(index, batches, self.schedule.clip_at(index))

    def _report(self, outcome: StepOutcome, lr: float, log: TrainingLog, started: float, first: int, end: int,
                cells: dict) -> None:
        step = self.network.step
        position = (step - 1) * self.config.grad_accum
        epoch, epoch_step = divmod(position, self.dataset.steps_per_epoch)
        step_size = effective_lr(self.optimizer) if self.lr_free else None   # d * lr, d as estimated so far
        log.write(step, epoch, epoch_step + 1, outcome.loss, lr, outcome.grad_norm, outcome.skipped, step_size, cells)
        self.result.step = step
        self.result.losses.append(outcome.loss)
        if math.isfinite(outcome.loss):
            self.result.last_loss = outcome.loss
        elapsed = time.monotonic() - started
        eta = elapsed / (step - first) * (end - step) if step > first else None
        loss = outcome.loss if math.isfinite(outcome.loss) else None
        self.callbacks.on_progress(step, end, loss, lr if step_size is None else step_size, eta)

    def _diverged(self, streak: int, step: int) -> TrainingError:
        last = self._last_checkpoint
        keep = (f"The last good checkpoint is {last}; it was left as it was." if last else
                "No checkpoint was written in this run and nothing was overwritten.")
        text = (f"training stopped at step {step}: {streak} steps in a row had a non-finite loss or gradient and "
                f"were skipped. {keep} Lower the learning rate, turn on gradient clipping (clip mode norm) or "
                "use mixed precision 'no', then resume from that checkpoint.")
        self.message(text, warning=True)
        error = TrainingError(text)
        error.checkpoint = last
        return error

    # ---- files and previews ----

    def _save(self, final: bool, best: bool = False) -> Path:
        step = self.network.step
        path = child(self.out_dir, f"{self.name}.pt" if final else f"{self.name}-{'best' if best else step}.pt", "name")
        optimizer_eval_mode(self.optimizer)
        self.network.eval()
        self.network.extra["training"] = {"train": self.config.to_dict(), "data": _data_dict(self.dataset)}
        try:
            written = ckpt.save_checkpoint(self.network, path, self.optimizer if self.config.save_optimizer else None,
                                           self.config.optimizer.name, resume_state(self))
            if final and self.config.save_safetensors:
                from .. import formats
                formats.save(self.network, path.with_suffix(".safetensors"))
        except (OSError, RuntimeError, ValueError) as err:
            keep = f"; the last checkpoint {self._last_checkpoint} is intact" if self._last_checkpoint else ""
            raise TrainingError(f"saving {path} failed ({err}){keep}. Free disk space or choose another out_dir, "
                                "then resume.") from err
        finally:
            self.network.train()
            optimizer_train_mode(self.optimizer)
        self._last_checkpoint = str(written)
        self.result.checkpoints.append(str(written))
        self.callbacks.on_checkpoint(str(written), step)
        logger.info("saved %s (step %d)", written, step)
        return written

    def _preview(self, step: int) -> None:
        optimizer_eval_mode(self.optimizer)
        self.network.eval()
        try:
            with torch.random.fork_rng(devices=cuda_devices(self.host.device)):
                self.callbacks.on_preview(step, self.network)
        finally:
            self.network.train()
            optimizer_train_mode(self.optimizer)

    def _finish_network(self) -> None:
        self.network.eval()
        for param in self.network.parameters():
            param.requires_grad_(False)
            param.grad = None


def _data_dict(dataset) -> dict:
    config = getattr(dataset, "config", None)
    return config.to_dict() if hasattr(config, "to_dict") else {}
