"""File formats: webui's .pt layouts (built here independently of our writer), the peer's beta files,
.safetensors, round trips over a table of configs, webui v1.10.1's safe-unpickle check replicated here,
malicious and damaged files, and descriptors that never read tensors.
"""
import importlib
import inspect
import io
import os
import pickle
import pickletools
import re
import struct
import time
import zipfile
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from hypernet_ext import create, formats
from hypernet_ext.config import NetworkConfig
from hypernet_ext.errors import FormatError, UnsafeFileError
from hypernet_ext.formats import torch_zip
from hypernet_ext.layers import CREATABLE_ACTIVATIONS, WEIGHT_INITS

GEN_SEED = 1234


def rand(gen, *shape, std=0.3):
    return torch.randn(*shape, generator=gen) * std


# ---------------------------------------------------------------- webui v1.10.1, replicated in test code

# modules/safe.py: the zip entry names its check accepts, and the globals its RestrictedUnpickler allows.
WEBUI_ZIP_NAMES = re.compile(r"^([^/]+)/((data/\d+)|version|byteorder|(\.data\/serialization_id)|(data\.pkl))$")
WEBUI_DATA_PKL = re.compile(r"^([^/]+)/data\.pkl$")
WEBUI_GLOBALS = {
    "collections": {"OrderedDict"},
    "torch._utils": {"_rebuild_tensor_v2", "_rebuild_parameter", "_rebuild_device_tensor_from_numpy"},
    "torch": {"FloatStorage", "HalfStorage", "IntStorage", "LongStorage", "DoubleStorage", "ByteStorage",
              "float32", "BFloat16Storage"},
    "torch.nn.modules.container": {"ParameterDict"},
    "numpy.core.multiarray": {"scalar", "_reconstruct"},
    "numpy": {"dtype", "ndarray"},
    "_codecs": {"encode"},
    "pytorch_lightning.callbacks": {"model_checkpoint"},
    "pytorch_lightning.callbacks.model_checkpoint": {"ModelCheckpoint"},
    "__builtin__": {"set"},
}


class WebuiUnpickler(pickle.Unpickler):
    def persistent_load(self, saved_id):
        if saved_id[0] != "storage":
            raise pickle.UnpicklingError("persistent id is not a storage")
        try:
            return torch.storage.TypedStorage(_internal=True)
        except TypeError:
            return torch.storage.TypedStorage()

    def find_class(self, module, name):
        if name not in WEBUI_GLOBALS.get(module, ()):
            raise pickle.UnpicklingError(f"global '{module}/{name}' is forbidden")
        if module == "__builtin__":
            return set
        return getattr(importlib.import_module(module), name)


def webui_safe_check(path, zip_names=True):
    """Raises as webui v1.10.1's check_pt does when it would refuse ``path``."""
    try:
        with zipfile.ZipFile(path) as z:
            for name in z.namelist():
                if zip_names and not WEBUI_ZIP_NAMES.match(name):
                    raise pickle.UnpicklingError(f"bad file inside {path}: {name}")
            pkls = [n for n in z.namelist() if WEBUI_DATA_PKL.match(n)]
            if len(pkls) != 1:
                raise pickle.UnpicklingError(f"{len(pkls)} data.pkl in {path}")
            with z.open(pkls[0]) as f:
                WebuiUnpickler(f).load()
    except zipfile.BadZipFile:
        with open(path, "rb") as f:
            unpickler = WebuiUnpickler(f)
            for _ in range(5):
                unpickler.load()


WEBUI_ACTIVATIONS = {"linear": nn.Identity, "relu": nn.ReLU, "leakyrelu": nn.LeakyReLU, "elu": nn.ELU,
                     "swish": nn.Hardswish, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid}
WEBUI_ACTIVATIONS.update({n.lower(): c for n, c in inspect.getmembers(torch.nn.modules.activation)
                          if inspect.isclass(c) and c.__module__ == "torch.nn.modules.activation"})


def webui_dropout(ls, use_dropout, last_layer_dropout):  # parse_dropout_structure
    if not use_dropout:
        return [0] * len(ls)
    return [0] + [0.3] * (len(ls) - 3) + [0.3 if last_layer_dropout else 0] + [0]


