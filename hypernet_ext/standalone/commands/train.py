"""``train`` and ``demo`` sub-commands: train a hypernetwork on an SD1, SD2 or SDXL model from the command line.

``train`` builds the model (the tiny built-in one, or a checkpoint with its yaml or the config inferred from its
weights), the network (new, or from a file to continue or resume), the data set, the prompt cache and the configs
from the options, then runs the Trainer with a tqdm bar, or with ``--find-lr`` the learning-rate range test (which
writes only its plot). ``demo`` runs hypernet_ext.standalone.demo.run_demo.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ...errors import ConfigError
from ...host import Callbacks

logger = logging.getLogger(__name__)


class CliCallbacks(Callbacks):
    """A tqdm bar for the steps; messages reach the user through the log (redirected around the bar)."""

    def __init__(self, desc: str = "train"):
        self.desc = desc
        self.bar = None
        self.val_loss = None

    def on_progress(self, step, total, loss, lr, eta_s):
        from tqdm import tqdm

        if self.bar is None:
            self.bar = tqdm(total=total, initial=step - 1, desc=self.desc, unit="step", dynamic_ncols=True)
        self.bar.n = step   # a rollback sets the step back
        shown = {"loss": "nan" if loss is None else f"{loss:.4f}", "lr": f"{lr:.2g}"}
        if self.val_loss is not None:
            shown["val"] = f"{self.val_loss:.4f}"
        self.bar.set_postfix(shown, refresh=False)
        self.bar.refresh()

    def on_validation(self, step, val_loss, effect, weight_norm):
        self.val_loss = val_loss
        width = max(effect, key=effect.get) if effect else None
        logger.info("step %d: validation loss %.6g%s", step, val_loss,
                    f", effect size {effect[width]:.4g} (width {width})" if width is not None else "")

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None


def _option(group, cls, name: str, flag: str = "", extra: str = "", **kwargs) -> None:
    """``--field-name`` (or ``flag``) for field ``name`` of config ``cls``: its help text and default come from the
    dataclass (``extra`` is appended to the help; ``kwargs`` go to add_argument and win)."""
    from ...config import default_of, help_of

    default = default_of(cls, name)
    if isinstance(default, bool) and "action" not in kwargs:
        kwargs["action"] = "store_false" if default else "store_true"
        flag = flag or ("--no-" if default else "--") + name.replace("_", "-")
    elif "type" not in kwargs and "choices" not in kwargs and isinstance(default, (int, float)):
        kwargs["type"] = type(default)
    text = help_of(cls, name)
    if kwargs.get("action") == "store_false":
        text = f"Turn off (on by default): {text}"
    kwargs.setdefault("help", f"{text} {extra}".strip().replace("%", "%%"))
    kwargs.setdefault("default", default)
    kwargs.setdefault("dest", name)
    flag = flag or "--" + name.replace("_", "-")
    if "action" not in kwargs and "choices" not in kwargs:
        kwargs.setdefault("metavar", flag.lstrip("-").replace("-", "_").upper())
    group.add_argument(flag, **kwargs)


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows the defaults, except for on/off flags: their help says what they switch."""

    def _get_help_string(self, action):
        return action.help if action.nargs == 0 else super()._get_help_string(action)


def _numbers(values) -> str:
    return ",".join(f"{v:g}" for v in values)


def _add_network_options(p):
    from ...config import NetworkConfig, default_of
    from ...layers import UPSAMPLE_MODES, WEIGHT_INITS

    g = p.add_argument_group("network (new networks; ignored with --network / --resume)")
    _option(g, NetworkConfig, "sizes", default="auto", extra="auto: every attention width of the model.")
    _option(g, NetworkConfig, "layer_structure", default=_numbers(default_of(NetworkConfig, "layer_structure")))
    _option(g, NetworkConfig, "activation")
    _option(g, NetworkConfig, "weight_init", choices=WEIGHT_INITS)
    _option(g, NetworkConfig, "normal_std")
    _option(g, NetworkConfig, "add_layer_norm", "--layer-norm")
    _option(g, NetworkConfig, "use_dropout", extra="On by itself when --dropout-structure is given.")
    _option(g, NetworkConfig, "dropout_structure", default="")
    _option(g, NetworkConfig, "last_layer_dropout")
    _option(g, NetworkConfig, "activate_output")
    _option(g, NetworkConfig, "skip_connection")
    _option(g, NetworkConfig, "upsample", default="none", choices=[mode or "none" for mode in UPSAMPLE_MODES])
    _option(g, NetworkConfig, "seed", "--network-seed", dest="network_seed", type=int)
    _option(g, NetworkConfig, "info")


