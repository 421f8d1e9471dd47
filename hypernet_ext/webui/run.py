"""The body of a training job, run by the session inside webui's queue (the GPU lock held, ``shared.state`` begun).

Order: refuse what cannot work (--lowvram, a model family we cannot train), capture the model's state, take
webui's training checkpoint hijack off and our generation networks off, load the network (the newest complete
checkpoint when resuming), encode the data through webui's VAE and the prompts through webui's conditioning
(cached per prompt), optionally move the VAE and text encoder to the CPU, train, and whatever happened put the
model back exactly as it was (``model_state``), reporting any difference.
"""
from __future__ import annotations

import contextlib
import datetime
import logging
import time
from pathlib import Path

import torch

from .. import formats
from ..data import prepare_dataset
from ..errors import HypernetError
from ..training import Trainer
from ..training.prompts import cache_conditioning
from . import model_state
from .host import NotSupported, WebuiHost
from .jobs import DONE, FAILED, INTERRUPTED, RUNNING, JobCallbacks
from .previews import Previewer, checkpoint_changed

logger = logging.getLogger(__name__)


class Stopped(Exception):
    """The job was asked to stop before training began."""


def refuse_unsupported() -> None:
    """NotSupported when webui runs in a mode training cannot use."""
    from modules import shared

    if getattr(shared.cmd_opts, "lowvram", False):
        raise NotSupported("webui runs with --lowvram, which moves every UNet block to the GPU one at a time; "
                          "training needs the UNet's activations kept for the backward pass. Restart webui without "
                          "--lowvram (--medvram works) to train")


@contextlib.contextmanager
def checkpoint_hijack_off():
    """webui's own training hijack (sd_hijack_checkpoint) recomputes blocks without a hypernetwork gradient."""
    from modules import sd_hijack_checkpoint

    was_on = bool(sd_hijack_checkpoint.stored)
    if was_on:
        sd_hijack_checkpoint.remove()
    try:
        yield
    finally:
        if was_on:
            sd_hijack_checkpoint.add()


class Placement:
    """Moves the VAE / text encoder to the CPU for the run (when asked) and back for previews."""

    def __init__(self, host, job):
        from modules import devices, shared

        self.host, self.job, self.devices = host, job, devices
        self.managed_by_webui = bool(getattr(shared.sd_model, "lowvram", False))
        self.away = []

    def unload(self, module, what: str) -> None:
        if self.managed_by_webui:
            self.job.add("messages", f"not moving the {what} to the CPU: webui's --medvram already moves it")
            return
        module.to(self.devices.cpu)
        self.away.append(module)
        self.job.add("messages", f"the {what} waits on the CPU during training")

    @contextlib.contextmanager
    def on_device(self):
        for module in self.away:
            module.to(self.devices.device)
        try:
            yield
        finally:
            for module in self.away:
                module.to(self.devices.cpu)

    def unet_ready(self) -> None:
        """Under --medvram the UNet waits on the CPU until it runs; attach and train with it on the device."""
        if self.managed_by_webui:
            from modules import lowvram

            lowvram.send_everything_to_cpu()
            self.host.model.model.to(self.devices.device)


def log_folder(root: str, name: str) -> Path:
    """``<root>/<date>/<name>`` like webui's training logs; a relative root is inside webui's data folder."""
    from modules import paths_internal

    base = Path(root or "textual_inversion").expanduser()
    if not base.is_absolute():
        base = Path(paths_internal.data_path) / base
    return base / datetime.date.today().isoformat() / name