def webui_sequential(dim, ls, act, layer_norm, activate_output, dropout):
    """webui's HypernetworkModule layer list, with a plan to compute it from raw tensors."""
    layers, plan = [], []
    for i in range(len(ls) - 1):
        plan.append(("linear", len(layers)))
        layers.append(nn.Linear(int(dim * ls[i]), int(dim * ls[i + 1])))
        if not (act in ("linear", None) or (i >= len(ls) - 2 and not activate_output)):
            layers.append(WEBUI_ACTIVATIONS[act]())
            plan.append(("act", layers[-1]))
        if layer_norm:
            plan.append(("ln", len(layers)))
            layers.append(nn.LayerNorm(int(dim * ls[i + 1])))
        if dropout is not None and dropout[i + 1] > 0:
            layers.append(nn.Dropout(p=dropout[i + 1]))
    return nn.Sequential(*layers), plan


WEBUI_OLD_KEYS = {"linear1.weight": "linear.0.weight", "linear1.bias": "linear.0.bias",
                  "linear2.weight": "linear.1.weight", "linear2.bias": "linear.1.bias"}


def webui_load(path, zip_names=True):
    """What vanilla webui v1.10.1's Hypernetwork.load builds from ``path``: {width: (k, v)} callables.

    ``zip_names=False`` skips the zip-name part of the safety check, for files this test wrote with
    torch.save itself (a current torch adds entries that webui's torch 2.1 never writes)."""
    webui_safe_check(path, zip_names)
    sd = torch.load(path, map_location="cpu", weights_only=True)
    ls = sd.get("layer_structure", [1, 2, 1])
    ds = sd.get("dropout_structure", None)
    use = True if ds is not None and any(ds) else sd.get("use_dropout", False)
    if ds is None:
        ds = webui_dropout(ls, use, sd.get("last_layer_dropout", False))
    out = {}
    for size, pair in sd.items():
        if type(size) is int:
            mods = []
            for state in pair:
                seq, _ = webui_sequential(size, ls, sd.get("activation_func"), sd.get("is_layer_norm", False),
                                          sd.get("activate_output", True), ds)
                state = {WEBUI_OLD_KEYS.get(k, k): v for k, v in state.items()}  # fix_old_state_dict
                wrapper = nn.Module()
                wrapper.linear = seq
                wrapper.load_state_dict(state)
                wrapper.eval()
                mods.append(lambda x, m=1.0, w=wrapper: x + w.linear(x) * m)
            out[size] = tuple(mods)
    return out


def f_from_tensors(state, plan, x):
    """f(x) computed from the raw tensors of a webui state dict, following ``plan``."""
    h = x
    for kind, what in plan:
        if kind == "linear":
            h = F.linear(h, state[f"linear.{what}.weight"], state[f"linear.{what}.bias"])
        elif kind == "ln":
            w = state[f"linear.{what}.weight"]
            h = F.layer_norm(h, w.shape, w, state[f"linear.{what}.bias"])
        else:
            h = what(h)
    return h


def webui_file_entry(dim, spec, gen):
    """A (k, v) pair of OrderedDicts as webui's save writes them, random weights, and their plans."""
    pair, plans = [], []
    for _ in range(2):
        ds = spec.get("dropout_structure") or webui_dropout(spec.get("layer_structure", [1, 2, 1]),
                                                           spec.get("use_dropout", False),
                                                           spec.get("last_layer_dropout", False))
        seq, plan = webui_sequential(dim, spec.get("layer_structure", [1, 2, 1]), spec.get("activation_func"),
                                     spec.get("is_layer_norm", False), spec.get("activate_output", True), ds)
        with torch.no_grad():
            for p in seq.parameters():
                p.copy_(rand(gen, *p.shape))
        pair.append(OrderedDict(("linear." + k, v) for k, v in seq.state_dict().items()))
        plans.append(plan)
    return tuple(pair), plans


WEBUI_SPECS = {
    "defaults-only": {},
    "relu-norm-dropout": dict(layer_structure=[1, 2, 1], activation_func="relu", is_layer_norm=True,
                              use_dropout=True, dropout_structure=[0, 0.1, 0], activate_output=False,
                              last_layer_dropout=True, weight_initialization="XavierNormal"),
    "implicit-dropout-shifts-keys": dict(layer_structure=[1, 1.5, 2, 1], activation_func="leakyrelu",
                                         use_dropout=True, last_layer_dropout=True, activate_output=False),
    "swish-activated-output": dict(layer_structure=[1, 0.5, 1], activation_func="swish", activate_output=True),
    "softmax-loads-leniently": dict(layer_structure=[1, 2, 1], activation_func="softmax", activate_output=False),
    # the peer writes its two keys into every file; without skip connections vanilla webui loads it as is
    "peer-file-without-skip-connections": dict(layer_structure=[1, 2, 1], activation_func="relu",
                                               activate_output=False, skip_connection=False, upsample_linear=None),
}


