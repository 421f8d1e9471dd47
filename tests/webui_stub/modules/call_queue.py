"""Stand-in for webui v1.10.1 modules/call_queue.py: the queue lock every GPU job holds."""
import html
import threading
from functools import wraps

from modules import errors, progress, shared

queue_lock = threading.RLock()   # webui: fifo_lock.FIFOLock()


def wrap_queued_call(func):
    """(modules/call_queue.py: wrap_queued_call)"""
    def f(*args, **kwargs):
        with queue_lock:
            return func(*args, **kwargs)
    return f


def wrap_gradio_gpu_call(func, extra_outputs=None):
    """Run under the queue lock as a webui job with a task id (modules/call_queue.py: wrap_gradio_gpu_call)."""
    @wraps(func)
    def f(*args, **kwargs):
        if args and type(args[0]) == str and args[0].startswith("task(") and args[0].endswith(")"):  # noqa: E721
            id_task = args[0]
            progress.add_task_to_queue(id_task)
        else:
            id_task = None
        with queue_lock:
            shared.state.begin(job=id_task)
            progress.start_task(id_task)
            try:
                res = func(*args, **kwargs)
                progress.record_results(id_task, res)
            finally:
                progress.finish_task(id_task)
            shared.state.end()
        return res
    return wrap_gradio_call(f, extra_outputs=extra_outputs, add_stats=True)


def wrap_gradio_call(func, extra_outputs=None, add_stats=False):
    """Reset the job flags afterwards; report errors (modules/call_queue.py: wrap_gradio_call)."""
    @wraps(func)
    def f(*args, **kwargs):
        try:
            res = list(func(*args, **kwargs))
        except Exception as e:
            errors.report("Error completing request", exc_info=True)
            res = list(extra_outputs or [None, '']) + [f"<div class='error'>{html.escape(str(e))}</div>"]
        finally:
            shared.state.skipped = False
            shared.state.interrupted = False
            shared.state.stopping_generation = False
            shared.state.job_count = 0
            shared.state.job = ""
        return tuple(res)
    return f
