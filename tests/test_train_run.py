"""End-to-end runs on the tiny ldm model: exactly the expected files, a frozen base, gradient checkpointing,
gradient accumulation, non-finite steps (skipped, then a stop at the last good checkpoint), fp16 loss-scale
overflows (through a stand-in scaler: GradScaler needs CUDA), stop requests and Ctrl-C, previews through the
callbacks, the effective learning rate of LR-free optimizers in progress and logs, and the validation and guard
columns of the loss log."""
import csv
import math

import pytest
import torch

from hypernet_ext import create, formats
from hypernet_ext.attach import is_attached
from hypernet_ext.checkpoint import STATE_KEY, optim_path
from hypernet_ext.errors import TrainingError
from hypernet_ext.fileio import short_hash
from hypernet_ext.formats.torch_zip import webui_rejected_names
from hypernet_ext.host import Callbacks
from hypernet_ext.training import TrainConfig, Trainer
from hypernet_ext.training import logs as logs_module
from hypernet_ext.training import step as step_module
from hypernet_ext.training.logs import COLUMNS, TrainingLog, read_loss_csv
from hypernet_ext.training.step import NON_FINITE_GRADIENT, NON_FINITE_LOSS, OVERFLOW, StepOutcome
from hypernet_ext.training.validation import ValidationResult

pytest.importorskip("ldm")


def small_net(seed=0, **fields):
    fields = dict(dict(sizes=(32, 64, 768), layer_structure=(1, 0.25, 1), activation="relu", seed=seed), **fields)
    return create(name="hn", **fields)


class Recorder(Callbacks):
    def __init__(self, stop_at=None, interrupt_at=None):
        self.stop_at, self.interrupt_at = stop_at, interrupt_at
        self.steps, self.messages, self.previews, self.checkpoints, self.lrs = [], [], [], [], []

    def on_progress(self, step, total, loss, lr, eta_s):
        self.steps.append(step)
        self.lrs.append(lr)
        if step == self.interrupt_at:
            raise KeyboardInterrupt

    def on_checkpoint(self, path, step):
        self.checkpoints.append((path, step))

    def on_preview(self, step, network):
        assert not network.training
        self.previews.append(step)

    def on_message(self, text):
        self.messages.append(text)

    def should_stop(self):
        return self.stop_at is not None and bool(self.steps) and self.steps[-1] >= self.stop_at


def train(host, dataset, out, network=None, callbacks=None, resume_from=None, **fields):
    fields = dict(dict(name="hn", out_dir=str(out), steps=6, save_every=0, tensorboard=False,
                       schedule={"learn_rate": "1e-3"}), **fields)
    network = network if network is not None else small_net()
    return Trainer(host, network, dataset, TrainConfig(**fields), callbacks).train(resume_from), network


def test_six_steps_write_exactly_the_expected_files(ldm_host, shapes_dataset, tmp_path):
    rec = Recorder()
    result, net = train(ldm_host, shapes_dataset, tmp_path, callbacks=rec, save_every=2, preview_every=3)
    expected = {f"hn-{k}.pt" for k in (2, 4, 6)} | {f"hn-{k}.pt.optim" for k in (2, 4, 6)}
    expected |= {"hn.pt", "hn.pt.optim", "hn.safetensors", "hypernetwork_loss.csv"}
    assert {p.name for p in tmp_path.iterdir()} == expected
    for name, step in [("hn-2.pt", 2), ("hn-4.pt", 4), ("hn-6.pt", 6), ("hn.pt", 6)]:
        path = tmp_path / name
        assert formats.load(path).step == step
        sidecar = torch.load(optim_path(path), weights_only=True)
        assert sidecar["hash"] == short_hash(path)
        assert sidecar["optimizer_name"] == "AdamW" and sidecar["optimizer_state_dict"]["state"]
        assert sidecar[STATE_KEY]["step"] == step and "rng" in sidecar[STATE_KEY]
        assert webui_rejected_names(optim_path(path)) == []   # webui's safe unpickler opens it
    assert formats.load(tmp_path / "hn.safetensors").step == 6
    rows = read_loss_csv(tmp_path / "hypernetwork_loss.csv")
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6] and all(math.isfinite(r["loss"]) for r in rows)
    assert rec.steps == [1, 2, 3, 4, 5, 6] and rec.previews == [3, 6]
    assert rec.lrs == [1e-3] * 6 and [r["effective_lr"] for r in rows] == [1e-3] * 6   # AdamW: the rate itself
    assert [s for _, s in rec.checkpoints] == [2, 4, 6, 6]
    assert result.final_path == str(tmp_path / "hn.pt") and result.step == net.step == 6


