"""The training loss against a direct computation with ldm's own q_sample / get_v (eps and v, min-SNR-gamma,
noise offset, alpha weights), the noise draws, precision choice, TrainConfig validation and the loss log."""
import csv
import math
from types import SimpleNamespace

import pytest
import torch

from hypernet_ext.errors import ConfigError
from hypernet_ext.training import TrainConfig
from hypernet_ext.training.logs import TrainingLog, read_loss_csv
from hypernet_ext.training.step import (
    StepRunner,
    diffusion_target,
    draw_noise,
    min_snr_weights,
    resolve_precision,
)

pytest.importorskip("ldm")
from hypernet_ext.standalone.ldm_host import LdmHost  # noqa: E402

PROMPTS = ["a red circle on a blue background", "a white square"]


def direct_loss(model, latents, prompts, t, noise, weights, gamma):
    """The loss written out from ldm's own functions: q_sample, get_v, apply_model."""
    with torch.no_grad():
        x_noisy = model.q_sample(latents, t, noise)
        target = noise if model.parameterization == "eps" else model.get_v(latents, noise, t)
        pred = model.apply_model(x_noisy, t, model.get_learned_conditioning(prompts))
        per_pixel = (pred - target) ** 2
        if weights is not None:
            per_pixel = per_pixel * weights
        per_sample = per_pixel.mean(dim=(1, 2, 3))
        if gamma:
            a = model.alphas_cumprod[t].double()
            snr = a / (1 - a)
            weight = torch.minimum(snr, torch.full_like(snr, gamma))
            weight = weight / (snr + 1) if model.parameterization == "v" else weight / snr
            per_sample = per_sample * weight.float()
        return per_sample.mean()


@pytest.mark.parametrize("parameterization, gamma, offset, alpha", [
    ("eps", 0.0, 0.0, False),
    ("eps", 5.0, 0.0, True),
    ("v", 0.0, 0.0, False),
    ("v", 5.0, 0.1, True),
])
def test_loss_matches_direct_computation(request, parameterization, gamma, offset, alpha):
    model = request.getfixturevalue("tiny_ldm" if parameterization == "eps" else "tiny_ldm_v")
    host = LdmHost(model)
    assert host.parameterization == parameterization
    gen = torch.Generator().manual_seed(3)
    latents = torch.randn(2, 4, 4, 4, generator=gen)
    weights = torch.rand(2, 1, 4, 4, generator=gen) + 0.5 if alpha else None
    runner = StepRunner(host, [], None, seed=7, min_snr_gamma=gamma, noise_offset=offset)
    batch = SimpleNamespace(latents=latents, prompts=PROMPTS, weights=weights, sizes=None)   # a MicroBatch
    with torch.no_grad():
        ours = runner.loss(batch, index=5)
    t, noise = draw_noise(7, 5, latents.shape, 1000, offset)
    expected = direct_loss(model, latents, PROMPTS, t, noise, weights, gamma)
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-7)


def test_v_target_is_alpha_noise_minus_sigma_x0():
    ac = torch.linspace(0.99, 0.01, 1000)
    x0, noise, t = torch.randn(3, 4, 2, 2), torch.randn(3, 4, 2, 2), torch.tensor([0, 500, 999])
    v = diffusion_target(x0, noise, ac, t, "v")
    a = ac[t].view(-1, 1, 1, 1)
    torch.testing.assert_close(v, a.sqrt() * noise - (1 - a).sqrt() * x0)
    assert diffusion_target(x0, noise, ac, t, "eps") is noise
    with pytest.raises(ConfigError, match="x0"):
        diffusion_target(x0, noise, ac, t, "x0")


def test_min_snr_weights_by_hand():
    ac = torch.tensor([0.999, 0.5, 0.001], dtype=torch.float64)
    t = torch.tensor([0, 1, 2])
    snr = [0.999 / 0.001, 1.0, 0.001 / 0.999]
    eps = min_snr_weights(ac, t, 5.0, "eps")
    v = min_snr_weights(ac, t, 5.0, "v")
    for i, s in enumerate(snr):
        assert math.isclose(eps[i].item(), min(s, 5.0) / s, rel_tol=1e-5)
        assert math.isclose(v[i].item(), min(s, 5.0) / (s + 1), rel_tol=1e-5)