@pytest.mark.filterwarnings("ignore:Implicit dimension choice for softmax")
@pytest.mark.parametrize("spec_id", list(WEBUI_SPECS))
def test_webui_file_built_independently_loads_and_computes_x_plus_f_times_strength(tmp_path, spec_id):
    spec = WEBUI_SPECS[spec_id]
    gen = torch.Generator().manual_seed(GEN_SEED)
    tree, plans = {}, {}
    for dim in (32, 48):
        tree[dim], plans[dim] = webui_file_entry(dim, spec, gen)
    tree.update(spec)
    tree.update(step=321, name="made-by-webui", sd_checkpoint="abc123", sd_checkpoint_name="sd15")
    path = tmp_path / "webui.pt"
    torch.save(tree, path)

    net = formats.load(path)
    assert net.widths == (32, 48) and net.name == "made-by-webui" and net.step == 321
    assert (net.sd_checkpoint, net.sd_checkpoint_name) == ("abc123", "sd15")
    assert net.config.activate_output == spec.get("activate_output", True)
    assert not net.training
    reference = webui_load(path, zip_names=False)
    for dim in (32, 48):
        x = rand(gen, 2, 5, dim, std=1.0)
        for which in (0, 1):
            state = tree[dim][which]
            expected = x + f_from_tensors(state, plans[dim][which], x) * 0.6
            got = net.pair(dim)[which](x, 0.6)
            assert torch.equal(got, expected)
            assert torch.equal(got, reference[dim][which](x, 0.6))
    info = formats.describe(path)
    assert info.format == formats.WEBUI_PT and info.webui_loadable
    assert not any(p.requires_grad for p in net.parameters())  # as webui's loader: no autograd at inference


def test_legacy_linear1_linear2_file(tmp_path):
    gen = torch.Generator().manual_seed(1)
    tree = {}
    for dim in (16, 24):
        tree[dim] = tuple({"linear1.weight": rand(gen, dim * 2, dim), "linear1.bias": rand(gen, dim * 2),
                           "linear2.weight": rand(gen, dim, dim * 2), "linear2.bias": rand(gen, dim)}
                          for _ in range(2))
    path = tmp_path / "old.pt"
    torch.save(tree, path)
    net = formats.load(path)
    assert net.name == "old" and net.step == 0 and net.config.layer_structure == (1.0, 2.0, 1.0)
    for dim in (16, 24):
        x = rand(gen, 1, 3, dim)
        for which in (0, 1):
            s = tree[dim][which]
            f = F.linear(F.linear(x, s["linear1.weight"], s["linear1.bias"]), s["linear2.weight"], s["linear2.bias"])
            assert torch.equal(net.pair(dim)[which](x, 0.8), x + f * 0.8)


@pytest.mark.parametrize("zip_format", [True, False], ids=["zip", "legacy-non-zip"])
def test_absent_keys_default_like_webui(tmp_path, zip_format):
    gen = torch.Generator().manual_seed(2)
    spec = dict(layer_structure=[1, 2, 1], activation_func="relu")  # activate_output absent: True
    (k, v), plans = webui_file_entry(16, spec, gen)
    path = tmp_path / "absent.pt"
    torch.save({16: [k, v], **spec}, path, _use_new_zipfile_serialization=zip_format)  # a list pair, too
    net = formats.load(path)
    cfg = net.config
    assert cfg.activate_output is True and cfg.last_layer_dropout is False and cfg.weight_init == "Normal"
    assert cfg.add_layer_norm is False and cfg.use_dropout is False and net.name == "absent"
    x = rand(gen, 2, 4, 16)
    assert plans[0][-1][0] == "act"  # the output is activated, as webui does for such files
    assert torch.equal(net.pair(16)[0](x), x + f_from_tensors(k, plans[0], x))
    assert torch.equal(net.pair(16)[1](x), webui_load(path, zip_names=False)[16][1](x))
    assert formats.describe(path).config == cfg


# ---------------------------------------------------------------- the peer's beta layout

def peer_entry(dim, ls, layer_norm, upsample, gen):
    state = OrderedDict()
    for i in range(len(ls) - 1):
        n_in, n_out = int(dim * ls[i]), int(dim * ls[i + 1])
        if upsample == "Linear":
            state[f"linear.{i}.upsample_layer.weight"] = rand(gen, n_out, n_in)
        state[f"linear.{i}.linear.0.weight"] = rand(gen, n_out, n_in)
        state[f"linear.{i}.linear.0.bias"] = rand(gen, n_out)
        if layer_norm:
            state[f"linear.{i}.linear.1.weight"] = 1 + rand(gen, n_out)
            state[f"linear.{i}.linear.1.bias"] = rand(gen, n_out)
    return state


