"""Every model family webui v1.10.1 loads, from the command line on tiny models: SD1 (ldm, CLIP), SD2 at 512 with
eps and at 768 with v prediction (ldm, OpenCLIP), SDXL (sgm stand-in, two text encoders, size conditioning). A
checkpoint and its yaml train a network with the model's widths; a run stopped halfway and resumed with --resume
ends with the same weights as a straight run; the network changes what the loaded model predicts. Without
--config the config is inferred from the weights (the published configs swapped for these tiny ones)."""
import pytest
import torch

from hypernet_ext import formats
from hypernet_ext.attach import attach
from hypernet_ext.standalone.cli import main
from hypernet_ext.webui.generation import model_widths

pytest.importorskip("ldm")
from sd_configs import build_tiny_sd, tiny_model_config, use_tiny_open_clip  # noqa: E402
from sgm_env import STUB, build_tiny_sdxl, tiny_clip_dir, tiny_sdxl_config, use_sgm  # noqa: E402

from hypernet_ext.standalone import model_configs  # noqa: E402
from hypernet_ext.standalone.checkpoints import load_checkpoint  # noqa: E402

FAMILIES = ["sd1", "sd2", "sd2-v", "sdxl"]
PUBLISHED = {"sd1": "v1-inference", "sd2": "v2-inference", "sd2-v": "v2-inference", "sdxl": "sd_xl_base"}


@pytest.fixture(autouse=True)
def tiny_open_clip(monkeypatch):
    use_tiny_open_clip(monkeypatch)
    use_sgm()


def model_config(family, cache) -> dict:
    """The tiny ``model`` config of ``family``."""
    return tiny_sdxl_config(tiny_clip_dir(cache)) if family == "sdxl" else tiny_model_config(family, cache)


def write_model(family, cache, folder):
    """A tiny checkpoint of ``family`` (seed 2) and its yaml."""
    from omegaconf import OmegaConf
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    model = build_tiny_sdxl(cache, seed=2) if family == "sdxl" else build_tiny_sd(family, cache, seed=2)
    ckpt, yaml = folder / f"{family}.safetensors", folder / f"{family}.yaml"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(ckpt))
    OmegaConf.save(OmegaConf.create({"model": model_config(family, cache)}), yaml)
    return ckpt, yaml


def argv(data, out, ckpt, yaml, steps, *extra):
    model = ["--ckpt", str(ckpt)] + (["--config", str(yaml)] if yaml else []) + ["--sgm-path", str(STUB)]
    return ["train", "--data", str(data), "--name", "hn", "--out", str(out), *model, "--steps", str(steps),
            "--lr", "5e-3:2, 2e-3:-1", "--template", "captions_only", "--resize", "fixed", "--width", "32",
            "--height", "32", "--min-side", "16", "--batch-size", "2", "--flip", "0.5", "--save-every", "0",
            "--seed", "3", "--network-seed", "0", "--layer-structure", "1, 0.5, 1", "--no-tensorboard", "--device",
            "cpu", *extra]


@pytest.mark.parametrize("family", FAMILIES)
def test_a_family_trains_resumes_exactly_and_applies_from_the_command_line(family, shapes_dir, tiny_cache,
                                                                           tmp_path):
    ckpt, yaml = write_model(family, tiny_cache, tmp_path / "model")
    assert main(argv(shapes_dir, tmp_path / "a", ckpt, yaml, 4)) == 0
    assert main(argv(shapes_dir, tmp_path / "b", ckpt, yaml, 2)) == 0
    assert main(argv(shapes_dir, tmp_path / "b", ckpt, yaml, 4, "--resume", str(tmp_path / "b" / "hn.pt"))) == 0
    straight, resumed = formats.load(tmp_path / "a" / "hn.pt"), formats.load(tmp_path / "b" / "hn.pt")
    assert straight.step == resumed.step == 4
    for key, value in straight.state_dict().items():
        torch.testing.assert_close(resumed.state_dict()[key], value, rtol=0, atol=1e-7, msg=key)

    host = load_checkpoint(ckpt, yaml, sgm_path=STUB)
    assert host.parameterization == ("v" if family == "sd2-v" else "eps")
    assert sorted(straight.widths) == model_widths(host.unet)   # --sizes auto: every width of the model
    cond = host.encode_prompts(["a red circle on a blue background"])
    x, t = torch.randn(1, 4, 4, 4), torch.tensor([400])
    with torch.no_grad():
        base = host.predict(x, t, cond)
        with attach(host.unet, straight):
            applied = host.predict(x, t, cond)
    assert not torch.allclose(base, applied)


@pytest.mark.parametrize("family", FAMILIES)
def test_without_config_the_checkpoint_gets_the_config_its_weights_show(family, shapes_dir, tiny_cache, tmp_path,
                                                                          monkeypatch, caplog):
    ckpt, _ = write_model(family, tiny_cache, tmp_path / "model")
    tiny = model_config("sd2" if family == "sd2-v" else family, tiny_cache)   # v: told by running the UNet
    for name in {PUBLISHED[family], "v2-inference-v"}:
        monkeypatch.setitem(model_configs.CONFIGS, name, lambda tiny=tiny: {"model": tiny})
    host = load_checkpoint(ckpt, sgm_path=STUB)
    assert host.parameterization == ("v" if family == "sd2-v" else "eps")
    assert type(host).__name__ == ("SgmHost" if family == "sdxl" else "LdmHost")
    with caplog.at_level("INFO"):
        assert main(argv(shapes_dir, tmp_path / "out", ckpt, None, 1)) == 0
    assert f"the weights are {PUBLISHED[family]}" in caplog.text
    assert formats.load(tmp_path / "out" / "hn.pt").step == 1
