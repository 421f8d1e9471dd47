"""The ``train`` command line: every config field has an option (derived from the dataclasses, so a new field
fails here until it gets one), help comes from the field metadata, a full command line reaches every field,
and the tiny model's hash (the latent-cache key) follows its seed."""
import argparse
import dataclasses

import pytest

from hypernet_ext.config import NetworkConfig, help_of
from hypernet_ext.data import DataConfig
from hypernet_ext.optim import OptimizerConfig
from hypernet_ext.schedules import ScheduleConfig
from hypernet_ext.standalone.commands import train as train_command
from hypernet_ext.standalone.commands.models import build_host
from hypernet_ext.standalone.commands.stopping import find_lr_config
from hypernet_ext.standalone.commands.train import data_config, network_config, train_config
from hypernet_ext.standalone.demo import tiny_model_hash
from hypernet_ext.training import TrainConfig
from hypernet_ext.training.config import FindLRConfig, GuardConfig, ValidationConfig

CONFIGS = (DataConfig, ScheduleConfig, TrainConfig, NetworkConfig, OptimizerConfig, ValidationConfig, GuardConfig,
           FindLRConfig)
# the nested configs' options: --<prefix><field-name>
PREFIX = {ValidationConfig: "--val-", GuardConfig: "--guard-", FindLRConfig: "--find-lr-"}
# fields whose option is not --field-name
OPTION_OF = {
    (DataConfig, "data_dir"): "--data",
    (DataConfig, "name"): "--name",                 # the network's name is also the template's [name], as in webui
    (DataConfig, "use_alpha_weight"): "--alpha-weight",
    (DataConfig, "seed"): "--seed",                 # one seed for the data and the training noise
    (NetworkConfig, "add_layer_norm"): "--layer-norm",
    (NetworkConfig, "seed"): "--network-seed",
    (ScheduleConfig, "learn_rate"): "--lr",
    (ScheduleConfig, "kind"): "--lr-kind",
    (ScheduleConfig, "clip_grad_mode"): "--clip-mode",
    (ScheduleConfig, "clip_grad_value"): "--clip",
    (TrainConfig, "out_dir"): "--out",
    (TrainConfig, "tensorboard"): "--no-tensorboard",        # on by default: the option turns it off
    (TrainConfig, "save_safetensors"): "--no-safetensors",
    (TrainConfig, "save_optimizer"): "--no-save-optimizer",
    (OptimizerConfig, "name"): "--optimizer",
    (OptimizerConfig, "kwargs"): "--optimizer-args",
    (ValidationConfig, "data_dir"): "--val-data",
    (GuardConfig, "action"): "--guard",
}
# fields without an option of their own, and why
EXCLUDED = {
    (NetworkConfig, "lenient"): "internal: readers set it for loaded files; never a user setting",
    (TrainConfig, "optimizer"): "nested OptimizerConfig: its fields have their own options",
    (TrainConfig, "schedule"): "nested ScheduleConfig: its fields have their own options",
    (TrainConfig, "validation"): "nested ValidationConfig: its fields have their own options",
    (TrainConfig, "guard"): "nested GuardConfig: its fields have their own options",
}


def config_fields():
    return [(cls, f.name) for cls in CONFIGS for f in dataclasses.fields(cls) if (cls, f.name) not in EXCLUDED]


def option_of(cls, name):
    return OPTION_OF.get((cls, name), PREFIX.get(cls, "--") + name.replace("_", "-"))


def train_parser():
    parser = argparse.ArgumentParser()
    train_command.add_parser(parser.add_subparsers())
    return parser


