"""``inspect`` and ``convert`` sub-commands: show what a hypernetwork file holds, and rewrite it in another
format (``.pt`` <-> ``.safetensors``, chosen by the output's suffix).
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

from ...errors import ConfigError
from ...fileio import check_file_target

logger = logging.getLogger(__name__)


def add_parser(sub) -> None:
    p = sub.add_parser("inspect", help="show a hypernetwork file's name, format, widths, structure, step, hash",
                       description="Show what a hypernetwork file holds, without loading its weights.")
    p.add_argument("file", help="a .pt or .safetensors hypernetwork")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.set_defaults(func=run_inspect)

    c = sub.add_parser("convert", help="rewrite a hypernetwork as .pt or .safetensors (from OUT's suffix)",
                       description="Load IN (any supported format) and write it to OUT; the format follows OUT's "
                                   "suffix: .pt (webui's layout) or .safetensors.")
    c.add_argument("input", metavar="IN", help="the hypernetwork to read")
    c.add_argument("output", metavar="OUT", help="the file to write (.pt or .safetensors)")
    c.add_argument("--force", action="store_true", help="overwrite OUT when it exists")
    c.set_defaults(func=run_convert)


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} bytes"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB"):
        value /= 1024
        if value < 1024 or unit == "GiB":
            break
    return f"{value:.1f} {unit} ({n:,} bytes)"


def inspect_lines(nf) -> list:
    """The text ``inspect`` prints for a NetworkFile."""
    from ...formats import WEBUI_PT

    loads = "loads in vanilla webui" if nf.format == WEBUI_PT else (
        "needs hypernet_ext or the peer extension" if nf.format.endswith("pt") else "hypernet_ext only")
    checkpoint = nf.sd_checkpoint_name or "-"
    if nf.sd_checkpoint:
        checkpoint += f" [{nf.sd_checkpoint}]"
    rows = [("name", nf.name), ("file", nf.path), ("format", f"{nf.format} ({loads})"),
            ("size", _size(nf.size)), ("widths", ", ".join(str(w) for w in nf.widths)),
            ("structure", nf.config.describe()), ("step", str(nf.step)), ("checkpoint", checkpoint),
            ("created", nf.created or "-")]
    if nf.config.info:
        rows.append(("info", nf.config.info))
    rows.append(("hash", f"{nf.short_hash} (sha256 {nf.hash})"))
    return [f"{key + ':':<11} {value}" for key, value in rows]


def run_inspect(args) -> int:
    from ... import formats

    nf = formats.describe(args.file)
    if args.json:
        print(json.dumps(nf.to_dict(), indent=2))
    else:
        print("\n".join(inspect_lines(nf)))
    return 0


def run_convert(args) -> int:
    from ... import formats

    src, dst = Path(args.input), Path(args.output)
    if dst.suffix.lower() not in formats.SUFFIXES:
        raise ConfigError(f"OUT: {dst} has suffix {dst.suffix!r}; name it .pt (webui) or .safetensors")
    if dst.exists() and not args.force:
        raise ConfigError(f"OUT: {dst} exists; pass --force to overwrite it, or choose another name")
    if dst.exists() and src.resolve() == dst.resolve():
        raise ConfigError(f"OUT: {dst} is the input file; choose another name")
    check_file_target(dst, "OUT")
    network = formats.load(src)
    formats.save(network, dst)  # logs why when a .pt target cannot be webui's layout
    nf = formats.describe(dst)
    print(f"wrote {dst}: {nf.format}, widths {', '.join(str(w) for w in nf.widths)}, {_size(nf.size)}")
    return 0
