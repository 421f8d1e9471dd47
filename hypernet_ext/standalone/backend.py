"""StandaloneBackend: the tabs' Backend (hypernet_ext.ui.backend) on an ldm model in this process, the tiny
built-in one by default, for the standalone app and the browser tests.

Networks live in ``<folder>/hypernetworks`` (hypernet_ext.library), logs and previews in ``<folder>/logs/<name>``,
Compare grids in ``<folder>/compare``, presets in ``<folder>/presets``. Jobs run in threads, one at a time
under ``gpu`` (as webui's queue lock does), with the same trainer, range test and job records as inside webui;
previews and Compare pictures are DDIM samples (no guidance: CFG and the sampler name are not used).
"""
from __future__ import annotations

import contextlib
import logging
import secrets
import threading
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from PIL import Image

from .. import formats
from ..attach import attach
from ..data import prepare_dataset, shipped_templates
from ..errors import HypernetError
from ..library import NetworkLibrary
from ..training import Trainer, find_lr
from ..training.jobs import FIND_LR, QUEUED, RUNNING, Job, JobRecorder, JobStopped, curve_view, run_job
from ..training.preflight import RunCheck, check_request, model_widths
from ..training.preview import ddim_sample, to_images
from ..training.prompts import cache_conditioning
from ..training.request import build_finder, build_plan, finder_fields, set_data_dir

logger = logging.getLogger(__name__)

# option defaults that suit the tiny model (64-pixel images, a few minutes on a CPU)
TINY_DEFAULTS = {"width": 64, "height": 64, "min_side": 32, "max_side": 128, "divisor": 16, "steps": 100,
                 "learn_rate": "0.002", "save_every": 20, "preview_every": 20, "preview_steps": 8,
                 "template": "captions_only", "tensorboard": False}


def tiny_host(cache_root=None):
    from .demo import build_tiny_ldm, tiny_model_hash
    from .ldm_host import LdmHost

    return LdmHost(build_tiny_ldm(seed=0, root=cache_root), model_name="tiny-sd1", model_hash=tiny_model_hash(0))


