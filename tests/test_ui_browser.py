"""The Create, Train and Compare tabs in a real headless Chromium, built in a plain gr.Blocks on the tiny model
(the standalone app): create a network, train it with a live plot and previews, interrupt, resume, render a 2x2
comparison; errors are messages in the tab; the range test suggests a schedule that one click applies; presets
round-trip. A failed test leaves a screenshot in ui-failures/."""
import hashlib

import pytest
from ui_browser import ARGS, CHROMIUM, Ui, close_app, launch_app, need_browser, screenshot

pytest.importorskip("ldm")
pytest.importorskip("gradio")
pytestmark = pytest.mark.timeout(600)   # a browser or server that hangs fails the test instead of the whole run

DEFAULTS = dict(width=64, height=64, min_side=32, max_side=128, divisor=16, resize="fixed", steps=400,
                learn_rate="0.002", save_every=4, preview_every=4, preview_steps=4, template="captions_only",
                tensorboard=False, find_lr_steps=12)


@pytest.fixture(scope="module")
def backend(tiny_ldm, tmp_path_factory, train_images_module):
    from hypernet_ext.standalone.backend import StandaloneBackend
    from hypernet_ext.standalone.ldm_host import LdmHost

    folder = tmp_path_factory.mktemp("ui-app")
    return StandaloneBackend(folder, host_factory=lambda: LdmHost(tiny_ldm, model_name="tiny-sd1"),
                             defaults=dict(DEFAULTS, data_dir=str(train_images_module)))


@pytest.fixture(scope="module")
def train_images_module(tmp_path_factory):
    from hypernet_ext.standalone.demo import make_shapes_dataset

    return make_shapes_dataset(tmp_path_factory.mktemp("ui-images"), count=4, seed=2, sizes=[(64, 64)])


@pytest.fixture(scope="module")
def app_url(backend):
    need_browser()
    blocks, url = launch_app(backend)
    yield url
    close_app(blocks)


@pytest.fixture(scope="module")
def browser(app_url):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield chromium
        chromium.close()


@pytest.fixture
def ui(browser, app_url, request):
    page = browser.new_page(viewport={"width": 1280, "height": 1000})
    try:
        yield Ui(page, app_url)
    finally:
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            print(f"screenshot of the failure: {screenshot(page, request.node.name)}")
        page.close()


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_every_element_id_is_ours_and_unique(ui, backend):
    ids = ui.page.eval_on_selector_all("#hypernet_ext_tabs [id]", "items => items.map(e => e.id).filter(i => i)")
    ours = [i for i in ids if i.startswith("hypernet_ext_")]
    assert len(set(ours)) > 150
    assert [i for i in ids if not i.startswith("hypernet_ext_") and not i.startswith("component-")] == []
    outside = ui.page.eval_on_selector_all("[id^='hypernet_ext_']", "items => items.filter("
                                           "e => !e.closest('#hypernet_ext_tabs')).map(e => e.id)")
    assert outside == []
    for option in ("learn_rate", "val_every", "guard_action", "find_lr_steps", "optimizer_args", "cache_dir"):
        assert f"hypernet_ext_train_{option}" in ours


