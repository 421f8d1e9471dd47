"""Resuming: k steps, save, resume (in a fresh process through the CLI, and in-process with other optimizers)
equals a straight run; webui's own .optim resumes too; every broken .optim gives a warning and a fresh
optimizer; a crash while saving leaves the previous checkpoint intact; RNG state round-trips."""
import io
import logging
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from hypernet_ext import create, formats
from hypernet_ext.checkpoint import STATE_KEY, optim_path, rng_state, set_rng_state
from hypernet_ext.errors import TrainingError
from hypernet_ext.fileio import short_hash
from hypernet_ext.host import Callbacks
from hypernet_ext.optim import OptimizerConfig
from hypernet_ext.standalone.cli import build_parser
from hypernet_ext.standalone.commands.train import data_config, train_config
from hypernet_ext.training import TrainConfig, Trainer

pytest.importorskip("ldm")
ROOT = Path(__file__).resolve().parent.parent


def small_net(seed=0):
    return create(name="hn", sizes=(32, 64, 768), layer_structure=(1, 0.25, 1), activation="relu", seed=seed,
                  use_dropout=True, dropout_structure=(0, 0.1, 0))


class Recorder(Callbacks):
    def __init__(self, stop_at=None):
        self.stop_at, self.step, self.messages = stop_at, 0, []

    def on_progress(self, step, total, loss, lr, eta_s):
        self.step = step

    def on_message(self, text):
        self.messages.append(text)

    def should_stop(self):
        return self.stop_at is not None and self.step >= self.stop_at


def run(host, dataset, config, network, stop_at=None, resume_from=None):
    rec = Recorder(stop_at)
    result = Trainer(host, network, dataset, config, rec).train(resume_from=resume_from)
    return result, rec


def assert_same_weights(a, b):
    for (key, x), y in zip(a.state_dict().items(), b.state_dict().values()):
        torch.testing.assert_close(x, y, rtol=0, atol=1e-7, msg=key)


def cli_args(data, out, *extra):
    return ["train", "--data", str(data), "--name", "hn", "--out", str(out), "--steps", "6",
            "--lr", "2e-3:2, 1e-3:4, 5e-4:-1", "--warmup-steps", "1", "--optimizer-args", "weight_decay=0.05",
            "--template", "captions_only", "--resize", "fixed", "--width", "32", "--height", "32",
            "--min-side", "16", "--batch-size", "2", "--flip", "0.5", "--save-every", "0", "--seed", "3",
            "--mixed-precision", "no", "--no-tensorboard", "--device", "cpu", *extra]


