"""install.py as webui runs it after an install from the Extensions tab and at every start: only missing optional
extras, through webui's launch.is_installed / launch.run_pip, pinned and without dependencies (torch is never
touched), and nothing at all (no output) when everything is present."""
import runpy
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
STUB = Path(__file__).resolve().parent / "webui_stub"


@pytest.fixture
def launch(monkeypatch):
    monkeypatch.syspath_prepend(str(STUB))
    monkeypatch.delenv("HYPERNET_EXT_NO_EXTRAS", raising=False)
    import launch

    launch.pip_commands.clear()
    return launch


def run_install():
    runpy.run_path(str(REPO / "install.py"), run_name="__main__")


def test_only_missing_extras_are_installed_pinned_without_dependencies(launch, monkeypatch):
    missing = {"prodigyopt", "schedulefree"}
    monkeypatch.setattr(launch, "is_installed", lambda name: name not in missing)
    run_install()
    assert [c for c, _ in launch.pip_commands] == ["install --no-deps prodigyopt==1.1.2",
                                                   "install --no-deps schedulefree==1.4.1"]
    assert not any("torch" in c.split("==")[0].split()[-1] for c, _ in launch.pip_commands)


def test_nothing_happens_and_nothing_is_printed_when_all_is_present(launch, monkeypatch, capsys):
    monkeypatch.setattr(launch, "is_installed", lambda name: True)
    run_install()
    run_install()   # idempotent
    assert launch.pip_commands == []
    assert capsys.readouterr() == ("", "")


def test_an_extra_that_cannot_be_installed_is_one_line_and_the_others_still_come(launch, monkeypatch, capsys):
    monkeypatch.setattr(launch, "is_installed", lambda name: name not in {"lion-pytorch", "dadaptation"})
    tried = []

    def run_pip(command, desc=None, live=False):
        tried.append(command)
        if "lion" in command:
            raise RuntimeError("Couldn't install hypernet_ext extra: lion-pytorch 0.2.5.\nCommand: ...")

    monkeypatch.setattr(launch, "run_pip", run_pip)
    run_install()
    assert tried == ["install --no-deps lion-pytorch==0.2.5", "install --no-deps dadaptation==3.2"]
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and "could not install the optional lion-pytorch==0.2.5" in out[0]


def test_the_extras_can_be_skipped(launch, monkeypatch):
    monkeypatch.setattr(launch, "is_installed", lambda name: False)
    monkeypatch.setenv("HYPERNET_EXT_NO_EXTRAS", "1")
    run_install()
    assert launch.pip_commands == []


def test_the_extras_are_the_optimizers_the_tests_run_at_the_versions_they_run():
    extras = dict(runpy.run_path(str(REPO / "install.py"), run_name="install")["EXTRAS"])
    pins = dict(line.split("==") for line in (REPO / "dev" / "requirements-test.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    assert extras == {name: pins[name] for name in extras}
    assert set(extras) == {"lion-pytorch", "prodigyopt", "dadaptation", "schedulefree"}
