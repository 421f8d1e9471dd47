"""Optimizer factory: every torch optimizer builds and steps, arguments are checked against the signature,
argument strings parse, third-party optimizers step when installed, LR-free and schedule-free helpers."""
import sys

import pytest
import torch

from hypernet_ext import optim
from hypernet_ext.errors import ConfigError
from hypernet_ext.optim import (
    OptimizerConfig,
    available_optimizers,
    build_optimizer,
    effective_lr,
    is_lr_free,
    optimizer_eval_mode,
    optimizer_train_mode,
    parse_kwargs,
    resolve_optimizer_name,
    set_lr,
    torch_optimizers,
)


def tiny():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.LayerNorm(8), torch.nn.Linear(8, 4))


def train(model, optimizer, steps=3):
    data = torch.randn(16, 4, generator=torch.Generator().manual_seed(1))
    optimizer_train_mode(optimizer)
    for _ in range(steps):
        loss = (model(data) - data.flip(1)).pow(2).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    optimizer_eval_mode(optimizer)


def step_changes_weights(name, lr, **kwargs):
    model = tiny()
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = build_optimizer(model.parameters(), name, lr, **kwargs)
    train(model, optimizer)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    return optimizer


@pytest.mark.parametrize("name", torch_optimizers())
def test_every_torch_optimizer_builds_and_steps(name):
    optimizer = step_changes_weights(name, 1e-2)
    assert type(optimizer).__name__ == name
    assert effective_lr(optimizer) == 1e-2 and not is_lr_free(optimizer)


def test_the_torch_list_holds_webui_names_and_leaves_out_unusable_ones():
    names = torch_optimizers()
    assert {"AdamW", "Adam", "SGD", "RMSprop"} <= set(names)
    assert not {"LBFGS", "SparseAdam", "Optimizer", "Muon"} & set(names)
    assert available_optimizers()[:len(names)] == list(names)


@pytest.mark.parametrize("name", ["LBFGS", "sparseadam"])
def test_unusable_torch_optimizers_say_why(name):
    with pytest.raises(ConfigError, match="cannot be used for training"):
        build_optimizer(tiny().parameters(), name, 1e-3)


@pytest.mark.parametrize("given, canonical", [("adamw", "AdamW"), (" ADAM ", "Adam"), ("sgd", "SGD"),
                                              ("lion", "Lion"), ("dadaptadam", "DAdaptAdam")])
def test_names_match_ignoring_case_and_keep_the_canonical_spelling(given, canonical):
    assert resolve_optimizer_name(given) == canonical
    assert OptimizerConfig(name=given).name == canonical


def test_unknown_name_lists_the_choices():
    with pytest.raises(ConfigError) as info:
        build_optimizer(tiny().parameters(), "Adamm", 1e-3)
    assert "'Adamm' is unknown" in str(info.value) and "AdamW" in str(info.value) and "SGD" in str(info.value)


def test_string_arguments_are_converted():
    optimizer = build_optimizer(tiny().parameters(), "AdamW", 1e-3,
                                **parse_kwargs("betas=0.9,0.99 weight_decay=0.05 amsgrad=true"))
    group = optimizer.param_groups[0]
    assert group["betas"] == (0.9, 0.99) and group["weight_decay"] == 0.05 and group["amsgrad"] is True
    config = OptimizerConfig("AdamW", "betas=(0.8, 0.9); eps=1e-6")
    assert config.kwargs == {"betas": (0.8, 0.9), "eps": 1e-6}
    text_values = OptimizerConfig("SGD", {"momentum": "0.9", "nesterov": "True"})
    assert text_values.kwargs == {"momentum": 0.9, "nesterov": True}
    assert build_optimizer(tiny().parameters(), text_values, 0.1).param_groups[0]["nesterov"] is True