def peer_forward(state, ls, act, layer_norm, upsample, x, m):
    """The peer's skip-connection forward in eval: x + m * (seq(x) - x), seq the chain of up(h) + block(h)."""
    h = x
    for i in range(len(ls) - 1):
        n_out = int(x.shape[-1] * ls[i + 1])
        if upsample == "Linear":
            up = F.linear(h, state[f"linear.{i}.upsample_layer.weight"])
        else:
            up = F.interpolate(h, size=n_out, mode="nearest-exact")
        y = F.linear(h, state[f"linear.{i}.linear.0.weight"], state[f"linear.{i}.linear.0.bias"])
        if layer_norm:
            y = F.layer_norm(y, (n_out,), state[f"linear.{i}.linear.1.weight"], state[f"linear.{i}.linear.1.bias"])
        if act not in (None, "linear"):
            y = WEBUI_ACTIVATIONS[act]()(y)
        h = up + y
    return x + m * (h - x)


@pytest.mark.parametrize("upsample", [None, "Linear", False])
def test_peer_beta_file_with_skip_connection_computes_the_peers_forward(tmp_path, upsample):
    gen = torch.Generator().manual_seed(3)
    ls, ds = [1, 2, 2, 1], [0.1, 0.2, 0.0, 0.1]  # the peer lets dropout start and end above 0
    tree = {dim: tuple(peer_entry(dim, ls, True, upsample, gen) for _ in range(2)) for dim in (16, 32)}
    tree.update(step=7, name="peer", layer_structure=ls, activation_func="relu", is_layer_norm=True,
                weight_initialization="Normal", sd_checkpoint=None, sd_checkpoint_name=None, activate_output=False,
                use_dropout=True, dropout_structure=ds, last_layer_dropout=False, optional_info="beta",
                skip_connection=True, upsample_linear=upsample)
    path = tmp_path / "peer.pt"
    torch.save(tree, path)
    net = formats.load(path)
    assert net.config.skip_connection and net.config.upsample == ("Linear" if upsample == "Linear" else None)
    assert net.config.dropout_structure == tuple(ds) and net.config.info == "beta"
    assert formats.describe(path).format == formats.PEER_PT
    for dim in (16, 32):
        x = rand(gen, 2, 3, dim, std=1.0)
        for which in (0, 1):
            expected = peer_forward(tree[dim][which], ls, "relu", True, upsample, x, 0.7)
            torch.testing.assert_close(net.pair(dim)[which](x, 0.7), expected, rtol=0, atol=1e-6)


# ---------------------------------------------------------------- round trips over a table of configs

def _round_trip_cases():
    cases = {}
    structures = [(1, 2, 1), (1, 1.5, 1), (1, 2, 2, 1)]
    for i, act in enumerate(sorted(CREATABLE_ACTIVATIONS)):
        ls = structures[i % 3]
        cases[f"act-{act}"] = dict(sizes=(16,), layer_structure=ls, activation=act,
                                   weight_init=WEIGHT_INITS[i % len(WEIGHT_INITS)], add_layer_norm=i % 2 == 1,
                                   activate_output=i % 3 == 0, use_dropout=i % 4 == 0,
                                   dropout_structure=(0,) + (0.15,) * (len(ls) - 2) + (0,) if i % 4 == 0 else None)
    cases["implicit-dropout-last-layer"] = dict(sizes=(16, 24), layer_structure=(1, 2, 2, 1), activation="relu",
                                                use_dropout=True, last_layer_dropout=True)
    cases["explicit-dropout-lld-false"] = dict(sizes=(16,), layer_structure=(1, 2, 2, 1), use_dropout=True,
                                               dropout_structure=(0, 0.1, 0.2, 0), last_layer_dropout=False)
    cases["sd-widths"] = dict(sizes=(768, 1024, 320, 2048), layer_structure=(1, 0.25, 1), activation="gelu",
                              add_layer_norm=True, normal_std=0.02, info="all the widths")
    cases["skip-interpolate"] = dict(sizes=(16, 32), layer_structure=(1, 2, 2, 1), activation="silu",
                                     skip_connection=True, add_layer_norm=True, use_dropout=True,
                                     dropout_structure=(0, 0.1, 0.1, 0))
    cases["skip-linear"] = dict(sizes=(16,), layer_structure=(1, 0.5, 1), activation="tanh", skip_connection=True,
                                upsample="Linear", weight_init="KaimingNormal")
    return cases


ROUND_TRIP = _round_trip_cases()


