"""``app`` sub-command: the Create, Train and Compare tabs in a browser, on the tiny built-in model."""
from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("app", help="the training tabs in a browser, on the tiny built-in model (needs gradio)")
    p.add_argument("--out", default="out/app", help="folder for networks, logs, previews, presets and the demo data")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=7870, help="port to listen on")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..app import run_app

    run_app(args.out, host=args.host, port=args.port)
    return 0
