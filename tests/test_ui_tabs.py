"""The tabs as webui builds them, without a browser: webui's train-tab callback (the v1.10.1 stand-in) builds our
Create, Train and Compare tabs inside its gr.Tabs with the real gradio 3.41.2; every element id of ours starts
with hypernet_ext_, every component is kept in ui-config.json under our own key, and the forms cover every option
of the configs."""
import pytest

pytest.importorskip("ldm")
gr = pytest.importorskip("gradio")


def blocks_in(block):
    yield block
    for child in getattr(block, "children", None) or []:
        yield from blocks_in(child)


def build_in_webuis_train_tab():
    from modules import script_callbacks

    with gr.Blocks() as demo:
        txt2img = [gr.Textbox(value="a red circle"), gr.Textbox(), gr.Slider(value=20), gr.Dropdown(choices=["Euler"]),
                   gr.Slider(value=7), gr.Number(value=-1), gr.Slider(value=512), gr.Slider(value=512)]
        with gr.Tabs(elem_id="train_tabs") as tabs:
            with gr.Tab(label="Create embedding", id="create_embedding"):
                gr.Button(value="Interrupt", elem_id="train_interrupt_training")
            script_callbacks.ui_train_tabs_callback(script_callbacks.UiTrainTabParams(txt2img))
    return demo, tabs


def test_webuis_train_tab_callback_builds_our_three_tabs_beside_webuis(webui):
    _, tabs = build_in_webuis_train_tab()
    labels = [tab.label for tab in tabs.children]
    assert labels == ["Create embedding", "Hypernet: Create", "Hypernet: Train", "Hypernet: Compare"]
    ours = tabs.children[1:]
    for tab in ours:
        sources = {getattr(b, "custom_script_source", None) for b in blocks_in(tab)}
        assert sources == {tab.elem_id[:-len("_tab")]}, tab.label   # hypernet_ext_<tab>: ui-config keys of our own
        ids = [b.elem_id for b in blocks_in(tab) if getattr(b, "elem_id", None)]
        assert ids and all(i.startswith("hypernet_ext_") for i in ids) and len(ids) == len(set(ids))
    assert getattr(tabs.children[0].children[0], "custom_script_source", None) is None   # webui's stay webui's


def test_the_create_tab_offers_the_models_widths_and_the_train_tab_every_option(webui):
    from hypernet_ext.training.request import finder_fields, request_fields

    _, tabs = build_in_webuis_train_tab()
    create, train = tabs.children[1], tabs.children[2]
    sizes = next(b for b in blocks_in(create) if b.elem_id == "hypernet_ext_create_sizes")
    widths = [str(w) for w in webui.session.model_widths()]
    assert sizes.choices == [(w, w) for w in widths]   # gradio 3.41 keeps (label, value) pairs
    assert sizes.value == widths
    ids = {b.elem_id for b in blocks_in(train)}
    assert {f"hypernet_ext_train_{name}" for name in list(request_fields()) + list(finder_fields())} <= ids


def history(steps):
    return [{"step": s, "loss": 1.0 / s, "learn_rate": 1e-3, "time": float(s)} for s in steps]


def test_the_plot_has_one_row_per_step_with_the_validation_of_that_step():
    from hypernet_ext.ui.views import run_rows

    # validation before the first step (row 0) and at step 10, recorded just before step 10's own row (row 9)
    view = {"history": history(range(1, 21)), "validation": [{"step": 0, "loss": 2.0, "row": 0},
                                                             {"step": 10, "loss": 1.5, "row": 9}], "guard": []}
    rows = run_rows(view)
    assert [r["step"] for r in rows] == list(range(0, 21))       # increasing: no stretch taken for a rollback
    assert rows[0]["val_loss"] == 2.0 and rows[0]["loss"] is None
    assert rows[10]["val_loss"] == 1.5 and rows[10]["loss"] == 0.1
    assert sum(r["val_loss"] is not None for r in rows) == 2


def test_after_a_rollback_the_steps_go_back_once():
    from hypernet_ext.ui.views import run_rows

    view = {"history": history(list(range(1, 13)) + [9, 10]), "validation": [{"step": 12, "loss": 3.0, "row": 12}],
            "guard": [{"step": 12, "action": "rollback", "row": 12}]}
    rows = run_rows(view)
    assert [r["step"] for r in rows] == list(range(1, 13)) + [9, 10]
    assert rows[11]["val_loss"] == 3.0 and rows[11]["guard"] == "rollback"


def test_the_checkpoints_list_names_each_file_once_where_it_was_last_written():
    from hypernet_ext.ui.views import checkpoints_html

    text = checkpoints_html({"checkpoints": ["a-best.pt", "a-10.pt", "a-best.pt", "a-20.pt", "a-best.pt", "a.pt"]})
    assert text.count("<li>") == 4
    assert text.index("a-10.pt") < text.index("a-20.pt") < text.index("a-best.pt") < text.index("a.pt</li>")
