"""Our own reader of torch files (hypernet_ext.formats.torch_read): torch.load is never called; zip records are
checked by name before anything is unpickled; storages against their declared sizes; big-endian data is
byte-swapped with a log line; the legacy non-zip format gets the same rules; SD .ckpt files load with their
harmless globals as inert placeholders and anything else is refused with advice to convert.
"""
import io
import logging
import sys
import types
import zipfile

import numpy as np
import pytest
import torch
from untrusted import records, torch_bytes, write_zip

from hypernet_ext import create, formats
from hypernet_ext.checkpoint import optim_path, read_optim, write_optim
from hypernet_ext.errors import FormatError, UnsafeFileError
from hypernet_ext.formats import safe_pickle
from hypernet_ext.formats.pt import pt_tree
from hypernet_ext.standalone.checkpoints import read_state_dict as _read_state_dict

# What torch.save writes under the archive folder, found by writing files on both lanes.
TORCH_2_1_RECORDS = {"data.pkl", "byteorder", "version", ".data/serialization_id"}
TORCH_2_13_EXTRA = {".format_version", ".storage_alignment"}


def network(seed=1):
    return create(sizes=(16, 24), name="n", seed=seed, activation="relu")


def saved(tmp_path, name="n.pt"):
    return formats.save(network(), tmp_path / name)


def prefix_of(entries):
    return next(n for n in entries if n.endswith("/data.pkl"))[:-len("data.pkl")]


def test_torch_load_is_never_called(tmp_path, monkeypatch):
    from hypernet_ext.data.cache import load_moments, save_moments

    legacy = legacy_file(tmp_path)
    pt = saved(tmp_path)
    write_optim(pt, "AdamW", {"state": {}, "param_groups": []})
    save_moments(tmp_path, "key", torch.ones(8, 2, 2))
    ckpt = tmp_path / "m.ckpt"
    ckpt.write_bytes(torch_bytes({"state_dict": {"a": torch.ones(2)}}))
    for name in ("load", "jit.load"):
        monkeypatch.setattr(torch.jit if name == "jit.load" else torch, "load",
                            lambda *a, **k: pytest.fail("torch.load was called"))
    assert formats.load(pt).widths == (16, 24) and formats.load(legacy).widths == (16, 24)
    assert read_optim(pt)[0] is not None
    assert torch.equal(load_moments(tmp_path, "key"), torch.ones(8, 2, 2))
    assert torch.equal(_read_state_dict(ckpt)["a"], torch.ones(2))


def test_every_record_torch_writes_on_this_lane_is_accepted(tmp_path):
    path = tmp_path / "plain.pt"
    torch.save(pt_tree(network()), path)
    entries = records(path)
    names = {n[len(prefix_of(entries)):] for n in entries}
    assert {n for n in names if not n.startswith("data/")} <= TORCH_2_1_RECORDS | TORCH_2_13_EXTRA
    assert formats.load(path).widths == (16, 24)
    everything = dict(entries)   # every name either torch writes, on one file
    for extra, data in ((".format_version", b"1"), (".storage_alignment", b"64"), (".data/version", b"3\n")):
        everything[prefix_of(entries) + extra] = data
    assert formats.load(write_zip(tmp_path / "all.pt", everything)).widths == (16, 24)


@pytest.mark.parametrize("name, error, fragment", [
    ("constants.pkl", UnsafeFileError, "TorchScript"),
    ("code/__torch__.py", UnsafeFileError, "TorchScript"),
    ("bytecode.pkl", UnsafeFileError, "TorchScript"),
    ("extra/producer_info.json", UnsafeFileError, "TorchScript"),
    ("payload.bin", FormatError, "never writes"),
    ("data/0/x", FormatError, "never writes"),
    ("../outside", FormatError, "never writes"),
])
def test_records_a_weights_file_never_has_are_refused_by_name(tmp_path, monkeypatch, name, error, fragment):
    entries = records(saved(tmp_path))
    entries[prefix_of(entries) + name] = b"\x80\x02N."
    path = write_zip(tmp_path / "extra.pt", entries)
    monkeypatch.setattr(safe_pickle.RestrictedUnpickler, "load", lambda self: pytest.fail("it was unpickled"))
    for action in (formats.load, formats.describe):
        with pytest.raises(error, match=fragment) as info:
            action(path)
        assert name[:20] in str(info.value)


