"""Line charts drawn with PIL (no matplotlib): panels of series on linear or log axes, with vertical markers.

Used for the demo's loss plot, the learning-rate range test and the picture of a run with its validation loss,
learning rate and guard actions (``run_chart``, from the loss CSV).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from PIL import Image, ImageDraw

Color = Tuple[int, int, int]
GREY, BLUE, ORANGE, RED, GREEN = (170, 170, 170), (30, 90, 200), (230, 120, 20), (200, 40, 40), (40, 150, 60)


@dataclass
class Series:
    xs: Sequence[float]
    ys: Sequence[float]
    color: Color = BLUE
    width: int = 1
    dots: bool = False       # also a dot at every point (sparse series such as the validation loss)
    label: str = ""


@dataclass
class Marker:
    x: float
    color: Color = RED
    label: str = ""


@dataclass
class Panel:
    series: List[Series]
    title: str = ""
    x_label: str = "step"
    log_x: bool = False
    log_y: bool = False
    markers: List[Marker] = field(default_factory=list)
    x_range: Optional[Tuple[float, float]] = None   # fixed ends of the x axis (panels that must line up)


def running_mean(values: Sequence[float], window: int) -> List[float]:
    """The mean of each value and the ``window - 1`` before it."""
    out = []
    for i in range(len(values)):
        part = values[max(0, i - window + 1):i + 1]
        out.append(sum(part) / len(part))
    return out


def _usable(value: float, log: bool) -> bool:
    return value is not None and math.isfinite(value) and (value > 0 or not log)


def _scale(value: float, log: bool) -> float:
    return math.log10(value) if log else value


def _span(values: List[float]) -> Tuple[float, float]:
    low, high = min(values), max(values)
    pad = 0.5 if low == 0 else abs(low) * 0.01   # a flat line sits in the middle (log values may be negative)
    return (low, high) if high > low else (low - pad, high + pad)


def _draw_panel(draw: ImageDraw.ImageDraw, box: Tuple[int, int, int, int], panel: Panel) -> None:
    left, top, right, bottom = box
    draw.rectangle(box, outline="black")
    draw.text((left, top - 20), panel.title, fill="black")
    points = [[(x, y) for x, y in zip(s.xs, s.ys) if _usable(x, panel.log_x) and _usable(y, panel.log_y)]
              for s in panel.series]
    if not any(points):
        draw.text((left + 8, top + 8), "no finite values", fill="black")
        return
    xs = [_scale(x, panel.log_x) for p in points for x, _ in p]
    xs += [_scale(m.x, panel.log_x) for m in panel.markers if _usable(m.x, panel.log_x)]
    ys = [_scale(y, panel.log_y) for p in points for _, y in p]
    (x0, x1), (y0, y1) = _span(xs), _span(ys)
    if panel.x_range is not None:
        x0, x1 = _span([_scale(v, panel.log_x) for v in panel.x_range])

    def place(x, y):
        x, y = _scale(x, panel.log_x), _scale(y, panel.log_y)
        return left + (x - x0) / (x1 - x0) * (right - left), bottom - (y - y0) / (y1 - y0) * (bottom - top)

    for marker in panel.markers:
        if _usable(marker.x, panel.log_x):
            mx = place(marker.x, 10 ** y0 if panel.log_y else y0)[0]
            draw.line([(mx, top), (mx, bottom)], fill=marker.color, width=1)
            draw.text((min(mx + 3, right - 6 * len(marker.label)), top + 3), marker.label, fill=marker.color)
    for series, part in zip(panel.series, points):
        placed = [place(x, y) for x, y in part]
        if len(placed) > 1:
            draw.line(placed, fill=series.color, width=series.width)
        if series.dots or len(placed) == 1:
            for px, py in placed:
                draw.ellipse((px - 2, py - 2, px + 2, py + 2), fill=series.color)
    fmt = (lambda v: f"{10 ** v:.2g}") if panel.log_y else (lambda v: f"{v:.4g}")
    draw.text((4, top - 4), fmt(y1), fill="black")
    draw.text((4, bottom - 8), fmt(y0), fill="black")
    xfmt = (lambda v: f"{10 ** v:.2g}") if panel.log_x else (lambda v: f"{v:g}")
    draw.text((left, bottom + 4), f"{panel.x_label} {xfmt(x0)}", fill="black")
    end = f"{panel.x_label} {xfmt(x1)}"
    draw.text((right - 6 * len(end), bottom + 4), end, fill="black")
    labels = [s for s in panel.series if s.label]
    for i, series in enumerate(labels):
        draw.text((right - 150, top + 4 + 12 * i), series.label, fill=series.color)


def chart(panels: Sequence[Panel], size: Tuple[int, int] = (640, 360)) -> Image.Image:
    """The panels stacked top to bottom in one white image of ``size``."""
    width, height = size
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    band = height // len(panels)
    for i, panel in enumerate(panels):
        _draw_panel(draw, (60, i * band + 28, width - 16, (i + 1) * band - 22), panel)
    return image


def run_chart(rows: Sequence[Dict[str, object]], title: str = "", size: Tuple[int, int] = (720, 640)
              ) -> Image.Image:
    """A run from its loss-log rows (training.logs.read_loss_csv), three panels against the step: the training
    loss and its running mean, the validation loss (left out when there is none), the learning rate (log axis);
    the guard's actions as red lines. After a rollback the step goes back: each stretch between rollbacks is drawn
    on its own, the abandoned ones paler."""
    stretches: List[list] = [[]]
    for row in rows:
        if stretches[-1] and row["step"] <= stretches[-1][-1]["step"]:
            stretches.append([])
        stretches[-1].append(row)
    train, val, rate, markers = [], [], [], []
    window = max(1, len(stretches[-1]) // 8)
    ends = (min(r["step"] for r in rows), max(r["step"] for r in rows)) if rows else None
    for i, part in enumerate(stretches):
        shade = (lambda c: c) if i == len(stretches) - 1 else (lambda c: tuple(int(v + (255 - v) * 0.6) for v in c))
        losses = [(r["step"], r["loss"]) for r in part if _usable(r["loss"], False)]
        xs, ys = [x for x, _ in losses], [y for _, y in losses]
        train += [Series(xs, ys, shade(GREY)), Series(xs, running_mean(ys, window), shade(BLUE), 2)]
        points = [(r["step"], r["val_loss"]) for r in part if _usable(r["val_loss"], False)]
        val.append(Series([x for x, _ in points], [y for _, y in points], shade(ORANGE), 2, True))
        steps = [r["step"] for r in part if _usable(r["learn_rate"], True)]
        rate.append(Series(steps, [r["learn_rate"] for r in part if _usable(r["learn_rate"], True)], shade(BLUE), 2))
        markers += [Marker(r["step"], RED, str(r["guard"])) for r in part if r.get("guard")]
    panels = [Panel(train, title or f"training loss (grey) and its running mean over {window} steps (blue)",
                    markers=markers, x_range=ends),
              Panel(val, "validation loss (fixed images, timesteps and noise)", markers=markers, x_range=ends),
              Panel(rate, "learning rate (log scale)", log_y=True, markers=markers, x_range=ends)]
    if not any(series.xs for series in val):   # a run without validation: no empty panel
        del panels[1]
    return chart(panels, size)