def _add_data_options(p):
    from ...data import DataConfig
    from ...data.config import LATENT_SAMPLING, RESIZE_MODES

    g = p.add_argument_group("data")
    _option(g, DataConfig, "data_dir", "--data", required=True, extra="Captions in sidecar .txt files.")
    _option(g, DataConfig, "recursive")
    _option(g, DataConfig, "template")
    _option(g, DataConfig, "resize", choices=RESIZE_MODES)
    _option(g, DataConfig, "width")
    _option(g, DataConfig, "height")
    _option(g, DataConfig, "bucket_pixels", type=int)
    _option(g, DataConfig, "min_side")
    _option(g, DataConfig, "max_side")
    _option(g, DataConfig, "divisor")
    _option(g, DataConfig, "batch_size")
    _option(g, DataConfig, "repeats")
    _option(g, DataConfig, "flip")
    _option(g, DataConfig, "shuffle_tags")
    _option(g, DataConfig, "tag_dropout")
    _option(g, DataConfig, "latent_sampling", choices=LATENT_SAMPLING)
    _option(g, DataConfig, "use_alpha_weight", "--alpha-weight")
    _option(g, DataConfig, "filename_regex")
    _option(g, DataConfig, "filename_join")
    _option(g, DataConfig, "cache_dir")


def _add_training_options(p):
    from ...config import help_of
    from ...data import DataConfig
    from ...optim import OptimizerConfig
    from ...schedules import CLIP_MODES, KINDS, ScheduleConfig
    from ...training.config import PRECISIONS, TrainConfig

    g = p.add_argument_group("training")
    _option(g, TrainConfig, "steps")
    _option(g, ScheduleConfig, "learn_rate", "--lr")
    _option(g, ScheduleConfig, "kind", "--lr-kind", choices=KINDS)
    for name in ("warmup_steps", "warmup_start", "cycle_steps", "cycle_mult", "cycle_warmup", "min_lr", "gamma"):
        _option(g, ScheduleConfig, name)
    _option(g, OptimizerConfig, "name", "--optimizer", dest="optimizer")
    _option(g, OptimizerConfig, "kwargs", "--optimizer-args", dest="optimizer_args", default="")
    _option(g, TrainConfig, "grad_accum")
    _option(g, ScheduleConfig, "clip_grad_mode", "--clip-mode", choices=CLIP_MODES)
    _option(g, ScheduleConfig, "clip_grad_value", "--clip")
    for name in ("save_every", "preview_every", "log_every"):
        _option(g, TrainConfig, name)
    _option(g, TrainConfig, "seed", extra=f"Also the data seed: {help_of(DataConfig, 'seed')}")
    for name in ("min_snr_gamma", "noise_offset", "grad_checkpointing"):
        _option(g, TrainConfig, name)
    _option(g, TrainConfig, "mixed_precision", choices=PRECISIONS)
    _option(g, TrainConfig, "max_bad_steps")
    _option(g, TrainConfig, "tensorboard")
    _option(g, TrainConfig, "save_safetensors", "--no-safetensors")
    _option(g, TrainConfig, "save_optimizer")
    _option(g, TrainConfig, "out_dir", "--out")
    _option(g, TrainConfig, "log_dir")


