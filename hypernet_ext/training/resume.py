"""What a checkpoint's ``.optim`` carries for resuming, and restoring it into a trainer.

Restores the optimizer state (then the user's current learning rate and optimizer arguments win), the gradient
scaler, the RNG states and the overtraining guard's state, and checks the data position. Every problem becomes
a visible message and a fresh optimizer, never a crash and never silence. webui's own sidecars (no resume state)
restore the optimizer only.
"""
from __future__ import annotations

from typing import List, Tuple

from .. import checkpoint as ckpt
from ..optim import set_lr

Messages = List[Tuple[str, bool]]   # (text, is_warning)


def resume_state(trainer) -> dict:
    """Our part of the sidecar for the trainer's current step: plain types and RNG tensors only."""
    config, dataset = trainer.config, trainer.dataset
    data_config = getattr(dataset, "config", None)
    scaler = trainer.runner.scaler
    return {
        "step": int(trainer.network.step),
        "optimizer": config.optimizer.to_dict(),
        "schedule": config.schedule.to_dict(),
        "train": {"seed": config.seed, "grad_accum": config.grad_accum, "steps": config.steps,
                  "min_snr_gamma": config.min_snr_gamma, "noise_offset": config.noise_offset},
        "data": {"seed": getattr(data_config, "seed", None), "batch_size": getattr(data_config, "batch_size", None),
                 "steps_per_epoch": int(getattr(dataset, "steps_per_epoch", 0)),
                 "next_index": int(trainer.network.step) * config.grad_accum},
        "scaler": scaler.state_dict() if scaler.is_enabled() else {},
        "rng": ckpt.rng_state(),
        "guard": trainer.watch.state_dict(),   # best validation loss, the guard's rate factor and history
    }


def restore(trainer, path) -> Messages:
    """Load ``<path>.optim`` into the trainer (set up, not yet stepping); the messages say what happened."""
    network, optimizer = trainer.network, trainer.optimizer
    saved, problem = ckpt.read_optim(path)
    fresh = "training goes on with a fresh optimizer (its running statistics start from zero)"
    if saved is None:
        if network.step == 0 and not ckpt.optim_path(path).exists():
            return []   # a new network: nothing to resume
        return [(f"optimizer state not restored: {problem}; {fresh}", True)]
    problem = ckpt.restore_optimizer(optimizer, saved, [trainer.config.optimizer.name, type(optimizer).__name__])
    if problem:
        return [(f"optimizer state in {saved.path} not used: {problem}; {fresh}", True)]
    messages: Messages = [(f"optimizer state restored from {saved.path}", False)]
    messages += _apply_current_settings(trainer, saved.resume)
    if saved.resume is None:
        messages.append((f"{saved.path} has no hypernet_ext resume state (a webui file): optimizer restored, "
                         "random and data state start from this run's seeds", False))
        return messages
    messages += _restore_state(trainer, saved.resume)
    return messages


def _apply_current_settings(trainer, resume) -> Messages:
    """After loading, the optimizer arguments and learning rate set now replace the saved ones; arguments set
    when the checkpoint was trained but not set now keep their saved values (loading restored them), and a
    message says so."""
    messages: Messages = []
    kwargs = trainer.config.optimizer.kwargs
    saved_kwargs = ((resume or {}).get("optimizer") or {}).get("kwargs") or {}
    for key, value in kwargs.items():
        for group in trainer.optimizer.param_groups:
            if key in group:
                group[key] = value
        if key in saved_kwargs and _plain(saved_kwargs[key]) != _plain(value):
            messages.append((f"optimizer argument {key} changed from {saved_kwargs[key]!r} to {value!r}: "
                             "using the new value", False))
    group = trainer.optimizer.param_groups[0]
    kept = [f"{key}={group.get(key, value)!r}" for key, value in saved_kwargs.items() if key not in kwargs]
    if kept:
        messages.append((f"optimizer argument{'s' if len(kept) > 1 else ''} {', '.join(kept)} kept from the "
                         "checkpoint (set when it was trained, not set now); give a value in the optimizer "
                         "arguments to change it", False))
    set_lr(trainer.optimizer, trainer.schedule.lr_at(min(trainer.network.step, trainer.schedule.max_steps - 1)))
    return messages


def _restore_state(trainer, resume: dict) -> Messages:
    messages: Messages = []
    version = resume.get("format_version")
    if isinstance(version, int) and version > ckpt.STATE_VERSION:
        messages.append((f"the resume state has format version {version}, newer than this version knows "
                         f"({ckpt.STATE_VERSION}); using what it understands", True))
    if resume.get("step") is not None and int(resume["step"]) != int(trainer.network.step):
        messages.append((f"the .optim was written at step {resume['step']} but the network file is at step "
                         f"{trainer.network.step}; continuing from step {trainer.network.step}", True))
    if isinstance(resume.get("rng"), dict):
        ckpt.set_rng_state(resume["rng"])
    scaler = trainer.runner.scaler
    if scaler.is_enabled() and resume.get("scaler"):
        scaler.load_state_dict(resume["scaler"])
    messages += _check_data(trainer, resume.get("data") or {}, resume.get("train") or {})
    messages += trainer.watch.load_state_dict(resume.get("guard"))
    if resume.get("schedule") and resume["schedule"] != trainer.config.schedule.to_dict():
        messages.append(("the learning-rate schedule differs from the checkpoint's: using the one set now", False))
    return messages


def _check_data(trainer, data: dict, train: dict) -> Messages:
    """The data stream and noise are functions of (seed, step): they continue exactly when these agree."""
    messages: Messages = []
    data_config = getattr(trainer.dataset, "config", None)
    now = {"data seed": getattr(data_config, "seed", None), "batch size": getattr(data_config, "batch_size", None),
           "gradient accumulation": trainer.config.grad_accum, "seed": trainer.config.seed}
    then = {"data seed": data.get("seed"), "batch size": data.get("batch_size"),
            "gradient accumulation": train.get("grad_accum"), "seed": train.get("seed")}
    changed = [f"{k} {then[k]} -> {now[k]}" for k in now if then[k] is not None and then[k] != now[k]]
    if changed:
        messages.append((f"resuming with other settings ({', '.join(changed)}): the data order and noise do not "
                         "continue where the checkpoint left off", True))
    elif data.get("steps_per_epoch") and data["steps_per_epoch"] != getattr(trainer.dataset, "steps_per_epoch", 0):
        messages.append(("the data set changed since the checkpoint (another number of batches per epoch): the "
                         "data order does not continue exactly", True))
    return messages


def _plain(value):
    return list(value) if isinstance(value, tuple) else value
