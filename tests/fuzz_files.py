"""Seeded mutations of every format we read, and the loop that feeds them to the readers (run by test_fuzz.py in a
subprocess under a memory limit). Raw mutations (flips, cuts, insertions, interesting integers) and, for zip
files, mutations of one record rewritten with a valid CRC, so that they reach the pickle and the storages
instead of stopping at zip's checksum; pickle operands get interesting integers (sizes, offsets, counts).
"""
import io
import json
import pickletools
import random
import resource
import struct
import zipfile
from pathlib import Path

import torch

from hypernet_ext import create, formats
from hypernet_ext.checkpoint import optim_path, read_optim, restore_optimizer, save_checkpoint
from hypernet_ext.errors import HypernetError
from hypernet_ext.formats.pt import pt_tree

INTERESTING = [0, 1, 2, 7, 8, 255, 256, 2 ** 15, 2 ** 16 - 1, 2 ** 31 - 1, 2 ** 31, 2 ** 32 - 1, 2 ** 32,
               2 ** 40, 2 ** 62, 2 ** 63 - 1, 2 ** 64 - 1, 10 ** 7, 10 ** 9]


def raw(rng: random.Random, data: bytes) -> bytes:
    data = bytearray(data)
    kind = rng.randrange(6)
    if not data or kind == 0:
        return bytes(data[:rng.randrange(len(data) + 1)])
    pos = rng.randrange(len(data))
    if kind == 1:
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
    elif kind == 2:
        data[pos:pos] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
    elif kind == 3:
        del data[pos:pos + rng.randint(1, 64)]
    elif kind == 4:
        value = rng.choice(INTERESTING) & (2 ** 64 - 1)
        size = rng.choice((1, 2, 4, 8))
        data[pos:pos + size] = (value & (2 ** (8 * size) - 1)).to_bytes(size, "little")
    else:
        start = rng.randrange(len(data))
        data[pos:pos] = data[start:start + rng.randint(1, 256)]
    return bytes(data)


def pickle_operand(rng: random.Random, pkl: bytes) -> bytes:
    """An integer operand of the pickle (a size, stride, offset, numel, width) replaced by an interesting one."""
    try:
        ops = [(op, pos) for op, _, pos in pickletools.genops(pkl) if op.name in ("BININT1", "BININT2", "BININT")]
    except ValueError:
        ops = []
    if not ops:
        return raw(rng, pkl)
    op, pos = rng.choice(ops)
    width = {"BININT1": 1, "BININT2": 2, "BININT": 4}[op.name]
    value = rng.choice(INTERESTING) & (2 ** (8 * width) - 1)
    return pkl[:pos + 1] + value.to_bytes(width, "little") + pkl[pos + 1 + width:]


def zip_record(rng: random.Random, data: bytes) -> bytes:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        entries = {i.filename: archive.read(i) for i in archive.infolist()}
    names = list(entries)
    pkl = next(n for n in names if n.endswith("data.pkl"))
    kind = rng.randrange(5)
    if kind <= 1:
        entries[pkl] = pickle_operand(rng, entries[pkl])
    elif kind == 2:
        entries[pkl] = raw(rng, entries[pkl])
    elif kind == 3:
        name = rng.choice(names)
        entries[name] = raw(rng, entries[name])
    else:
        name = rng.choice(names)
        if rng.random() < 0.5:
            del entries[name]
        else:
            entries[name.rsplit("/", 1)[0] + "/" + rng.choice(["constants.pkl", "data/77", "x", "version"])] = b"1"
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
        for name, content in entries.items():
            archive.writestr(name, content)
    return out.getvalue()


def safetensors_header(rng: random.Random, data: bytes) -> bytes:
    (length,) = struct.unpack("<Q", data[:8])
    header = bytearray(data[8:8 + length])
    digits = [i for i, c in enumerate(header) if chr(c).isdigit()]
    if digits and rng.random() < 0.7:
        pos = rng.choice(digits)
        header[pos:pos + 1] = str(rng.choice(INTERESTING)).encode()
    else:
        header = bytearray(raw(rng, bytes(header)))
    return struct.pack("<Q", len(header)) + bytes(header) + data[8 + length:]


def base_files(folder: Path) -> dict:
    net = create(sizes=(16, 24), layer_structure=(1, 1.5, 1), activation="relu", add_layer_norm=True, seed=0,
                 name="fuzz")
    net.train()
    net.requires_grad_(True)
    optimizer = torch.optim.AdamW(net.parameters())
    net(torch.randn(1, 2, 16))[0].sum().backward()
    optimizer.step()
    pt = save_checkpoint(net, folder / "base.pt", optimizer, "AdamW", {"step": 1})
    legacy = folder / "legacy.pt"
    torch.save(pt_tree(net), legacy, _use_new_zipfile_serialization=False)
    st = formats.save(net, folder / "base.safetensors")
    return {"pt": pt.read_bytes(), "legacy": legacy.read_bytes(), "safetensors": st.read_bytes(),
            "optim": optim_path(pt).read_bytes()}, net


MUTATORS = {"pt": (raw, zip_record, zip_record), "legacy": (raw,), "safetensors": (raw, safetensors_header),
            "optim": (raw, zip_record, zip_record)}


def run(folder: Path, count: int, seed: int) -> dict:
    bases, net = base_files(folder)
    rng = random.Random(seed)
    report = {"escaped": [], "outcomes": {},
              "start_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    for kind, base in bases.items():
        outcomes = report["outcomes"].setdefault(kind, {})
        for i in range(count):
            data = rng.choice(MUTATORS[kind])(rng, base)
            target = folder / f"m-{kind}-{i}" / ("n.safetensors" if kind == "safetensors" else "n.pt")
            target.parent.mkdir()
            if kind == "optim":
                target.write_bytes(bases["pt"])
                optim_path(target).write_bytes(data)
            else:
                target.write_bytes(data)
            for outcome in _exercise(kind, target, net):
                outcomes[outcome] = outcomes.get(outcome, 0) + 1
                if outcome.startswith("ESCAPED"):
                    report["escaped"].append(f"{kind} #{i}: {outcome}")
    report["maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return report


def _exercise(kind: str, target: Path, net):
    """What each reader made of the file: 'ok', an error class and the start of its message, or ESCAPED."""
    actions = []
    if kind == "optim":
        def resume():
            saved, problem = read_optim(target)
            if saved is None:
                return "refused: " + problem.split("(", 1)[-1][:30]
            fresh = torch.optim.AdamW(net.parameters())
            return "restored" if restore_optimizer(fresh, saved, ["AdamW"]) is None else "not used"
        actions.append(resume)
    else:
        actions += [lambda: formats.load(target) and "ok", lambda: formats.describe(target) and "ok"]
    for action in actions:
        try:
            yield action()
        except HypernetError as err:
            yield f"{type(err).__name__}: {str(err)[len(str(target)) + 2:][:25]}"
        except Exception as err:  # noqa: BLE001 (this is what the fuzz looks for)
            yield f"ESCAPED {type(err).__name__}: {str(err)[:200]}"


if __name__ == "__main__":
    import sys

    print(json.dumps(run(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]))))