def add_parser(sub) -> None:
    from ...config import help_of
    from ...data import DataConfig
    from ...training.config import TrainConfig
    from . import stopping

    p = sub.add_parser("train", help="train a hypernetwork", description=__doc__,
                       formatter_class=_HelpFormatter)
    _option(p, TrainConfig, "name", required=True, default=None, extra=f"Also: {help_of(DataConfig, 'name')}")
    p.add_argument("--model", default="tiny", choices=("tiny",), help="built-in model (when --ckpt is not given)")
    p.add_argument("--model-seed", type=int, default=0, help="seed of the tiny model's random weights")
    p.add_argument("--ckpt", default=None, help="Stable Diffusion checkpoint (.safetensors or .ckpt): SD 1.x, SD 2.x "
                                                "or SDXL")
    p.add_argument("--config", default=None,
                   help="the checkpoint's ldm or sgm yaml (v1-inference.yaml, v2-inference-v.yaml, sd_xl_base.yaml, "
                        "...); empty: inferred from the weights as webui does (SD 1.x, SD 2.x 512/768, SDXL base "
                        "and refiner)")
    p.add_argument("--sgm-path", default=None, metavar="DIR",
                   help="folder holding the sgm package (Stability-AI/generative-models; webui's "
                        "repositories/generative-models), for SDXL checkpoints when sgm is not on PYTHONPATH")
    p.add_argument("--device", default=None, help="cpu or cuda (empty: cuda when available)")
    p.add_argument("--network", default=None, metavar="FILE",
                   help="train on from this network's weights and step (a webui, peer or our file) with a fresh "
                        "run state: a new optimizer (its .optim is not read); the schedule and --steps count on "
                        "from its step")
    p.add_argument("--resume", default=None, metavar="FILE",
                   help="resume a run exactly from this checkpoint and its .optim: weights, step, optimizer, "
                        "gradient scaler, random state, data position; an error when the .optim is missing, "
                        "belongs to another file or to another optimizer")
    _add_network_options(p)
    _add_data_options(p)
    _add_training_options(p)
    stopping.add_options(p)
    p.set_defaults(func=run_train)

    d = sub.add_parser("demo", help="train on the tiny built-in model and a synthetic data set (about a minute)")
    d.add_argument("--out", default="out/demo", help="output folder")
    d.add_argument("--steps", type=int, default=100, help="training steps")
    d.add_argument("--seed", type=int, default=0, help="seed of model, data and training")
    d.set_defaults(func=run_demo_command)


def data_config(args):
    from ...data import DataConfig
    from ...fileio import clean_name

    name = clean_name(args.name, "--name")   # [name] in the prompts is the name the files get, as in webui
    return DataConfig(data_dir=args.data_dir, recursive=args.recursive, name=name, template=args.template,
                      resize=args.resize, width=args.width, height=args.height, bucket_pixels=args.bucket_pixels,
                      min_side=args.min_side, max_side=args.max_side, divisor=args.divisor,
                      batch_size=args.batch_size, repeats=args.repeats, flip=args.flip,
                      shuffle_tags=args.shuffle_tags, tag_dropout=args.tag_dropout,
                      latent_sampling=args.latent_sampling, use_alpha_weight=args.use_alpha_weight,
                      filename_regex=args.filename_regex, filename_join=args.filename_join,
                      cache_dir=args.cache_dir, seed=args.seed)


def train_config(args):
    from ...optim import OptimizerConfig
    from ...schedules import ScheduleConfig
    from ...training import TrainConfig
    from ...training.config import GuardConfig, ValidationConfig
    from .stopping import from_args

    schedule = ScheduleConfig(learn_rate=args.learn_rate, kind=args.kind, warmup_steps=args.warmup_steps,
                              warmup_start=args.warmup_start, cycle_steps=args.cycle_steps,
                              cycle_mult=args.cycle_mult, cycle_warmup=args.cycle_warmup, min_lr=args.min_lr,
                              gamma=args.gamma, clip_grad_mode=args.clip_grad_mode,
                              clip_grad_value=args.clip_grad_value)
    return TrainConfig(name=args.name, out_dir=args.out_dir, log_dir=args.log_dir, steps=args.steps,
                       grad_accum=args.grad_accum,
                       save_every=args.save_every, preview_every=args.preview_every, log_every=args.log_every,
                       seed=args.seed, min_snr_gamma=args.min_snr_gamma, noise_offset=args.noise_offset,
                       grad_checkpointing=args.grad_checkpointing, mixed_precision=args.mixed_precision,
                       max_bad_steps=args.max_bad_steps, tensorboard=args.tensorboard,
                       save_safetensors=args.save_safetensors, save_optimizer=args.save_optimizer,
                       optimizer=OptimizerConfig(name=args.optimizer, kwargs=args.optimizer_args),
                       schedule=schedule, validation=from_args(ValidationConfig, args, "val"),
                       guard=from_args(GuardConfig, args, "guard"))


def network_config(args, model_widths=()):
    """The NetworkConfig of a new network from the options; ``model_widths`` (the model's attention widths)
    are the sizes when --sizes is auto."""
    from ...config import NetworkConfig

    auto = str(args.sizes).strip().lower() == "auto"
    if auto and not model_widths:
        raise ValueError("network_config: --sizes auto needs the model's attention widths")
    return NetworkConfig(sizes=sorted(set(model_widths)) if auto else args.sizes,
                         layer_structure=args.layer_structure, activation=args.activation,
                         weight_init=args.weight_init, normal_std=args.normal_std, add_layer_norm=args.add_layer_norm,
                         use_dropout=args.use_dropout or bool(args.dropout_structure.strip()),
                         dropout_structure=args.dropout_structure or None,
                         last_layer_dropout=args.last_layer_dropout, activate_output=args.activate_output,
                         skip_connection=args.skip_connection, upsample=args.upsample, seed=args.network_seed,
                         info=args.info)


