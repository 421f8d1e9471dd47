"""What the Train tab shows, made from a job's view (hypernet_ext.training.jobs.Job.view) and a run's checks
(training.preflight.RunCheck.view): HTML for the status, the checks, the checkpoints and errors, and the charts
(loss, validation loss and learning rate against the step; the range test's loss against the rate), drawn with
training.plots. Plain functions of plain values, no gradio: the tests call them directly.
"""
from __future__ import annotations

import html
import time
from typing import List, Optional, Tuple

FINISHED = ("done", "interrupted", "failed")


def _e(value) -> str:
    return html.escape(str(value))


def message_html(text: str, kind: str = "error") -> str:
    """A box with a message (kind: error, note, ok)."""
    lines = "<br>".join(_e(line) for line in str(text).splitlines())
    return f"<div class='hypernet-ext-message hypernet-ext-{kind}'>{lines}</div>"


def _duration(seconds: Optional[float]) -> str:
    if seconds is None:
        return "-"
    return time.strftime("%H:%M:%S", time.gmtime(max(0.0, float(seconds))))


def status_html(view: Optional[dict]) -> str:
    """One block: what runs, its state, step of total, loss, rate, ETA, the last validation loss, the error."""
    if not view:
        return "<div class='hypernet-ext-status'>No job yet.</div>"
    what = "Range test" if view.get("kind") == "find_lr" else "Training"
    loss = "-" if view.get("loss") is None else f"{view['loss']:.5f}"
    rate = "-" if view.get("learn_rate") is None else f"{view['learn_rate']:.3g}"
    parts = [f"<b>{what} {_e(view['network'])}</b>: <span class='hypernet-ext-state'>{_e(view['state'])}</span>",
             f"step <span class='hypernet-ext-step'>{view['step']}</span> / {view['total'] or '-'}",
             f"loss {loss}", f"learning rate {rate}"]
    if view["state"] == "running":
        parts.append(f"ETA {_duration(view.get('eta_s'))}")
    if view.get("validation"):
        parts.append(f"validation loss {view['validation'][-1]['loss']:.5f}")
    out = f"<div class='hypernet-ext-status'>{', '.join(parts)}</div>"
    if view.get("error"):
        out += message_html(view["error"])
    for event in view.get("guard") or []:
        out += message_html(event["text"], "note")   # the guard's own text names the step and the numbers
    return out


def check_html(check: dict) -> str:
    """The checks of a run before it starts, problems first."""
    out = "".join(message_html(problem["error"]) for problem in check.get("problems", []))
    rows = [("Starts", check.get("start")), ("Schedule", check.get("schedule")), ("Data", check.get("data")),
            ("Validation data", check.get("validation_data")), ("Widths", check.get("widths"))]
    items = "".join(f"<li><b>{name}:</b> {_e(text)}</li>" for name, text in rows if text)
    items += "".join(f"<li>{_e(note)}</li>" for note in check.get("notes", []))
    if items:
        out += f"<ul class='hypernet-ext-check'>{items}</ul>"
    return out


def checkpoints_html(view: Optional[dict]) -> str:
    if not view or not view.get("checkpoints"):
        return "<div class='hypernet-ext-checkpoints'>No checkpoint written yet.</div>"
    # each file once, where it was last written (<name>-best.pt is rewritten at every new best)
    paths = list(dict.fromkeys(reversed(view["checkpoints"])))[::-1]
    items = "".join(f"<li>{_e(path)}</li>" for path in paths)
    return f"<div class='hypernet-ext-checkpoints'><b>Checkpoints written</b><ul>{items}</ul></div>"


def previews(view: Optional[dict]) -> List[Tuple[str, str]]:
    """(path, caption) of every preview, oldest first."""
    return [(p["path"], f"step {p['step']}") for p in (view or {}).get("previews", [])]


def run_rows(view: dict) -> List[dict]:
    """The job's history as loss-log rows (training.plots.run_chart), one per step as in the run's CSV: validation
    results and guard actions go into the row of their step, placed by the history rows recorded before them (a
    rollback sends the steps back, so the step alone cannot place them; a validation of step k may be recorded
    just before step k's own row)."""
    history = view.get("history") or []
    extra: dict = {}
    for key, items in (("val_loss", view.get("validation")), ("guard", view.get("guard"))):
        for item in items or []:
            value = item["loss"] if key == "val_loss" else item["action"]
            extra.setdefault(min(item["row"], len(history)), []).append((key, item["step"], value))
    rows: List[dict] = []
    pending: List[tuple] = []   # for the next history row: it has their step
    for index in range(len(history) + 1):
        following = history[index] if index < len(history) else None
        for key, step, value in extra.get(index, ()):
            if following is not None and following["step"] == step:
                pending.append((key, value))
            elif rows and rows[-1]["step"] == step and rows[-1].get(key) is None:
                rows[-1][key] = value
            else:
                rows.append(dict({"step": step, "loss": None, "learn_rate": None, "val_loss": None, "guard": None},
                                 **{key: value}))
        if following is not None:
            row = {"step": following["step"], "loss": following["loss"], "learn_rate": following["learn_rate"],
                   "val_loss": None, "guard": None}
            row.update(pending)
            pending = []
            rows.append(row)
    return rows


def run_plot(view: Optional[dict], size=(720, 560)):
    """Loss (raw and smoothed), validation loss and learning rate against the step, with the guard's actions;
    a PIL image, or None before the first step."""
    from ..training.plots import run_chart

    if not view or not view.get("history"):
        return None
    return run_chart(run_rows(view), size=size)


def lr_find_plot(view: Optional[dict], size=(720, 400)):
    """The range test's loss against the rate (log axis) with the suggestion and the blow-up; while it runs,
    the losses so far. A PIL image, or None before the first step."""
    from ..training.lr_finder import LRFinderResult
    from ..training.plots import BLUE, GREY, Panel, Series, chart, running_mean

    if not view:
        return None
    curve = view.get("lr_find")
    if curve:
        keep = ("rates", "losses", "smoothed", "suggestion", "schedule", "blew_up_at", "note")
        return LRFinderResult(**{key: curve[key] for key in keep}).plot(size)
    rows = [r for r in view.get("history") or [] if r["loss"] is not None]
    if not rows:
        return None
    rates, losses = [r["learn_rate"] for r in rows], [r["loss"] for r in rows]
    smooth = running_mean(losses, max(1, len(losses) // 10))
    return chart([Panel([Series(rates, losses, GREY), Series(rates, smooth, BLUE, 2)],
                        "learning-rate range test (running): loss against the rate", x_label="lr", log_x=True)],
                 size)


def lr_find_html(view: Optional[dict]) -> str:
    """The suggestion of a finished range test, or where it stands."""
    if not view:
        return ""
    curve = view.get("lr_find")
    if not curve:
        return status_html(view)
    if curve.get("suggestion") is None:
        return message_html(curve.get("summary") or "the range test found no rate", "error")
    return message_html(curve["summary"] + f"\nSchedule: {curve['schedule']} (use it with the button below)", "ok")