class StandaloneBackend:
    """See the module docstring. ``host_factory()`` builds the HostModel (an LdmHost) on first use."""

    def __init__(self, folder, host_factory: Callable = tiny_host, defaults: Optional[Dict[str, Any]] = None):
        self.folder = Path(folder)
        self.library = NetworkLibrary(lambda: str(self.folder / "hypernetworks"),
                                      listed_where="the Network list of the Train tab")
        self.host_factory = host_factory
        self._host = None
        self.defaults = dict(TINY_DEFAULTS if defaults is None else defaults)
        self.jobs: Dict[str, Job] = {}
        self.lock = threading.RLock()
        self.gpu = threading.Lock()

    @property
    def host(self):
        with self.lock:
            if self._host is None:
                self._host = self.host_factory()
            return self._host

    # ---- networks ----

    def network_names(self) -> List[str]:
        return sorted(self.library.scan(), key=str.lower)

    def model_widths(self) -> List[int]:
        return model_widths(self.host.unet)

    def create_network(self, name, overwrite: bool = False, **fields) -> Path:
        return self.library.create(name, overwrite, self.model_widths, **fields)

    def newest_checkpoint(self, network) -> Optional[Path]:
        return self.library.newest_checkpoint(self.library.resolve(network))

    def snapshots(self, network):
        return [(entry.name, step) for entry, step in self.library.snapshots(network)]

    def template_names(self) -> List[str]:
        return shipped_templates()

    def sampler_names(self) -> List[str]:
        return ["DDIM"]

    def option_defaults(self) -> Dict[str, Any]:
        return dict(self.defaults)

    def output_folder(self, network) -> Path:
        return self.folder / "compare"

    def presets_folder(self) -> Path:
        return self.folder / "presets"

    # ---- jobs ----

    def _plan(self, network, data_dir, resume: bool, options: dict):
        entry = self.library.resolve(network)
        set_data_dir(options, data_dir)
        log_dir = self.folder / "logs" / entry.name
        return entry, build_plan(options, entry.name, str(entry.path.parent), str(log_dir), resume, self.defaults)

    def check_training(self, network, data_dir=None, resume: bool = False, **options) -> RunCheck:
        return check_request(lambda: self._plan(network, data_dir, resume, options), self.library,
                             self.model_widths)

    def start_training(self, network, data_dir=None, resume: bool = False, **options) -> Job:
        entry, plan = self._plan(network, data_dir, resume, options)
        return self._queue(Job(id=secrets.token_hex(6), network=entry.name, task_id="", resume=bool(resume)),
                           plan, entry)

    def start_find_lr(self, network, data_dir=None, **options) -> Job:
        finder = build_finder({k: options.pop(k) for k in list(options) if k in finder_fields()})
        entry, plan = self._plan(network, data_dir, False, options)
        return self._queue(Job(id=secrets.token_hex(6), network=entry.name, task_id="", kind=FIND_LR), plan, entry,
                           finder)

    def _queue(self, job: Job, plan, entry, finder=None) -> Job:
        job.task_id = f"task(hypernet-ext-{job.id})"
        with self.lock:
            self.jobs[job.id] = job
        threading.Thread(target=self._worker, args=(job, plan, entry, finder), name=f"hypernet-ext-{job.id}",
                         daemon=True).start()
        return job

    def _worker(self, job: Job, plan, entry, finder) -> None:
        try:
            with self.gpu:
                run_job(job, lambda: self._run(job, plan, entry, finder))
        finally:
            job.update(finished=time.time())

    def _run(self, job: Job, plan, entry, finder) -> bool:
        if job.stop_requested:
            raise JobStopped("interrupted before it started; nothing was trained")
        host = self.host
        source = (self.library.newest_checkpoint(entry) if plan.resume else None) or entry.path
        network = formats.load(source, map_location="cpu")
        job.add("messages", f"{'range test on' if finder else 'training'} {source} (step {network.step})")
        dataset = prepare_dataset(plan.data, host.encode_images, host.scale_factor, model_id=host.model_id)
        job.add("messages", str(dataset.summary))
        host, count = cache_conditioning(host, dataset)   # the text encoder runs once per distinct prompt
        if count is not None:
            job.add("messages", f"{count} distinct prompts encoded once")
        callbacks = JobRecorder(job)
        if finder is not None:
            curve = find_lr(host, network, dataset, plan.train, finder, callbacks)
            job.update(lr_find=curve_view(curve))
            job.add("messages", curve.summary())
            return bool(job.stop_requested)
        if plan.train.preview_every:
            callbacks.preview = self._previewer(plan, entry.name, dataset)
        result = Trainer(host, network, dataset, plan.train, callbacks).train(
            resume_from=source if plan.resume else None)
        if result.final_path:
            job.add("files", result.final_path)
        if result.interrupted:
            job.add("messages", f"interrupted at step {result.step}; saved {result.final_path}")
        return result.interrupted

    def _previewer(self, plan, name: str, dataset):
        from .demo import Previewer

        width, height = dataset.buckets[0]
        run = plan.run
        size = ((run.preview_height or height) // 8, (run.preview_width or width) // 8)
        prompt = run.preview_prompt or dataset.micro_batch(0).prompts[0]
        previewer = Previewer(self.host, plan.train.log_dir, name, prompts=[prompt], latent_hw=size,
                              steps=run.preview_steps, seed=max(0, run.preview_seed))

        def preview(step, network):
            path = previewer(step, network)
            with Image.open(path) as image:
                return path, image.copy()

        return preview

    def job(self, job_id) -> Optional[Job]:
        with self.lock:
            return self.jobs.get(str(job_id))

    def running_job(self) -> Optional[Job]:
        with self.lock:
            jobs = list(self.jobs.values())
        return next((j for j in jobs if j.state == RUNNING), None) or \
            next((j for j in reversed(jobs) if j.state == QUEUED), None)

    def interrupt(self, job_id) -> Optional[Job]:
        job = self.job(job_id)
        if job is not None:
            job.interrupt()
        return job

    # ---- pictures ----

    def render(self, network, strength, settings):
        """One DDIM picture with ``network`` at ``strength`` (see the module docstring)."""
        if not self.gpu.acquire(blocking=False):
            raise HypernetError("a job is running: Compare renders once it has ended (or interrupt it)")
        try:
            host = self.host
            networks = []
            if network:
                entry = self.library.resolve(network)
                networks = [(self.library.load(entry, host.device), float(strength))]
            with attach(host.unet, networks) if networks else contextlib.nullcontext():
                latents = ddim_sample(host, [settings.prompt], (settings.height // 8, settings.width // 8),
                                      settings.steps, settings.seed)
                image = to_images(host.decode_latents(latents))[0]
        finally:
            self.gpu.release()
        tag = f" <hypernet:{network}:{float(strength):g}>" if network else ""
        info = (f"{settings.prompt}{tag}\nNegative prompt: {settings.negative_prompt}\nSteps: {settings.steps}, "
                f"Sampler: DDIM, Seed: {settings.seed}, Size: {settings.width}x{settings.height}, Model: tiny-sd1")
        return image, info
