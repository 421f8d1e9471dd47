"""The Train tab's "Done when" in a real webui v1.10.1 (dev/webui-e2e.sh starts it), in headless Chromium as a new
user would: webui's Train tab shows our Create, Train and Compare sub-tabs beside its own; no element id of ours
collides with webui's and every ui-config.json key of ours is our own; a network created in Create trains from
Train with a live plot and previews; Interrupt stops it with a checkpoint; Resume continues to the end; Compare
renders the snapshots' grid and shows a picture's infotext. Exit status 0 only when every check passes.

    python dev/webui_ui_e2e.py --url URL --webui WEBUI_DIR --data IMAGES [--shot PNG]
        [--ui-config-base JSON --ui-config JSON]
Run with the harness's python (it has playwright); Debian's chromium at /usr/bin/chromium.
"""
import argparse
import json
import os
import sys

from playwright.sync_api import sync_playwright

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.join(os.path.dirname(HERE), "tests")]
from ui_browser import ARGS, CHROMIUM, Ui  # noqa: E402 - the browser tests' helpers
from webui_e2e import check, failures, make_images  # noqa: E402 - the same checks and images as the API e2e

NAME = "e2e_ui_hn"
STEPS = 40
OURS = ("Hypernet: Create", "Hypernet: Train", "Hypernet: Compare")
WEBUIS = ("Create embedding", "Create hypernetwork", "Train")
WAIT_MS = 600_000


class Page(Ui):
    """tests/ui_browser.py's helpers on webui's page."""

    def __init__(self, page, url):
        super().__init__(page, url, WAIT_MS)

    def sub_tab(self, label):
        self.page.locator("#train_tabs > .tab-nav > button", has_text=label).first.click()

    def open_section(self, slug):
        self.page.locator(f"#hypernet_ext_train_section_{slug} .label-wrap").first.click()


def sub_tabs(ui):
    ui.page.locator("#tabs > .tab-nav > button", has_text="Train").first.click()
    buttons = ui.page.locator("#train_tabs > .tab-nav > button")
    buttons.first.wait_for(state="visible")
    names = [t.strip() for t in buttons.all_inner_texts()]
    check(all(n in names for n in WEBUIS + OURS), f"webui's Train tab has webui's sub-tabs and ours: {names}")


def element_ids(ui):
    """No element id of ours outside our tabs, none of webui's inside them, and none shared."""
    found = ui.page.evaluate("""() => {
        const tabs = ['#hypernet_ext_create_tab', '#hypernet_ext_train_tab', '#hypernet_ext_compare_tab'];
        const inside = e => tabs.some(t => e.closest(t));
        const all = Array.from(document.querySelectorAll('[id]'));
        return {ours: all.filter(inside).map(e => e.id), rest: all.filter(e => !inside(e)).map(e => e.id)};
    }""")
    ours = [i for i in found["ours"] if i and not i.startswith("component-")]
    strangers = sorted({i for i in ours if not i.startswith("hypernet_ext_")})
    stray = sorted({i for i in found["rest"] if i.startswith("hypernet_ext_")} - {t[1:] for t in (
        "#hypernet_ext_create_tab", "#hypernet_ext_train_tab", "#hypernet_ext_compare_tab")})
    shared = sorted(set(ours) & set(found["rest"]))
    check(len(set(ours)) > 150 and not strangers and not stray and not shared,
          f"{len(set(ours))} element ids of ours, all hypernet_ext_*; ids not ours inside our tabs: {strangers}; "
          f"ours outside: {stray}; shared with webui's: {shared}")


def ui_config(base_path, path):
    """Keys webui wrote to ui-config.json with the extension, against a start without it: webui's keys and
    defaults unchanged, every new key ours (customscript/hypernet_ext_*)."""
    with open(base_path) as f:
        base = json.load(f)
    with open(path) as f:
        now = json.load(f)
    changed = sorted(k for k in base if now.get(k, object()) != base[k])
    new = [k for k in now if k not in base]
    strangers = [k for k in new if not k.startswith("customscript/hypernet_ext_")]
    check(new and not changed and not strangers,
          f"ui-config.json: {len(new)} keys of ours, all customscript/hypernet_ext_*; webui's keys changed: "
          f"{changed[:5]}; new keys not ours: {strangers[:5]}")


def create(ui, webui):
    ui.sub_tab("Hypernet: Create")
    widths = ui.page.locator("#hypernet_ext_create_sizes label")
    widths.first.wait_for()
    shown = [t.strip() for t in widths.all_inner_texts()]
    check(shown == ["32", "64", "768"], f"Create offers the model's attention widths: {shown}")
    ui.fill("create_name", NAME)
    ui.el("create_overwrite").locator("input").check()   # a file left by an earlier run of this script
    ui.el("create_button").click()
    ui.wait_text("create_result", "Created")
    path = os.path.join(webui, "models", "hypernetworks", f"{NAME}.pt")
    check(path in ui.text("create_result"), f"Create names the real path: {ui.text('create_result')[:200]!r}")
    card = ui.page.request.get(ui.page.url.rstrip("/") + "/sd_extra_networks/get-single-card",
                               params={"page": "hypernetworks", "tabname": "txt2img", "name": NAME})
    check(card.ok and f"&lt;hypernet:{NAME}:" in card.json().get("html", ""),
          "the new network is in txt2img's Extra Networks without a restart")
    return path


