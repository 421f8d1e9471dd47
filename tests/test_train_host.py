"""LdmHost on the tiny LatentDiffusion (shapes, freezing, the HostModel protocol), loading a checkpoint with its
yaml, the demo job end to end, and the train/demo command line."""
import pytest
import torch

from hypernet_ext.cli import build_parser, main
from hypernet_ext.host import HostModel

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


@pytest.mark.parametrize("suffix", [".safetensors", ".ckpt"])
def test_load_ldm_checkpoint_from_weights_and_yaml(tiny_ldm, tiny_cache, tmp_path, suffix):
    from omegaconf import OmegaConf
    from safetensors.torch import save_file

    from hypernet_ext.standalone.demo import tiny_clip_dir

    weights = {k: v.contiguous() for k, v in tiny_ldm.state_dict().items() if not k.startswith("cond_stage_model.")}
    path = tmp_path / f"tiny{suffix}"
    if suffix == ".safetensors":
        save_file(weights, str(path))
    else:
        torch.save({"state_dict": weights, "global_step": 1}, path)
    yaml = tmp_path / "tiny.yaml"
    OmegaConf.save(OmegaConf.create({"model": tiny_ldm_config(tiny_clip_dir(tiny_cache))}), yaml)
    host = load_ldm_checkpoint(path, yaml)
    assert host.model_name == "tiny" and len(host.model_hash) == 10
    x, t = torch.randn(1, 4, 4, 4), torch.tensor([500])
    cond = host.encode_prompts(["a red circle"])
    with torch.no_grad():
        torch.testing.assert_close(host.predict(x, t, cond), LdmHost(tiny_ldm).predict(x, t, cond))


def test_demo_writes_the_network_its_optim_plots_and_previews(tmp_path, tiny_cache):
    files = run_demo(tmp_path, steps=4, root=tiny_cache)
    for key in ("network", "optim", "safetensors", "loss_csv", "preview", "loss_plot"):
        assert (tmp_path / files[key]).is_file(), key
    from PIL import Image

    assert Image.open(files["preview"]).size[0] > 200 and Image.open(files["loss_plot"]).size == (640, 360)
    assert sorted(p.name for p in (tmp_path / "previews").iterdir()) == ["demo-2.png", "demo-4.png"]
    assert "4 steps" in files["summary"]


def test_the_command_line_has_train_and_demo_with_every_option(capsys):
    parser = build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["train", "--help"])
    text = capsys.readouterr().out
    for option in ("--data", "--name", "--model", "--ckpt", "--config", "--network", "--sizes", "--steps", "--lr",
                   "--optimizer", "--optimizer-args", "--batch-size", "--grad-accum", "--clip-mode", "--clip",
                   "--save-every", "--preview-every", "--resume", "--out", "--seed", "--template", "--resize",
                   "--repeats", "--flip", "--shuffle-tags", "--tag-dropout", "--latent-sampling", "--alpha-weight",
                   "--cache-dir", "--min-snr-gamma", "--noise-offset", "--grad-checkpointing", "--mixed-precision"):
        assert option in text, option
    args = parser.parse_args(["demo"])
    assert args.steps == 100 and callable(args.func)


@pytest.mark.parametrize("extra, message", [
    (["--ckpt", "model.safetensors"], "--ckpt and --config go together"),
    (["--lr", "1e-3:0"], "step above 0"),
    (["--optimizer", "NoSuchOpt"], "unknown"),
])
def test_the_command_line_reports_bad_options_plainly(tmp_path, capsys, extra, message):
    code = main(["train", "--data", str(tmp_path), "--name", "x", "--out", str(tmp_path / "o"), *extra])
    assert code == 2 and message in capsys.readouterr().err
