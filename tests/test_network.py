"""NetworkConfig validation, the module layouts webui and the peer build, initialisation and strength."""
import math

import pytest
import torch
from torch import nn

from hypernet_ext import create
from hypernet_ext.config import NetworkConfig, dropout_from_webui
from hypernet_ext.errors import ConfigError
from hypernet_ext.layers import ACTIVATIONS, CREATABLE_ACTIVATIONS, REFUSED_ACTIVATIONS, HypernetworkModule
from hypernet_ext.network import Hypernetwork


def small(**fields):
    fields.setdefault("sizes", (16,))
    return NetworkConfig(**fields)


@pytest.mark.parametrize("fields, message", [
    (dict(layer_structure=(2, 1)), "start and end with 1"),
    (dict(layer_structure=(1, 2)), "start and end with 1"),
    (dict(layer_structure=(1,)), "at least two"),
    (dict(layer_structure=(1, -2, 1)), "non-positive"),
    (dict(layer_structure="1, x, 1"), "comma-separated"),
    (dict(activation="threshold"), "cannot work"),
    (dict(activation="glu"), "cannot work"),
    (dict(activation="softmax"), "cannot work"),
    (dict(activation="nope"), "not usable"),
    (dict(weight_init="Uniform"), "weight_init"),
    (dict(normal_std=-1), "normal_std"),
    (dict(sizes=()), "at least one width"),
    (dict(sizes=(768, -1)), "must be positive"),
    (dict(sizes="768, abc"), "whole number"),
    (dict(use_dropout=True, dropout_structure=(0, 0.1)), "has 2 entries"),
    (dict(use_dropout=True, dropout_structure=(0, 1.5, 0)), "probability"),
    (dict(use_dropout=True, dropout_structure=(0.1, 0.1, 0)), "start and end with 0"),
    (dict(use_dropout=True, dropout_structure=(0, 0.1, 0.2)), "start and end with 0"),
    (dict(upsample="Conv"), "upsample"),
    (dict(use_dropout=False, dropout_structure="0, x, 0"), "comma-separated"),  # off, but a typo is still a typo
    (dict(seed="abc"), "seed"),
])
def test_bad_config_is_refused_with_the_field_named(fields, message):
    with pytest.raises(ConfigError, match=message):
        small(**fields)


def test_refused_activations_are_the_unusable_ones():
    assert REFUSED_ACTIVATIONS.isdisjoint(ACTIVATIONS)
    assert {"linear", "relu", "leakyrelu", "elu", "swish", "tanh", "sigmoid", "silu", "gelu", "mish"} \
        <= CREATABLE_ACTIVATIONS
    assert ACTIVATIONS["swish"] is nn.Hardswish  # webui's spelling and meaning


def test_lenient_config_accepts_what_webui_files_hold():
    cfg = NetworkConfig(sizes=(8,), activation="softmax", dropout_structure=(0, 0.1, 0.2), lenient=True)
    assert cfg.use_dropout and cfg.dropout_structure == (0, 0.1, 0.2)
    assert "lenient" not in cfg.to_dict()


@pytest.mark.parametrize("ls, use, last, expected", [
    ((1, 2, 1), False, False, (0, 0, 0)),
    ((1, 2, 1), True, False, (0, 0, 0)),
    ((1, 2, 1), True, True, (0, 0.3, 0)),
    ((1, 2, 2, 1), True, False, (0, 0.3, 0, 0)),
    ((1, 2, 2, 1), True, True, (0, 0.3, 0.3, 0)),
    ((1, 1.5, 2, 1.5, 1), True, True, (0, 0.3, 0.3, 0.3, 0)),
])
def test_default_dropout_follows_webui(ls, use, last, expected):
    assert dropout_from_webui(ls, use, last) == expected
    cfg = small(layer_structure=ls, use_dropout=use, last_layer_dropout=last)
    assert cfg.dropout_structure == expected


def test_new_networks_never_drop_out_the_output_layer():
    # webui's rule for (1, 1) with last-layer dropout would put 0.3 after the output layer
    assert dropout_from_webui((1, 1), True, True) == (0, 0.3)
    cfg = small(layer_structure=(1, 1), use_dropout=True, last_layer_dropout=True)
    assert cfg.dropout_structure == (0, 0) and NetworkConfig.from_dict(cfg.to_dict()) == cfg


def test_loaded_configs_round_trip_through_dicts():
    cfg = NetworkConfig(sizes=(8,), activation="softmax", dropout_structure=(0.1, 0.2, 0.1), lenient=True)
    with pytest.raises(ConfigError):
        NetworkConfig.from_dict(cfg.to_dict())  # not creatable as a new network
    assert NetworkConfig.from_dict(cfg.to_dict(), lenient=True) == cfg


def test_upsample_only_means_something_with_skip_connections():
    assert small(upsample="Linear").upsample is None
    assert small(upsample="Linear", skip_connection=True).upsample == "Linear"


def test_dropout_structure_is_ignored_when_dropout_is_off():
    assert small(use_dropout=False, dropout_structure=(0, 0.2, 0)).dropout_structure == (0, 0, 0)


def test_config_dict_round_trip_ignores_unknown_keys():
    cfg = small(layer_structure="1, 1.5, 1", activation="SiLU", add_layer_norm=True, seed=3, info="hi")
    data = cfg.to_dict()
    data["from_the_future"] = 1
    again = NetworkConfig.from_dict(data)
    assert again == cfg and again.activation == "silu" and data["config_version"] == 1


def layer_types(module: HypernetworkModule):
    return [type(m).__name__ for m in module.linear]


