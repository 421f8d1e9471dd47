"""The files webui v1.10.1 reads: the .optim hash is the first 10 hex digits of the checkpoint's SHA-256
(computed here, independently), a pair written by webui's own save code (re-created here from
modules/hypernetworks/hypernetwork.py) resumes here, ours passes webui's own hash test, and our writer never
emits the zip records webui's safe unpickler refuses, even when torch writes them (torch >= 2.4 does; the
users' torch 2.1.2 does not, so torch.save is made to write them here).
"""
import hashlib
import io
import os
from pathlib import Path

import torch
from test_formats import webui_safe_check
from untrusted import records, write_zip

from hypernet_ext import create, formats
from hypernet_ext.checkpoint import optim_path, read_optim, restore_optimizer, save_checkpoint, write_optim
from hypernet_ext.formats.pt import pt_tree


def trained(seed=0):
    net = create(sizes=(16, 24), name="hn", seed=seed, activation="relu")
    net.train()
    net.requires_grad_(True)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    for width in (16, 24):
        net(torch.randn(2, 3, width))[1].square().sum().backward()
    opt.step()
    return net, opt


def sha256_10(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[0:10]


def webui_save(network, optimizer, filename):
    """webui's Hypernetwork.save: torch.save of the layers and settings, then the optimizer with the hash of the
    file just written (hashes.sha256 of the path: the SHA-256 of its bytes), under the name filename + '.optim'."""
    state_dict = pt_tree(network)
    del state_dict["hypernet_ext"]
    torch.save(state_dict, filename)
    torch.save({"optimizer_name": "AdamW", "hash": sha256_10(filename),
                "optimizer_state_dict": optimizer.state_dict()}, filename + ".optim")


def webui_takes_optimizer_state(filename):
    """webui's Hypernetwork.load: the .optim's state is used when its hash equals shorthash() of the file."""
    webui_safe_check(filename + ".optim")
    optimizer_saved_dict = torch.load(filename + ".optim", map_location="cpu") if os.path.exists(
        filename + ".optim") else {}
    return sha256_10(filename) == optimizer_saved_dict.get("hash", None) and bool(
        optimizer_saved_dict.get("optimizer_state_dict"))


def test_the_optim_hash_is_the_first_10_hex_digits_of_the_files_sha256(tmp_path):
    net, opt = trained()
    path = save_checkpoint(net, tmp_path / "hn.pt", opt, "AdamW")
    recorded = torch.load(optim_path(path), weights_only=True)["hash"]
    assert recorded == hashlib.sha256(path.read_bytes()).hexdigest()[:10] and len(recorded) == 10


def test_a_pair_written_by_webuis_own_code_resumes_here(tmp_path):
    net, opt = trained()
    filename = str(tmp_path / "hn.pt")
    webui_save(net, opt, filename)
    saved, problem = read_optim(filename)
    assert problem is None and saved.resume is None
    fresh_net = formats.load(filename)
    fresh_net.requires_grad_(True)
    fresh = torch.optim.AdamW(fresh_net.parameters(), lr=1e-3)
    assert restore_optimizer(fresh, saved, ["AdamW"]) is None
    expected = [s["exp_avg"] for s in opt.state_dict()["state"].values()]
    assert all(torch.equal(a, s["exp_avg"]) for a, s in zip(expected, fresh.state_dict()["state"].values()))


def test_our_pair_passes_webuis_own_hash_test(tmp_path):
    net, opt = trained()
    path = save_checkpoint(net, tmp_path / "hn.pt", opt, "AdamW")
    assert webui_takes_optimizer_state(str(path))
    net.step = 5
    snapshot = save_checkpoint(net, tmp_path / "hn-5.pt", opt, "AdamW")   # snapshots too (webui's own do not)
    assert webui_takes_optimizer_state(str(snapshot))


def test_our_writer_drops_the_records_webui_refuses_whatever_torch_writes(tmp_path, monkeypatch):
    real_save = torch.save

    def newer_torch_save(obj, f, *args, **kwargs):   # what torch >= 2.4 writes: two records webui refuses
        buffer = io.BytesIO()
        real_save(obj, buffer, *args, **kwargs)
        entries = records(buffer)
        prefix = next(n for n in entries if n.endswith("/data.pkl"))[:-len("data.pkl")]
        entries.setdefault(prefix + ".format_version", b"1")
        entries.setdefault(prefix + ".storage_alignment", b"64")
        write_zip(f, entries)

    monkeypatch.setattr(torch, "save", newer_torch_save)
    plain = tmp_path / "plain.pt"
    torch.save({"a": torch.ones(2)}, plain)
    assert {".format_version", ".storage_alignment"} <= {n.rsplit("/", 1)[-1] for n in records(plain)}
    net, opt = trained()
    path = formats.save(net, tmp_path / "hn.pt")
    write_optim(path, "AdamW", opt.state_dict())
    for written in (path, optim_path(path)):
        webui_safe_check(written)   # raises as webui's check_pt does on a record it refuses
    assert formats.load(path).step == net.step and read_optim(path)[0] is not None
