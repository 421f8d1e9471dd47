"""``train --network FILE`` and ``train --resume FILE`` mean different things:
--network trains on from the network's weights and step with a fresh run state (its .optim is never read);
--resume continues the run exactly and refuses to start when the .optim is missing, foreign or from another
optimizer (saying to use --network). The exact-resume result itself is in test_train_resume."""
import logging
import os

import pytest
import torch

from hypernet_ext import checkpoint, create, formats
from hypernet_ext.checkpoint import optim_path
from hypernet_ext.data import prepare_dataset
from hypernet_ext.standalone.cli import build_parser, main
from hypernet_ext.standalone.commands.train import data_config, train_config
from hypernet_ext.training import Trainer
from hypernet_ext.training.prompts import cache_conditioning

pytest.importorskip("ldm")


def small_net():
    return create(name="hn", sizes=(32, 64, 768), layer_structure=(1, 0.25, 1), activation="relu", seed=0)


def argv(data, out, steps, *extra):
    return ["train", "--data", str(data), "--name", "hn", "--out", str(out), "--steps", str(steps),
            "--lr", "2e-3", "--template", "captions_only", "--resize", "fixed", "--width", "32", "--height", "32",
            "--min-side", "16", "--batch-size", "2", "--seed", "3", "--save-every", "0", "--mixed-precision", "no",
            "--no-tensorboard", "--no-safetensors", "--device", "cpu", *extra]


@pytest.fixture
def two_steps(ldm_host, shapes_dir, tmp_path, tiny_cache, monkeypatch):
    """hn.pt and its .optim after 2 AdamW steps, and the (config, data set) of the command line."""
    monkeypatch.setenv("HYPERNET_EXT_CACHE", str(tiny_cache))
    args = build_parser().parse_args(argv(shapes_dir, tmp_path / "first", 2))
    config = train_config(args)
    dataset = prepare_dataset(data_config(args), ldm_host.encode_images, ldm_host.scale_factor)
    Trainer(ldm_host, small_net(), dataset, config).train()
    path = tmp_path / "first" / "hn.pt"
    assert checkpoint.read_optim(path)[0] is not None
    return path, config, dataset


def weights(network):
    return [p.detach().clone() for p in network.parameters()]


def test_network_trains_on_from_the_weights_and_step_with_a_fresh_optimizer(ldm_host, shapes_dir, tmp_path,
                                                                             two_steps, caplog):
    path, config, dataset = two_steps
    out = tmp_path / "continued"
    with caplog.at_level(logging.INFO):
        assert main(argv(shapes_dir, out, 4, "--network", str(path))) == 0
    assert "fresh optimizer" in caplog.text and "optimizer state restored" not in caplog.text
    continued = formats.load(out / "hn.pt")
    assert continued.step == 4   # its 2 steps counted, as in webui

    host, _ = cache_conditioning(ldm_host, dataset)   # as the command line encodes prompts: once, ahead
    fresh = formats.load(path)   # the same start without the .optim: what --network must equal
    Trainer(host, fresh, dataset, config.replace(steps=4, out_dir=str(tmp_path / "fresh"))).train()
    resumed = formats.load(path)
    Trainer(host, resumed, dataset, config.replace(steps=4, out_dir=str(tmp_path / "resumed"))).train(path)
    assert all(torch.equal(a, b) for a, b in zip(weights(continued), weights(fresh)))
    assert not all(torch.equal(a, b) for a, b in zip(weights(continued), weights(resumed)))
    state = torch.load(optim_path(out / "hn.pt"), weights_only=True)["optimizer_state_dict"]["state"]
    assert {float(s["step"]) for s in state.values()} == {2.0}   # AdamW's own count: only this run's steps


@pytest.mark.parametrize("damage, expected", [
    (lambda p: optim_path(p).unlink(), "hn.pt.optim does not exist"),
    (lambda p: torch.save(dict(torch.load(optim_path(p), weights_only=True), hash="0123456789"), optim_path(p)),
     "belongs to another version of hn.pt"),
    (lambda p: None, "written by optimizer AdamW, this run uses SGD"),
], ids=["missing", "foreign", "other-optimizer"])
def test_resume_refuses_to_start_without_its_own_optim(shapes_dir, tmp_path, two_steps, capsys, damage, expected):
    path = two_steps[0]
    damage(path)
    before = {p.name: p.read_bytes() for p in path.parent.iterdir()}
    extra = ("--optimizer", "SGD") if "SGD" in expected else ()
    assert main(argv(shapes_dir, path.parent, 4, "--resume", str(path), *extra)) == 2
    err = capsys.readouterr().err
    assert "cannot resume the run exactly" in err and expected in err and f"--network {path}" in err
    assert {p.name: p.read_bytes() for p in path.parent.iterdir()} == before   # nothing trained or written


def test_network_and_resume_exclude_each_other(shapes_dir, tmp_path, capsys):
    path = formats.save(small_net(), tmp_path / "hn.pt")
    assert main(argv(shapes_dir, tmp_path, 2, "--network", str(path), "--resume", str(path))) == 2
    assert "give one" in capsys.readouterr().err
    assert not os.path.exists(optim_path(path))


def test_the_command_line_encodes_each_distinct_prompt_once(shapes_dir, tmp_path, tiny_cache, monkeypatch):
    from hypernet_ext.standalone.ldm_host import LdmHost

    monkeypatch.setenv("HYPERNET_EXT_CACHE", str(tiny_cache))
    encoded = []
    original = LdmHost.encode_prompts
    monkeypatch.setattr(LdmHost, "encode_prompts", lambda self, prompts: encoded.extend(prompts) or
                        original(self, prompts))
    assert main(argv(shapes_dir, tmp_path / "out", 6)) == 0   # 6 steps of 2: 12 prompts drawn from 4 captions
    assert len(encoded) == len(set(encoded)) == 4