@pytest.mark.parametrize("name, kwargs, message", [
    ("AdamW", {"beta": (0.9, 0.99)}, "AdamW has no argument 'beta'; it accepts betas, eps, weight_decay"),
    ("AdamW", {"betas": "0.9"}, "betas expects 2 numbers such as betas=0.9,0.999, got '0.9'"),
    ("AdamW", {"betas": (0.9, "x")}, "betas[1] expects a number"),
    ("AdamW", {"weight_decay": "abc"}, "weight_decay expects a number, got 'abc'"),
    ("AdamW", {"amsgrad": "maybe"}, "amsgrad expects true or false"),
    ("AdamW", {"eps": None}, "eps cannot be empty"),
    ("AdamW", {"betas": (1.5, 0.9)}, "AdamW refused its settings"),
    ("AdamW", {"eps": -1.0}, "Invalid epsilon value"),
    ("SGD", {"lr_decay": 0.1}, "SGD has no argument 'lr_decay'"),
])
def test_bad_arguments_get_clear_errors(name, kwargs, message):
    with pytest.raises(ConfigError) as info:
        build_optimizer(tiny().parameters(), name, 1e-3, **kwargs)
    assert message in str(info.value)


@pytest.mark.parametrize("name", ["SGD", "Lion"])
def test_lr_is_not_an_optimizer_argument(name):
    with pytest.raises(ConfigError, match="lr comes from the learning-rate schedule"):
        OptimizerConfig(name, "lr=0.1")


def test_config_checks_torch_arguments_at_once_and_round_trips():
    with pytest.raises(ConfigError, match="has no argument 'momentun'"):
        OptimizerConfig("SGD", "momentun=0.9")
    config = OptimizerConfig("adamw", "betas=0.9,0.99 weight_decay=0.01")
    data = config.to_dict()
    assert data["name"] == "AdamW" and data["config_version"] == 1
    again = OptimizerConfig.from_dict({**data, "kwargs": {"betas": [0.9, 0.99], "weight_decay": 0.01}})
    assert again == config
    assert OptimizerConfig().name == "AdamW" and OptimizerConfig().kwargs == {}


@pytest.mark.parametrize("text, expected", [
    ("", {}),
    (None, {}),
    ("betas=0.9,0.99 weight_decay=0.01", {"betas": (0.9, 0.99), "weight_decay": 0.01}),
    ("betas=0.9, 0.99, weight_decay=0", {"betas": (0.9, 0.99), "weight_decay": 0}),
    ("betas = (0.9, 0.99) ; eps=1e-8", {"betas": (0.9, 0.99), "eps": 1e-8}),
    ("amsgrad=True foreach=none nesterov=FALSE", {"amsgrad": True, "foreach": None, "nesterov": False}),
    ("growth_rate=inf d_coef=2", {"growth_rate": float("inf"), "d_coef": 2}),
    ("mode=fast", {"mode": "fast"}),
    ("\n weight_decay=0.1,\n", {"weight_decay": 0.1}),
    ({"eps": 1e-8}, {"eps": 1e-8}),
])
def test_parse_kwargs(text, expected):
    assert parse_kwargs(text) == expected


@pytest.mark.parametrize("text, message", [
    ("0.9", "'0.9' is not name=value"),
    ("oops betas=0.9,0.99", "'oops' is not name=value"),
    ("betas=", "'betas=' has no value"),
    ("eps=1 eps=2", "eps is given twice"),
    ({"not a name": 1}, "is not an argument name"),
])
def test_parse_kwargs_errors(text, message):
    with pytest.raises(ConfigError) as info:
        parse_kwargs(text)
    assert message in str(info.value)


def test_set_lr_and_effective_lr():
    model = tiny()
    optimizer = build_optimizer([{"params": model[0].parameters()}, {"params": model[2].parameters()}], "Adam", 1e-3)
    set_lr(optimizer, 5e-4)
    assert [g["lr"] for g in optimizer.param_groups] == [5e-4, 5e-4] and effective_lr(optimizer) == 5e-4
    for bad in (-1.0, float("nan"), "1e-3"):
        with pytest.raises(ConfigError, match="learning rate"):
            set_lr(optimizer, bad)