def _network(fields, seed=2**62 + 5):  # a seed as big as the ones create() draws
    net = create(NetworkConfig(seed=seed, **fields), name="round-trip")
    with torch.no_grad():  # visible non-zero weights everywhere (biases and norms included)
        gen = torch.Generator().manual_seed(seed)
        for p in net.parameters():
            p.add_(rand(gen, *p.shape, std=0.1))
    net.step, net.sd_checkpoint, net.sd_checkpoint_name = 1500, "0123abcd", "v1-5-pruned"
    net.extra = {"training": {"lr": "5e-6:100, 1e-6", "batch": 2, "tags": ["a", "b"]}, "note": None}
    return net


def _same_network(a, b):
    assert b.config.to_dict() == a.config.to_dict()
    assert (b.name, b.step, b.sd_checkpoint, b.sd_checkpoint_name, b.created, b.extra) == \
        (a.name, a.step, a.sd_checkpoint, a.sd_checkpoint_name, a.created, a.extra)
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb) and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert [str(m) for m in a.modules()] == [str(m) for m in b.modules()]  # dropout and all in place


def test_round_trip_table_covers_what_the_brief_asks():
    used = {c.get("activation", "linear") for c in ROUND_TRIP.values()}
    assert CREATABLE_ACTIVATIONS <= used
    assert set(WEIGHT_INITS) <= {c.get("weight_init", "Normal") for c in ROUND_TRIP.values()}
    assert {768, 1024, 320, 2048} <= {w for c in ROUND_TRIP.values() for w in c["sizes"]}
    assert {None, "Linear"} <= {c.get("upsample") for c in ROUND_TRIP.values() if c.get("skip_connection")}
    assert any(c.get("activate_output") for c in ROUND_TRIP.values())
    assert any(c.get("add_layer_norm") for c in ROUND_TRIP.values())


@pytest.mark.parametrize("case", list(ROUND_TRIP))
def test_round_trip_pt_and_safetensors_give_identical_outputs(tmp_path, case):
    fields = ROUND_TRIP[case]
    net = _network(fields)
    gen = torch.Generator().manual_seed(9)
    xs = {w: rand(gen, 2, 3, w, std=1.0) for w in net.widths}
    for suffix in (".pt", ".safetensors"):
        path = formats.save(net, tmp_path / f"net{suffix}")
        back = formats.load(path)
        _same_network(net, back)
        for w, x in xs.items():
            for which in (0, 1):
                assert torch.equal(back.pair(w)[which](x, 0.9), net.pair(w)[which](x, 0.9))
        nf = formats.describe(path)
        assert nf.config.to_dict() == net.config.to_dict() and nf.widths == net.widths
    pt = tmp_path / "net.pt"
    webui_safe_check(pt)
    assert all(offset % 64 == 0 for offset in local_data_offsets(pt).values())
    if net.config.webui_expressible:  # vanilla webui computes the same outputs from our file
        reference = webui_load(pt)
        assert formats.describe(pt).format == formats.WEBUI_PT
        for w, x in xs.items():
            for which in (0, 1):
                assert torch.equal(reference[w][which](x, 0.9), net.pair(w)[which](x, 0.9))
    else:  # the peer's forward, computed from the tensors in the file
        tree = torch.load(pt, weights_only=True)
        assert formats.describe(pt).format == formats.PEER_PT and tree["skip_connection"] is True
        cfg = net.config
        for w, x in xs.items():
            expected = peer_forward(tree[w][1], list(cfg.layer_structure), cfg.activation, cfg.add_layer_norm,
                                    cfg.upsample, x, 0.9)
            torch.testing.assert_close(net.pair(w)[1](x, 0.9), expected, rtol=0, atol=1e-6)


def test_convert_pt_to_safetensors_to_pt_is_identical(tmp_path):
    net = _network(ROUND_TRIP["act-relu"])
    first = formats.save(net, tmp_path / "a.pt")
    middle = formats.save(formats.load(first), tmp_path / "b.safetensors")
    last = formats.save(formats.load(middle), tmp_path / "c.pt")
    _same_network(net, formats.load(last))
    assert first.read_bytes() == last.read_bytes()  # deterministic: same network, same bytes, same hash


