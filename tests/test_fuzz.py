"""A seeded fuzz of every format we read (tests/fuzz_files.py): a few hundred mutations each of a webui .pt, a
legacy .pt, a .safetensors and an .optim, fed to load, describe and resume in a subprocess whose address space
may grow by at most 1 GiB. Every outcome must be a load or a HypernetError (for an .optim: a reason and a
fresh optimizer), never another exception, and the process's peak memory grows by less than 300 MB.
"""
from pathlib import Path

from untrusted import last_json, run_python

COUNT, SEED = 300, 20240611


def test_mutated_files_give_only_typed_errors_in_bounded_memory(tmp_path):
    tests = Path(__file__).resolve().parent
    code = f"""
    import json, sys
    sys.path.insert(0, {str(tests)!r})
    from pathlib import Path
    from fuzz_files import run
    print(json.dumps(run(Path({str(tmp_path)!r}), {COUNT}, {SEED})))
    """
    done = run_python(code, memory_gb=1.0, timeout=600)
    report = last_json(done)
    assert report["escaped"] == [], report["escaped"][:20]
    assert report["maxrss_mb"] - report["start_mb"] < 300, report   # the files are a few KB each
    for kind, outcomes in report["outcomes"].items():
        assert sum(outcomes.values()) >= COUNT, kind
        assert len(outcomes) >= 6, (kind, outcomes)   # the mutations reach many different checks
