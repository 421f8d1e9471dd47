"""What the Train tab's buttons do. Train / Resume / Find learning rate check the run first (the schedule in words,
the data counted, the widths; problems stop it), then queue the job and follow it: a generator that redraws the
status, the plot, the previews and the checkpoints while the job runs (every POLL seconds, only what changed).
Interrupt bypasses gradio's queue. Opening the tab follows a job that is already running (after a page reload, or
one started through the REST API). Every error is a message in the tab.
"""
from __future__ import annotations

import logging
import time

from ..errors import HypernetError
from . import form
from .train_tab import TXT2IMG
from .views import (
    FINISHED,
    check_html,
    checkpoints_html,
    lr_find_html,
    lr_find_plot,
    message_html,
    previews,
    run_plot,
    status_html,
)

logger = logging.getLogger(__name__)

POLL = 1.0   # seconds between two looks at a running job
FOLLOW_JS = ("(job, task) => { if (task && typeof hypernetExtProgress === 'function') { hypernetExtProgress(task); }"
             " return [job, task]; }")
OUTPUTS = ("status", "plot", "preview", "previews", "checkpoints", "messages", "lr_status", "lr_plot")


def _options(tab, values) -> dict:
    """Option -> value as the configs take them, and the txt2img settings when asked for."""
    count = len(tab.options)
    options = {o.name: form.value_in(o, v) for o, v in zip(tab.options, values[:count])}
    rest = list(values[count:])
    if tab.use_txt2img is not None and rest and rest[0]:
        for name, value in zip(TXT2IMG, rest[1:]):
            options[name] = int(value) if isinstance(value, float) and value.is_integer() else value
    return options


def _unexpected(err: Exception, what: str) -> str:
    logger.exception("hypernet_ext: %s failed", what)
    return message_html(f"{what} failed: {type(err).__name__}: {err} (the console has the details)")


def start(backend, tab, mode: str, network, values):
    """(checks HTML, job id, task id, status HTML) for Train, Resume, Check or Find learning rate; without a new
    job the job id stays (Interrupt and the range test's suggestion use it) and the task id is empty (nothing new
    to follow)."""
    import gradio as gr

    keep = (gr.update(), "", gr.update())
    if not network:
        return (message_html("network: choose a network to train (or create one in the Create tab)"),) + keep
    options = _options(tab, values)
    finder = {k: options.pop(k) for k in list(options) if k.startswith("find_lr_")}
    resume = mode == "resume"
    try:
        check = backend.check_training(network, resume=resume, **options)
        shown = check_html(check.view())
        if not check.ok or mode == "check":
            return (shown,) + keep
        if mode == "find_lr":
            job = backend.start_find_lr(network, **dict(options, **finder))
        else:
            job = backend.start_training(network, resume=resume, **options)
    except (HypernetError, FileExistsError) as err:
        return (message_html(str(err)),) + keep
    except Exception as err:   # noqa: BLE001 - shown in the tab, the trace goes to the console
        return (_unexpected(err, "starting the job"),) + keep
    return shown, job.id, job.task_id, status_html(job.view())


def _drawn(plot, view):
    """A chart of the view; a drawing bug costs the picture, not the following of the job."""
    try:
        return plot(view)
    except Exception:   # noqa: BLE001 - logged with its trace; the tab keeps showing the job
        logger.exception("hypernet_ext: drawing %s failed", plot.__name__)
        return None


def _render(view, last):
    """The updates of OUTPUTS for ``view``; ``last`` is the previous view (None: draw everything)."""
    import gradio as gr

    def changed(key):
        return last is None or len(view.get(key) or []) != len(last.get(key) or [])

    finding = view.get("kind") == "find_lr"
    shown = previews(view)
    updates = [status_html(view),
               gr.update(value=_drawn(run_plot, view)) if not finding and changed("history") else gr.update(),
               gr.update(value=shown[-1][0]) if shown and changed("previews") else gr.update(),
               gr.update(value=shown) if changed("previews") else gr.update(),
               checkpoints_html(view) if changed("checkpoints") else gr.update(),
               "\n".join(view.get("messages") or []) if changed("messages") else gr.update()]
    if finding:
        updates += [lr_find_html(view), _drawn(lr_find_plot, view) if changed("history") or view.get("lr_find")
                    else gr.update()]
    else:
        updates += [gr.update(), gr.update()]
    return updates


