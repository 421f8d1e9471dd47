"""The layering of DESIGN.md: the core imports no webui, gradio, ldm or sgm; nothing happens at import."""
import pkgutil
import subprocess
import sys
from pathlib import Path

import hypernet_ext

ROOT = Path(hypernet_ext.__file__).resolve().parent.parent
HOST_PACKAGES = ("modules", "gradio", "ldm", "sgm")
# packages allowed to import host code: webui/ (modules), ui/ (gradio), standalone/ (ldm, gradio)
OUTSIDE_CORE = ("hypernet_ext.webui", "hypernet_ext.ui", "hypernet_ext.standalone")


def core_modules():
    names = []
    for info in pkgutil.walk_packages([str(ROOT / "hypernet_ext")], prefix="hypernet_ext."):
        if not info.name.startswith(OUTSIDE_CORE) and info.name != "hypernet_ext.__main__":
            names.append(info.name)
    return ["hypernet_ext"] + names


def test_core_has_the_modules_we_expect():
    names = core_modules()
    for expected in ("hypernet_ext.config", "hypernet_ext.layers", "hypernet_ext.network", "hypernet_ext.errors"):
        assert expected in names


def test_core_imports_no_host_code_in_a_fresh_interpreter():
    code = (
        "import importlib, sys\n"
        f"for name in {core_modules()!r}:\n"
        "    importlib.import_module(name)\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {HOST_PACKAGES!r})\n"
        "print(repr(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout


def test_importing_the_package_does_no_work():
    code = "import sys, hypernet_ext; print(sorted(m for m in sys.modules if m.startswith('hypernet_ext')))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['hypernet_ext']"
    assert "torch" not in subprocess.run(
        [sys.executable, "-c", "import sys, hypernet_ext; print(' '.join(sys.modules))"],
        cwd=ROOT, capture_output=True, text=True, timeout=120).stdout.split()


def test_the_webui_glue_imports_nothing_of_webui_until_it_is_called():
    # webui puts the extension on sys.path only while it loads scripts/: importing must not need `modules` yet
    names = [info.name for info in pkgutil.walk_packages([str(ROOT / "hypernet_ext" / "webui")],
                                                         prefix="hypernet_ext.webui.")]
    code = (
        "import importlib, sys\n"
        f"for name in {names!r}:\n"
        "    importlib.import_module(name)\n"
        "print(repr(sorted(m for m in sys.modules if m.split('.')[0] in ('modules', 'gradio', 'fastapi'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert len(names) >= 10 and out.stdout.strip().splitlines()[-1] == "[]", out.stdout