def test_log_dir_takes_the_loss_log_away_from_the_checkpoints(ldm_host, shapes_dataset, tmp_path):
    out, logs = tmp_path / "out", tmp_path / "logs"
    train(ldm_host, shapes_dataset, out, steps=2, log_dir=str(logs), save_safetensors=False)
    assert {p.name for p in out.iterdir()} == {"hn.pt", "hn.pt.optim"}
    assert [r["step"] for r in read_loss_csv(logs / "hypernetwork_loss.csv")] == [1, 2]


def same_weights(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_snapshots_hold_the_weights_of_the_step_they_are_named_after(ldm_host, shapes_dataset, tmp_path):
    """Not only their step field: <name>-6.pt of a 6-step run is <name>.pt, and <name>-4.pt is what a separate
    4-step run ends with (dropout on, a schedule with a drop: both are functions of the step)."""
    fields = dict(use_dropout=True, dropout_structure=(0, 0.1, 0))
    schedule = {"learn_rate": "2e-3:3, 1e-3:-1"}
    _, six = train(ldm_host, shapes_dataset, tmp_path / "six", network=small_net(**fields), save_every=2,
                   schedule=schedule)
    files = {name: formats.load(tmp_path / "six" / f"{name}.pt") for name in ("hn-2", "hn-4", "hn-6", "hn")}
    assert same_weights(files["hn-6"], files["hn"]) and same_weights(files["hn"], six)
    _, four = train(ldm_host, shapes_dataset, tmp_path / "four", network=small_net(**fields), steps=4,
                    schedule=schedule)
    assert four.step == 4 and same_weights(files["hn-4"], four)
    assert not same_weights(files["hn-2"], files["hn-4"]) and not same_weights(files["hn-4"], files["hn-6"])


def test_base_stays_frozen_and_only_the_network_changes(ldm_host, tiny_ldm, shapes_dataset, tmp_path):
    before = {k: v.clone() for k, v in tiny_ldm.state_dict().items()}
    net = small_net()
    start = {k: v.clone() for k, v in net.state_dict().items()}
    train(ldm_host, shapes_dataset, tmp_path, network=net, steps=3)
    for key, value in tiny_ldm.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert all(p.grad is None and not p.requires_grad for p in tiny_ldm.parameters())
    assert all(p.grad is None for p in net.parameters()) and not net.training
    changed = [k for k, v in net.state_dict().items() if not torch.equal(v, start[k])]
    assert changed and all(k.endswith(("weight", "bias")) for k in changed)
    assert not is_attached(tiny_ldm)


def test_gradient_checkpointing_gives_the_same_training_and_leaves_nothing_behind(
        ldm_host, tiny_ldm, shapes_dataset, tmp_path):
    calls = []
    probe = ldm_host.unet.output_blocks[-1][0].in_layers   # inside the last ResBlock, on the gradient's path
    hook = probe.register_forward_hook(lambda *args: calls.append(torch.is_grad_enabled()))
    plain, net_a = train(ldm_host, shapes_dataset, tmp_path / "a", network=small_net(dropout_structure=(0, 0.1, 0),
                                                                                        use_dropout=True), steps=2)
    ckpt, net_b = train(ldm_host, shapes_dataset, tmp_path / "b", network=small_net(dropout_structure=(0, 0.1, 0),
                                                                                       use_dropout=True),
                        steps=2, grad_checkpointing=True)
    for (key, a), b in zip(net_a.state_dict().items(), net_b.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7, msg=key)
    hook.remove()
    assert plain.losses == pytest.approx(ckpt.losses, rel=1e-5)
    assert len(calls) == 2 + 2 * 2   # recomputed once per step in the backward pass
    assert not any("forward" in m.__dict__ for m in tiny_ldm.modules())
    assert not is_attached(tiny_ldm)


def test_gradient_accumulation_uses_consecutive_batches(ldm_host, shapes_dataset, tmp_path):
    seen = []

    class Spy:
        def __init__(self, inner):
            self.inner = inner

        def micro_batch(self, index):
            seen.append(index)
            return self.inner.micro_batch(index)

        def __getattr__(self, name):
            return getattr(self.inner, name)

    result, _ = train(ldm_host, Spy(shapes_dataset), tmp_path, steps=3, grad_accum=2)
    assert seen == [0, 1, 2, 3, 4, 5] and result.step == 3


class FaultyHost:
    """The tiny host, with a non-finite prediction (or only gradient) at chosen predict calls."""

    def __init__(self, host, bad_calls, kind="loss"):
        self.host, self.bad_calls, self.kind, self.calls = host, set(bad_calls), kind, 0

    def predict(self, x, t, cond):
        out = self.host.predict(x, t, cond)
        self.calls += 1
        if self.calls in self.bad_calls:
            return out * float("nan") if self.kind == "loss" else NanGrad.apply(out)
        return out

    def __getattr__(self, name):
        return getattr(self.host, name)


class NanGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("nan")


@pytest.mark.parametrize("kind, reason", [("loss", "non-finite loss"), ("grad", "non-finite gradient")])
def test_non_finite_steps_are_skipped_counted_and_reported(ldm_host, shapes_dataset, tmp_path, kind, reason):
    rec = Recorder()
    net = small_net()
    result, _ = train(FaultyHost(ldm_host, {2, 3}, kind), shapes_dataset, tmp_path, network=net, callbacks=rec,
                      steps=5, max_bad_steps=3)
    assert result.skipped_steps == 2 and result.step == 5 and net.step == 5
    rows = read_loss_csv(tmp_path / "hypernetwork_loss.csv")
    assert len(rows) == 5
    sidecar = torch.load(tmp_path / "hn.pt.optim", weights_only=True)
    adam_steps = {float(s["step"]) for s in sidecar["optimizer_state_dict"]["state"].values()}
    assert adam_steps == {3.0}   # 5 steps, 2 without an update
    assert sum(reason in m for m in rec.messages) == 2
    assert all(torch.isfinite(p).all() for p in net.parameters())


class FakeScaler:
    """Stands in for torch.cuda.amp.GradScaler, which needs CUDA: scales the loss, unscales the gradients, and
    on an inf/NaN gradient skips the optimizer step and halves its scale, as GradScaler does."""

    def __init__(self, scale=65536.0):
        self.value, self.found_inf = scale, False

    def is_enabled(self):
        return True

    def scale(self, loss):
        return loss * self.value

    def unscale_(self, optimizer):
        grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        for grad in grads:
            grad.div_(self.value)
        self.found_inf = not all(bool(torch.isfinite(grad).all()) for grad in grads)

    def step(self, optimizer):
        if not self.found_inf:
            optimizer.step()

    def update(self):
        if self.found_inf:
            self.value *= 0.5
        self.found_inf = False

    def get_scale(self):
        return self.value

    def state_dict(self):
        return {"scale": self.value}

    def load_state_dict(self, state):
        self.value = state["scale"]


def skipped_column(path):
    with open(path, newline="", encoding="utf-8") as f:
        return [row["skipped"] for row in csv.DictReader(f)]


def test_fp16_overflows_are_skipped_but_are_not_a_divergence(ldm_host, shapes_dataset, tmp_path, monkeypatch):
    monkeypatch.setattr(step_module, "grad_scaler", lambda precision, device: FakeScaler())
    rec = Recorder()
    net = small_net()
    result, _ = train(FaultyHost(ldm_host, {1, 2, 3}, "grad"), shapes_dataset, tmp_path, network=net, callbacks=rec,
                      steps=5, max_bad_steps=2)
    assert result.step == 5 and result.skipped_steps == 3 and result.final_path
    assert skipped_column(tmp_path / "hypernetwork_loss.csv") == [OVERFLOW] * 3 + [""] * 2
    overflows = [m for m in rec.messages if OVERFLOW in m]
    assert len(overflows) == 3 and all("normal calibration" in m for m in overflows)
    assert "scale to 8192" in overflows[-1] and not [m for m in rec.messages if NON_FINITE_GRADIENT in m]
    sidecar = torch.load(tmp_path / "hn.pt.optim", weights_only=True)
    assert {float(s["step"]) for s in sidecar["optimizer_state_dict"]["state"].values()} == {2.0}
    assert sidecar[STATE_KEY]["scaler"] == {"scale": 8192.0}


def test_fp16_overflows_count_once_the_scale_is_below_one(ldm_host, shapes_dataset, tmp_path, monkeypatch):
    monkeypatch.setattr(step_module, "grad_scaler", lambda precision, device: FakeScaler(scale=2.0))
    rec = Recorder()
    with pytest.raises(TrainingError, match="2 steps in a row"):
        train(FaultyHost(ldm_host, set(range(1, 100)), "grad"), shapes_dataset, tmp_path, callbacks=rec, steps=10,
              max_bad_steps=2)
    assert rec.steps == [1, 2, 3]   # scale 2 -> 1: calibration; -> 0.5, -> 0.25: diverging
    assert "normal calibration" in rec.messages[0]
    assert "1 in a row" in rec.messages[1] and "loss scale 0.5" in rec.messages[1]


@pytest.mark.parametrize("outcome, diverging", [
    (StepOutcome(0.1, 1.0), False),
    (StepOutcome(float("nan"), None, NON_FINITE_LOSS), True),
    (StepOutcome(float("nan"), None, NON_FINITE_LOSS, 1024.0), True),
    (StepOutcome(0.1, float("inf"), NON_FINITE_GRADIENT), True),
    (StepOutcome(0.1, float("inf"), OVERFLOW, 32768.0), False),
    (StepOutcome(0.1, float("inf"), OVERFLOW, 1.0), False),
    (StepOutcome(0.1, float("inf"), OVERFLOW, 0.5), True),
])
def test_which_skipped_steps_count_toward_divergence(outcome, diverging):
    assert outcome.diverging is diverging


def test_lr_free_optimizers_report_d_times_lr(ldm_host, shapes_dataset, tmp_path):
    pytest.importorskip("prodigyopt")
    rec = Recorder()
    train(ldm_host, shapes_dataset, tmp_path, callbacks=rec, steps=4, optimizer="Prodigy",
          schedule={"learn_rate": "0.5"})
    group = torch.load(tmp_path / "hn.pt.optim", weights_only=True)["optimizer_state_dict"]["param_groups"][0]
    rows = read_loss_csv(tmp_path / "hypernetwork_loss.csv")
    assert [r["learn_rate"] for r in rows] == [0.5] * 4    # the schedule's multiplier, as webui logs it
    assert [r["effective_lr"] for r in rows] == pytest.approx(rec.lrs, rel=1e-6)
    assert rec.lrs[-1] == pytest.approx(group["d"] * 0.5) and all(lr < 1e-3 for lr in rec.lrs)


class FakeWriter:
    def __init__(self):
        self.scalars, self.texts = [], []

    def add_scalar(self, tag, value, step):
        self.scalars.append((tag, value, step))

    def add_text(self, tag, text, step):
        self.texts.append((tag, text, step))

    def close(self):
        pass


def test_the_log_writes_the_effective_rate_and_keeps_an_older_files_columns(tmp_path, monkeypatch):
    writer = FakeWriter()
    monkeypatch.setattr(logs_module, "tensorboard_writer", lambda folder: writer)
    log = TrainingLog(tmp_path / "new")
    log.write(1, 0, 1, 0.25, 1.0, 0.5, None, 2e-6)
    log.write(2, 0, 2, 0.25, 1e-3, 0.5, None)
    with open(tmp_path / "new" / "hypernetwork_loss.csv", newline="", encoding="utf-8") as f:
        lines = list(csv.reader(f))
    assert tuple(lines[0]) == COLUMNS and COLUMNS[:5] == ("step", "epoch", "epoch_step", "loss", "learn_rate")
    assert [line[COLUMNS.index("effective_lr")] for line in lines[1:]] == ["2e-06", "0.001"]
    assert ("Effective learn rate/train", 2e-6, 1) in writer.scalars
    assert [t for t, _, s in writer.scalars if s == 2 and "Effective" in t] == []
    old = tmp_path / "old" / "hypernetwork_loss.csv"
    old.parent.mkdir()
    old.write_text("step,epoch,epoch_step,loss,learn_rate\n1,0,1,0.5,0.001\n", encoding="utf-8")   # webui's
    TrainingLog(tmp_path / "old", tensorboard=False).write(2, 0, 2, 0.25, 1e-3, 0.5, None, 2e-6)
    assert old.read_text(encoding="utf-8").splitlines() == ["step,epoch,epoch_step,loss,learn_rate",
                                                            "1,0,1,0.5,0.001", "2,0,2,0.2500000,0.001"]


def test_validation_and_guard_cells_reach_the_csv_and_tensorboard(tmp_path, monkeypatch):
    writer = FakeWriter()
    monkeypatch.setattr(logs_module, "tensorboard_writer", lambda folder: writer)
    log = TrainingLog(tmp_path / "new", every=5, widths=(320, 768))
    cells = dict(ValidationResult(3, 0.5, {320: 0.1, 768: 0.25}, {320: 3.0, 768: 4.0}).cells(), lr_factor="0.5")
    log.write(3, 0, 3, 0.25, 1e-3, 0.5, None, extra=cells)             # not a logged step, but validated
    log.write(4, 0, 4, 0.25, 1e-3, 0.5, None, extra={"lr_factor": "0.5"})   # neither: no row
    log.write(6, 0, 6, 0.25, 1e-3, 0.5, None, extra={"lr_factor": "0.25", "guard": "lower-lr"})
    rows = read_loss_csv(tmp_path / "new" / "hypernetwork_loss.csv")
    assert [(r["step"], r["guard"]) for r in rows] == [(3, ""), (6, "lower-lr")]
    assert (rows[0]["val_loss"], rows[0]["effect"], rows[0]["effect_320"], rows[0]["weight_norm_768"]) == (
        0.5, 0.25, 0.1, 4.0)
    assert rows[0]["weight_norm"] == pytest.approx(5.0) and rows[1]["lr_factor"] == 0.25
    with open(tmp_path / "new" / "hypernetwork_loss.csv", encoding="utf-8") as f:
        header = f.readline().strip().split(",")
    assert header == list(COLUMNS) + ["effect_320", "effect_768", "weight_norm_320", "weight_norm_768"]
    tags = {(tag, step) for tag, _, step in writer.scalars}
    assert {("Loss/validation", 3), ("Effect size/768", 3), ("Weight norm/all", 3), ("Effect size/largest", 3),
            ("Learn rate factor/train", 6)} <= tags and writer.texts == [("Guard", "lower-lr", 6)]
    old = tmp_path / "old" / "hypernetwork_loss.csv"
    old.parent.mkdir()
    old.write_text("step,epoch,epoch_step,loss,learn_rate\n1,0,1,0.5,0.001\n", encoding="utf-8")   # webui's
    TrainingLog(tmp_path / "old", tensorboard=False, widths=(768,)).write(2, 0, 2, 0.25, 1e-3, 0.5, None,
                                                                         extra=cells)
    assert old.read_text(encoding="utf-8").splitlines()[0] == "step,epoch,epoch_step,loss,learn_rate"


def test_a_diverging_run_stops_and_keeps_the_last_good_checkpoint(ldm_host, shapes_dataset, tmp_path):
    rec = Recorder()
    host = FaultyHost(ldm_host, set(range(5, 100)))
    with pytest.raises(TrainingError, match="3 steps in a row") as err:
        train(host, shapes_dataset, tmp_path, callbacks=rec, steps=20, save_every=2, max_bad_steps=3)
    last = tmp_path / "hn-4.pt"
    assert str(last) in str(err.value) and err.value.checkpoint == str(last)
    assert formats.load(last).step == 4
    assert not (tmp_path / "hn.pt").exists()
    assert {p.name for p in tmp_path.glob("*.pt")} == {"hn-2.pt", "hn-4.pt"}
    assert not is_attached(ldm_host.unet)


@pytest.mark.parametrize("how", ["should_stop", "ctrl-c"])
def test_interrupt_saves_a_checkpoint_and_stops_cleanly(ldm_host, shapes_dataset, tmp_path, how):
    rec = Recorder(stop_at=2) if how == "should_stop" else Recorder(interrupt_at=3)
    result, net = train(ldm_host, shapes_dataset, tmp_path, callbacks=rec, steps=10)
    step = 2 if how == "should_stop" else 3
    assert result.interrupted and result.step == step
    saved = formats.load(tmp_path / "hn.pt")
    assert saved.step == step
    assert torch.load(tmp_path / "hn.pt.optim", weights_only=True)["hash"] == short_hash(tmp_path / "hn.pt")
    assert not is_attached(ldm_host.unet) and not net.training


def test_a_network_already_trained_that_far_is_left_alone(ldm_host, shapes_dataset, tmp_path):
    net = small_net()
    net.step = 6
    rec = Recorder()
    result, _ = train(ldm_host, shapes_dataset, tmp_path, network=net, callbacks=rec, steps=6)
    assert result.final_path is None and not list(tmp_path.iterdir())
    assert any("already trained 6 steps" in m for m in rec.messages)