def actions():
    sub = next(a for a in train_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return {flag: action for action in sub.choices["train"]._actions for flag in action.option_strings}


def test_the_tables_name_real_fields():
    for cls, name in list(OPTION_OF) + list(EXCLUDED):
        assert name in {f.name for f in dataclasses.fields(cls)}, (cls.__name__, name)


@pytest.mark.parametrize("cls, name", config_fields(), ids=lambda v: v if isinstance(v, str) else v.__name__)
def test_every_config_field_has_an_option_with_the_fields_help(cls, name):
    options = actions()
    option = option_of(cls, name)
    assert option in options, f"{cls.__name__}.{name} has no option {option}"
    assert help_of(cls, name) in options[option].help.replace("%%", "%")   # argparse's escape for %


def test_every_option_has_help():
    missing = [flag for flag, action in actions().items() if not (action.help or "").strip()]
    assert missing == []


FULL = [
    "train", "--name", "hn", "--data", "imgs", "--recursive", "--template", "captions_only", "--resize", "fixed",
    "--width", "256", "--height", "320", "--bucket-pixels", "65536", "--min-side", "128", "--max-side", "768",
    "--divisor", "32", "--batch-size", "3", "--repeats", "2", "--flip", "0.5", "--shuffle-tags",
    "--tag-dropout", "0.1", "--latent-sampling", "random", "--alpha-weight", "--filename-regex", "[a-z]+",
    "--filename-join", "_", "--cache-dir", "cache", "--seed", "7",
    "--lr", "1e-3:10, 1e-4:-1", "--lr-kind", "cosine", "--warmup-steps", "5", "--warmup-start", "0.1",
    "--cycle-steps", "50", "--cycle-mult", "2", "--cycle-warmup", "3", "--min-lr", "1e-6", "--gamma", "0.5",
    "--clip-mode", "norm", "--clip", "0.5",
    "--out", "o", "--log-dir", "logs", "--steps", "60", "--grad-accum", "2", "--save-every", "10",
    "--preview-every", "20",
    "--log-every", "5", "--min-snr-gamma", "5", "--noise-offset", "0.05", "--grad-checkpointing",
    "--mixed-precision", "bf16", "--max-bad-steps", "4", "--no-tensorboard", "--no-safetensors",
    "--no-save-optimizer", "--optimizer", "SGD", "--optimizer-args", "momentum=0.9",
    "--sizes", "768,320", "--layer-structure", "1,1.5,1", "--activation", "relu", "--weight-init", "XavierNormal",
    "--normal-std", "0.02", "--layer-norm", "--use-dropout", "--dropout-structure", "0,0.2,0",
    "--last-layer-dropout", "--activate-output", "--skip-connection", "--upsample", "Linear",
    "--network-seed", "11", "--info", "notes",
    "--val-every", "50", "--val-split", "0.2", "--val-data", "val", "--val-timesteps", "8", "--val-max-images", "4",
    "--val-seed", "3", "--guard", "stop", "--guard-margin", "0.05", "--guard-patience", "2",
    "--guard-max-effect", "1.5", "--guard-diverge-steps", "2", "--guard-lr-factor", "0.25", "--guard-max-actions", "3",
    "--find-lr-start", "1e-6", "--find-lr-end", "0.1", "--find-lr-steps", "50", "--find-lr-blowup", "3",
    "--find-lr-smoothing", "0.5",
]
EXPECTED = {
    DataConfig: dict(data_dir="imgs", recursive=True, name="hn", template="captions_only", resize="fixed", width=256,
                     height=320, bucket_pixels=65536, min_side=128, max_side=768, divisor=32, batch_size=3,
                     repeats=2, flip=0.5, shuffle_tags=True, tag_dropout=0.1, latent_sampling="random",
                     use_alpha_weight=True, filename_regex="[a-z]+", filename_join="_", cache_dir="cache", seed=7),
    ScheduleConfig: dict(learn_rate="1e-3:10, 1e-4:-1", kind="cosine", warmup_steps=5, warmup_start=0.1,
                         cycle_steps=50, cycle_mult=2.0, cycle_warmup=3, min_lr=1e-6, gamma=0.5,
                         clip_grad_mode="norm", clip_grad_value="0.5"),
    TrainConfig: dict(name="hn", out_dir="o", log_dir="logs", steps=60, grad_accum=2, save_every=10, preview_every=20,
                      log_every=5,
                      seed=7, min_snr_gamma=5.0, noise_offset=0.05, grad_checkpointing=True,
                      mixed_precision="bf16", max_bad_steps=4, tensorboard=False, save_safetensors=False,
                      save_optimizer=False),
    OptimizerConfig: dict(name="SGD", kwargs={"momentum": 0.9}),
    NetworkConfig: dict(sizes=(768, 320), layer_structure=(1.0, 1.5, 1.0), activation="relu",
                        weight_init="XavierNormal", normal_std=0.02, add_layer_norm=True, use_dropout=True,
                        dropout_structure=(0.0, 0.2, 0.0), last_layer_dropout=True, activate_output=True,
                        skip_connection=True, upsample="Linear", seed=11, info="notes"),
    ValidationConfig: dict(every=50, split=0.2, data_dir="val", timesteps=8, max_images=4, seed=3),
    GuardConfig: dict(action="stop", margin=0.05, patience=2, max_effect=1.5, diverge_steps=2, lr_factor=0.25,
                      max_actions=3),
    FindLRConfig: dict(start=1e-6, end=0.1, steps=50, blowup=3.0, smoothing=0.5),
}


def test_a_full_command_line_reaches_every_field():
    args = train_parser().parse_args(FULL)
    train = train_config(args)
    built = {DataConfig: data_config(args), ScheduleConfig: train.schedule, TrainConfig: train,
             OptimizerConfig: train.optimizer, NetworkConfig: network_config(args), ValidationConfig: train.validation,
             GuardConfig: train.guard, FindLRConfig: find_lr_config(args)}
    for cls, name in config_fields():
        assert getattr(built[cls], name) == EXPECTED[cls][name], f"{cls.__name__}.{name}"
        # every value differs from the default, so an option that is parsed but not passed on shows up here
        assert EXPECTED[cls][name] != getattr(cls(**({"data_dir": "x"} if cls is DataConfig else {})), name), \
            f"{cls.__name__}.{name}: give the full command line a non-default value"


def test_defaults_of_the_command_line_are_the_configs_defaults():
    args = train_parser().parse_args(["train", "--name", "hn", "--data", "imgs", "--sizes", "768"])
    assert data_config(args) == DataConfig(data_dir="imgs", name="hn")
    assert train_config(args) == TrainConfig(name="hn")
    assert network_config(args) == NetworkConfig(sizes=(768,))
    assert find_lr_config(args) == FindLRConfig() and not args.find_lr


def test_auto_sizes_are_the_models_widths():
    args = train_parser().parse_args(["train", "--name", "hn", "--data", "imgs"])
    assert network_config(args, [320, 768, 320, 640]).sizes == (320, 640, 768)
    with pytest.raises(ValueError, match="auto"):
        network_config(args)


def test_the_tiny_models_hash_names_its_seed():
    assert tiny_model_hash(0) == "tinysd1-v1"   # unchanged: caches and files written before stay valid
    assert len({tiny_model_hash(seed) for seed in range(5)}) == 5


def test_another_model_seed_does_not_reuse_cached_latents(shapes_dir, tiny_cache, tmp_path, monkeypatch):
    pytest.importorskip("ldm")
    import torch

    from hypernet_ext.data import prepare_dataset

    monkeypatch.setenv("HYPERNET_EXT_CACHE", str(tiny_cache))
    cache = tmp_path / "cache"
    argv = ["train", "--name", "hn", "--data", str(shapes_dir), "--template", "captions_only", "--resize", "fixed",
            "--width", "32", "--height", "32", "--min-side", "16", "--cache-dir", str(cache), "--device", "cpu"]
    latents, files = {}, []
    for seed in (0, 1):
        args = train_parser().parse_args(argv + ["--model-seed", str(seed)])
        host = build_host(args)
        assert host.model_id == tiny_model_hash(seed)
        dataset = prepare_dataset(data_config(args), host.encode_images, host.scale_factor, model_id=host.model_id)
        latents[seed] = dataset.micro_batch(0).latents
        files.append(len(list(cache.iterdir())))
    assert files[1] == 2 * files[0] > 0     # the second model encoded the images itself
    assert not torch.equal(latents[0], latents[1])
