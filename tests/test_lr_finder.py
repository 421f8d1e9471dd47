"""The learning-rate range test on the tiny ldm model: it trains a copy (the network object, its file, the global RNG
and the host are left as they were), stops when the loss blows up, suggests a rate below that, and ``train
--find-lr`` prints the curve and writes only its plot."""
import os

import pytest
import torch
from PIL import Image

from hypernet_ext import create, formats
from hypernet_ext.attach import is_attached
from hypernet_ext.standalone.cli import main
from hypernet_ext.training import TrainConfig
from hypernet_ext.training.config import FindLRConfig
from hypernet_ext.training.lr_finder import LRFinderResult, _suggest, find_lr

pytest.importorskip("ldm")

# the tiny model's loss is bounded (its output passes a GroupNorm and a small conv), so what blows up here is the
# arithmetic: somewhere past 1e8 the weights overflow and the loss turns NaN
FINDER = FindLRConfig(start=1e-4, end=1e30, steps=16)


def small_net():
    return create(name="hn", sizes=(32, 64, 768), layer_structure=(1, 0.25, 1), activation="relu", seed=0)


def test_the_range_test_trains_a_copy_stops_at_the_blow_up_and_suggests_a_lower_rate(ldm_host, shapes_dataset):
    net = small_net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    rng = torch.get_rng_state()
    curve = find_lr(ldm_host, net, shapes_dataset, TrainConfig(name="hn"), FINDER)
    assert all(torch.equal(v, before[k]) for k, v in net.state_dict().items()) and net.step == 0
    assert torch.equal(torch.get_rng_state(), rng) and not is_attached(ldm_host.unet)
    assert 2 < len(curve.rates) < FINDER.steps and curve.blew_up_at == curve.rates[-1]
    assert not torch.isfinite(torch.tensor(curve.smoothed[-1])) or curve.smoothed[-1] > 4 * min(curve.smoothed)
    assert curve.rates == sorted(curve.rates) and curve.rates[0] == FINDER.start
    assert curve.suggestion < curve.best_rate < curve.blew_up_at
    assert curve.schedule == f"{curve.suggestion:.2g}:500, {curve.suggestion / 10:.2g}:-1"
    assert curve.plot().size == (640, 360)


@pytest.mark.parametrize("smoothed, blew_up, note", [
    ([1.0, 0.8, 0.9, float("nan")], 4.0, ""),
    ([1.0, 0.8, 0.7, 0.6], None, "did not blow up"),
    ([0.5, 0.8, 3.0], 3.0, "lowest at the first rate"),
])
def test_the_suggestion_is_a_tenth_of_the_best_rate(smoothed, blew_up, note):
    rates = [1.0, 2.0, 3.0, 4.0][:len(smoothed)]
    curve = LRFinderResult(rates=rates, losses=smoothed, smoothed=smoothed, blew_up_at=blew_up)
    _suggest(curve, 1000, FindLRConfig())
    best = rates[min(range(len(smoothed)), key=lambda i: smoothed[i] if smoothed[i] == smoothed[i] else 9)]
    assert curve.suggestion == best / 10 and curve.schedule.endswith(":-1") and note in curve.note


def test_find_lr_on_the_command_line_leaves_the_network_file_untouched(shapes_dir, tmp_path, tiny_cache,
                                                                       monkeypatch, capsys):
    monkeypatch.setenv("HYPERNET_EXT_CACHE", str(tiny_cache))
    path = tmp_path / "hn.pt"
    formats.save(small_net(), path)
    os.utime(path, ns=(10 ** 18, 10 ** 18))   # a time no rewrite could give it
    before = (path.read_bytes(), path.stat().st_mtime_ns)
    out = tmp_path / "out"
    code = main(["train", "--name", "hn", "--data", str(shapes_dir), "--template", "captions_only", "--resize",
                 "fixed", "--width", "32", "--height", "32", "--min-side", "16", "--batch-size", "2", "--device",
                 "cpu", "--network", str(path), "--out", str(out), "--find-lr", "--find-lr-start", "1e-4",
                 "--find-lr-end", "1e30", "--find-lr-steps", "16"])
    assert code == 0
    assert (path.read_bytes(), path.stat().st_mtime_ns) == before
    assert {p.name for p in tmp_path.iterdir()} == {"hn.pt", "out"} and [p.name for p in out.iterdir()] == [
        "hn-lr-find.png"]
    assert Image.open(out / "hn-lr-find.png").size == (640, 360)
    printed = capsys.readouterr().out
    assert "the loss blew up at lr" in printed and "suggested learning rate" in printed and "try: --lr '" in printed
