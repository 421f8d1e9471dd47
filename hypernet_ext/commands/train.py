"""``train`` and ``demo`` sub-commands: train a hypernetwork on an ldm model from the command line.

``train`` builds the model (the tiny built-in one, or a checkpoint with its yaml), the network (new, or from a
file to continue or resume), the data set and the configs from the options, then runs the Trainer with a tqdm
bar. ``demo`` runs hypernet_ext.standalone.demo.run_demo.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..errors import ConfigError
from ..host import Callbacks

logger = logging.getLogger(__name__)


class CliCallbacks(Callbacks):
    """A tqdm bar for the steps; messages reach the user through the log (redirected around the bar)."""

    def __init__(self, desc: str = "train"):
        self.desc = desc
        self.bar = None

    def on_progress(self, step, total, loss, lr, eta_s):
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(total=total, initial=step - 1, desc=self.desc, unit="step", dynamic_ncols=True)
        self.bar.update(step - self.bar.n)
        self.bar.set_postfix(loss="nan" if loss is None else f"{loss:.4f}", lr=f"{lr:.2g}", refresh=False)

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _add_network_options(p):
    g = p.add_argument_group("network (new networks; ignored with --network / --resume)")
    g.add_argument("--sizes", default="auto", help="attention widths to cover, e.g. 768,320,640,1280; "
                                                   "auto: every attention width of the model")
    g.add_argument("--layer-structure", default="1,2,1", help="MLP widths as multiples of the input width")
    g.add_argument("--activation", default="linear", help="linear, relu, leakyrelu, elu, swish, tanh, ...")
    g.add_argument("--weight-init", default="Normal", help="Normal, XavierUniform, XavierNormal, KaimingUniform, "
                                                           "KaimingNormal")
    g.add_argument("--layer-norm", action="store_true", help="LayerNorm after each linear layer")
    g.add_argument("--dropout-structure", default="", help="dropout per layer, e.g. 0,0.1,0 (empty: none)")
    g.add_argument("--activate-output", action="store_true", help="activation after the output layer too")
    g.add_argument("--network-seed", type=int, default=None, help="seed of the initial weights")


def _add_data_options(p):
    g = p.add_argument_group("data")
    g.add_argument("--data", required=True, help="folder of training images (captions in sidecar .txt files)")
    g.add_argument("--template", default="hypernetwork", help="prompt template name or .txt file")
    g.add_argument("--resize", default="bucket", choices=("bucket", "fixed"), help="aspect buckets or stretch")
    g.add_argument("--width", type=int, default=512, help="image width (fixed) / bucket area with --height")
    g.add_argument("--height", type=int, default=512, help="image height (fixed) / bucket area with --width")
    g.add_argument("--min-side", type=int, default=256, help="shortest bucket side")
    g.add_argument("--max-side", type=int, default=1024, help="longest bucket side")
    g.add_argument("--divisor", type=int, default=64, help="bucket sides are multiples of this")
    g.add_argument("--batch-size", type=int, default=1, help="images per batch")
    g.add_argument("--repeats", type=int, default=1, help="times each image is used per epoch")
    g.add_argument("--flip", type=float, default=0.0, help="probability of a horizontal flip")
    g.add_argument("--shuffle-tags", action="store_true", help="shuffle the caption's comma-separated tags")
    g.add_argument("--tag-dropout", type=float, default=0.0, help="probability of dropping each tag")
    g.add_argument("--latent-sampling", default="once", choices=("once", "deterministic", "random"))
    g.add_argument("--alpha-weight", action="store_true", help="PNG alpha as per-pixel loss weight")
    g.add_argument("--cache-dir", default=None, help="folder for cached latents")


def _add_training_options(p):
    g = p.add_argument_group("training")
    g.add_argument("--steps", type=int, default=1000, help="train until the network has done this many steps")
    g.add_argument("--lr", default="0.00001", help="learning-rate schedule, e.g. '5e-6:100, 1e-6:-1'")
    g.add_argument("--lr-kind", default="webui", choices=("webui", "cosine"), help="schedule kind")
    g.add_argument("--warmup-steps", type=int, default=0, help="linear warmup steps")
    g.add_argument("--cycle-steps", type=int, default=1000, help="cosine: steps of the first cycle")
    g.add_argument("--min-lr", type=float, default=0.0, help="cosine: lowest learning rate")
    g.add_argument("--optimizer", default="AdamW", help="optimizer name (any torch.optim, Lion, Prodigy, ...)")
    g.add_argument("--optimizer-args", default="", help="optimizer arguments, e.g. 'betas=0.9,0.99 weight_decay=0.01'")
    g.add_argument("--grad-accum", type=int, default=1, help="batches per optimizer step")
    g.add_argument("--clip-mode", default="none", choices=("none", "value", "norm"), help="gradient clipping")
    g.add_argument("--clip", default="0.1", help="clip value or max norm schedule, e.g. '0.1'")
    g.add_argument("--save-every", type=int, default=500, help="snapshot every N steps (0: final only)")
    g.add_argument("--preview-every", type=int, default=0, help="preview image every N steps (0: never)")
    g.add_argument("--seed", type=int, default=0, help="seed of data order, noise, timesteps and dropout")
    g.add_argument("--min-snr-gamma", type=float, default=0.0, help="min-SNR-gamma weighting (0: off, 5 usual)")
    g.add_argument("--noise-offset", type=float, default=0.0, help="noise offset (0: off)")
    g.add_argument("--grad-checkpointing", action="store_true", help="recompute UNet blocks to save memory")
    g.add_argument("--mixed-precision", default="auto", choices=("auto", "no", "fp16", "bf16"))
    g.add_argument("--max-bad-steps", type=int, default=10, help="stop after this many non-finite steps in a row")
    g.add_argument("--no-tensorboard", action="store_true", help="do not write TensorBoard logs")
    g.add_argument("--out", default="out", help="folder for checkpoints, logs and previews")


def add_parser(sub) -> None:
    p = sub.add_parser("train", help="train a hypernetwork", description=__doc__,
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--name", required=True, help="network name: files are <name>.pt and <name>-<step>.pt")
    p.add_argument("--model", default="tiny", choices=("tiny",), help="built-in model (when --ckpt is not given)")
    p.add_argument("--model-seed", type=int, default=0, help="seed of the tiny model's random weights")
    p.add_argument("--ckpt", default=None, help="Stable Diffusion checkpoint (.safetensors or .ckpt)")
    p.add_argument("--config", default=None, help="the checkpoint's ldm yaml (v1-inference.yaml, ...)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--network", default=None, help="continue training this network file (uses its .optim)")
    p.add_argument("--resume", default=None, help="resume this checkpoint: weights, step, optimizer, RNG, data")
    _add_network_options(p)
    _add_data_options(p)
    _add_training_options(p)
    p.set_defaults(func=run_train)

    d = sub.add_parser("demo", help="train on the tiny built-in model and a synthetic data set (about a minute)")
    d.add_argument("--out", default="out/demo", help="output folder")
    d.add_argument("--steps", type=int, default=100, help="training steps")
    d.add_argument("--seed", type=int, default=0, help="seed of model, data and training")
    d.set_defaults(func=run_demo_command)


def data_config(args):
    from ..data import DataConfig

    return DataConfig(data_dir=args.data, name=args.name, template=args.template, resize=args.resize,
                      width=args.width, height=args.height, min_side=args.min_side, max_side=args.max_side,
                      divisor=args.divisor, batch_size=args.batch_size, repeats=args.repeats, flip=args.flip,
                      shuffle_tags=args.shuffle_tags, tag_dropout=args.tag_dropout,
                      latent_sampling=args.latent_sampling, use_alpha_weight=args.alpha_weight,
                      cache_dir=args.cache_dir, seed=args.seed)


def train_config(args):
    from ..optim import OptimizerConfig
    from ..schedules import ScheduleConfig
    from ..training import TrainConfig

    schedule = ScheduleConfig(learn_rate=args.lr, kind=args.lr_kind, warmup_steps=args.warmup_steps,
                              cycle_steps=args.cycle_steps, min_lr=args.min_lr, clip_grad_mode=args.clip_mode,
                              clip_grad_value=args.clip)
    return TrainConfig(name=args.name, out_dir=args.out, steps=args.steps, grad_accum=args.grad_accum,
                       save_every=args.save_every, preview_every=args.preview_every, seed=args.seed,
                       min_snr_gamma=args.min_snr_gamma, noise_offset=args.noise_offset,
                       grad_checkpointing=args.grad_checkpointing, mixed_precision=args.mixed_precision,
                       max_bad_steps=args.max_bad_steps, tensorboard=not args.no_tensorboard,
                       optimizer=OptimizerConfig(name=args.optimizer, kwargs=args.optimizer_args),
                       schedule=schedule)


def build_host(args):
    import torch

    from ..standalone.ldm_host import LdmHost, load_ldm_checkpoint

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.ckpt or args.config:
        if not (args.ckpt and args.config):
            raise ConfigError("--ckpt and --config go together: the checkpoint and its ldm yaml")
        return load_ldm_checkpoint(args.ckpt, args.config, device=device)
    from ..standalone.demo import build_tiny_ldm

    return LdmHost(build_tiny_ldm(seed=args.model_seed), model_name="tiny-sd1", model_hash="tinysd1-v1").to(device)


def build_network(args, host):
    from .. import create
    from ..attach import attention_modules

    source = args.resume or args.network
    if args.resume and args.network:
        raise ConfigError("--network and --resume both name a file to start from; give one")
    if source:
        from .. import formats

        return formats.load(source), source
    if args.sizes.strip().lower() == "auto":
        sizes = sorted({width for _, _, width in attention_modules(host.attention_root())})
    else:
        sizes = args.sizes
    return create(name=args.name, sizes=sizes, layer_structure=args.layer_structure, activation=args.activation,
                  weight_init=args.weight_init, add_layer_norm=args.layer_norm,
                  dropout_structure=args.dropout_structure or None, use_dropout=bool(args.dropout_structure),
                  activate_output=args.activate_output, seed=args.network_seed), None


def run_train(args) -> int:
    from tqdm.contrib.logging import logging_redirect_tqdm

    from ..data import prepare_dataset
    from ..training import Trainer

    config, data = train_config(args), data_config(args)
    host = build_host(args)
    network, source = build_network(args, host)
    dataset = prepare_dataset(data, host.encode_images, host.scale_factor, model_id=host.model_id)
    logger.info("%s", dataset.summary)
    callbacks = CliCallbacks(desc=config.name)
    if config.preview_every:
        from ..standalone.demo import Previewer, WithPreviews

        callbacks = WithPreviews(callbacks, Previewer(host, config.out_dir, config.name, seed=config.seed,
                                                      latent_hw=_latent_hw(dataset)))
    try:
        with logging_redirect_tqdm():
            result = Trainer(host, network, dataset, config, callbacks).train(resume_from=source)
    finally:
        (callbacks.inner if hasattr(callbacks, "inner") else callbacks).close()
    state = "interrupted at" if result.interrupted else "done:"
    print(f"{state} step {result.step}; final file {result.final_path}; {result.skipped_steps} steps skipped")
    return 0


def _latent_hw(dataset):
    width, height = dataset.buckets[0]
    return height // 8, width // 8


def run_demo_command(args) -> int:
    from tqdm.contrib.logging import logging_redirect_tqdm

    from ..standalone.demo import run_demo

    callbacks = CliCallbacks(desc="demo")
    try:
        with logging_redirect_tqdm():
            files = run_demo(Path(args.out), steps=args.steps, seed=args.seed, callbacks=callbacks)
    finally:
        callbacks.close()
    for key, value in files.items():
        print(f"{key:12s} {value}")
    return 0