def test_written_pt_is_webuis_layout_with_only_plain_types(tmp_path):
    net = _network(dict(sizes=(16, 24), activation="relu", use_dropout=True, dropout_structure=(0, 0.1, 0),
                        info="notes"))
    path = formats.save(net, tmp_path / "n.pt")
    tree = torch.load(path, weights_only=True)
    assert tree["activate_output"] is False and tree["use_dropout"] is True and tree["last_layer_dropout"] is True
    assert tree["dropout_structure"] == [0.0, 0.1, 0.0] and tree["optional_info"] == "notes"
    assert tree["layer_structure"] == [1.0, 2.0, 1.0] and tree["activation_func"] == "relu"
    assert "skip_connection" not in tree and [k for k in tree if type(k) is int] == [16, 24]
    assert isinstance(tree[16], tuple) and list(tree[16][0]) == ["linear.0.weight", "linear.0.bias",
                                                                 "linear.3.weight", "linear.3.bias"]
    with zipfile.ZipFile(path) as z:
        data = z.read(next(n for n in z.namelist() if n.endswith("/data.pkl")))
    used = set()
    for op, arg, _ in pickletools.genops(data):
        if op.name == "GLOBAL":
            used.add(tuple(arg.split(" ", 1)))
    assert used <= {("collections", "OrderedDict"), ("torch._utils", "_rebuild_tensor_v2"),
                    ("torch", "FloatStorage")}, used


def local_data_offsets(path):
    """Offset of each record's data, read from the local file headers (independent of our writer)."""
    blob = path.read_bytes()
    with zipfile.ZipFile(path) as z:
        out = {}
        for info in z.infolist():
            name_len, extra_len = struct.unpack("<HH", blob[info.header_offset + 26:info.header_offset + 30])
            out[info.filename] = info.header_offset + 30 + name_len + extra_len
    return out


def test_entries_newer_torch_adds_are_dropped_and_the_file_still_loads(tmp_path):
    """torch >= 2.4 writes .format_version and .storage_alignment, which webui v1.10.1 refuses."""
    buffer = io.BytesIO()
    tensors = {16: (OrderedDict(w=torch.arange(6.0).reshape(2, 3)), OrderedDict(b=torch.ones(5)))}
    torch.save(tensors, buffer)
    newer = tmp_path / "newer.pt"
    with zipfile.ZipFile(io.BytesIO(buffer.getvalue())) as src, zipfile.ZipFile(newer, "w") as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info))
            if info.filename.endswith("data.pkl") and not any(".format_version" in n for n in src.namelist()):
                prefix = info.filename[:-len("data.pkl")]
                dst.writestr(prefix + ".format_version", b"1")
                dst.writestr(prefix + ".storage_alignment", b"64")
    with pytest.raises(pickle.UnpicklingError, match="bad file"):
        webui_safe_check(newer)
    fixed = tmp_path / "fixed.pt"
    with open(fixed, "wb") as out:
        dropped = torch_zip.repack(newer.read_bytes(), out)
    assert sorted(n.rsplit("/", 1)[1] for n in dropped) == [".format_version", ".storage_alignment"]
    webui_safe_check(fixed)
    assert all(offset % 64 == 0 for offset in local_data_offsets(fixed).values())
    back = torch.load(fixed, weights_only=True)
    assert torch.equal(back[16][0]["w"], tensors[16][0]["w"]) and torch.equal(back[16][1]["b"], torch.ones(5))


# ---------------------------------------------------------------- files that must be refused

class Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("kind", ["zip", "legacy", "raw-pickle", "protocol-0", "protocol-1"])
def test_pickle_with_a_payload_is_refused_and_does_not_run(tmp_path, kind):
    marker = tmp_path / "payload-ran"
    path = tmp_path / "evil.pt"
    tree = {16: (OrderedDict(), OrderedDict()), "name": "evil", "x": Payload(marker)}
    if kind.startswith("protocol-"):  # no header to recognise: the classic hand-made payload
        path.write_bytes(pickle.dumps(tree, protocol=int(kind[-1])))
    elif kind == "raw-pickle":
        path.write_bytes(pickle.dumps(tree))
    else:
        torch.save(tree, path, _use_new_zipfile_serialization=kind == "zip")
    for action in (formats.load, formats.describe):
        with pytest.raises(UnsafeFileError, match="system") as info:
            action(path)
        assert str(path) in str(info.value)
    assert formats.list_networks(tmp_path) == []
    assert not marker.exists()
    if kind != "zip" and kind != "legacy":  # the payload is real: plain pickle would have run it
        pickle.loads(path.read_bytes())
        assert marker.exists()


def _write_lora(path):
    from safetensors.torch import save_file
    save_file({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 8),
               "lora_unet_down_blocks_0_attentions_0_proj_in.lora_up.weight": torch.zeros(8, 4)}, str(path),
              metadata={"ss_network_module": "networks.lora"})


def _good(tmp_path, suffix=".pt"):
    return formats.save(_network(dict(sizes=(16,), activation="relu")), tmp_path / f"good{suffix}")