def test_create_train_interrupt_resume_and_compare(ui, backend):
    folder = backend.folder / "hypernetworks"
    ui.fill("create_name", "story")
    ui.el("create_button").click()
    ui.wait_text("create_result", "Created")
    assert str(folder / "story.pt") in ui.text("create_result")
    ui.el("create_button").click()                       # the same name again: refused, nothing overwritten
    ui.wait_text("create_result", "already exists")
    ui.tab("Hypernet: Train")
    assert ui.value("train_network") == "story"          # the new network is selected in the Train tab
    ui.el("train_train").click()
    ui.wait_text("train_checks", "Schedule")
    assert "0.002 until step 400" in ui.text("train_checks") and "4 images found" in ui.text("train_checks")
    _, first = ui.wait_status(lambda state, step: state == "running" and step >= 5, "the first steps")
    ui.el("train_plot").locator("img").first.wait_for()
    ui.el("train_preview").locator("img").first.wait_for()
    plot = ui.image_src("train_plot")
    ui.wait_status(lambda state, step: step >= first + 4, "the step to advance")
    ui.page.wait_for_function("([id, old]) => { const i = document.querySelector(id + ' img'); "
                              "return i && i.src != old; }", arg=["#hypernet_ext_train_plot", plot])
    assert ui.el("train_previews").locator("img").count() >= 1
    ui.el("train_interrupt").click()
    _, stopped = ui.wait_status(lambda state, step: state == "interrupted", "the interrupt")
    ui.wait_text("train_checkpoints", "story.pt")
    from hypernet_ext import formats

    assert formats.load(folder / "story.pt").step == stopped and (folder / "story.pt.optim").is_file()
    ui.el("train_resume").click()
    ui.wait_text("train_checks", "resumes from")
    ui.wait_status(lambda state, step: state == "running" and step > stopped + 2, "the resumed run")
    ui.el("train_interrupt").click()
    _, resumed = ui.wait_status(lambda state, step: state == "interrupted", "the second interrupt")
    assert resumed > stopped and formats.load(folder / "story.pt").step == resumed

    ui.tab("Hypernet: Compare")
    ui.el("compare_network_refresh").click()
    ui.choose("compare_network", "story")
    ui.page.locator("#hypernet_ext_compare_rows label").first.wait_for()
    ui.el("compare_base").locator("input").uncheck()
    rows = ui.page.locator("#hypernet_ext_compare_rows label")
    names = [rows.nth(i).inner_text().strip() for i in range(rows.count())]
    keep = {names[0], "story"}
    for i in range(rows.count()):
        box = rows.nth(i).locator("input")
        box.check() if names[i] in keep else box.uncheck()
    for name, value in (("compare_prompt", "a red circle"), ("compare_columns", "1, 2"), ("compare_width", 64),
                        ("compare_height", 64), ("compare_steps", 4)):
        ui.fill(name, value)
    ui.el("compare_render").click()
    ui.wait_text("compare_result", "2 rows x 2 columns")
    saved = list((backend.folder / "compare").glob("compare-story-*.png"))
    assert len(saved) == 1
    from PIL import Image

    with Image.open(saved[0]) as grid:
        assert grid.width > 2 * 64 and grid.height > 2 * 64 and "story" in grid.info["parameters"]
    cells = ui.el("compare_cells").locator(".thumbnail-item")
    assert cells.count() == 4
    cells.nth(3).click()
    ui.page.wait_for_function("() => document.querySelector('#hypernet_ext_compare_info textarea').value"
                              ".includes('Seed: 2')")
    assert "<hypernet:story:1>" in ui.value("compare_info")
    assert "story · seed 2" in ui.el("compare_picked").locator("[data-testid=block-label]").first.inner_text()


def test_errors_are_messages_in_the_tab(ui, backend, tmp_path):
    backend.create_network("sd2net", sizes=[1024])
    backend.create_network("fits")
    ui.tab("Hypernet: Train")
    ui.el("train_network_refresh").click()
    ui.choose("train_network", "sd2net")
    ui.el("train_check").click()
    ui.wait_text("train_checks", "none fits")
    ui.choose("train_network", "fits")
    ui.fill("train_learn_rate", "1e-3:abc")
    ui.el("train_check").click()
    ui.wait_text("train_checks", "the step must be an integer")
    ui.fill("train_learn_rate", "1e-3")
    (tmp_path / "empty").mkdir()
    ui.fill("train_data_dir", tmp_path / "empty")
    jobs = len(backend.jobs)
    ui.el("train_train").click()
    ui.wait_text("train_checks", "no images")
    assert len(backend.jobs) == jobs                       # nothing was queued


def test_find_learning_rate_suggests_a_schedule_that_one_click_applies(ui, backend):
    path = backend.create_network("ranged")
    before = digest(path)
    ui.tab("Hypernet: Train")
    ui.el("train_network_refresh").click()
    ui.choose("train_network", "ranged")
    ui.el("train_find_lr").click()
    ui.wait_text("train_lr_status", "Schedule:")
    ui.el("train_lr_plot").locator("img").first.wait_for()
    suggested = ui.text("train_lr_status").split("Schedule:", 1)[1].split("(use", 1)[0].strip()
    ui.el("train_lr_apply").click()
    ui.page.wait_for_function("(want) => document.querySelector('#hypernet_ext_train_learn_rate textarea').value "
                              "== want", arg=suggested)
    assert digest(path) == before                           # the range test never touches the network's file


def test_a_train_preset_round_trips(ui, backend):
    ui.tab("Hypernet: Train")
    ui.fill("train_steps", 123)
    ui.page.locator("#hypernet_ext_train_presets").first.locator("text=Presets").first.click()
    ui.fill("train_preset_name", "short")
    ui.el("train_preset_save").click()
    ui.wait_text("train_preset_result", "Saved")
    assert '"steps": 123' in (backend.folder / "presets" / "train" / "short.json").read_text()
    ui.fill("train_steps", 7)
    ui.choose("train_preset", "short")
    ui.el("train_preset_load").click()
    ui.wait_text("train_preset_result", "Loaded")
    ui.page.wait_for_function("() => document.querySelector('#hypernet_ext_train_steps input').value == '123'")
