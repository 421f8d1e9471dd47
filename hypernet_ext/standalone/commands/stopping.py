"""The ``train`` command's options for validation, the overtraining guard and the learning-rate range test,
and ``train --find-lr``: every field of ValidationConfig, GuardConfig and FindLRConfig gets an option
``--val-<field>``, ``--guard-<field>``, ``--find-lr-<field>`` with its help from the dataclass.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path


def _add_nested(p, cls, title: str, prefix: str, renamed=None, **per_field):
    """A group with an option for every field of config ``cls``: ``--<prefix>-<field>`` (``renamed`` maps a
    field to another flag), its value in ``args.<prefix>_<field>``; ``per_field`` gives add_argument kwargs."""
    from .train import _option

    g = p.add_argument_group(title)
    for f in dataclasses.fields(cls):
        flag = (renamed or {}).get(f.name, f"--{prefix}-{f.name.replace('_', '-')}")
        _option(g, cls, f.name, flag, dest=f"{prefix.replace('-', '_')}_{f.name}", **per_field.get(f.name, {}))
    return g


def from_args(cls, args, prefix: str):
    """Config ``cls`` from the options _add_nested made."""
    return cls(**{f.name: getattr(args, f"{prefix.replace('-', '_')}_{f.name}") for f in dataclasses.fields(cls)})


def add_options(p):
    """The three option groups and ``--find-lr``."""
    from ...training.config import GUARD_ACTIONS, FindLRConfig, GuardConfig, ValidationConfig

    _add_nested(p, ValidationConfig, "validation (off unless --val-every is given)", "val",
                {"data_dir": "--val-data"})
    _add_nested(p, GuardConfig, "overtraining guard", "guard", {"action": "--guard"},
                action={"choices": GUARD_ACTIONS})
    g = _add_nested(p, FindLRConfig, "learning-rate range test", "find-lr")
    g.add_argument("--find-lr", action="store_true", help="Run the learning-rate range test instead of training: "
                   "a short run on a copy of the network (its file is not touched) with the rate rising from "
                   "--find-lr-start to --find-lr-end; prints and plots (<out>/<name>-lr-find.png) loss against "
                   "the rate and suggests a rate and a schedule.")


def find_lr_config(args):
    from ...training.config import FindLRConfig

    return from_args(FindLRConfig, args, "find-lr")


def run_find_lr(args, config, host, network, dataset) -> int:
    """The range test on a copy of ``network``: the table, the suggestion and the plot; nothing else is written."""
    from tqdm.contrib.logging import logging_redirect_tqdm

    from ...training.lr_finder import find_lr
    from .train import CliCallbacks

    callbacks = CliCallbacks(desc=f"{config.name} lr range test")
    try:
        with logging_redirect_tqdm():
            curve = find_lr(host, network, dataset, config, find_lr_config(args), callbacks)
    finally:
        callbacks.close()
    print(curve.table())
    print(curve.summary())
    if curve.rates:
        out = Path(config.out_dir) / f"{config.name}-lr-find.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        curve.plot().save(out)
        print(f"plot: {out}")
    if curve.suggestion is not None:
        print(f"try: --lr '{curve.schedule}'")
    return 0

