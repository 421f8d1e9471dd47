"""Knowing when to stop, on the tiny ldm model: the validation loss is bit-identical across evaluations and across a
resume and does not change the training; a too-high learning rate triggers the overtraining guard; rollback
restores the best snapshot (and the run then equals a resume from it at the lowered rate); stop ends at the best
snapshot; lower-lr survives a resume; held-out images leave the training set; the guard's decisions as a table."""
import copy
import shutil

import pytest
import torch

from hypernet_ext import create, formats
from hypernet_ext.attach import attach
from hypernet_ext.checkpoint import STATE_KEY, newest_complete, optim_path
from hypernet_ext.errors import ConfigError
from hypernet_ext.host import Callbacks
from hypernet_ext.training import TrainConfig, Trainer
from hypernet_ext.training.config import GuardConfig, ValidationConfig
from hypernet_ext.training.guard import Guard
from hypernet_ext.training.logs import read_loss_csv
from hypernet_ext.training.validation import ValidationResult, build_validation

pytest.importorskip("ldm")

VALIDATION = {"every": 2, "timesteps": 2, "max_images": 2}
# steps 0-1 train gently, then a rate 6x too high blows the effect size past the bound at step 4; the guard's
# factor 2**-6 keeps every rate a power of two times the schedule's, so a resume can give the same rates exactly
TOO_HIGH = dict(steps=6, schedule={"learn_rate": "0.01:2, 0.0625:-1"}, validation=VALIDATION)
GUARD = {"max_effect": 10.0, "lr_factor": 2 ** -6}
LOWERED = {"learn_rate": "0.00015625:2, 0.0009765625:-1"}   # TOO_HIGH's rates times 2**-6, written out


def small_net(seed=0):
    return create(name="hn", sizes=(32, 64, 768), layer_structure=(1, 0.25, 1), activation="relu", seed=seed,
                  use_dropout=True, dropout_structure=(0, 0.1, 0))


class Recorder(Callbacks):
    def __init__(self, stop_at=None, on_guard=None):
        self.stop_at, self.step, self.hook = stop_at, 0, on_guard
        self.validations, self.guards, self.messages = [], [], []

    def on_progress(self, step, total, loss, lr, eta_s):
        self.step = step

    def on_validation(self, step, val_loss, effect, weight_norm):
        self.validations.append((step, val_loss, effect, weight_norm))

    def on_guard(self, step, action, reason, text):
        self.guards.append((step, action, reason, text))
        if self.hook:
            self.hook()

    def on_message(self, text):
        self.messages.append(text)

    def should_stop(self):
        return self.stop_at is not None and self.step >= self.stop_at


def run(host, dataset, out, network=None, callbacks=None, resume_from=None, **fields):
    fields = dict(dict(name="hn", out_dir=str(out), steps=4, save_every=0, tensorboard=False,
                       schedule={"learn_rate": "1e-3"}), **fields)
    network = network if network is not None else small_net()
    trainer = Trainer(host, network, dataset, TrainConfig(**fields), callbacks)
    return trainer, trainer.train(resume_from)


