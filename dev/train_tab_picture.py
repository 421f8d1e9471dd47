"""Takes docs/train-tab.png for the README: the Train sub-tab during a run, in Debian's headless Chromium.

The standalone app (the same tabs as in webui, on the tiny built-in model) is served on a local port; a network
is created in the Create tab and trained from the Train tab with validation on two held-out images, and the
picture is taken once the plot, a preview and a validation loss show. CPU only, a minute or two on two cores.

    PYTHONPATH=.:tests .venv/bin/python dev/train_tab_picture.py [--out docs/train-tab.png] [--work DIR]
"""
from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
from pathlib import Path

from PIL import Image

from hypernet_ext.standalone.app import demo_data
from hypernet_ext.standalone.backend import TINY_DEFAULTS, StandaloneBackend

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    from playwright.sync_api import sync_playwright
    from ui_browser import ARGS, CHROMIUM, Ui, close_app, launch_app  # tests/ui_browser.py: the browser tests' helpers

    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(ROOT / "docs" / "train-tab.png"))
    ap.add_argument("--work", help="folder for the app's files (default: a temporary one, removed)")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    work = Path(args.work or tempfile.mkdtemp(prefix="train-tab-"))
    try:
        data = demo_data(work)
        defaults = dict(TINY_DEFAULTS, data_dir=str(data), steps=200, save_every=25, preview_every=10,
                        val_every=10, val_split=2, val_timesteps=4)
        blocks, url = launch_app(StandaloneBackend(work, defaults=defaults))
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
            page = browser.new_page(viewport={"width": 1000, "height": 1400})
            ui = Ui(page, url)
            ui.fill("create_name", "mystyle")
            ui.el("create_button").click()
            ui.wait_text("create_result", "Created")
            ui.tab("Hypernet: Train")
            ui.el("train_train").click()
            ui.wait_status(lambda state, step: state == "running" and step >= 52, "a few previews")
            page.locator("#hypernet_ext_train_status:has-text('validation loss')").first.wait_for()
            ui.el("train_preview").locator("img").first.wait_for()
            page.wait_for_timeout(1500)   # the plot and gallery of the last poll
            top = ui.el("train_tab").bounding_box()
            bottom = ui.el("train_checkpoints").bounding_box()
            clip = {"x": top["x"], "y": top["y"], "width": top["width"],
                    "height": bottom["y"] + bottom["height"] - top["y"] + 8}
            shot = work / "shot.png"
            page.screenshot(path=str(shot), clip=clip, full_page=True)   # the clip may pass the viewport
            ui.el("train_interrupt").click()
            ui.wait_status(lambda state, step: state == "interrupted", "the interrupt")
            browser.close()
        close_app(blocks)
        with Image.open(shot) as image:   # a palette keeps the PNG small; the UI has few colours
            image.convert("RGB").quantize(colors=64).save(args.out, optimize=True)
        print(f"wrote {args.out}")
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