def train(ui, data, shot):
    ui.sub_tab("Hypernet: Train")
    check(ui.value("train_network") == NAME, f"Train has the new network selected: {ui.value('train_network')!r}")
    for name, value in (("data_dir", data), ("learn_rate", "0.005"), ("steps", STEPS), ("batch_size", 1)):
        ui.fill(f"train_{name}", value)
    ui.open_section("data_and_buckets")
    ui.choose("train_resize", "fixed")
    ui.fill("train_width", 64)
    ui.fill("train_height", 64)
    ui.open_section("previews")
    ui.fill("train_preview_every", 10)
    ui.fill("train_preview_steps", 4)
    ui.open_section("saving_and_logs")
    ui.fill("train_save_every", 10)
    ui.el("train_train").click()
    ui.wait_text("train_checks", "Schedule")
    check("0.005 until step 40" in ui.text("train_checks"), f"checks before the run: {ui.text('train_checks')!r}")
    _, step = ui.wait_status(lambda state, step: state == "running" and step >= 12, "the first steps")
    ui.el("train_plot").locator("img").first.wait_for()
    ui.el("train_preview").locator("img").first.wait_for()
    progress = ui.page.locator(".progressDiv").count()
    print(f"webui's progress bar elements while it runs: {progress}")
    if shot:
        ui.el("train_tab").screenshot(path=shot)
        print("screenshot:", shot)
    check(True, f"a live plot and a preview while it runs (step {step})")
    ui.el("train_interrupt").click()
    _, stopped = ui.wait_status(lambda state, step: state == "interrupted", "the interrupt")
    ui.wait_text("train_checkpoints", f"{NAME}.pt")
    check(12 <= stopped < STEPS, f"Interrupt stops the run with a checkpoint at step {stopped}")
    ui.el("train_resume").click()
    ui.wait_text("train_checks", "resumes from")
    _, end = ui.wait_status(lambda state, step: state in ("done", "failed", "interrupted"), "the resumed run")
    state, _ = ui.status()
    check(state == "done" and end == STEPS, f"Resume continues from step {stopped} and ends: {state} at {end}")
    check(ui.el("train_previews").locator("img").count() >= 1, "the previews gallery shows the previews")
    return stopped


def compare(ui, webui):
    ui.sub_tab("Hypernet: Compare")
    ui.el("compare_network_refresh").click()
    ui.choose("compare_network", NAME)
    rows = ui.page.locator("#hypernet_ext_compare_rows label")
    rows.first.wait_for()
    names = [t.strip() for t in rows.all_inner_texts()]
    keep = {f"{NAME}-10", NAME}
    for i, name in enumerate(names):
        box = rows.nth(i).locator("input")
        box.check() if name in keep else box.uncheck()
    ui.el("compare_base").locator("input").uncheck()
    for name, value in (("compare_prompt", "a photo of a red circle"), ("compare_columns", "1, 2"),
                        ("compare_width", 64), ("compare_height", 64), ("compare_steps", 4)):
        ui.fill(name, value)
    ui.el("compare_render").click()
    ui.wait_text("compare_result", "columns")
    result = ui.text("compare_result")
    check("2 rows x 2 columns" in result, f"Compare renders the 2x2 grid of snapshots: {result!r}")
    cells = ui.el("compare_cells").locator(".thumbnail-item")
    cells.nth(3).click()
    ui.page.wait_for_function("() => document.querySelector('#hypernet_ext_compare_info textarea').value != ''")
    info = ui.value("compare_info")
    label = ui.el("compare_picked").locator("[data-testid=block-label]").first.inner_text()
    check(f'Hypernet hashes: "{NAME}: ' in info and "Seed: 2" in info and f"{NAME} · seed 2" in label,
          f"a clicked picture shows its infotext (txt2img's own): {info[:300]!r} under {label!r}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--webui", required=True, help="webui's folder")
    ap.add_argument("--data", required=True, help="folder for the training images")
    ap.add_argument("--shot", help="save a screenshot of the Train sub-tab during the run here")
    ap.add_argument("--ui-config-base", help="ui-config.json of a start without the extension")
    ap.add_argument("--ui-config", help="ui-config.json of this start")
    args = ap.parse_args()
    data = make_images(args.data)
    folder = os.path.join(args.webui, "models", "hypernetworks")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        ui = Page(page, args.url)
        page.locator("#tabs > .tab-nav > button").first.wait_for(state="visible")
        try:
            sub_tabs(ui)
            element_ids(ui)
            if args.ui_config_base and args.ui_config:
                ui_config(args.ui_config_base, args.ui_config)
            create(ui, args.webui)
            train(ui, data, args.shot)
            compare(ui, args.webui)
        except Exception as err:   # noqa: BLE001 - a failed wait is a failed check, with a screenshot
            shot = os.path.join(os.path.dirname(args.data), "webui-ui-e2e-failure.png")
            page.screenshot(path=shot, full_page=True)
            check(False, f"{type(err).__name__}: {str(err)[:500]} (screenshot {shot})")
        browser.close()
    for name in os.listdir(folder):
        if name.startswith(NAME):
            os.remove(os.path.join(folder, name))
    print("\n" + ("ALL PASSED" if not failures else f"{len(failures)} FAILED: " + "; ".join(failures)))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