def same_weights(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_validation_is_bit_identical_across_evaluations_and_across_a_resume(ldm_host, shapes_dataset, tmp_path):
    straight = Recorder()
    _, result = run(ldm_host, shapes_dataset, tmp_path / "a", callbacks=straight, validation=VALIDATION)
    assert [s for s, *_ in straight.validations] == [0, 2, 4] and result.validation == [
        (s, v) for s, v, *_ in straight.validations]
    first, resumed = Recorder(stop_at=2), Recorder()
    run(ldm_host, shapes_dataset, tmp_path / "b", callbacks=first, validation=VALIDATION)
    path = tmp_path / "b" / "hn.pt"
    run(ldm_host, shapes_dataset, tmp_path / "b", formats.load(path), resumed, path, validation=VALIDATION)
    assert first.validations + resumed.validations == straight.validations   # loss, effect and norms, exactly
    rows = read_loss_csv(tmp_path / "b" / "hypernetwork_loss.csv")
    assert [(r["step"], r["val_loss"]) for r in rows if r["val_loss"] == r["val_loss"]] == [
        (s, float(f"{v:.7f}")) for s, v, *_ in straight.validations]
    chosen, _, _ = build_validation(ValidationConfig(**VALIDATION), shapes_dataset, ldm_host)
    net = formats.load(path)
    with attach(ldm_host.unet, net):
        again = [chosen.evaluate(ldm_host, net, 4) for _ in range(2)]
    assert again[0] == again[1] and again[0].loss == straight.validations[-1][1]
    assert not net.training


def test_a_run_with_validation_trains_the_same_weights_as_one_without(ldm_host, shapes_dataset, tmp_path):
    rng = torch.get_rng_state()
    plain, with_validation = small_net(), small_net()
    run(ldm_host, shapes_dataset, tmp_path / "a", plain)
    after_plain = torch.get_rng_state()
    torch.set_rng_state(rng)
    _, result = run(ldm_host, shapes_dataset, tmp_path / "b", with_validation, validation={**VALIDATION, "every": 1},
                    guard={"max_effect": 1e-9})   # the guard warns at every evaluation: warnings change nothing
    assert len(result.validation) == 5 and len(result.guard_events) == 5
    assert same_weights(plain, with_validation)
    assert torch.equal(torch.get_rng_state(), after_plain)
    optim = [torch.load(optim_path(tmp_path / d / "hn.pt"), weights_only=True) for d in "ab"]
    assert all(torch.equal(x, y) for x, y in zip(optim[0]["optimizer_state_dict"]["state"][0].values(),
                                                 optim[1]["optimizer_state_dict"]["state"][0].values()))


@pytest.mark.parametrize("rate, fires", [("1e-4", False), ("0.1", True)])
def test_a_too_high_learning_rate_triggers_the_guard(ldm_host, shapes_dataset, tmp_path, rate, fires):
    rec = Recorder()
    _, result = run(ldm_host, shapes_dataset, tmp_path, callbacks=rec, validation=VALIDATION, steps=2,
                    schedule={"learn_rate": rate}, guard={"max_effect": 1.0})
    assert bool(rec.guards) is fires
    assert result.step == 2 and not result.stopped_by_guard
    if fires:
        step, action, reason, text = rec.guards[0]
        assert (step, action, reason) == (2, "warn", "effect")
        assert "step 2" in text and "width 768" in text and "above the bound 1" in text and text in rec.messages
        rows = read_loss_csv(tmp_path / "hypernetwork_loss.csv")
        assert [r["step"] for r in rows if r["guard"]] == [s for s, *_ in rec.guards]
        assert rows[2]["effect_768"] > 1.0 and rows[2]["effect"] == rows[2]["effect_768"]


def test_rollback_restores_the_best_snapshot_and_then_equals_a_resume_from_it(ldm_host, shapes_dataset, tmp_path):
    saved = tmp_path / "best-at-rollback"
    seen = {}

    def at_rollback():   # the guard has just acted: the trainer holds what it restored
        trainer = seen["trainer"]
        best = tmp_path / "a" / "hn-best.pt"
        seen["same"] = same_weights(trainer.network, formats.load(best))
        seen["step"] = trainer.network.step
        seen["optim"] = copy.deepcopy(trainer.optimizer.state_dict()["state"])
        saved.mkdir()
        shutil.copy(best, saved / "hn.pt")
        shutil.copy(optim_path(best), optim_path(saved / "hn.pt"))

    rec = Recorder(on_guard=at_rollback)
    config = TrainConfig(name="hn", out_dir=str(tmp_path / "a"), save_every=0, tensorboard=False,
                         guard={"action": "rollback", **GUARD}, **TOO_HIGH)
    seen["trainer"] = trainer = Trainer(ldm_host, small_net(), shapes_dataset, config, rec)
    result = trainer.train()
    assert [(s, a, r) for s, a, r, _ in rec.guards] == [(4, "rollback", "effect")]
    best_step = formats.load(saved / "hn.pt").step
    assert seen["same"] and seen["step"] == best_step < 4
    stored = torch.load(optim_path(saved / "hn.pt"), weights_only=True)["optimizer_state_dict"]["state"]
    assert all(torch.equal(a, b) for k in stored for a, b in zip(stored[k].values(), seen["optim"][k].values()))
    assert result.step == 6 and f"step {best_step}" in rec.guards[0][3]
    rows = read_loss_csv(tmp_path / "a" / "hypernetwork_loss.csv")
    assert [r["step"] for r in rows] == list(range(5)) + list(range(best_step + 1, 7))   # back to the best
    assert rows[-1]["learn_rate"] == 0.0625 * 2 ** -6 and rows[-1]["lr_factor"] == 2 ** -6
    # a resume from the best snapshot with the lowered rate trains to the very same weights
    resumed = formats.load(saved / "hn.pt")
    run(ldm_host, shapes_dataset, saved, resumed, resume_from=saved / "hn.pt", steps=6, validation=VALIDATION,
        schedule=LOWERED, guard=GUARD)
    assert same_weights(resumed, trainer.network) and resumed.step == 6


def test_stop_ends_the_run_at_its_best_snapshot(ldm_host, shapes_dataset, tmp_path):
    rec = Recorder()
    _, result = run(ldm_host, shapes_dataset, tmp_path, callbacks=rec, guard={"action": "stop", **GUARD}, **TOO_HIGH)
    assert [(s, a) for s, a, *_ in rec.guards] == [(4, "stop")] and result.stopped_by_guard
    final, best = formats.load(tmp_path / "hn.pt"), formats.load(tmp_path / "hn-best.pt")
    assert same_weights(final, best) and final.step == best.step == result.step < 4
    assert best.extra["validation"]["step"] == best.step
    assert best.extra["validation"]["loss"] == dict(result.validation)[best.step]   # step 4 was lower, past the bound
    sidecars = [torch.load(optim_path(tmp_path / name), weights_only=True) for name in ("hn.pt", "hn-best.pt")]
    states = [s["optimizer_state_dict"]["state"] for s in sidecars]
    assert all(torch.equal(a, b) for k in states[0] for a, b in zip(states[0][k].values(), states[1][k].values()))
    assert sidecars[1][STATE_KEY]["guard"]["best_step"] == best.step
    assert result.best == (best.step, best.extra["validation"]["loss"])
    assert result.best_path == str(tmp_path / "hn-best.pt")


def test_snapshots_past_the_best_are_set_aside_so_resume_from_newest_goes_back_to_the_best(
        ldm_host, shapes_dataset, tmp_path):
    rec = Recorder()
    _, result = run(ldm_host, shapes_dataset, tmp_path, callbacks=rec, guard={"action": "stop", **GUARD},
                    **dict(TOO_HIGH, save_every=1))
    best = formats.load(tmp_path / "hn-best.pt").step
    assert result.stopped_by_guard and best < 4
    assert sorted(p.name for p in tmp_path.glob("hn-*-rolled-back.pt")) == [f"hn-{k}-rolled-back.pt"
                                                                          for k in range(best + 1, 5)]
    assert all(optim_path(p).is_file() for p in tmp_path.glob("hn-*-rolled-back.pt"))   # kept, with their state
    assert formats.load(newest_complete(tmp_path, "hn")).step == best
    assert any("set aside" in m for m in rec.messages)


def test_lower_lr_survives_a_resume_exactly(ldm_host, shapes_dataset, tmp_path):
    guard = {"action": "lower-lr", **GUARD}
    straight = small_net()
    run(ldm_host, shapes_dataset, tmp_path / "a", straight, guard=guard, **TOO_HIGH)
    rec = Recorder(stop_at=5)
    run(ldm_host, shapes_dataset, tmp_path / "b", callbacks=rec, guard=guard, **TOO_HIGH)
    assert [a for _, a, *_ in rec.guards] == ["lower-lr"]
    path = tmp_path / "b" / "hn.pt"
    assert torch.load(optim_path(path), weights_only=True)[STATE_KEY]["guard"]["lr_factor"] == 2 ** -6
    resumed, again = formats.load(path), Recorder()
    run(ldm_host, shapes_dataset, tmp_path / "b", resumed, again, path, guard=guard, **TOO_HIGH)
    assert any("stays lowered" in m for m in again.messages)
    assert same_weights(resumed, straight)
    rows = read_loss_csv(tmp_path / "b" / "hypernetwork_loss.csv")
    assert [r["learn_rate"] for r in rows if r["step"] >= 5] == [0.0625 * 2 ** -6] * 2


def test_held_out_images_leave_the_training_set(ldm_host, shapes_dataset, tmp_path, shapes_dir):
    config = ValidationConfig(every=1, split=0.25)
    chosen, train, text = build_validation(config, shapes_dataset, ldm_host)
    assert len(chosen) == 1 and len(train) == 3 and "1 held-out" in text
    assert chosen.paths == [s.path for s in shapes_dataset.samples if s.path not in {t.path for t in train.samples}]
    assert build_validation(config, shapes_dataset, ldm_host)[1].samples == train.samples   # the same every time
    everything, same, text = build_validation(config.replace(split=4), shapes_dataset, ldm_host)
    assert same is shapes_dataset and len(everything) == 4 and "leave none" in text
    folder, _, text = build_validation(config.replace(data_dir=str(shapes_dir)), shapes_dataset, ldm_host)
    assert len(folder) == 4 and str(shapes_dir) in text


def result(step, loss, effect=0.0):
    return ValidationResult(step, loss, {768: effect})


@pytest.mark.parametrize("losses, fired", [
    ([1.0, 0.9, 0.94, 0.94, 0.94], [None] * 5),                       # within the margin: nothing
    ([1.0, 0.9, 0.99, 0.99, 0.9], [None] * 5),                        # a dip below the margin resets the streak
    ([1.0, 0.9, 0.99, 0.99, 0.99], [None] * 4 + ["validation"]),      # 3 evaluations 10% above the best
    ([1.0, 0.9, 0.99, 0.8, 0.99, 0.99], [None] * 6),                  # a new best starts over
])
def test_the_guard_triggers_after_patience_evaluations_above_its_best(losses, fired):
    guard = Guard(GuardConfig(margin=0.05, patience=3), ValidationConfig(every=1))
    events = [guard.observe(result(i, loss))[1] for i, loss in enumerate(losses)]
    assert [e and e.reason for e in events] == fired


def test_the_guard_lowers_its_factor_then_stops_after_max_actions_and_resumes_its_state():
    guard = Guard(GuardConfig(action="rollback", max_effect=1.0, lr_factor=0.5, max_actions=2))
    events = [guard.observe(result(i, 1.0, effect=2.0))[1] for i in range(3)]
    assert [(e.action, e.lr_factor) for e in events] == [("rollback", 0.5), ("rollback", 0.25), ("stop", 0.25)]
    assert "max_actions" in events[2].detail
    again = Guard(GuardConfig(action="rollback"))
    again.load_state_dict(guard.state_dict())
    assert (again.lr_factor, again.actions) == (0.25, 2)
    assert Guard(GuardConfig(diverge_steps=3)).diverging(9, 3).reason == "diverging"
    assert [Guard(GuardConfig(diverge_steps=3)).diverging(9, n) for n in (0, 1, 2, 4)] == [None] * 4


@pytest.mark.parametrize("fields, message", [
    (dict(guard={"action": "rollback"}, save_optimizer=False), "save_optimizer"),
    (dict(guard={"action": "undo"}), "guard.action: 'undo'"),
    (dict(guard={"lr_factor": 1.5}), "guard.lr_factor"),
    (dict(validation={"split": 2.5}), "validation.split"),
    (dict(validation={"every": -1}), "validation.every"),
])
def test_bad_settings_name_the_field(fields, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**fields)

