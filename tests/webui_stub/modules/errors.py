"""Stand-in for webui v1.10.1 modules/errors.py: reporting to stderr."""
import sys
import traceback

reported = []   # (message, exception text) of every report, for the tests


def report(message: str, *, exc_info: bool = False) -> None:
    """Print ``message`` and, with exc_info, the current traceback (modules/errors.py: report)."""
    text = traceback.format_exc() if exc_info else ""
    reported.append((message, text))
    print(message, text, file=sys.stderr)


def display(e: Exception, task, *, full_traceback=False):
    """Print an exception raised while doing ``task`` (modules/errors.py: display)."""
    reported.append((str(task), f"{type(e).__name__}: {e}"))
    print(f"{task or 'error'}: {type(e).__name__}: {e}", file=sys.stderr)
