"""The extension's life in webui (stand-in modules of v1.10.1, tests/webui_stub; the tiny ldm model as sd_model):
what the script registers and undoes, settings, our `hypernet` extra network in txt2img (several networks, never
applied twice, detached without a tag, re-attached after a model reload, hashes and width warnings in the
generation info) and the Extra Networks page."""
import pytest
import torch

from hypernet_ext import create, formats

pytest.importorskip("ldm")


def generate(prompt, seed=7, steps=3, negative=""):
    from modules import processing, shared

    p = processing.StableDiffusionProcessingTxt2Img(sd_model=shared.sd_model, prompt=prompt, negative_prompt=negative,
                                                    steps=steps, cfg_scale=5.0, seed=seed, width=32, height=32)
    processed = processing.process_images(p)
    return torch.tensor(list(processed.images[0].getdata()), dtype=torch.float32), processed.infotexts[0]


def new_network(folder, name, sizes=(768, 32, 64), seed=0, suffix=".pt", std=0.3):
    network = create(sizes=sizes, layer_structure=(1, 2, 1), activation="relu", normal_std=std, seed=seed, name=name)
    return formats.save(network, folder / f"{name}{suffix}")


def test_the_script_registers_only_callbacks_and_unload_undoes_everything(webui):
    from modules import extra_networks, script_callbacks, shared, ui_extra_networks
    from modules.extra_networks_hypernet import ExtraNetworkHypernet
    from modules.ui_extra_networks_hypernets import ExtraNetworksPageHypernetworks

    names = {category: [c.name for c in items] for category, items in script_callbacks.callback_map.items() if items}
    assert set(names) == {"callbacks_ui_settings", "callbacks_ui_train_tabs", "callbacks_model_loaded",
                          "callbacks_before_ui", "callbacks_app_started", "callbacks_script_unloaded"}
    assert all(len(v) == 1 and "hypernet_ext.py" in v[0] for v in names.values())   # named after our script
    assert type(extra_networks.extra_network_registry["hypernet"]).__name__ == "HypernetExtraNetwork"
    pages = [type(p).__name__ for p in ui_extra_networks.extra_pages]
    assert pages == ["HypernetPage"]                             # in webui's page's place
    keys = [k for k in shared.opts.data_labels if k.startswith("hypernet_ext_")]
    assert len(keys) >= 6 and all(shared.opts.data_labels[k].section[0] == "hypernet_ext" for k in keys)
    routes = [r.path for r in webui.app.router.routes if r.path.startswith("/hypernet-ext/")]
    assert sorted(routes) == ["/hypernet-ext/v1/find-lr", "/hypernet-ext/v1/jobs/{job_id}",
                              "/hypernet-ext/v1/jobs/{job_id}/interrupt", "/hypernet-ext/v1/model",
                              "/hypernet-ext/v1/networks", "/hypernet-ext/v1/networks", "/hypernet-ext/v1/train"]

    script_callbacks.script_unloaded_callback()
    assert isinstance(extra_networks.extra_network_registry["hypernet"], ExtraNetworkHypernet)
    assert [type(p) for p in ui_extra_networks.extra_pages] == [ExtraNetworksPageHypernetworks]
    assert not [k for k in shared.opts.data_labels if k.startswith("hypernet_ext_")]
    assert not [r for r in webui.app.router.routes if r.path.startswith("/hypernet-ext/")]
    script_callbacks.clear_callbacks()   # as webui does before loading the scripts again


def test_importing_the_script_again_works_like_a_ui_reload(webui):
    from modules import extra_networks, script_callbacks, ui_extra_networks
    from webui_env import load_script

    script_callbacks.script_unloaded_callback()
    script_callbacks.clear_callbacks()
    load_script()
    extra_networks.initialize()
    extra_networks.register_default_extra_networks()
    ui_extra_networks.initialize()
    ui_extra_networks.register_default_pages()
    script_callbacks.before_ui_callback()
    assert type(extra_networks.extra_network_registry["hypernet"]).__name__ == "HypernetExtraNetwork"
    assert [type(p).__name__ for p in ui_extra_networks.extra_pages] == ["HypernetPage"]


def test_a_tag_changes_the_image_strength_zero_does_not_and_no_tag_detaches(webui):
    from modules import shared

    new_network(webui.hn_dir, "style")
    base, info = generate("a red circle")
    with_net, info_net = generate("a red circle <hypernet:style:1>")
    zero, info_zero = generate("a red circle <hypernet:style:0>")
    after, _ = generate("a red circle")
    assert not torch.equal(base, with_net)
    assert torch.equal(base, zero) and torch.equal(base, after)
    assert "Hypernet hashes: style: " in info_net and "Hypernet hashes: style: " in info_zero
    assert "Hypernet" not in info
    assert shared.loaded_hypernetworks == []
    assert webui.session.generation.handle is None   # detached once the generation ended


def test_several_networks_apply_in_order_once_each_and_webui_never_applies_them(webui, monkeypatch):
    from modules import shared

    from hypernet_ext.webui import generation

    new_network(webui.hn_dir, "one", seed=1)
    new_network(webui.hn_dir, "two", seed=2, suffix=".safetensors")
    shared.loaded_hypernetworks.append("left over by webui's trainer")   # webui's own training leaves one behind
    calls = []
    attach = generation.attach
    monkeypatch.setattr(generation, "attach", lambda *a, **k: calls.append(a[1]) or attach(*a, **k))
    both, info = generate("x <hypernet:one:0.5> <hypernet:two>")
    assert shared.loaded_hypernetworks == []
    assert [[(n.name, s) for n, s in c] for c in calls] == [[("one", 0.5), ("two", 1.0)]]
    one, _ = generate("x <hypernet:one:0.5>")
    assert not torch.equal(both, one)
    assert "one: " in info and "two: " in info