def _damage(tmp_path, how):
    path = tmp_path / "bad.pt"
    gen = torch.Generator().manual_seed(4)
    if how == "random-bytes":
        path.write_bytes(bytes(torch.randint(0, 256, (4096,), generator=gen, dtype=torch.uint8).tolist()))
    elif how == "protocol-0-pickle":
        path.write_bytes(pickle.dumps([1, 2, 3], protocol=0))
    elif how == "empty":
        path.write_bytes(b"")
    elif how in ("truncated-pt", "truncated-pt-head"):
        data = _good(tmp_path).read_bytes()
        path.write_bytes(data[: len(data) // 2] if how == "truncated-pt" else data[:700])
    elif how == "truncated-safetensors":
        data = _good(tmp_path, ".safetensors").read_bytes()
        path = tmp_path / "bad.safetensors"
        path.write_bytes(data[: len(data) - 100])
    elif how == "damaged-safetensors-header":
        path = tmp_path / "bad.safetensors"
        header = b'{"16.k.linear.0.weight": {"dtype": "F32", "shape": [2]'
        path.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 8)
    elif how == "wrong-shape":
        (k, v), _ = webui_file_entry(16, {}, gen)
        torch.save({32: (k, v), "layer_structure": [1, 2, 1]}, path)
    elif how == "wrong-structure":
        (k, v), _ = webui_file_entry(16, {}, gen)
        torch.save({16: (k, v), "layer_structure": [1, 2, 1], "is_layer_norm": True}, path)
    elif how == "not-a-pair":
        torch.save({16: OrderedDict(a=torch.zeros(1)), "layer_structure": [1, 2, 1]}, path)
    elif how == "plain-tensor":
        torch.save(torch.zeros(3, 4), path)
    elif how == "no-int-keys":
        torch.save({"string_to_param": {"*": torch.zeros(2, 768)}, "name": "an embedding"}, path)
    elif how == "lora-safetensors":
        path = tmp_path / "lora.safetensors"
        _write_lora(path)
    elif how == "other-zip":
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("readme.txt", "hello")
    elif how == "missing":
        path = tmp_path / "missing.pt"
    return path


DAMAGED = {  # how -> a fragment the message must contain
    "random-bytes": "Tried safetensors",
    "protocol-0-pickle": "an old-protocol pickle of a list, not a torch file",
    "empty": "empty",
    "truncated-pt": "truncated or corrupt",
    "truncated-pt-head": "truncated or corrupt",
    "truncated-safetensors": "truncated",
    "damaged-safetensors-header": "damaged safetensors header",
    "wrong-shape": "do not fit",
    "wrong-structure": "missing keys",
    "not-a-pair": "not a (k, v) pair",
    "plain-tensor": "single tensor of shape (3, 4)",
    "no-int-keys": "without width entries",
    "lora-safetensors": "lora_unet",
    "other-zip": "without data.pkl",
    "missing": "no such file",
}


@pytest.mark.parametrize("how", list(DAMAGED))
def test_damaged_or_foreign_files_get_a_format_error_naming_file_and_problem(tmp_path, how):
    path = _damage(tmp_path, how)
    with pytest.raises(FormatError) as info:
        formats.load(path)
    message = str(info.value)
    assert not isinstance(info.value, UnsafeFileError)
    assert str(path) in message and DAMAGED[how] in message, message
    if how in ("random-bytes", "plain-tensor", "no-int-keys", "lora-safetensors", "other-zip"):
        assert all(f"{name}:" in message for name in ("safetensors", "peer beta .pt", "webui .pt")), message


# ---------------------------------------------------------------- descriptors

@pytest.fixture
def no_tensor_reads(monkeypatch):
    """Fails any read of tensor data: torch.load, safetensors loading, and zip records data/<n>."""
    import safetensors
    import safetensors.torch

    def refuse(*args, **kwargs):
        raise AssertionError("tensor data was read")

    monkeypatch.setattr(torch, "load", refuse)
    monkeypatch.setattr(safetensors.torch, "load_file", refuse)
    monkeypatch.setattr(safetensors, "safe_open", refuse)
    opened = []
    real_open = zipfile.ZipFile.open

    def spy(self, name, mode="r", *args, **kwargs):
        if mode == "r" and self.filename:  # reads of files on disk (saving re-packs an in-memory archive)
            opened.append(name if isinstance(name, str) else name.filename)
        return real_open(self, name, mode, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "open", spy)
    yield opened
    assert not [n for n in opened if re.search(r"/data/\d+$", n)], opened


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_describe_reads_metadata_without_tensors(tmp_path, suffix, monkeypatch):
    net = _network(dict(sizes=(32, 16), activation="elu", add_layer_norm=True, info="hello"))
    path = formats.save(net, tmp_path / f"d{suffix}")
    import hashlib

    from hypernet_ext.formats import descriptor
    calls = []
    real = descriptor.sha256_file
    monkeypatch.setattr(descriptor, "sha256_file", lambda p: calls.append(p) or real(p))
    with monkeypatch.context() as m:
        m.setattr(torch, "load", lambda *a, **k: pytest.fail("describe loaded tensors"))
        nf = formats.describe(path)
    assert (nf.name, nf.step, nf.widths, nf.size) == ("round-trip", 1500, (32, 16), path.stat().st_size)
    assert nf.format == (formats.WEBUI_PT if suffix == ".pt" else formats.SAFETENSORS)
    assert nf.config.to_dict() == net.config.to_dict()
    assert (nf.sd_checkpoint, nf.sd_checkpoint_name, nf.created) == ("0123abcd", "v1-5-pruned", net.created)
    assert nf.metadata["extra"] == net.extra and nf.metadata["config"] == net.config.to_dict()
    assert calls == []  # the hash is computed only when asked for, then kept
    assert nf.hash == hashlib.sha256(path.read_bytes()).hexdigest() and nf.short_hash == nf.hash[:10]
    assert nf.short_hash == nf.hash[:10] and len(calls) == 1
    assert nf.load().step == 1500


def test_describe_and_list_never_read_tensor_data(tmp_path, no_tensor_reads):
    legacy = tmp_path / "legacy.pt"
    (k, v), _ = webui_file_entry(16, {}, torch.Generator().manual_seed(0))
    with open(legacy, "wb") as f:  # written before the spies matter: torch.save is not patched
        torch.save({16: (k, v), "name": "legacy"}, f, _use_new_zipfile_serialization=False)
    files = [_good(tmp_path), _good(tmp_path, ".safetensors"), legacy]
    described = [formats.describe(p) for p in files]
    assert [d.format for d in described] == [formats.WEBUI_PT, formats.SAFETENSORS, formats.WEBUI_PT]
    assert described[2].name == "legacy" and described[2].widths == (16,)
    assert any(n.endswith("data.pkl") for n in no_tensor_reads)  # the spy saw the zip being read


def test_list_networks_of_200_files_is_fast_and_skips_foreign_files(tmp_path, no_tensor_reads, caplog):
    pt, st = _good(tmp_path / "src"), _good(tmp_path / "src", ".safetensors")
    folder = tmp_path / "nets"
    for i in range(200):
        target = folder / f"sub{i % 4}" / f"net{i:03d}{'.pt' if i % 2 else '.safetensors'}"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((pt if i % 2 else st).read_bytes())
    (folder / "notes.txt").write_text("not a network")
    (folder / "garbage.pt").write_bytes(b"\x00" * 100)
    _write_lora(folder / "lora.safetensors")
    start = time.perf_counter()
    found = formats.list_networks(folder)
    elapsed = time.perf_counter() - start
    assert len(found) == 200 and elapsed < 10, elapsed
    assert [f.path for f in found] == sorted((f.path for f in found), key=str.lower)
    assert {f.format for f in found} == {formats.WEBUI_PT, formats.SAFETENSORS}
    assert "garbage.pt" in caplog.text and "lora.safetensors" in caplog.text
    assert formats.list_networks(folder, recursive=False) == []
    assert formats.list_networks(tmp_path / "nowhere") == []


# ---------------------------------------------------------------- saving

def test_save_refuses_unknown_suffix_and_is_atomic(tmp_path, monkeypatch):
    net = _network(dict(sizes=(16,)))
    with pytest.raises(FormatError, match=r"\.bin"):
        formats.save(net, tmp_path / "n.bin")
    path = formats.save(net, tmp_path / "n.pt")
    before = path.read_bytes()

    def broken(obj, target):
        target.write_bytes(b"half a file")
        raise OSError("disk full")

    monkeypatch.setattr(torch_zip, "save_webui_safe", broken)
    with pytest.raises(OSError, match="disk full"):
        formats.save(_network(dict(sizes=(16,)), seed=6), path)
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["n.pt"]


def test_skip_connection_pt_is_written_with_a_warning(tmp_path, caplog):
    net = _network(ROUND_TRIP["skip-linear"])
    with caplog.at_level("WARNING"):
        formats.save(net, tmp_path / "skip.pt")
    assert "vanilla webui cannot load it" in caplog.text and "skip connections" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING"):
        formats.save(net, tmp_path / "skip.safetensors")
    assert caplog.text == ""


def test_load_places_the_network_on_map_location(tmp_path):
    path = _good(tmp_path)
    assert formats.load(path, map_location=torch.device("cpu")).device.type == "cpu"
    assert {p.device.type for p in formats.load(path).parameters()} == {"cpu"}