def preflight(args, config, data) -> None:
    """What can be checked before the model is built and images are encoded, each a one-line error: the device,
    the output and cache folders, the file to start from (read without its tensors), a new network's size."""
    from ... import formats
    from ...devices import check_device
    from ...fileio import check_folder

    if args.device:
        check_device(args.device, "--device")
    check_folder(config.out_dir, "--out")
    if data.cache_dir:
        check_folder(data.cache_dir, "--cache-dir")
    source = args.resume or args.network
    if source:
        formats.describe(source)
    elif str(args.sizes).strip().lower() != "auto":
        network_config(args)


def check_start(args, optimizer: str) -> None:
    """Before any model is built: --network and --resume exclude each other, and --resume continues a run
    exactly, which needs the checkpoint's own .optim written by this optimizer; ConfigError saying what is wrong
    and what to do otherwise."""
    from ... import checkpoint

    if args.resume and args.network:
        raise ConfigError("--network and --resume both name a file to start from; give one")
    if not args.resume or not Path(args.resume).is_file():
        return   # no file: loading it says so
    saved, problem = checkpoint.read_optim(args.resume)
    if saved is None:
        problem = f"{problem}, and without it optimizer state, random state and data position are lost"
    elif saved.optimizer_name and str(saved.optimizer_name).lower() != str(optimizer).lower():
        problem = f"it was written by optimizer {saved.optimizer_name}, this run uses {optimizer} (--optimizer)"
    else:
        return
    raise ConfigError(f"--resume {args.resume}: cannot resume the run exactly: {problem}. To train on from its "
                      f"weights and step with a fresh optimizer, use --network {args.resume} instead.")


def run_train(args) -> int:
    from tqdm.contrib.logging import logging_redirect_tqdm

    from ...data import prepare_dataset
    from ...training import Trainer
    from .models import build_host, build_network, cache_conditioning

    config, data = train_config(args), data_config(args)
    preflight(args, config, data)
    check_start(args, config.optimizer.name)
    host = build_host(args)
    network, source = build_network(args, host)
    dataset = prepare_dataset(data, host.encode_images, host.scale_factor, model_id=host.model_id)
    logger.info("%s", dataset.summary)
    from ..demo import DEMO_PROMPTS, Previewer, WithPreviews

    preview_prompts = DEMO_PROMPTS[:2]
    host = cache_conditioning(host, dataset, config, preview_prompts if config.preview_every else ())
    if args.find_lr:
        from .stopping import run_find_lr

        return run_find_lr(args, config, host, network, dataset)
    callbacks = CliCallbacks(desc=config.name)
    if config.preview_every:
        callbacks = WithPreviews(callbacks, Previewer(host, config.out_dir, config.name, prompts=preview_prompts,
                                                      seed=config.seed, latent_hw=_latent_hw(dataset)))
    try:
        with logging_redirect_tqdm():
            result = Trainer(host, network, dataset, config, callbacks).train(resume_from=source)
    finally:
        (callbacks.inner if hasattr(callbacks, "inner") else callbacks).close()
    state = "interrupted at" if result.interrupted else "stopped by the guard at" if result.stopped_by_guard \
        else "done:"
    print(f"{state} step {result.step}; final file {result.final_path}; {result.skipped_steps} steps skipped")
    if result.best:
        print(f"best validation loss {result.best[1]:.6g} at step {result.best[0]}: {result.best_path}")
    for text in result.guard_events:
        print(text)
    return 0


def _latent_hw(dataset):
    width, height = dataset.buckets[0]
    return height // 8, width // 8


def run_demo_command(args) -> int:
    from tqdm.contrib.logging import logging_redirect_tqdm

    from ..demo import run_demo

    callbacks = CliCallbacks(desc="demo")
    try:
        with logging_redirect_tqdm():
            files = run_demo(Path(args.out), steps=args.steps, seed=args.seed, callbacks=callbacks)
    finally:
        callbacks.close()
    for key, value in files.items():
        print(f"{key:12s} {value}")
    return 0