def test_networks_are_cached_by_path_and_modification_time(webui, monkeypatch):
    import os

    from hypernet_ext import library

    path = new_network(webui.hn_dir, "style")
    loads = []
    real = library.formats.load
    monkeypatch.setattr(library.formats, "load", lambda *a, **k: loads.append(a[0]) or real(*a, **k))
    generate("x <hypernet:style>")
    generate("x <hypernet:style:0.7>")
    assert len(loads) == 1
    new_network(webui.hn_dir, "style", seed=5)
    stat = path.stat()
    os.utime(path, (stat.st_atime, stat.st_mtime + 10))
    generate("x <hypernet:style>")
    assert len(loads) == 2


def test_a_network_that_partly_fits_applies_with_a_warning_and_one_that_does_not_fit_is_skipped(webui):
    new_network(webui.hn_dir, "sd2ish", sizes=(1024, 32))
    new_network(webui.hn_dir, "sdxl", sizes=(2048,))
    base, _ = generate("x")
    partial, info = generate("x <hypernet:sd2ish>")
    assert not torch.equal(base, partial)
    assert "Hypernet warning: " in info and "(made for SD2); this model (SD1) has attention widths 32, 64, 768, so " \
        "it applies at 32 only (1024 not in this model)" in info
    none, info = generate("x <hypernet:sdxl>")
    assert torch.equal(base, none)
    assert "covers widths 2048 (made for SDXL) and this model (SD1) has attention widths 32, 64, 768: none of the " \
        "network's widths applies" in info and "not applied" in info


@pytest.mark.parametrize("tag, message", [
    ("<hypernet:missing>", "is not a hypernetwork in"),
    ("<hypernet:../escape>", "path separator"),
    ("<hypernet:style:abc>", "strength must be a number"),
])
def test_bad_tags_give_a_warning_in_the_generation_info_and_no_network(webui, tag, message):
    new_network(webui.hn_dir, "style")
    base, _ = generate("x")
    image, info = generate(f"x {tag}")
    assert torch.equal(base, image)
    assert message in info


def test_a_symlink_out_of_the_folder_is_not_a_network(webui, tmp_path):
    outside = new_network(tmp_path, "outside")
    (webui.hn_dir / "linked.pt").symlink_to(outside)
    assert "linked" not in webui.session.network_names()
    _, info = generate("x <hypernet:linked>")
    assert "is not a hypernetwork in" in info


def test_webuis_add_hypernetwork_to_prompt_option_is_honoured(webui):
    from modules import shared

    new_network(webui.hn_dir, "style")
    tagged, _ = generate("x <hypernet:style:1>")
    shared.opts.data["sd_hypernetwork"] = "style"
    by_option, info = generate("x")
    assert torch.equal(tagged, by_option) and "style: " in info


def test_networks_move_to_a_reloaded_model(webui):
    from modules import extra_networks, processing, sd_models, shared

    new_network(webui.hn_dir, "style")
    p = processing.StableDiffusionProcessingTxt2Img(prompt="x <hypernet:style>", steps=2, width=32, height=32)
    p.prompts = ["x <hypernet:style>"]
    p.all_prompts = list(p.prompts)
    p.parse_extra_network_prompts()
    extra_networks.activate(p, p.extra_network_data)
    handle = webui.session.generation.handle
    assert handle is not None and not handle.removed
    shared.opts.data["sd_model_checkpoint"] = webui.checkpoints[1].title
    sd_models.reload_model_weights()   # model_loaded callbacks run
    new = webui.session.generation.handle
    assert handle.removed and new is not None and not new.removed
    extra_networks.deactivate(p, p.extra_network_data)
    assert webui.session.generation.handle is None


def test_the_hypernetworks_page_lists_our_files_with_their_structure(webui):
    from modules import ui_extra_networks

    new_network(webui.hn_dir, "plain")
    new_network(webui.hn_dir, "exported", suffix=".safetensors")
    new_network(webui.hn_dir, "both")
    new_network(webui.hn_dir, "both", suffix=".safetensors")
    (webui.hn_dir / "broken.pt").write_bytes(b"not a network")
    page = ui_extra_networks.extra_pages[0]
    page.create_html("txt2img")
    assert sorted(page.items) == ["both", "exported", "plain"]
    item = page.items["exported"]
    assert item["filename"].endswith("exported.safetensors")
    assert "widths 768, 32, 64" in item["description"] and "structure 1, 2, 1 relu" in item["description"]
    assert page.metadata["plain"]["widths"] == [768, 32, 64] and page.metadata["plain"]["step"] == 0
    assert "<hypernet:plain:" in item["prompt"] or "<hypernet:exported:" in item["prompt"]


def test_settings_are_read_with_their_types(webui):
    from modules import shared

    from hypernet_ext.webui import settings

    assert settings.get("hypernet_ext_save_every") == 500
    shared.opts.data["hypernet_ext_save_every"] = 20.0   # gr.Number gives floats
    assert settings.get("hypernet_ext_save_every") == 20
