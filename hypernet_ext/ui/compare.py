"""Compare: a grid of a network's snapshots (rows) by seeds or strengths (columns) for one prompt, each picture
rendered by the host (webui's txt2img processing), saved as one PNG with its labels and the settings as its
infotext. No gradio here: hypernet_ext.ui.compare_tab is the tab.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, List, Optional, Tuple

from ..errors import ConfigError
from ..fileio import atomic_path, child
from ..training.preview import image_grid
from .backend import RenderSettings

BASE = "(no network)"   # the row rendered without a network, when asked for
MAX_CELLS = 64


@dataclass
class Cell:
    row: str
    column: str
    image: object
    info: str


@dataclass
class Comparison:
    rows: List[str]
    columns: List[str]
    cells: List[Cell] = field(default_factory=list)
    grid: object = None
    path: Optional[Path] = None


def parse_columns(mode: str, text: str) -> List[float]:
    """The column values: whole seeds, or strengths (numbers); ConfigError naming the bad one."""
    pieces = [p.strip() for p in str(text or "").replace(";", ",").split(",") if p.strip()]
    if not pieces:
        raise ConfigError(f"columns: give the {mode} to compare, separated by commas (e.g. "
                          f"{'1, 2, 3' if mode == 'seeds' else '0.5, 1'})")
    out = []
    for piece in pieces:
        try:
            value = float(piece)
        except ValueError:
            raise ConfigError(f"columns: {piece!r} is not a number; give {mode} separated by commas") from None
        if mode == "seeds" and not value.is_integer():
            raise ConfigError(f"columns: seed {piece!r} must be a whole number")
        out.append(int(value) if mode == "seeds" else value)
    return out


def compare(backend, network: str, rows: List[str], mode: str, columns_text: str, settings: RenderSettings,
            strength: float = 1.0, progress: Optional[Callable[[int, int], None]] = None) -> Comparison:
    """Render every (row, column) picture and the labelled grid, and save the grid in the backend's output
    folder for ``network``. ``rows`` are snapshot names (BASE: without a network)."""
    if not rows:
        raise ConfigError("snapshots: choose at least one snapshot (or the row without a network)")
    if mode not in ("seeds", "strengths"):
        raise ConfigError(f"columns: {mode!r} is neither seeds nor strengths")
    columns = parse_columns(mode, columns_text)
    total = len(rows) * len(columns)
    if total > MAX_CELLS:
        raise ConfigError(f"the grid would have {total} pictures; at most {MAX_CELLS}: fewer snapshots or columns")
    labels = [f"seed {int(c)}" if mode == "seeds" else f"strength {c:g}" for c in columns]
    result = Comparison(list(rows), labels)
    for row in rows:
        for column, label in zip(columns, labels):
            if progress is not None:
                progress(len(result.cells), total)
            cell_settings = dataclasses.replace(settings, seed=int(column)) if mode == "seeds" else settings
            image, info = backend.render(None if row == BASE else row, strength if mode == "seeds" else column,
                                         cell_settings)
            result.cells.append(Cell(row, label, image, info))
    grid_rows = [[c.image for c in result.cells[i:i + len(columns)]] for i in range(0, total, len(columns))]
    result.grid = image_grid(grid_rows, labels=rows, scale=1, column_labels=labels)
    result.path = _save(backend.output_folder(network), network, result, settings, mode)
    return result


def _save(folder, network: str, result: Comparison, settings: RenderSettings, mode: str) -> Path:
    from PIL.PngImagePlugin import PngInfo

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = child(folder, f"compare-{network}-{time.strftime('%Y%m%d-%H%M%S')}.png", "network")
    meta = PngInfo()
    meta.add_text("parameters", f"{settings.prompt}\nNegative prompt: {settings.negative_prompt}\n"
                                f"Hypernet compare: rows {', '.join(result.rows)}; {mode} {', '.join(result.columns)}; "
                                f"Steps: {settings.steps}, Sampler: {settings.sampler or 'default'}, "
                                f"CFG scale: {settings.cfg_scale:g}, Size: {settings.width}x{settings.height}")
    with atomic_path(path) as temporary:
        result.grid.save(temporary, format="PNG", pnginfo=meta)
    return path


def row_choices(backend, network: str) -> Tuple[List[str], List[str]]:
    """(every snapshot name of ``network`` with its step, up to four of them picked evenly, the last included)."""
    found = backend.snapshots(network) if network else []
    names = [name for name, _ in found]
    if len(names) <= 4:
        return names, names
    picked = [names[round(i * (len(names) - 1) / 3)] for i in range(4)]
    return names, list(dict.fromkeys(picked))