@pytest.mark.parametrize("fields, expected", [
    (dict(), ["Linear", "Linear"]),
    (dict(activation="relu"), ["Linear", "ReLU", "Linear"]),
    (dict(activation="relu", activate_output=True), ["Linear", "ReLU", "Linear", "ReLU"]),
    (dict(activation="swish", add_layer_norm=True), ["Linear", "Hardswish", "LayerNorm", "Linear", "LayerNorm"]),
    (dict(layer_structure=(1, 2, 2, 1), activation="elu", use_dropout=True),
     ["Linear", "ELU", "Dropout", "Linear", "ELU", "Linear"]),
    (dict(layer_structure=(1, 2, 2, 1), use_dropout=True, last_layer_dropout=True),
     ["Linear", "Dropout", "Linear", "Dropout", "Linear"]),
])
def test_plain_layout_matches_webui_order(fields, expected):
    net = Hypernetwork.create(small(**fields))
    k, v = net.pair(16)
    assert layer_types(k) == expected == layer_types(v)


def test_widths_follow_layer_structure_with_int_truncation():
    net = Hypernetwork.create(small(sizes=(10,), layer_structure=(1, 1.25, 1)))
    first = net.pair(10)[0].linear[0]
    assert (first.in_features, first.out_features) == (10, 12)


def test_skip_connection_layout():
    net = Hypernetwork.create(small(layer_structure=(1, 2, 1), skip_connection=True, activation="relu",
                                    add_layer_norm=True, upsample="Linear"))
    k = net.pair(16)[0]
    keys = set(k.state_dict())
    assert {"linear.0.linear.0.weight", "linear.0.linear.1.weight", "linear.0.upsample_layer.weight",
            "linear.1.linear.0.weight"} <= keys


def test_seeded_init_is_reproducible_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a = Hypernetwork.create(small(seed=7, sizes=(16, 32)))
    assert torch.equal(torch.random.get_rng_state(), before)
    b = Hypernetwork.create(small(seed=7, sizes=(16, 32)))
    c = Hypernetwork.create(small(seed=8, sizes=(16, 32)))
    for ka, kb in zip(a.state_dict().values(), b.state_dict().values()):
        assert torch.equal(ka, kb)
    assert not all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), c.state_dict().values()))
    assert a.pair(16)[0].linear[0].weight.data_ptr() != a.pair(16)[1].linear[0].weight.data_ptr()
    assert not torch.equal(a.pair(16)[0].linear[0].weight, a.pair(16)[1].linear[0].weight)


def test_unseeded_networks_record_the_seed_they_used():
    net = create(sizes=(16,))
    assert isinstance(net.config.seed, int)
    again = Hypernetwork.create(net.config)
    assert all(torch.equal(x, y) for x, y in zip(net.state_dict().values(), again.state_dict().values()))


@pytest.mark.parametrize("init, check", [
    ("Normal", lambda w, fi, fo: abs(w.std().item() - 0.01) < 0.002),
    ("XavierUniform", lambda w, fi, fo: w.abs().max().item() <= math.sqrt(6 / (fi + fo)) + 1e-6),
    ("XavierNormal", lambda w, fi, fo: abs(w.std().item() - math.sqrt(2 / (fi + fo))) < 0.1 * math.sqrt(2 / (fi + fo))),
    ("KaimingUniform", lambda w, fi, fo: w.abs().max().item() <= math.sqrt(6 / fi) + 1e-6),
    ("KaimingNormal", lambda w, fi, fo: abs(w.std().item() - math.sqrt(2 / fi)) < 0.1 * math.sqrt(2 / fi)),
])
def test_weight_inits(init, check):
    net = Hypernetwork.create(small(sizes=(64,), weight_init=init, add_layer_norm=True))
    lin = net.pair(64)[0].linear[0]
    assert check(lin.weight, lin.in_features, lin.out_features)
    assert not lin.bias.any()
    ln = net.pair(64)[0].linear[1]
    assert isinstance(ln, nn.LayerNorm)
    assert torch.equal(ln.weight, torch.ones_like(ln.weight)) and not ln.bias.any()


def test_normal_std_is_used():
    net = Hypernetwork.create(small(sizes=(64,), normal_std=0.1))
    assert abs(net.pair(64)[0].linear[0].weight.std().item() - 0.1) < 0.02


@pytest.mark.parametrize("skip", [False, True])
def test_strength(skip):
    net = Hypernetwork.create(small(skip_connection=skip, activation="relu"))
    x = torch.randn(2, 5, 16)
    k = net.pair(16)[0]
    with torch.no_grad():
        assert torch.equal(k(x, 0.0), x)
        full = k(x, 1.0) - x
        assert torch.allclose(k(x, 0.5) - x, full * 0.5, atol=1e-6)
        assert full.abs().max() > 0


def test_dropout_only_in_training_mode():
    net = Hypernetwork.create(small(sizes=(64,), layer_structure=(1, 4, 1), use_dropout=True,
                                    last_layer_dropout=True, weight_init="XavierNormal"))
    x = torch.randn(4, 8, 64)
    with torch.no_grad():
        assert torch.equal(net(x)[0], net(x)[0])
        net.train()
        assert not torch.equal(net(x)[0], net(x)[0])
        net.eval()
        assert torch.equal(net(x)[0], net(x)[0])


def test_uncovered_width_passes_through():
    net = Hypernetwork.create(small(sizes=(16,)))
    x = torch.randn(1, 3, 32)
    k, v = net(x)
    assert k is x and v is x and net.pair(32) is None


@pytest.mark.parametrize("name", sorted(CREATABLE_ACTIVATIONS))
def test_every_creatable_activation_runs(name):
    net = Hypernetwork.create(small(activation=name, activate_output=True))
    net.train()
    out = net(torch.randn(2, 3, 16))[0]
    out.sum().backward()
    assert torch.isfinite(out).all()
