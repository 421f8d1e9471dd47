"""The loss log of a training run: a CSV file with webui's columns and more, and TensorBoard when available.

The CSV (``hypernetwork_loss.csv``, appended to on resume, as webui does) starts with webui's columns: step
(steps done), epoch, epoch_step, loss, learn_rate (the schedule's rate); then grad_norm, skipped and
effective_lr (the step size the optimizer used: d * lr for Prodigy / D-Adaptation, else learn_rate). Rows
appended to an older file follow its header. TensorBoard is used only when ``torch.utils.tensorboard``
imports; otherwise it is skipped without a word.
"""
from __future__ import annotations

import csv
import logging
import math
from pathlib import Path
from typing import Dict, List, Optional, Tuple

logger = logging.getLogger(__name__)

CSV_NAME = "hypernetwork_loss.csv"
COLUMNS = ("step", "epoch", "epoch_step", "loss", "learn_rate", "grad_norm", "skipped", "effective_lr")


def tensorboard_writer(folder: Path):
    """A SummaryWriter for ``folder``, or None when TensorBoard is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(log_dir=str(folder))


class TrainingLog:
    """Appends one row per logged step to the CSV and, when enabled and installed, to TensorBoard."""

    def __init__(self, out_dir, every: int = 1, tensorboard: bool = True, csv_name: str = CSV_NAME):
        self.path = Path(out_dir) / csv_name
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.every = max(1, int(every))
        self.writer = tensorboard_writer(Path(out_dir) / "tensorboard") if tensorboard else None
        self.columns: Optional[Tuple[str, ...]] = None   # read from the file at the first write

    def write(self, step: int, epoch: int, epoch_step: int, loss: float, learn_rate: float,
              grad_norm: Optional[float], skipped: Optional[str], effective_lr: Optional[float] = None) -> None:
        """Log step ``step`` (steps done, 1-based); rows are written for every ``every``-th step.
        ``effective_lr``: the optimizer's own step size when it is not ``learn_rate`` (LR-free optimizers)."""
        if step % self.every:
            return
        new = not self.path.exists() or self.path.stat().st_size == 0
        if self.columns is None:
            self.columns = COLUMNS if new else self._file_columns()
        cells = {"step": step, "epoch": epoch, "epoch_step": epoch_step, "loss": f"{loss:.7f}",
                 "learn_rate": f"{learn_rate:.8g}", "grad_norm": "" if grad_norm is None else f"{grad_norm:.6g}",
                 "skipped": skipped or "",
                 "effective_lr": f"{learn_rate if effective_lr is None else effective_lr:.8g}"}
        with open(self.path, "a", newline="", encoding="utf-8") as f:
            out = csv.writer(f)
            if new:
                out.writerow(self.columns)
            out.writerow([cells.get(column, "") for column in self.columns])
        if self.writer is not None:
            if math.isfinite(loss):
                self.writer.add_scalar("Loss/train", loss, step)
                self.writer.add_scalar(f"Loss/train/epoch-{epoch}", loss, step)
            self.writer.add_scalar("Learn rate/train", learn_rate, step)
            if effective_lr is not None:
                self.writer.add_scalar("Effective learn rate/train", effective_lr, step)
            if grad_norm is not None and math.isfinite(grad_norm):
                self.writer.add_scalar("Grad norm/train", grad_norm, step)

    def _file_columns(self) -> Tuple[str, ...]:
        """The header of the file being appended to (an older version's, or webui's own, has fewer columns)."""
        with open(self.path, newline="", encoding="utf-8") as f:
            header = next(csv.reader(f), None)
        if not header:
            return COLUMNS
        missing = [c for c in COLUMNS if c not in header]
        if missing:
            logger.info("%s has no column %s; appending rows in its own columns", self.path, ", ".join(missing))
        return tuple(header)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def read_loss_csv(path) -> List[Dict[str, float]]:
    """The rows of a loss CSV as numbers (empty cells: NaN); rows of skipped steps included."""
    rows = []
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            parsed = {}
            for key in ("step", "epoch", "epoch_step", "loss", "learn_rate", "grad_norm", "effective_lr"):
                try:
                    parsed[key] = float(row.get(key) or "nan")
                except ValueError:
                    parsed[key] = float("nan")
            rows.append(parsed)
    return rows
