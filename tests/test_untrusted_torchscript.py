"""TorchScript payloads never run: inside a genuine hypernetwork .pt, as an .optim sidecar, in webui's own
pair of files (``<name>.pt`` and ``<name>.pt.optim`` in its hypernetwork folder), in a .ckpt. They are refused
by record name before anything is unpickled, on both lanes. The payload is shown to be real on every lane
(``torch.jit.load`` runs it; on torch < 2.6 so does ``torch.load(weights_only=True)``, which the loader used
before this fix, so on the users' lane these tests fail on that code with the marker file created).
"""
import shutil

import pytest
import torch
from untrusted import run_python, torchscript_payload, with_torchscript

from hypernet_ext import create, formats
from hypernet_ext.checkpoint import optim_path, read_optim
from hypernet_ext.errors import UnsafeFileError
from hypernet_ext.formats import safe_pickle
from hypernet_ext.standalone.cli import main

TORCH_LOAD_RUNS_TORCHSCRIPT = tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2]) < (2, 6)


@pytest.fixture
def payload(tmp_path):
    marker = tmp_path / "payload-ran"
    return torchscript_payload(tmp_path / "payload.pt", marker), marker


@pytest.fixture
def nothing_unpickled(monkeypatch):
    """Refusal by record name: the restricted unpickler must not even start."""
    def refuse(self):
        raise AssertionError("a file with TorchScript records reached the unpickler")
    monkeypatch.setattr(safe_pickle.RestrictedUnpickler, "load", refuse)


def hypernetwork(folder, name="victim"):
    return formats.save(create(sizes=(16, 24), name=name, seed=1), folder / f"{name}.pt")


def test_the_payload_is_real_on_this_lane(tmp_path, payload):
    script, marker = payload
    done = run_python(f"import torch\ntorch.jit.load({str(script)!r})")
    assert done.returncode == 0, done.stderr[-2000:]
    assert marker.exists()          # TorchScript ran __setstate__, which created the file
    marker.unlink()
    evil = with_torchscript(hypernetwork(tmp_path), script, tmp_path / "evil.pt")
    run_python(f"import torch\ntry:\n    torch.load({str(evil)!r}, weights_only=True)\nexcept Exception:\n    pass")
    assert marker.exists() == TORCH_LOAD_RUNS_TORCHSCRIPT   # the hole the old loader fell into on torch 2.1.2


def refused(action, *args):
    """The exception ``action`` raised (None when it returned); the caller checks the marker before its type."""
    try:
        action(*args)
    except Exception as err:  # noqa: BLE001 (asserted by the caller, after the marker)
        return err
    return None


def test_a_hypernetwork_with_torchscript_records_never_runs_them(tmp_path, payload, caplog):
    script, marker = payload
    evil = with_torchscript(hypernetwork(tmp_path / "src"), script, tmp_path / "nets" / "evil.pt")
    for action in (formats.load, formats.describe, formats.list_networks):
        error = refused(action, evil if action is not formats.list_networks else evil.parent)
        assert not marker.exists(), f"{action.__name__} ran the payload"
        if action is formats.list_networks:
            assert "TorchScript records" in caplog.text
        else:
            assert isinstance(error, UnsafeFileError) and "TorchScript records" in str(error)
            assert "constants.pkl" in str(error) and "nothing from the file ran" in str(error)


def test_torchscript_records_are_refused_before_anything_is_unpickled(tmp_path, payload, nothing_unpickled):
    evil = with_torchscript(hypernetwork(tmp_path), payload[0], tmp_path / "evil.pt")
    for action in (formats.load, formats.describe):
        with pytest.raises(UnsafeFileError, match="constants.pkl"):
            action(evil)


def test_convert_refuses_it_with_one_line(tmp_path, payload, capsys):
    script, marker = payload
    evil = with_torchscript(hypernetwork(tmp_path), script, tmp_path / "evil.pt")
    code = main(["convert", str(evil), str(tmp_path / "out.safetensors")])
    assert not marker.exists()
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and err.count("\n") == 1
    assert "TorchScript records" in err and "nothing from the file ran" in err
    assert not (tmp_path / "out.safetensors").exists()


def test_a_torchscript_archive_as_optim_gives_a_warning_and_runs_nothing(tmp_path, payload):
    script, marker = payload
    path = hypernetwork(tmp_path)
    shutil.copy(script, optim_path(path))
    state, reason = read_optim(path)
    assert not marker.exists()
    assert state is None and "was refused" in reason and "TorchScript" in reason
    assert "weights_only" not in reason and "nothing from the file ran" in reason


def test_a_checkpoint_with_torchscript_records_is_refused(tmp_path, payload):
    from hypernet_ext.standalone.checkpoints import read_state_dict as _read_state_dict

    script, marker = payload
    weights = tmp_path / "model.ckpt"
    torch.save({"state_dict": {"model.diffusion_model.w": torch.zeros(2)}}, weights)
    error = refused(_read_state_dict, with_torchscript(weights, script, tmp_path / "evil.ckpt"))
    assert not marker.exists()
    assert isinstance(error, UnsafeFileError) and "TorchScript" in str(error) and ".safetensors" in str(error)


@pytest.mark.parametrize("start", ["--resume", "--network"])
def test_webuis_pair_of_files_with_payloads_trains_without_running_them(tmp_path, payload, shapes_dir, tiny_cache,
                                                                         monkeypatch, caplog, capsys, start):
    """webui's hypernetwork folder: <name>.pt and <name>.pt.optim; the .optim is a TorchScript archive. --resume
    refuses to start (it cannot resume exactly; the error says why and points to --network), --network never
    reads the .optim and trains with a fresh optimizer; a .pt with the records is refused before the model is
    built. Nothing from either file runs."""
    pytest.importorskip("ldm")
    monkeypatch.setenv("HYPERNET_EXT_CACHE", str(tiny_cache))
    script, marker = payload
    folder = tmp_path / "models" / "hypernetworks"
    net = create(sizes=(32, 64, 768), layer_structure=(1, 0.25, 1), name="style", seed=2)
    path = formats.save(net, folder / "style.pt")
    shutil.copy(script, optim_path(path))
    argv = ["train", "--name", "style", "--data", str(shapes_dir), "--out", str(tmp_path / "out"), "--steps", "1",
            "--save-every", "0", "--template", "captions_only", "--resize", "fixed", "--width", "32", "--height",
            "32", "--min-side", "16", "--batch-size", "2", "--no-tensorboard", "--no-safetensors", "--device", "cpu",
            start, str(path)]
    with caplog.at_level("INFO"):
        code = main(argv)
    assert not marker.exists()
    if start == "--resume":
        err = capsys.readouterr().err
        assert code == 2 and "was refused" in err and "TorchScript" in err and f"--network {path}" in err
        assert not (tmp_path / "out").exists()
    else:
        assert code == 0 and "fresh optimizer" in caplog.text and "TorchScript" not in caplog.text
        assert (tmp_path / "out" / "style.pt").is_file()

    evil = with_torchscript(path, script, folder / "evil.pt")
    monkeypatch.setattr("hypernet_ext.standalone.commands.models.build_host",
                        lambda args: pytest.fail("the model was built before the file was checked"))
    code = main(argv[:-1] + [str(evil)])
    assert not marker.exists()
    assert code == 2
