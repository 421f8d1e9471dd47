"""TrainResult: what a training run did and wrote, as the Trainer returns it."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Tuple


@dataclass
class TrainResult:
    """What a run did and wrote."""
    step: int                                   # steps the network has done at the end
    final_path: Optional[str] = None            # <out>/<name>.pt (None when nothing was trained)
    checkpoints: List[str] = field(default_factory=list)   # every .pt written, in order
    skipped_steps: int = 0
    interrupted: bool = False
    last_loss: Optional[float] = None
    losses: List[float] = field(default_factory=list)
    validation: List[Tuple[int, float]] = field(default_factory=list)   # (step, validation loss), in order
    best_path: Optional[str] = None             # <out>/<name>-best.pt when validation wrote one
    best: Optional[Tuple[int, float]] = None    # (step, validation loss) of the best snapshot
    guard_events: List[str] = field(default_factory=list)   # the guard's messages
    stopped_by_guard: bool = False              # the guard's stop action ended the run (at the best snapshot)
