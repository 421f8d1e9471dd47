"""The loss log of a training run: a CSV file with webui's columns and more, and TensorBoard when available.

The CSV (``hypernetwork_loss.csv``, appended to on resume, as webui does) starts with webui's columns: step
(steps done), epoch, epoch_step, loss, learn_rate (the schedule's rate); then grad_norm, skipped and
effective_lr (the step size the optimizer used: d * lr for Prodigy / D-Adaptation, else learn_rate); then the
validation and guard columns: val_loss, effect (the largest effect size), weight_norm, lr_factor (the guard's
factor on the schedule's rate) and guard (the action taken at that step), and with validation, effect_<width>
and weight_norm_<width>. Steps with a validation or a guard action always get a row. Rows appended to an older
file follow its header. TensorBoard is used only when ``torch.utils.tensorboard`` imports; otherwise it is
skipped without a word.
"""
from __future__ import annotations

import csv
import logging
import math
from pathlib import Path
from typing import Dict, List, Optional, Tuple

logger = logging.getLogger(__name__)

CSV_NAME = "hypernetwork_loss.csv"
COLUMNS = ("step", "epoch", "epoch_step", "loss", "learn_rate", "grad_norm", "skipped", "effective_lr",
           "val_loss", "effect", "weight_norm", "lr_factor", "guard")
TEXT_COLUMNS = ("skipped", "guard")
# TensorBoard tags of the validation and guard cells
_TAGS = {"val_loss": "Loss/validation", "effect": "Effect size/largest", "weight_norm": "Weight norm/all",
         "lr_factor": "Learn rate factor/train"}
_WIDTH_TAGS = {"effect_": "Effect size/", "weight_norm_": "Weight norm/"}   # + the width


def tensorboard_writer(folder: Path):
    """A SummaryWriter for ``folder``, or None when TensorBoard is not installed."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(log_dir=str(folder))


class TrainingLog:
    """Appends one row per logged step to the CSV and, when enabled and installed, to TensorBoard."""

    def __init__(self, out_dir, every: int = 1, tensorboard: bool = True, csv_name: str = CSV_NAME,
                 widths=()):
        self.path = Path(out_dir) / csv_name
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.every = max(1, int(every))
        self.writer = tensorboard_writer(Path(out_dir) / "tensorboard") if tensorboard else None
        self.columns: Optional[Tuple[str, ...]] = None   # read from the file at the first write
        self.new_columns = COLUMNS + tuple(f"{kind}_{w}" for kind in ("effect", "weight_norm") for w in widths)

    def write(self, step: int, epoch: int, epoch_step: int, loss: float, learn_rate: float,
              grad_norm: Optional[float], skipped: Optional[str], effective_lr: Optional[float] = None,
              extra: Optional[dict] = None) -> None:
        """Log step ``step`` (steps done, 1-based); rows are written for every ``every``-th step, and for steps
        whose ``extra`` cells (validation, guard) hold a validation loss or a guard action.
        ``effective_lr``: the optimizer's own step size when it is not ``learn_rate`` (LR-free optimizers)."""
        extra = extra or {}
        if step % self.every and not (extra.get("val_loss") or extra.get("guard")):
            return
        cells = {"step": step, "epoch": epoch, "epoch_step": epoch_step, "loss": f"{loss:.7f}",
                 "learn_rate": f"{learn_rate:.8g}", "grad_norm": "" if grad_norm is None else f"{grad_norm:.6g}",
                 "skipped": skipped or "",
                 "effective_lr": f"{learn_rate if effective_lr is None else effective_lr:.8g}"}
        self.write_cells(dict(cells, **extra))
        if self.writer is not None:
            if math.isfinite(loss):
                self.writer.add_scalar("Loss/train", loss, step)
                self.writer.add_scalar(f"Loss/train/epoch-{epoch}", loss, step)
            self.writer.add_scalar("Learn rate/train", learn_rate, step)
            if effective_lr is not None:
                self.writer.add_scalar("Effective learn rate/train", effective_lr, step)
            if grad_norm is not None and math.isfinite(grad_norm):
                self.writer.add_scalar("Grad norm/train", grad_norm, step)

    def write_cells(self, cells: dict) -> None:
        """One CSV row from ``cells`` (column -> value; missing columns stay empty), and the validation and
        guard cells to TensorBoard."""
        new = not self.path.exists() or self.path.stat().st_size == 0
        if self.columns is None:
            self.columns = self.new_columns if new else self._file_columns()
        with open(self.path, "a", newline="", encoding="utf-8") as f:
            out = csv.writer(f)
            if new:
                out.writerow(self.columns)
            out.writerow([cells.get(column, "") for column in self.columns])
        if self.writer is None:
            return
        step = int(cells["step"])
        for key, value in cells.items():
            prefix = next((p for p in _WIDTH_TAGS if key.startswith(p) and key[len(p):].isdigit()), None)
            tag = _WIDTH_TAGS[prefix] + key[len(prefix):] if prefix else _TAGS.get(key)
            if tag and value not in ("", None):
                self.writer.add_scalar(tag, float(value), step)
        if cells.get("guard"):
            self.writer.add_text("Guard", str(cells["guard"]), step)

    def _file_columns(self) -> Tuple[str, ...]:
        """The header of the file being appended to (an older version's, or webui's own, has fewer columns)."""
        with open(self.path, newline="", encoding="utf-8") as f:
            header = next(csv.reader(f), None)
        if not header:
            return self.new_columns
        missing = [c for c in self.new_columns if c not in header]
        if missing:
            logger.info("%s has no column %s; appending rows in its own columns", self.path, ", ".join(missing))
        return tuple(header)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def read_loss_csv(path) -> List[Dict[str, object]]:
    """The rows of a loss CSV: numbers (empty cells: NaN), the text columns (skipped, guard) as strings; rows of
    skipped steps included. Columns the file lacks are NaN (or empty text)."""
    rows = []
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            parsed: Dict[str, object] = {key: float("nan") for key in COLUMNS if key not in TEXT_COLUMNS}
            for key, value in row.items():
                if key in TEXT_COLUMNS:
                    parsed[key] = value or ""
                    continue
                try:
                    parsed[key] = float(value or "nan")
                except (TypeError, ValueError):
                    parsed[key] = float("nan")
            rows.append(parsed)
    return rows
