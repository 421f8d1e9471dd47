"""A checkpoint and its .optim as one unit: a process killed between the two writes never leaves a network
file without its sidecar; the newest complete pair is found for resuming; the temporary files a kill leaves
are removed by the next run in that folder, and only that run's.
"""
import signal

import pytest
import torch
from untrusted import run_python

from hypernet_ext import checkpoint, create, formats
from hypernet_ext.checkpoint import optim_path, read_optim, save_checkpoint
from hypernet_ext.host import Callbacks
from hypernet_ext.training import TrainConfig, Trainer

KILLED_BETWEEN_THE_WRITES = """
import os, signal, torch
from pathlib import Path
from hypernet_ext import create
from hypernet_ext.checkpoint import save_checkpoint
folder = Path({folder!r})
net = create(sizes=(16,), name="k", seed=0)
opt = torch.optim.AdamW(net.parameters())
net(torch.randn(1, 2, 16))[0].sum().backward()
opt.step()
net.step = 1
save_checkpoint(net, folder / "k-1.pt", opt, "AdamW", {{"step": 1}})
renames, real = [], os.replace
def replace(src, dst):      # the second rename of the next save is where the kill comes
    renames.append(str(dst))
    if len(renames) == 2:
        print("killed before", Path(dst).name, flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    return real(src, dst)
os.replace = replace
net.step = 2
save_checkpoint(net, folder / "k-2.pt", opt, "AdamW", {{"step": 2}})
"""


def complete(path):
    return read_optim(path)[0] is not None


def test_a_kill_between_the_writes_leaves_no_network_file_without_its_optim(tmp_path):
    done = run_python(KILLED_BETWEEN_THE_WRITES.format(folder=str(tmp_path)))
    assert done.returncode == -signal.SIGKILL, done.stderr[-2000:]
    networks = sorted(p.name for p in tmp_path.glob("*.pt"))
    assert networks == ["k-1.pt"], networks           # k-2.pt never became visible without its .optim
    assert all(complete(tmp_path / name) for name in networks)
    assert [p.name for p in tmp_path.glob(".k-2.pt.*.tmp")]   # the kill left the network's temporary file
    assert checkpoint.newest_complete(tmp_path, "k") == tmp_path / "k-1.pt"


def _pair(folder, name, step, optimizer=True):
    net = create(sizes=(16,), name="k", seed=step)
    net.step = step
    opt = torch.optim.SGD(net.parameters(), lr=0.1) if optimizer else None
    return save_checkpoint(net, folder / name, opt, "SGD", {"step": step})


def test_newest_complete_picks_the_highest_step_whose_optim_matches(tmp_path):
    assert checkpoint.newest_complete(tmp_path, "k") is None
    _pair(tmp_path, "k-2.pt", 2)
    _pair(tmp_path, "k-4.pt", 4)
    _pair(tmp_path, "k-6.pt", 6, optimizer=False)                 # no sidecar
    _pair(tmp_path, "k-8.pt", 8)
    optim_path(tmp_path / "k-8.pt").write_bytes(optim_path(tmp_path / "k-4.pt").read_bytes())   # another file's
    _pair(tmp_path, "other-9.pt", 9)                              # another run
    assert checkpoint.newest_complete(tmp_path, "k") == tmp_path / "k-4.pt"
    _pair(tmp_path, "k.pt", 10)                                   # the final file counts too
    assert checkpoint.newest_complete(tmp_path, "k") == tmp_path / "k.pt"
    assert checkpoint.newest_complete(tmp_path, "other") == tmp_path / "other-9.pt"


def test_the_next_run_in_the_folder_removes_the_temporary_files_a_kill_left(tmp_path, ldm_host, shapes_dataset):
    pytest.importorskip("ldm")
    left = [tmp_path / n for n in (".hn-2.pt.abcd1234.tmp", ".hn.pt.optim.x_y9zz00.tmp",
                                   ".hn.safetensors.q1w2e3r4.tmp", ".hn-best.pt.optim.abcd1234.tmp")]
    kept = [tmp_path / n for n in (".other.pt.abcd1234.tmp", ".hn.pt.optim.tmp", "notes.tmp", ".hn-2.pt.abcd1234.bak")]
    for path in left + kept:
        path.write_bytes(b"half a file")
    net = create(name="hn", sizes=(32, 64, 768), layer_structure=(1, 0.25, 1), seed=0)
    config = TrainConfig(name="hn", out_dir=str(tmp_path), steps=1, save_every=0, tensorboard=False)
    Trainer(ldm_host, net, shapes_dataset, config).train()
    assert not any(p.exists() for p in left) and all(p.exists() for p in kept)
    assert formats.load(tmp_path / "hn.pt").step == 1 and complete(tmp_path / "hn.pt")


def test_a_fresh_run_sets_aside_another_runs_later_snapshots_so_resume_never_picks_them(tmp_path, ldm_host,
                                                                                          shapes_dataset):
    """A network replaced by a new one of the same name (or a run started afresh) must not resume from the old
    run's snapshots: they are renamed, kept, and newest_complete finds the new run's checkpoint."""
    pytest.importorskip("ldm")

    def net(seed):
        return create(name="hn", sizes=(32, 64, 768), layer_structure=(1, 0.25, 1), seed=seed)

    config = TrainConfig(name="hn", out_dir=str(tmp_path), steps=4, save_every=2, tensorboard=False)
    Trainer(ldm_host, net(0), shapes_dataset, config).train()
    old = {k: formats.load(tmp_path / f"hn-{k}.pt").state_dict() for k in (2, 4)}
    messages = []

    class Recorder(Callbacks):
        def on_message(self, text):
            messages.append(text)

    Trainer(ldm_host, net(1), shapes_dataset, config.replace(steps=1), Recorder()).train()
    assert checkpoint.newest_complete(tmp_path, "hn") == tmp_path / "hn.pt"
    assert formats.load(tmp_path / "hn.pt").step == 1
    for k in (2, 4):
        kept = tmp_path / f"hn-{k}-earlier-run.pt"
        assert not (tmp_path / f"hn-{k}.pt").exists() and complete(kept)
        assert all(torch.equal(a, b) for a, b in zip(formats.load(kept).state_dict().values(), old[k].values()))
    assert any("hn-2-earlier-run.pt, hn-4-earlier-run.pt" in m for m in messages), messages