def run_job(session, job, plan, entry) -> None:
    """Train ``entry``'s network as ``plan`` says; every outcome ends up in ``job`` (never raises)."""
    from modules import shared

    job.update(state=RUNNING, started=time.time())
    try:
        if job.stop_requested:
            raise Stopped("interrupted before it started; nothing was trained")
        refuse_unsupported()
        sd_model = shared.sd_model
        host = WebuiHost(sd_model)
        before = model_state.capture(sd_model)
        native = shared.loaded_hypernetworks   # webui's own trainer leaves its network applied; not in our run
        shared.loaded_hypernetworks = []
        try:
            session.generation.detach()
            with checkpoint_hijack_off():
                result = _train(session, job, plan, entry, host)
        finally:
            shared.loaded_hypernetworks = native
            model_state.restore(before)
            changed = model_state.differences(before, model_state.capture(sd_model))
            if changed:
                text = "the model was not left exactly as before the run: " + "; ".join(changed[:5])
                logger.warning("%s", text)
                job.add("messages", text)
        state = INTERRUPTED if result.interrupted else DONE
        job.update(state=state, error=job.model_changed if state == INTERRUPTED else None)
    except Stopped as why:
        job.add("messages", str(why))
        job.update(state=INTERRUPTED)
    except HypernetError as err:
        job.update(state=FAILED, error=str(err))
        job.add("messages", str(err))
        logger.error("hypernetwork training failed: %s", err)
    except torch.cuda.OutOfMemoryError as err:
        text = (f"out of GPU memory ({str(err).splitlines()[0]}); lower the batch size or the image size, turn on "
                "gradient checkpointing, or move the VAE and text encoder to the CPU")
        job.update(state=FAILED, error=text)
        logger.error("hypernetwork training failed: %s", text)
    except Exception as err:   # noqa: BLE001 - a bug: the job fails with the error, the console gets the trace
        job.update(state=FAILED, error=f"{type(err).__name__}: {err}")
        logger.exception("hypernetwork training failed")


def _train(session, job, plan, entry, host):
    from modules import sd_hijack, shared

    callbacks = JobCallbacks(job, shared.state, checkpoint_changed=checkpoint_changed)
    shared.state.job_count = plan.train.steps
    shared.state.textinfo = f"Preparing to train {entry.name}..."
    sd_hijack.model_hijack.embedding_db.load_textual_inversion_embeddings()
    source = entry.path
    if plan.resume:
        newest = session.library.newest_checkpoint(entry)
        if newest is None:
            job.add("messages", f"no checkpoint of {entry.name} with its .optim yet; starting from {entry.path}")
        source = newest or entry.path
    network = formats.load(source, map_location="cpu")
    job.add("messages", f"training {source} (step {network.step})")

    def preparing(done, total, what="images"):
        if callbacks.should_stop():
            raise Stopped("interrupted while preparing the data; nothing was trained")
        shared.state.textinfo = f"Preparing {what} for {entry.name}: {done}/{total}"

    dataset = prepare_dataset(plan.data, host.encode_images, host.scale_factor, model_id=host.model_id,
                              progress=preparing)
    job.add("messages", str(dataset.summary))
    placement = Placement(host, job)
    if plan.run.unload_vae:
        placement.unload(host.vae(), "VAE")
    trained_on = _conditioning(host, dataset, plan, job, placement, preparing)
    previewer = None
    if plan.train.preview_every:
        width, height = dataset.buckets[0]
        previewer = Previewer(plan.run, entry.name, Path(plan.train.log_dir) / "images", (width, height),
                              dataset.micro_batch(0).prompts[0], placement.on_device)
        callbacks.preview = previewer
    placement.unet_ready()
    trainer = Trainer(trained_on, network, dataset, plan.train, callbacks)
    if previewer is not None:
        previewer.trainer = trainer
    result = trainer.train(resume_from=source if plan.resume else None)
    for path in (result.final_path, _export(result.final_path, plan)):
        if path:
            job.add("files", path)
    shared.reload_hypernetworks()   # webui's own list (its "Add hypernetwork to prompt" setting) sees the files
    if result.interrupted:
        job.add("messages", f"interrupted at step {result.step}; saved {result.final_path}")
    return result


def _conditioning(host, dataset, plan, job, placement, preparing):
    """The host the trainer uses: conditioning cached per prompt; the text encoder leaves when every prompt is
    cached and the user asked for it."""
    cached, count = cache_conditioning(host, dataset, lambda done, total: preparing(done, total, "prompts"))
    if count is not None:
        job.add("messages", f"{count} distinct prompts encoded once")
    if plan.run.unload_text_encoder:
        if count is None:
            job.add("messages", "the text encoder stays on the device: with tag shuffle or tag dropout the prompts "
                                "are not known ahead")
        else:
            cached.sealed = True
            placement.unload(host.text_encoder(), "text encoder")
    return cached


def _export(final_path, plan):
    if final_path and plan.train.save_safetensors:
        path = Path(final_path).with_suffix(".safetensors")
        return str(path) if path.is_file() else None
    return None

