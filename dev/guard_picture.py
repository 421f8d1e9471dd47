"""Draws docs/guard.png for the README: a real run of the tiny built-in model in which the overtraining guard fired.

The run trains a hypernetwork on synthetic shape images with a learning rate far too high, validating on two
held-out images; the guard rolls back to the best snapshot and lowers the rate. The picture is drawn from the
run's loss CSV by hypernet_ext.training.plots.run_chart. CPU only, about a minute on two cores.

    PYTHONPATH=. .venv/bin/python dev/guard_picture.py [--out docs/guard.png] [--work /tmp/guard-picture]
"""
from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
from pathlib import Path

from hypernet_ext import create
from hypernet_ext.data import DataConfig, prepare_dataset
from hypernet_ext.standalone.demo import build_tiny_ldm, make_shapes_dataset, tiny_model_hash
from hypernet_ext.standalone.ldm_host import LdmHost
from hypernet_ext.training import TrainConfig, Trainer
from hypernet_ext.training.logs import read_loss_csv
from hypernet_ext.training.plots import run_chart

SEED = 0
RUN = dict(steps=60, save_every=0, tensorboard=False, seed=SEED,
           schedule={"learn_rate": "0.05"},                          # far too high for this network
           validation={"every": 3, "split": 0.25, "timesteps": 4},   # 2 of 8 images held out
           guard={"action": "rollback", "margin": 0.01, "patience": 2, "lr_factor": 0.2})


def run(work: Path) -> Path:
    """Train as RUN says in ``work``; returns the loss CSV."""
    host = LdmHost(build_tiny_ldm(seed=SEED), model_name="tiny-sd1", model_hash=tiny_model_hash(SEED))
    data_dir = make_shapes_dataset(work / "data", count=8, seed=SEED, sizes=[(32, 32)])
    data = DataConfig(data_dir=str(data_dir), template="captions_only", resize="fixed", width=32, height=32,
                      min_side=16, batch_size=2, flip=0.5, seed=SEED)
    dataset = prepare_dataset(data, host.encode_images, host.scale_factor, model_id=host.model_id)
    network = create(name="guard-demo", sizes=(32, 64, 768), layer_structure=(1, 2, 1), activation="relu",
                     seed=SEED)
    config = TrainConfig(name="guard-demo", out_dir=str(work / "run"), **RUN)
    result = Trainer(host, network, dataset, config).train()
    for text in result.guard_events:
        print(text)
    print(f"{len(result.losses)} steps trained, final step {result.step}; best snapshot {result.best_path}")
    return work / "run" / "hypernetwork_loss.csv"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="docs/guard.png", help="the picture to write")
    parser.add_argument("--work", default=None, help="folder for the run (default: a temporary one, removed)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="guard-picture-"))
    try:
        image = run_chart(read_loss_csv(run(work)))
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        image.quantize(colors=32).save(out, optimize=True)   # few colours: a small file
        print(f"wrote {out} ({out.stat().st_size // 1024} KB)")
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