def test_resume_in_a_fresh_process_equals_a_straight_run(ldm_host, shapes_dir, tmp_path, tiny_cache):
    from hypernet_ext.data import prepare_dataset
    from hypernet_ext.training.prompts import cache_conditioning

    args = build_parser().parse_args(cli_args(shapes_dir, tmp_path / "resumed"))
    config, data = train_config(args), data_config(args)
    dataset = prepare_dataset(data, ldm_host.encode_images, ldm_host.scale_factor)
    host, _ = cache_conditioning(ldm_host, dataset)   # as the command line encodes prompts: once, ahead
    first, _ = run(host, dataset, config, small_net(), stop_at=3)
    assert first.interrupted and formats.load(tmp_path / "resumed" / "hn.pt").step == 3
    env = dict(os.environ, HYPERNET_EXT_CACHE=str(tiny_cache),
               PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))
    argv = cli_args(shapes_dir, tmp_path / "resumed", "--resume", str(tmp_path / "resumed" / "hn.pt"))
    done = subprocess.run([sys.executable, "-m", "hypernet_ext", *argv], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "optimizer state restored" in done.stderr
    straight_config = config.replace(out_dir=str(tmp_path / "straight"))
    run(host, dataset, straight_config, straight := small_net())
    resumed = formats.load(tmp_path / "resumed" / "hn.pt")
    assert resumed.step == straight.step == 6
    assert_same_weights(resumed, straight)


@pytest.mark.parametrize("fields", [
    dict(optimizer=OptimizerConfig("SGD", {"momentum": 0.9}), grad_accum=2,
         schedule={"learn_rate": "1e-2:2, 5e-3:-1", "clip_grad_mode": "norm", "clip_grad_value": "0.05"}),
    dict(schedule={"learn_rate": "1e-3", "kind": "cosine", "cycle_steps": 3, "clip_grad_mode": "value",
                   "clip_grad_value": "1e-4:4, 1e-3:-1"}),
], ids=["sgd-momentum-accum-norm-clip", "adamw-cosine-value-clip"])
def test_resume_in_process_equals_a_straight_run(ldm_host, shapes_dataset, tmp_path, fields):
    config = TrainConfig(name="hn", out_dir=str(tmp_path / "a"), steps=6, save_every=0, tensorboard=False, **fields)
    run(ldm_host, shapes_dataset, config, small_net(), stop_at=3)
    path = tmp_path / "a" / "hn.pt"
    _, rec = run(ldm_host, shapes_dataset, config, formats.load(path), resume_from=path)
    assert not [m for m in rec.messages if "not" in m and "optimizer" in m]
    straight = small_net()
    run(ldm_host, shapes_dataset, config.replace(out_dir=str(tmp_path / "b")), straight)
    assert_same_weights(formats.load(path), straight)


def test_optimizer_arguments_not_set_now_keep_their_saved_values_and_say_so(ldm_host, shapes_dataset, tmp_path,
                                                                           caplog):
    config = TrainConfig(name="hn", out_dir=str(tmp_path), steps=2, save_every=0, tensorboard=False,
                         optimizer=OptimizerConfig("AdamW", {"weight_decay": 0.05, "eps": 1e-6}))
    run(ldm_host, shapes_dataset, config, small_net())
    path = tmp_path / "hn.pt"
    resumed = config.replace(steps=3, optimizer=OptimizerConfig("AdamW", {"eps": 1e-7}))
    with caplog.at_level(logging.INFO, logger="hypernet_ext.training.trainer"):
        _, rec = run(ldm_host, shapes_dataset, resumed, formats.load(path), resume_from=path)
    kept = [m for m in rec.messages if "kept from the checkpoint" in m]
    assert len(kept) == 1 and "weight_decay=0.05" in kept[0] and "eps" not in kept[0]
    assert any("eps changed from 1e-06 to 1e-07" in m for m in rec.messages)
    assert [r.levelno for r in caplog.records if "kept from the checkpoint" in r.getMessage()] == [logging.INFO]
    group = torch.load(optim_path(path), weights_only=True)["optimizer_state_dict"]["param_groups"][0]
    assert group["weight_decay"] == 0.05 and group["eps"] == 1e-7


def test_webui_optim_files_resume_too(ldm_host, shapes_dataset, tmp_path):
    config = TrainConfig(name="hn", out_dir=str(tmp_path / "a"), steps=4, save_every=0, tensorboard=False,
                         schedule={"learn_rate": "1e-3"})
    run(ldm_host, shapes_dataset, config, small_net(), stop_at=2)
    path = tmp_path / "a" / "hn.pt"
    ours = torch.load(optim_path(path), weights_only=True)
    webui = {key: ours[key] for key in ("optimizer_name", "hash", "optimizer_state_dict")}
    torch.save(webui, optim_path(path))
    _, rec = run(ldm_host, shapes_dataset, config, formats.load(path), resume_from=path)
    assert any("optimizer state restored" in m for m in rec.messages)
    assert any("no hypernet_ext resume state" in m for m in rec.messages)
    straight = small_net()
    run(ldm_host, shapes_dataset, config.replace(out_dir=str(tmp_path / "b")), straight)
    assert_same_weights(formats.load(path), straight)   # noise and data are functions of the step


def _break_hash(path):
    data = torch.load(optim_path(path), weights_only=True)
    torch.save(dict(data, hash="0123456789"), optim_path(path))


def _other_layout(path):
    data = torch.load(optim_path(path), weights_only=True)
    other = create(sizes=(32,), layer_structure=(1, 2, 1), seed=1)
    opt = torch.optim.AdamW(other.parameters())
    other(torch.randn(1, 2, 32))[0].sum().backward()
    opt.step()
    torch.save(dict(data, optimizer_state_dict=opt.state_dict()), optim_path(path))


@pytest.mark.parametrize("damage, optimizer, expected", [
    (_break_hash, "AdamW", "belongs to another version"),
    (lambda p: optim_path(p).write_bytes(b"not a torch file"), "AdamW", "cannot be read"),
    (lambda p: optim_path(p).unlink(), "AdamW", "does not exist"),
    (lambda p: None, "SGD", "written by optimizer AdamW"),
    (_other_layout, "AdamW", "parameter groups of sizes"),
], ids=["hash", "corrupt", "missing", "other-optimizer", "other-layout"])
def test_a_bad_optim_file_warns_and_trains_with_a_fresh_optimizer(ldm_host, shapes_dataset, tmp_path, damage,
                                                                    optimizer, expected):
    config = TrainConfig(name="hn", out_dir=str(tmp_path), steps=2, save_every=0, tensorboard=False)
    run(ldm_host, shapes_dataset, config, small_net())
    path = tmp_path / "hn.pt"
    damage(path)
    config = config.replace(steps=3, optimizer=OptimizerConfig(optimizer))
    result, rec = run(ldm_host, shapes_dataset, config, formats.load(path), resume_from=path)
    warnings = [m for m in rec.messages if expected in m]
    assert warnings and "fresh optimizer" in warnings[0]
    assert result.step == 3
    state = torch.load(optim_path(path), weights_only=True)
    assert state["hash"] == short_hash(path) and state["optimizer_name"] == optimizer
    if optimizer == "AdamW":
        assert {float(s["step"]) for s in state["optimizer_state_dict"]["state"].values()} == {1.0}


def test_a_crash_while_saving_leaves_the_previous_checkpoint_intact(ldm_host, shapes_dataset, tmp_path,
                                                                    monkeypatch):
    config = TrainConfig(name="hn", out_dir=str(tmp_path), steps=2, save_every=0, tensorboard=False)
    run(ldm_host, shapes_dataset, config, small_net())
    path = tmp_path / "hn.pt"
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.suffix in (".pt", ".optim", ".safetensors")}
    real_save = torch.save

    def half_then_fail(obj, f, *args, **kwargs):   # the disk fills up half-way through the archive
        buffer = io.BytesIO()
        real_save(obj, buffer, *args, **kwargs)
        data = buffer.getvalue()[:len(buffer.getvalue()) // 2]
        if hasattr(f, "write"):
            f.write(data)
        else:
            Path(f).write_bytes(data)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", half_then_fail)
    with pytest.raises(TrainingError, match="intact"):
        run(ldm_host, shapes_dataset, config.replace(steps=4), formats.load(path), resume_from=path)
    monkeypatch.undo()
    after = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.suffix in (".pt", ".optim", ".safetensors")}
    assert after == before
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]
    assert torch.load(optim_path(path), weights_only=True)["hash"] == short_hash(path)
    assert formats.load(path).step == 2


def test_rng_state_round_trips_through_a_weights_only_file(tmp_path):
    state = rng_state()
    torch.save({STATE_KEY: {"rng": state}}, tmp_path / "s.optim")
    loaded = torch.load(tmp_path / "s.optim", weights_only=True)[STATE_KEY]["rng"]
    expected = (torch.rand(3), random.random(), np.random.rand())
    set_rng_state(loaded)
    again = (torch.rand(3), random.random(), np.random.rand())
    assert torch.equal(expected[0], again[0]) and expected[1:] == again[1:]
