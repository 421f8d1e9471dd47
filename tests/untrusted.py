"""Helpers for the tests of untrusted files: TorchScript payloads that create a marker file when torch runs
them, zip surgery on torch archives, and running a piece of code in a subprocess under a memory limit.

What TorchScript runs at load time (torch 2.1 and later): ``torch.jit.load`` unpickles the archive's
``constants.pkl`` and ``data.pkl`` with TorchScript's own unpickler, which calls the ``__setstate__`` method
(compiled from the archive's ``code/`` records) of every scripted object it meets. TorchScript has no
``open``, but ``torch.from_file(path, shared=True, size=n)`` maps a file read-write and creates it when it is
missing, so a ``__setstate__`` calling it leaves a marker file (and could overwrite any file the user may
write). torch.load before 2.6 dispatches any zip with a ``constants.pkl`` record to ``torch.jit.load``, even
with ``weights_only=True``.
"""
import io
import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path
from typing import Tuple

import torch

ROOT = Path(__file__).resolve().parent.parent


class MarkerModule(torch.nn.Module):
    """A scripted module whose __setstate__ creates the file named in its state (4 float32 zeros)."""

    def __init__(self, path: str):
        super().__init__()
        self.path = path
        self.n = 0

    @torch.jit.export
    def __getstate__(self) -> Tuple[str, bool]:
        return (self.path, self.training)

    @torch.jit.export
    def __setstate__(self, state: Tuple[str, bool]) -> None:
        self.path = state[0]
        self.training = state[1]
        self.n = torch.from_file(state[0], True, 4).numel()   # used, so the compiler keeps the call

    def forward(self, x):
        return x


def torchscript_payload(path, marker) -> Path:
    """A TorchScript archive at ``path`` that creates ``marker`` when torch.jit.load (or torch < 2.6's
    torch.load) reads it."""
    torch.jit.script(MarkerModule(str(marker))).save(str(path))
    return Path(path)


def records(path) -> dict:
    with zipfile.ZipFile(path) as archive:
        return {info.filename: archive.read(info) for info in archive.infolist()}


def write_zip(path, entries: dict):
    """A stored zip of ``entries`` at ``path`` (a file name or a binary file)."""
    if not hasattr(path, "write"):
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return path


def with_torchscript(weights, payload, out) -> Path:
    """``weights`` (a genuine torch zip) plus the payload's code records and its module pickle as
    ``constants.pkl``: the weights file still reads normally, but torch < 2.6's torch.load runs the code."""
    entries = records(weights)
    prefix = next(n for n in entries if n.endswith("/data.pkl"))[:-len("data.pkl")]
    script = records(payload)
    script_prefix = next(n for n in script if n.endswith("/data.pkl"))[:-len("data.pkl")]
    for name, data in script.items():
        if name.startswith(script_prefix + "code/"):
            entries[prefix + name[len(script_prefix):]] = data
    entries[prefix + "constants.pkl"] = script[script_prefix + "data.pkl"]
    return write_zip(out, entries)


def torch_bytes(obj, **kwargs) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer, **kwargs)
    return buffer.getvalue()


def run_python(code: str, memory_gb: float = 0, timeout: float = 300, env=None) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter with this checkout first on the path; with ``memory_gb``, after
    ``import torch`` the address space may grow by at most that much (a MemoryError instead of a machine
    brought to its knees when the code under test allocates what a file declares)."""
    prelude = "import torch\ntorch.set_num_threads(1)\n"
    if memory_gb:
        prelude += textwrap.dedent(f"""
            import resource
            def _vm():
                with open('/proc/self/status') as f:
                    return next(int(l.split()[1]) * 1024 for l in f if l.startswith('VmSize:'))
            _limit = _vm() + int({memory_gb} * 2 ** 30)
            resource.setrlimit(resource.RLIMIT_AS, (_limit, _limit))
        """)
    environment = dict(os.environ if env is None else env)
    environment["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), environment.get("PYTHONPATH")) if p)
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], cwd=ROOT, env=environment,
                          capture_output=True, text=True, timeout=timeout)


def last_json(done: subprocess.CompletedProcess):
    """The JSON object the subprocess printed last (its report)."""
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert lines, done.stdout[-2000:] + done.stderr[-3000:]
    return json.loads(lines[-1])
