"""Every model family inside webui (stand-in modules of v1.10.1, tests/webui_stub): SD1, SD2 (eps and v) and SDXL
(sgm stand-in, tests/sgm_env.py) as webui's loaded model. The REST API names the family and its widths; a
network created with the default widths gets the model's; it trains, a run stopped halfway and resumed ends with
the same weights as a straight run, the model is left exactly as it was (ldm's/sgm's checkpoint flags included),
and the network changes txt2img. SDXL's conditioning is webui's get_learned_conditioning with each image's size,
and its text encoders run once per caption."""
import pytest
import torch

from hypernet_ext import formats
from hypernet_ext.data.buckets import SizeCond
from hypernet_ext.webui import model_state

pytest.importorskip("ldm")
from sd_configs import build_tiny_sd, use_tiny_open_clip  # noqa: E402
from sgm_env import build_tiny_sdxl  # noqa: E402
from webui_env import WebuiEnv  # noqa: E402

FAMILIES = ["sd1", "sd2", "sd2-v", "sdxl"]
WIDTHS = {"sd1": [32, 64, 768], "sd2": [32, 64], "sd2-v": [32, 64], "sdxl": [64, 80, 128]}   # the tiny models'
RUN = dict(resize="fixed", width=32, height=32, min_side=16, template="captions_only", learn_rate="5e-3:2, 2e-3:-1",
           tensorboard=False, save_every=0, batch_size=2, flip=0.5, seed=3, save_safetensors=False)


@pytest.fixture(scope="module")
def family_models(tiny_cache):
    """family -> a tiny model of it, built on first use (webui's loading changes a model, so these are not the
    session's tiny models)."""
    built = {}

    def get(family):
        if family not in built:
            if family == "sdxl":
                built[family] = build_tiny_sdxl(tiny_cache, seed=1)
            else:
                with pytest.MonkeyPatch.context() as patch:
                    use_tiny_open_clip(patch)
                    built[family] = build_tiny_sd(family, tiny_cache, seed=1)
        return built[family]
    return get


@pytest.fixture
def family_webui(family_models, tmp_path, monkeypatch):
    """A function: family -> the stand-in webui with a tiny model of that family loaded."""
    envs = []

    def start(family):
        envs.append(WebuiEnv(family_models(family), tmp_path, monkeypatch))
        return envs[-1]
    yield start
    for env in envs:
        env.close()


def generate(prompt):
    from modules import processing, shared

    p = processing.StableDiffusionProcessingTxt2Img(sd_model=shared.sd_model, prompt=prompt, steps=2, cfg_scale=5.0,
                                                    seed=7, width=32, height=32)
    processed = processing.process_images(p)
    return torch.tensor(list(processed.images[0].getdata()), dtype=torch.float32), processed.infotexts[0]


@pytest.mark.parametrize("family", FAMILIES)
def test_a_family_trains_resumes_exactly_and_applies_inside_webui(family, family_webui, train_images):
    webui = family_webui(family)
    from modules import shared

    session = webui.session
    assert session.model_widths() == WIDTHS[family]
    label = {"sd1": "SD1", "sd2": "SD2", "sd2-v": "SD2", "sdxl": "SDXL"}[family]
    assert webui.client().get("/hypernet-ext/v1/model").json() == {"family": label.lower(), "label": label,
                                                                    "widths": WIDTHS[family]}
    for name in ("a", "b"):
        session.create_network(name, layer_structure=(1, 0.5, 1), activation="relu", normal_std=0.3, seed=0)
    start = formats.load(webui.hn_dir / "a.pt").state_dict()
    assert sorted(formats.load(webui.hn_dir / "a.pt").widths) == WIDTHS[family]
    before = model_state.capture(shared.sd_model)
    assert any(flag is True for (_, name), flag in before.flags.items() if name in ("checkpoint", "use_checkpoint")) \
        == (family != "sd1")   # SD2's and SDXL's yamls turn ldm's / sgm's own checkpointing on

    straight = webui.wait(session.start_training("a", data_dir=str(train_images), steps=4, **RUN))
    half = webui.wait(session.start_training("b", data_dir=str(train_images), steps=2, **RUN))
    resumed = webui.wait(session.start_training("b", data_dir=str(train_images), steps=4, resume=True, **RUN))
    assert [view["state"] for view in (straight, half, resumed)] == ["done"] * 3, (straight, half, resumed)
    assert resumed["history"][0]["step"] == 3
    assert any("optimizer state restored" in m for m in resumed["messages"])
    a, b = formats.load(webui.hn_dir / "a.pt"), formats.load(webui.hn_dir / "b.pt")
    assert a.step == b.step == 4
    for key, value in a.state_dict().items():
        torch.testing.assert_close(b.state_dict()[key], value, rtol=0, atol=1e-7, msg=key)
        assert not torch.equal(value, start[key]) or key.endswith("bias"), key   # the network got its gradient
    assert model_state.differences(before, model_state.capture(shared.sd_model)) == []

    base, info = generate("a red circle")
    applied, applied_info = generate("a red circle <hypernet:a>")
    assert "Hypernet hashes" not in info and "Hypernet hashes: " in applied_info and "warning" not in applied_info
    assert (base - applied).abs().max() > 0


def test_sdxl_conditioning_is_webuis_get_learned_conditioning_at_each_images_size(family_webui):
    family_webui("sdxl")
    from modules import prompt_parser, shared

    from hypernet_ext.webui.host import WebuiHost

    model = shared.sd_model
    host = WebuiHost(model)
    assert host.family == "sdxl"
    prompts = ["a red circle", "a (blue:1.3) square"]
    sizes = [SizeCond((48, 32), (8, 0), (48, 32)), SizeCond((64, 96), (0, 16), (64, 96))]
    with torch.no_grad():
        made = host.size_conditioning(host.encode_prompts(prompts), sizes)
        for i, size in enumerate(sizes):
            shared.opts.sdxl_crop_top, shared.opts.sdxl_crop_left = size.crop
            height, width = size.target
            webuis = model.get_learned_conditioning(prompt_parser.SdConditioning([prompts[i]], width=width,
                                                                                 height=height))
            for key in ("crossattn", "vector"):
                torch.testing.assert_close(made[key][i:i + 1], webuis[key], msg=key)
        default = model.get_learned_conditioning(prompts)   # webui's default size: 1024 x 1024
    assert not torch.allclose(made["vector"], default["vector"])
    torch.testing.assert_close(made["crossattn"], default["crossattn"])


def test_sdxl_text_encoders_run_once_per_caption_and_can_leave_the_device(family_webui, train_images, monkeypatch):
    webui = family_webui("sdxl")
    from modules import shared

    webui.session.create_network("hn", layer_structure=(1, 0.5, 1), activation="relu", seed=0)
    conditioner = shared.sd_model.conditioner
    texts = []
    original = type(conditioner).forward
    monkeypatch.setattr(type(conditioner), "forward",
                        lambda self, batch, *a, **k: texts.extend(batch["txt"]) or original(self, batch, *a, **k))
    before = model_state.capture(shared.sd_model)
    view = webui.wait(webui.session.start_training("hn", data_dir=str(train_images), steps=3, unload_text_encoder=True,
                                                   grad_checkpointing=True, **RUN))
    assert view["state"] == "done", view
    captions = {p.read_text(encoding="utf-8") for p in train_images.glob("*.txt")}
    assert sorted(texts) == sorted(captions)   # each caption once, both encoders in that one call
    assert any("text encoder waits on the CPU" in m for m in view["messages"])
    assert model_state.differences(before, model_state.capture(shared.sd_model)) == []
