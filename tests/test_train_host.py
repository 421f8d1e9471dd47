"""LdmHost on the tiny LatentDiffusion (shapes, freezing, the HostModel protocol), loading a checkpoint with its
yaml (ldm's own checkpointing off, so the hypernetwork gets gradients), training a model with that checkpointing
on, the demo job end to end, and the train/demo command line."""
import contextlib

import pytest
import torch

from hypernet_ext import create
from hypernet_ext.attach import attach
from hypernet_ext.host import HostModel
from hypernet_ext.standalone.cli import build_parser, main

pytest.importorskip("ldm")
from hypernet_ext.standalone.demo import run_demo, tiny_ldm_config  # noqa: E402
from hypernet_ext.standalone.ldm_host import LdmHost, load_ldm_checkpoint  # noqa: E402


def test_ldm_host_follows_the_protocol(ldm_host, tiny_ldm):
    assert isinstance(ldm_host, HostModel)
    assert ldm_host.parameterization == "eps" and ldm_host.scale_factor == pytest.approx(0.18215)
    assert ldm_host.alphas_cumprod.shape == (1000,) and ldm_host.alphas_cumprod.device.type == "cpu"
    moments = ldm_host.encode_images(torch.rand(2, 3, 32, 48) * 2 - 1)
    assert moments.shape == (2, 8, 4, 6) and moments.dtype == torch.float32
    cond = ldm_host.encode_prompts(["a photo of a cat", "a dog"])
    assert cond.shape == (2, 77, 768)
    out = ldm_host.predict(torch.randn(2, 4, 4, 6), torch.tensor([1, 999]), cond)
    assert out.shape == (2, 4, 4, 6)
    assert ldm_host.attention_root() is tiny_ldm.model.diffusion_model
    assert ldm_host.decode_latents(torch.randn(1, 4, 4, 4)).shape == (1, 3, 32, 32)
    ldm_host.freeze()
    assert not any(p.requires_grad for p in tiny_ldm.parameters()) and not tiny_ldm.training


def test_v_prediction_models_are_recognised(tiny_ldm_v):
    assert LdmHost(tiny_ldm_v).parameterization == "v"


def write_checkpoint(tiny_ldm, tiny_cache, folder, suffix=".safetensors", use_checkpoint=False):
    """tiny_ldm's weights (the text encoder's too, as in SD files: it is built without weights) and its ldm yaml,
    written to ``folder``."""
    from omegaconf import OmegaConf
    from safetensors.torch import save_file

    from hypernet_ext.standalone.demo import tiny_clip_dir

    weights = {k: v.contiguous() for k, v in tiny_ldm.state_dict().items()}
    path = folder / f"tiny{suffix}"
    if suffix == ".safetensors":
        save_file(weights, str(path))
    else:
        torch.save({"state_dict": weights, "global_step": 1}, path)
    config = tiny_ldm_config(tiny_clip_dir(tiny_cache))
    config["params"]["unet_config"]["params"]["use_checkpoint"] = use_checkpoint   # True in v1-inference.yaml
    yaml = folder / "tiny.yaml"
    OmegaConf.save(OmegaConf.create({"model": config}), yaml)
    return path, yaml


@pytest.mark.parametrize("suffix", [".safetensors", ".ckpt"])
def test_load_ldm_checkpoint_from_weights_and_yaml(tiny_ldm, tiny_cache, tmp_path, suffix):
    host = load_ldm_checkpoint(*write_checkpoint(tiny_ldm, tiny_cache, tmp_path, suffix))
    assert host.model_name == "tiny" and len(host.model_hash) == 10
    x, t = torch.randn(1, 4, 4, 4), torch.tensor([500])
    cond = host.encode_prompts(["a red circle"])
    with torch.no_grad():
        torch.testing.assert_close(host.predict(x, t, cond), LdmHost(tiny_ldm).predict(x, t, cond))


def test_a_yaml_with_use_checkpoint_true_still_gives_the_hypernetwork_gradients(tiny_ldm, tiny_cache, tmp_path):
    host = load_ldm_checkpoint(*write_checkpoint(tiny_ldm, tiny_cache, tmp_path, use_checkpoint=True))
    host.freeze()
    assert not any(m.__dict__.get(flag) for m in host.unet.modules() for flag in ("checkpoint", "use_checkpoint"))
    network = create(name="hn", sizes=(32, 64, 768), layer_structure=(1, 0.5, 1), activation="relu", seed=0)
    cond = host.encode_prompts(["a red circle"])
    with attach(host.attention_root(), [network]):
        host.predict(torch.randn(1, 4, 4, 4), torch.tensor([500]), cond).square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in network.parameters())


@contextlib.contextmanager
def ldm_checkpointing_on(model):
    """The flags as the SD yamls (and webui's sd_model) have them, on the session's tiny model, then back."""
    changed = [m for m in model.modules() if m.__dict__.get("checkpoint") is False
               or m.__dict__.get("use_checkpoint") is False]
    for module in changed:
        for flag in ("checkpoint", "use_checkpoint"):
            if flag in module.__dict__:
                module.__dict__[flag] = True
    try:
        yield
    finally:
        for module in changed:
            for flag in ("checkpoint", "use_checkpoint"):
                if flag in module.__dict__:
                    module.__dict__[flag] = False


def test_training_a_model_with_ldm_checkpointing_on(ldm_host, tiny_ldm, shapes_dataset, tmp_path):
    from hypernet_ext.training import TrainConfig, Trainer

    network = create(name="hn", sizes=(32, 64, 768), layer_structure=(1, 0.5, 1), activation="relu", seed=0)
    start = {k: v.clone() for k, v in network.state_dict().items()}
    config = TrainConfig(name="hn", out_dir=str(tmp_path), steps=2, save_every=0, tensorboard=False,
                         schedule={"learn_rate": "1e-3"})
    with ldm_checkpointing_on(tiny_ldm):
        Trainer(ldm_host, network, shapes_dataset, config).train()
        assert tiny_ldm.model.diffusion_model.use_checkpoint is True   # the trainer put the flags back
    assert any(not torch.equal(v, start[k]) for k, v in network.state_dict().items())


def test_demo_writes_the_network_its_optim_plots_and_previews(tmp_path, tiny_cache):
    files = run_demo(tmp_path, steps=4, root=tiny_cache)
    for key in ("network", "optim", "safetensors", "loss_csv", "preview", "loss_plot"):
        assert (tmp_path / files[key]).is_file(), key
    from PIL import Image

    assert Image.open(files["preview"]).size[0] > 200 and Image.open(files["loss_plot"]).size == (640, 360)
    assert sorted(p.name for p in (tmp_path / "previews").iterdir()) == ["demo-2.png", "demo-4.png"]
    assert "4 steps" in files["summary"]


def test_the_demo_command_trains_100_steps_by_default():  # train's options: tests/test_cli_train.py
    args = build_parser().parse_args(["demo"])
    assert args.steps == 100 and callable(args.func)


@pytest.mark.parametrize("extra, message", [
    (["--config", "model.yaml"], "give the checkpoint with --ckpt too"),
    (["--lr", "1e-3:0"], "step above 0"),
    (["--optimizer", "NoSuchOpt"], "unknown"),
])
def test_the_command_line_reports_bad_options_plainly(tmp_path, capsys, extra, message):
    code = main(["train", "--data", str(tmp_path), "--name", "x", "--out", str(tmp_path / "o"), *extra])
    assert code == 2 and message in capsys.readouterr().err
