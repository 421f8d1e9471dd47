"""fileio: names stay inside their folder; atomic writes keep the permissions a plain open() would give
(mkstemp's 0600 would hide files from a webui running as another user), and a failure leaves the earlier
file as it was."""
import os
import stat

import pytest

from hypernet_ext import create, fileio, formats
from hypernet_ext.errors import ConfigError
from hypernet_ext.fileio import atomic_path, check_name, child


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    fileio._umask.cache_clear()  # read once per process; this test sets its own
    yield
    os.umask(old)
    fileio._umask.cache_clear()


def test_a_new_file_gets_the_mode_open_would_give(tmp_path, umask_022):
    plain = tmp_path / "plain"
    plain.write_bytes(b"x")
    with atomic_path(tmp_path / "atomic") as tmp:
        tmp.write_bytes(b"x")
    assert mode(tmp_path / "atomic") == mode(plain) == 0o644


def test_a_replaced_file_keeps_its_mode(tmp_path, umask_022):
    target = tmp_path / "kept"
    target.write_bytes(b"old")
    os.chmod(target, 0o640)
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new" and mode(target) == 0o640


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "kept"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="disk"):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("disk full")
    assert target.read_bytes() == b"old" and sorted(os.listdir(tmp_path)) == ["kept"]


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_saved_networks_are_readable_by_others(tmp_path, umask_022, suffix):
    path = formats.save(create(sizes=(8,), seed=0), tmp_path / f"net{suffix}")
    assert mode(path) == 0o644


@pytest.mark.parametrize("name", ["../escaped", "a/b", "a\\b", "..", ".hidden", "", "  ", "x" * 201, "a\nb"])
def test_check_name_refuses_names_that_leave_the_folder(name):
    with pytest.raises(ConfigError) as info:
        check_name(name, "network name")
    assert "network name" in str(info.value)


@pytest.mark.parametrize("name", ["my-style", "style v2.1", "a..b", "név_1"])
def test_check_name_keeps_plain_names(name):
    assert check_name(f" {name} ") == name


def test_child_refuses_a_symlink_out_of_the_folder(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    folder = tmp_path / "nets"
    folder.mkdir()
    (folder / "link.pt").symlink_to(outside / "x.pt")
    assert child(folder, "ok.pt") == folder / "ok.pt"
    with pytest.raises(ConfigError, match="leads outside"):
        child(folder, "link.pt")
