"""fileio: atomic writes keep the permissions a plain open() would give (mkstemp's 0600 would hide files
from a webui running as another user), and a failure leaves the earlier file as it was."""
import os
import stat

import pytest

from hypernet_ext import create, fileio, formats
from hypernet_ext.fileio import atomic_path


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