def test_noise_draws_are_pure_and_the_offset_is_per_channel():
    t1, n1 = draw_noise(1, 10, (2, 4, 3, 3), 1000)
    t2, n2 = draw_noise(1, 10, (2, 4, 3, 3), 1000)
    assert torch.equal(t1, t2) and torch.equal(n1, n2)
    t3, n3 = draw_noise(1, 11, (2, 4, 3, 3), 1000)
    assert not torch.equal(n1, n3)
    _, with_offset = draw_noise(1, 10, (2, 4, 3, 3), 1000, noise_offset=0.1)
    shift = with_offset - n1
    assert torch.allclose(shift, shift[:, :, :1, :1].expand_as(shift))
    assert shift.abs().max() > 0
    assert 0 <= int(t1.min()) and int(t1.max()) < 1000


def test_precision_is_fp32_on_cpu():
    assert resolve_precision("auto", torch.device("cpu")) == ("no", None, None)
    mode, dtype, note = resolve_precision("fp16", torch.device("cpu"))
    assert (mode, dtype) == ("no", None) and "CUDA" in note


@pytest.mark.parametrize("field, value, match", [
    ("steps", 0, "steps"), ("grad_accum", 0, "grad_accum"), ("mixed_precision", "fp8", "mixed_precision"),
    ("min_snr_gamma", -1, "min_snr_gamma"), ("noise_offset", float("nan"), "noise_offset"),
    ("save_every", -1, "save_every"), ("out_dir", "", "out_dir"), ("max_bad_steps", 0, "max_bad_steps"),
])
def test_train_config_rejects_bad_values(field, value, match):
    with pytest.raises(ConfigError, match=match):
        TrainConfig(**{field: value})


def test_train_config_round_trips_through_a_dict():
    config = TrainConfig(name="my net?", steps=20, optimizer={"name": "sgd", "kwargs": "momentum=0.9"},
                         schedule={"learn_rate": "1e-3:10, 1e-4:-1", "clip_grad_mode": "norm"})
    assert config.name == "my net"
    data = config.to_dict()
    assert data["optimizer"]["name"] == "SGD" and data["schedule"]["clip_grad_mode"] == "norm"
    again = TrainConfig.from_dict(dict(data, unknown_key=1))
    assert again == config


def test_loss_log_writes_webui_columns_and_uses_tensorboard_when_present(tmp_path, monkeypatch):
    scalars = []

    class FakeWriter:
        def add_scalar(self, tag, value, step):
            scalars.append((tag, step))

        def close(self):
            scalars.append(("closed", None))

    monkeypatch.setattr("hypernet_ext.training.logs.tensorboard_writer", lambda folder: FakeWriter())
    log = TrainingLog(tmp_path, every=2)
    for step in range(1, 5):
        log.write(step, 0, step, 0.5 / step, 1e-4, 0.1, None if step != 4 else "non-finite loss")
    log.close()
    rows = list(csv.DictReader(open(tmp_path / "hypernetwork_loss.csv")))
    assert [r["step"] for r in rows] == ["2", "4"]
    assert list(rows[0])[:5] == ["step", "epoch", "epoch_step", "loss", "learn_rate"]
    assert rows[1]["skipped"] == "non-finite loss"
    assert ("Loss/train", 2) in scalars and ("Learn rate/train", 4) in scalars and scalars[-1][0] == "closed"
    assert read_loss_csv(tmp_path / "hypernetwork_loss.csv")[0]["loss"] == pytest.approx(0.25)
    monkeypatch.setattr("hypernet_ext.training.logs.tensorboard_writer", lambda folder: None)
    TrainingLog(tmp_path / "b").write(1, 0, 1, 1.0, 1e-4, None, None)   # no TensorBoard: no error