def test_train_and_eval_mode_are_no_ops_for_plain_optimizers():
    optimizer = build_optimizer(tiny().parameters(), "AdamW", 1e-3)
    state = repr(optimizer.state_dict())
    optimizer_train_mode(optimizer)
    optimizer_eval_mode(optimizer)
    assert repr(optimizer.state_dict()) == state


def test_missing_package_names_what_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "lion_pytorch", None)   # import fails as if absent
    assert "Lion" not in available_optimizers()
    with pytest.raises(ConfigError) as info:
        build_optimizer(tiny().parameters(), "Lion", 1e-4)
    assert "pip install lion-pytorch" in str(info.value)


def test_bitsandbytes_names_are_known_even_when_absent():
    if "bitsandbytes" not in sys.modules and optim.importlib.util.find_spec("bitsandbytes") is None:
        with pytest.raises(ConfigError, match="pip install bitsandbytes"):
            build_optimizer(tiny().parameters(), "AdamW8bit", 1e-3)
    assert resolve_optimizer_name("adamw8bit") == "AdamW8bit"


@pytest.mark.parametrize("name, package, lr", [("Lion", "lion_pytorch", 1e-3), ("DAdaptLion", "dadaptation", 1.0),
                                               ("AdamWScheduleFree", "schedulefree", 1e-2)])
def test_optional_optimizers_step(name, package, lr):
    pytest.importorskip(package)
    assert name in available_optimizers()
    optimizer = step_changes_weights(name, lr)
    assert type(optimizer).__name__ == name


@pytest.mark.parametrize("name, package", [("Prodigy", "prodigyopt"), ("DAdaptAdam", "dadaptation"),
                                           ("DAdaptLion", "dadaptation")])
def test_lr_free_optimizers_report_d_times_lr(name, package):
    pytest.importorskip(package)
    model = tiny()
    optimizer = build_optimizer(model.parameters(), name, 0.5, d0=1e-4)
    assert is_lr_free(optimizer)
    assert effective_lr(optimizer) == pytest.approx(1e-4 * 0.5)
    train(model, optimizer, steps=20)
    group = optimizer.param_groups[0]
    assert group["d"] > 1e-4   # d grew from d0
    assert effective_lr(optimizer) == pytest.approx(group["d"] * 0.5)
    set_lr(optimizer, 1.0)
    assert effective_lr(optimizer) == pytest.approx(group["d"])


def test_prodigy_checks_its_own_arguments():
    pytest.importorskip("prodigyopt")
    with pytest.raises(ConfigError, match="Prodigy has no argument 'beta'"):
        build_optimizer(tiny().parameters(), "Prodigy", 1.0, beta=0.9)
    optimizer = build_optimizer(tiny().parameters(), OptimizerConfig("prodigy", "betas=0.9,0.99 d_coef=0.5"), 1.0)
    assert optimizer.param_groups[0]["betas"] == (0.9, 0.99) and optimizer.param_groups[0]["d_coef"] == 0.5


def test_schedule_free_needs_and_gets_train_and_eval_mode():
    pytest.importorskip("schedulefree")
    model = tiny()
    optimizer = build_optimizer(model.parameters(), "AdamWScheduleFree", 1e-2, warmup_steps="2")
    assert optimizer.param_groups[0]["warmup_steps"] == 2
    optimizer_train_mode(optimizer)
    assert optimizer.param_groups[0]["train_mode"] is True
    train(model, optimizer)
    assert optimizer.param_groups[0]["train_mode"] is False   # train() ends in eval mode, ready to save
    trained = [p.detach().clone() for p in model.parameters()]
    optimizer_train_mode(optimizer)
    assert any(not torch.equal(a, b) for a, b in zip(trained, model.parameters()))   # weights moved to y
    optimizer_eval_mode(optimizer)
    assert all(torch.allclose(a, b) for a, b in zip(trained, model.parameters()))


@pytest.mark.parametrize("name", ["AdamW8bit", "Lion8bit"])
def test_bitsandbytes_optimizers_step(name):
    pytest.importorskip("bitsandbytes")
    step_changes_weights(name, 1e-3)