@pytest.mark.parametrize("how", ["unused-data-record", "second-data-pkl", "compressed", "outside-the-folder"])
def test_archives_torch_never_writes_are_refused(tmp_path, how):
    entries = records(saved(tmp_path))
    prefix = prefix_of(entries)
    path = tmp_path / "odd.pt"
    if how == "unused-data-record":
        entries[prefix + "data/999"] = b"\0" * 8
    elif how == "second-data-pkl":
        entries["other/data.pkl"] = entries[prefix + "data.pkl"]
    elif how == "outside-the-folder":
        entries["README"] = b"hello"
    if how == "compressed":
        with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
            for key, data in entries.items():
                archive.writestr(key, data)
    else:
        write_zip(path, entries)
    with pytest.raises(FormatError) as info:
        formats.load(path)
    assert not isinstance(info.value, UnsafeFileError) and str(path) in str(info.value)


def test_a_storage_shorter_than_its_tensors_is_refused(tmp_path):
    entries = records(saved(tmp_path))
    key = prefix_of(entries) + "data/0"
    entries[key] = entries[key][: len(entries[key]) // 2]
    path = write_zip(tmp_path / "short.pt", entries)
    with pytest.raises(FormatError, match="storage 0 holds .* bytes where .* need"):
        formats.load(path)
    with pytest.raises(FormatError, match="storage 0"):   # sizes are checked without reading the data, too
        formats.describe(path)


def test_a_tensor_outside_its_storage_is_refused(tmp_path):
    path = tmp_path / "view.pt"
    data = torch_bytes({16: ({"linear.0.weight": torch.zeros(4)}, {})})
    pkl = [n for n in records(io.BytesIO(data)) if n.endswith("data.pkl")][0]
    entries = records(io.BytesIO(data))
    assert entries[pkl].count(b"QK\x00K\x04\x85") == 1   # storage, offset 0, size (4,)
    entries[pkl] = entries[pkl].replace(b"QK\x00K\x04\x85", b"QK\x00K\x08\x85")
    with pytest.raises(FormatError, match="does not fit its storage of 4 elements"):
        formats.load(write_zip(path, entries))


def _byteswapped(entries, byteorder):
    out = dict(entries)
    for name, data in entries.items():
        if "/data/" in name:
            out[name] = b"".join(data[i:i + 4][::-1] for i in range(0, len(data), 4))
        if name.endswith("/byteorder"):
            out[name] = byteorder
    return out


def test_a_big_endian_file_is_byte_swapped_with_a_log_line(tmp_path, caplog):
    net = network()
    entries = records(formats.save(net, tmp_path / "little.pt"))
    path = write_zip(tmp_path / "big.pt", _byteswapped(entries, b"big"))   # what torch.save writes on big-endian
    with caplog.at_level(logging.WARNING):
        back = formats.load(path)
    assert all(torch.equal(a, b) for a, b in zip(back.state_dict().values(), net.state_dict().values()))
    assert "big-endian" in caplog.text and "byte-swapped" in caplog.text


def test_a_mislabelled_byteorder_shows_as_non_finite_weights_with_a_warning(tmp_path, caplog):
    net = network()
    with torch.no_grad():   # 0x3F80FF7F (about 1.008) reads as a NaN with its bytes reversed
        net.pair(16)[1].linear[0].weight[0, 0] = torch.tensor([0x3F80FF7F], dtype=torch.int32).view(torch.float32)
    entries = records(formats.save(net, tmp_path / "little.pt"))
    entries[prefix_of(entries) + "byteorder"] = b"big"
    with caplog.at_level(logging.WARNING):
        formats.load(write_zip(tmp_path / "mislabelled.pt", entries))
    assert "width 16 (v) linear.0.weight" in caplog.text and "NaN or infinite" in caplog.text


def legacy_file(tmp_path):
    path = tmp_path / "legacy.pt"
    path.write_bytes(torch_bytes(pt_tree(network()), _use_new_zipfile_serialization=False))
    return path


@pytest.mark.parametrize("cut", [12, 60, 200, 400, -1000, -300, -9, -1])
def test_a_truncated_legacy_file_gives_a_format_error(tmp_path, cut):
    path = legacy_file(tmp_path)
    path.write_bytes(path.read_bytes()[:cut])
    for action in (formats.load, formats.describe):
        with pytest.raises(FormatError):
            action(path)


def test_legacy_files_with_trailing_bytes_or_damaged_storage_counts_are_refused(tmp_path):
    path = legacy_file(tmp_path)
    data = path.read_bytes()
    path.write_bytes(data + b"extra")
    with pytest.raises(FormatError, match="after its last storage"):
        formats.load(path)
    count = np.int64(16 * 32).tobytes()   # the first storage: linear.0.weight of width 16, (32, 16)
    assert data.count(count) >= 1
    path.write_bytes(data.replace(count, np.int64(16 * 32 + 1).tobytes(), 1))
    with pytest.raises(FormatError, match="cut short or does not hold"):
        formats.load(path)


class ModelCheckpoint:    # pickled under Lightning's name, as in real SD checkpoints
    pass


@pytest.fixture
def lightning_names(monkeypatch):
    for name in ("pytorch_lightning", "pytorch_lightning.callbacks", "pytorch_lightning.callbacks.model_checkpoint"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    ModelCheckpoint.__module__ = "pytorch_lightning.callbacks.model_checkpoint"
    sys.modules[ModelCheckpoint.__module__].ModelCheckpoint = ModelCheckpoint


def test_a_pickled_sd_checkpoint_loads_with_inert_placeholders(tmp_path, lightning_names):
    state = {"model.diffusion_model.w": torch.arange(6.0).reshape(2, 3), "cond_stage_model.b": torch.ones(2)}
    ckpt = {"state_dict": state, "global_step": np.int64(470000), "epoch": 6,
            "callbacks": {ModelCheckpoint: {"best_model_score": np.float64(0.12), "monitor": None}},
            "hparams": {"lr": np.float32(1e-4)}, "pytorch-lightning_version": "1.4.2"}
    path = tmp_path / "sd.ckpt"
    path.write_bytes(torch_bytes(ckpt))
    read = _read_state_dict(path)
    assert read.keys() == state.keys() and all(torch.equal(read[k], state[k]) for k in state)


class Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return eval, (f"open({str(self.marker)!r}, 'w')",)


def test_a_checkpoint_asking_for_code_is_refused_and_says_convert(tmp_path):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.ckpt"
    path.write_bytes(torch_bytes({"state_dict": {"w": torch.zeros(2)}, "x": Payload(marker)}))
    with pytest.raises(UnsafeFileError, match=r"builtin__\.eval'") as info:
        _read_state_dict(path)
    assert ".safetensors" in str(info.value) and not marker.exists()


def test_train_from_such_a_checkpoint_is_one_line_before_the_model_is_built(tmp_path, tiny_ldm, tiny_cache, capsys):
    from test_train_host import write_checkpoint

    from hypernet_ext.standalone.cli import main

    path, yaml = write_checkpoint(tiny_ldm, tiny_cache, tmp_path, ".ckpt")
    marker = tmp_path / "ran"
    path.write_bytes(torch_bytes({"state_dict": {"w": torch.zeros(2)}, "x": Payload(marker)}))
    code = main(["train", "--name", "hn", "--data", str(tmp_path), "--out", str(tmp_path / "out"), "--device", "cpu",
                 "--ckpt", str(path), "--config", str(yaml)])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Convert the checkpoint to .safetensors" in err
    assert not marker.exists()


def test_an_optim_sidecar_gets_the_strict_rules(tmp_path, lightning_names):
    pt = saved(tmp_path)
    optim_path(pt).write_bytes(torch_bytes({"hash": "x", "optimizer_state_dict": {}, "cb": ModelCheckpoint}))
    state, reason = read_optim(pt)
    assert state is None and "ModelCheckpoint" in reason and "was refused" in reason
