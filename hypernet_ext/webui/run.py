"""The body of a training job (or a learning-rate range test), run by the session inside webui's queue (the GPU
lock held, ``shared.state`` begun).

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
from pathlib import Path
from types import SimpleNamespace

from .. import formats
from ..data import prepare_dataset
from ..training import Trainer, find_lr
from ..training.jobs import JobStopped as Stopped
from ..training.jobs import run_job as run_guarded
from ..training.prompts import cache_conditioning
from ..training.trainer import check_fit_on_host
from . import model_state
from .host import NotSupported, WebuiHost
from .jobs import JobCallbacks, curve_view
from .previews import Previewer, checkpoint_changed

logger = logging.getLogger(__name__)


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


def run_job(session, job, plan, entry, finder=None) -> None:
    """Train ``entry``'s network as ``plan`` says (with ``finder``, a FindLRConfig: run the range test instead);
    every outcome ends up in ``job`` (never raises)."""
    from modules import shared

    def work() -> bool:
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
                result = _train(session, job, plan, entry, host, finder)
        finally:
            shared.loaded_hypernetworks = native
            model_state.restore(before)
            changed = model_state.differences(before, model_state.capture(sd_model))
            if changed:
                text = "the model was not left exactly as before the run: " + "; ".join(changed[:5])
                logger.warning("%s", text)
                job.add("messages", text)
        if result.interrupted and job.model_changed:
            job.update(error=job.model_changed)
        return result.interrupted

    run_guarded(job, work)


def _train(session, job, plan, entry, host, finder=None):
    """Prepare the network, data and conditioning, then train (or, with ``finder``, run the range test)."""
    from modules import sd_hijack, shared

    callbacks = JobCallbacks(job, shared.state, checkpoint_changed=checkpoint_changed)
    shared.state.job_count = finder.steps if finder else plan.train.steps
    shared.state.textinfo = f"Preparing to train {entry.name}..."
    sd_hijack.model_hijack.embedding_db.load_textual_inversion_embeddings()
    source = entry.path
    if plan.resume:
        newest = session.library.newest_checkpoint(entry)
        if newest is None:
            job.add("messages", f"no checkpoint of {entry.name} with its .optim yet; starting from {entry.path}")
        source = newest or entry.path
    network = formats.load(source, map_location="cpu")
    check_fit_on_host(entry.name, network.widths, host)   # before any image is encoded (the model may have changed)
    job.add("messages", f"{'range test on' if finder else 'training'} {source} (step {network.step})")

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
    if finder is not None:
        placement.unet_ready()
        return _find_lr(job, plan, trained_on, network, dataset, finder, callbacks)
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


def _find_lr(job, plan, host, network, dataset, finder, callbacks):
    """The range test on a copy of the network (its file is not touched); the curve goes into the job, its plot
    beside the run's logs."""
    curve = find_lr(host, network, dataset, plan.train, finder, callbacks)
    job.update(lr_find=curve_view(curve))
    if curve.rates:
        path = Path(plan.train.log_dir) / f"{plan.train.name}-lr-find.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        curve.plot().save(path)
        job.add("files", str(path))
    job.add("messages", curve.summary())
    return SimpleNamespace(interrupted=bool(job.stop_requested))


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

