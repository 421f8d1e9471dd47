"""Driving our tabs in a real headless Chromium (Debian's, through Playwright's Python API; never `playwright
install`): the standalone app on the tiny model served on a free local port, and helpers that read and wait on
gradio 3.41's elements (its tabs are buttons without role=tab; an HTML block carries its id twice, on the block
and on its content, so every lookup takes the first match). Waits are generous: CI machines are slow and busy.
"""
import os
import socket
import time
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
WAIT_MS = 240_000
SHOTS = Path(__file__).resolve().parent.parent / "ui-failures"   # screenshots of failed UI tests (not committed)


def need_browser():
    """Skip without Chromium or Playwright, unless HYPERNET_EXT_REQUIRE_BROWSER is set (CI): then fail."""
    missing = None
    if not Path(CHROMIUM).is_file():
        missing = f"{CHROMIUM} is missing (apt-get install -y chromium)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            missing = "playwright is not installed"
    if missing:
        import pytest

        if os.environ.get("HYPERNET_EXT_REQUIRE_BROWSER"):
            pytest.fail(missing)
        pytest.skip(missing)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch_app(backend):
    """Serve the standalone app for ``backend``; (blocks, url)."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    from hypernet_ext.standalone.app import build_app

    blocks, _ = build_app(backend)
    port = free_port()
    blocks.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, show_api=False, quiet=True)
    return blocks, f"http://127.0.0.1:{port}/"


def close_app(blocks, wait_s: float = 30.0) -> None:
    """Stop the app's server. gradio's close() waits for every open request to end (uvicorn's graceful shutdown,
    no time limit), and a request still streaming when the browser went away once kept a test run waiting for good:
    after ``wait_s`` the server is told to exit at once."""
    import threading

    closing = threading.Thread(target=blocks.close, kwargs={"verbose": False}, daemon=True)
    closing.start()
    closing.join(wait_s)
    if closing.is_alive() and getattr(blocks, "server", None) is not None:
        blocks.server.force_exit = True
        closing.join(wait_s)


def screenshot(page, name: str) -> Path:
    SHOTS.mkdir(exist_ok=True)
    path = SHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


class Ui:
    """A page with our tabs, and helpers; ``name``s are our element ids without the hypernet_ext_ prefix (also
    used by dev/webui_ui_e2e.py in a real webui)."""

    def __init__(self, page, url, wait_ms=WAIT_MS):
        self.page = page
        self.wait_ms = wait_ms
        self.page.set_default_timeout(wait_ms)
        page.goto(url, wait_until="domcontentloaded")
        self.el("create_name").wait_for(state="attached")

    def el(self, name):
        return self.page.locator(f"#hypernet_ext_{name}").first

    def tab(self, label):
        self.page.locator(f"button:text-is('{label}'), [role=tab]:text-is('{label}')").first.click()

    def fill(self, name, value):
        self.el(name).locator("textarea, input").first.fill(str(value))

    def value(self, name):
        return self.el(name).locator("textarea, input").first.input_value()

    def choose(self, name, option, tries=20):
        """Pick ``option`` in a gradio dropdown: typed to filter the list, then clicked; again when an update of
        its choices (a refresh button's) closed the list before the option showed."""
        item = self.page.locator(f"ul.options li[data-value='{option}']").first
        box = self.el(name).locator("input").first
        for attempt in range(tries):
            box.click()
            box.fill(option)   # filters a long list (a run's snapshots) down to the option
            try:
                item.wait_for(state="visible", timeout=3000)
            except Exception:   # noqa: BLE001 - playwright's TimeoutError: the list was redrawn; open it again
                self.page.keyboard.press("Escape")
                if attempt == tries - 1:
                    raise
                continue
            item.click()
            return

    def text(self, name):
        return self.el(name).inner_text()

    def wait_text(self, name, text):
        self.page.locator(f"#hypernet_ext_{name}:has-text({text!r})").first.wait_for()

    def status(self):
        """(state, step) shown by the Train tab."""
        state = self.page.locator("#hypernet_ext_train_status .hypernet-ext-state").first.inner_text()
        step = self.page.locator("#hypernet_ext_train_status .hypernet-ext-step").first.inner_text()
        return state, int(step)

    def wait_status(self, predicate, what):
        """Wait until ``predicate(state, step)`` holds for the Train tab's status; (state, step)."""
        end = time.monotonic() + self.wait_ms / 1000
        while time.monotonic() < end:
            try:
                state, step = self.status()
            except Exception:   # noqa: BLE001 - the status is being redrawn
                state, step = None, None
            if state is not None and predicate(state, step):
                return state, step
            time.sleep(0.5)
        raise AssertionError(f"timed out waiting for {what}; status: {self.text('train_status')}")

    def image_src(self, name):
        image = self.el(name).locator("img")
        return image.first.get_attribute("src") if image.count() else None