def follow(backend, job_id, task_id):
    """Yield the tab's updates while the job runs, and once more when it has ended (nothing without a task id:
    no new job to follow)."""
    import gradio as gr

    job = backend.job(job_id) if job_id and task_id else None
    if job is None:
        yield [gr.update() for _ in OUTPUTS]
        return
    last = None
    while True:
        view = job.view(history=True)
        yield _render(view, last)
        if view["state"] in FINISHED:
            return
        last = view
        time.sleep(POLL)


def running(backend, current):
    """(job id, task id) of a job running now that this page does not follow yet; nothing new otherwise."""
    import gradio as gr

    job = backend.running_job()
    if job is None or job.id == current:
        return gr.update(), ""
    return job.id, job.task_id


def interrupt(backend, job_id):
    job = backend.job(job_id) if job_id else None
    job = job or backend.running_job()
    if job is None:
        return message_html("no job is running", "note")
    backend.interrupt(job.id)
    return message_html(f"Interrupting {job.network}: it saves a checkpoint, then stops.", "note")


def suggested_schedule(backend, job_id):
    import gradio as gr

    job = backend.job(job_id) if job_id else None
    curve = job.view().get("lr_find") if job is not None else None
    if not curve or not curve.get("schedule"):
        return gr.update(), message_html("run Find learning rate first: there is no suggestion yet", "note")
    return curve["schedule"], message_html(f"learning-rate schedule set to {curve['schedule']}", "ok")


def connect(backend, tab) -> None:
    """Wire the tab's buttons (inside the Blocks context)."""
    import gradio as gr

    inputs = [tab.network] + tab.fields
    if tab.use_txt2img is not None:
        inputs += [tab.use_txt2img] + tab.txt2img
    out = tab.outputs
    follow_outputs = [out[key] for key in OUTPUTS]
    started = [out["checks"], tab.job_id, tab.task_id, out["status"]]

    def follow_job(job_id, task_id):
        yield from follow(backend, job_id, task_id)

    for mode in ("train", "resume", "check", "find_lr"):
        def clicked(network, *values, mode=mode):
            return start(backend, tab, mode, network, values)

        event = tab.buttons[mode].click(clicked, inputs=inputs, outputs=started)
        if mode == "find_lr":
            event = event.then(lambda: gr.update(open=True), outputs=[out["lr_accordion"]])
        if mode != "check":
            event.then(follow_job, inputs=[tab.job_id, tab.task_id], outputs=follow_outputs, _js=FOLLOW_JS)
    tab.buttons["interrupt"].click(lambda job_id: interrupt(backend, job_id), inputs=[tab.job_id],
                                   outputs=[out["checks"]], queue=False)
    tab.buttons["lr_apply"].click(lambda job_id: suggested_schedule(backend, job_id), inputs=[tab.job_id],
                                  outputs=[tab.field_of("learn_rate"), out["lr_status"]])
    tab.tab.select(lambda job_id: running(backend, job_id), inputs=[tab.job_id],
                   outputs=[tab.job_id, tab.task_id]).then(
        follow_job, inputs=[tab.job_id, tab.task_id], outputs=follow_outputs, _js=FOLLOW_JS)
    names = lambda: gr.update(choices=backend.network_names())   # noqa: E731
    tab.network_refresh.click(names, outputs=[tab.network])
    if tab.template_refresh is not None:
        tab.template_refresh.click(lambda: gr.update(choices=backend.template_names()),
                                   outputs=[tab.field_of("template")])
