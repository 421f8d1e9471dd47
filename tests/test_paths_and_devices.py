"""Filesystem and device mistakes are one clear line each, found before the expensive work: the command line
checks --device, --out and --cache-dir before building the model (build_host is made to fail here), convert
checks OUT before reading IN, save refuses a path inside a file, load checks map_location before reading.
"""
import pytest
import torch

from hypernet_ext import create, formats
from hypernet_ext.errors import ConfigError
from hypernet_ext.standalone.cli import main
from hypernet_ext.training import TrainConfig, Trainer


@pytest.fixture
def a_file(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("a file, not a folder")
    return path


@pytest.fixture
def no_model(monkeypatch):
    monkeypatch.setattr("hypernet_ext.standalone.commands.models.build_host",
                        lambda args: pytest.fail("the model was built before the options were checked"))


def one_error_line(capsys):
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("case", ["out-is-a-file", "out-under-a-file", "cache-dir-under-a-file", "device-cuda-7",
                                  "device-bogus", "device-gpu9"])
def test_train_options_are_checked_before_the_model_is_built(tmp_path, a_file, no_model, capsys, case):
    if case == "device-cuda-7" and torch.cuda.device_count() > 7:
        pytest.skip("this machine has a cuda:7")
    options = {
        "out-is-a-file": ["--out", str(a_file)],
        "out-under-a-file": ["--out", str(a_file / "run")],
        "cache-dir-under-a-file": ["--out", str(tmp_path / "out"), "--cache-dir", str(a_file / "cache")],
        "device-cuda-7": ["--out", str(tmp_path / "out"), "--device", "cuda:7"],
        "device-bogus": ["--out", str(tmp_path / "out"), "--device", "bogus"],
        "device-gpu9": ["--out", str(tmp_path / "out"), "--device", "gpu9"],
    }[case]
    (tmp_path / "data").mkdir()
    assert main(["train", "--name", "hn", "--data", str(tmp_path / "data"), *options]) == 2
    line = one_error_line(capsys)
    expected = {"out-is-a-file": "--out", "out-under-a-file": "--out", "cache-dir-under-a-file": "--cache-dir"}
    assert expected.get(case, "--device") in line
    if case.startswith("device"):
        assert case.split("-", 1)[1].replace("-", ":") in line
    else:
        assert str(a_file) in line and "is a file" in line
    assert not (tmp_path / "out").exists()


def test_convert_checks_out_before_reading_in(tmp_path, a_file, capsys, monkeypatch):
    source = formats.save(create(sizes=(16,), seed=0), tmp_path / "n.pt")
    monkeypatch.setattr(formats, "load", lambda *a, **k: pytest.fail("IN was read before OUT was checked"))
    assert main(["convert", str(source), str(a_file / "n.safetensors")]) == 2
    assert str(a_file) in one_error_line(capsys)


def test_save_into_a_path_under_a_file_is_a_config_error(tmp_path, a_file):
    with pytest.raises(ConfigError, match="which is a file, not a folder"):
        formats.save(create(sizes=(16,), seed=0), a_file / "sub" / "n.pt")
    assert a_file.read_text() == "a file, not a folder"


@pytest.mark.parametrize("device", ["gpu9", "bogus:1", "meta", 5])
def test_load_checks_map_location_before_reading(tmp_path, monkeypatch, device):
    path = formats.save(create(sizes=(16,), seed=0), tmp_path / "n.pt")
    monkeypatch.setattr(formats, "_read", lambda *a, **k: pytest.fail("the file was read"))
    with pytest.raises(ConfigError, match="map_location"):
        formats.load(path, map_location=device)


def test_the_trainer_checks_its_folder_first(tmp_path, a_file):
    config = TrainConfig(name="hn", out_dir=str(a_file / "run"), steps=1, tensorboard=False)
    trainer = Trainer(host=None, network=create(sizes=(16,), seed=0), dataset=None, config=config)
    with pytest.raises(ConfigError, match="out_dir"):
        trainer.train()
