"""The one owner of hypernet_ext's runtime state inside webui: the network library, the generation attachment and
the training jobs. The REST routes, the ``hypernet`` extra network and the Train tab all go through it.

API (``session = get_session()``; every method may be called from any thread):

- ``session.list_networks()`` -> ``[NetworkInfo]`` (name, path, format, sizes, step, hash, descriptor);
  ``session.network_names()`` -> names only, cheap.
- ``session.model_widths()`` -> the loaded model's attention widths (what a new network should cover);
  ``session.model_family()`` -> its family: 'sd1', 'sd2', 'sdxl' (webui's flags), 'sd3' or 'other'.
- ``session.create_network(name, overwrite=False, **network_config_fields)`` -> path of the new ``<name>.pt``
  (sizes default to ``model_widths()``).
- ``session.start_training(network, data_dir, resume=False, **options)`` -> ``Job``, queued through webui's
  queue (``call_queue.wrap_gradio_gpu_call``, the GPU lock) like a UI job; the options are
  ``train_request.request_fields()`` (every field of the configs), unset ones from webui's settings. Raises
  ConfigError (``.field`` names the option) / UnknownNetwork before anything is queued.
- ``session.check_training(network, data_dir, resume=False, **options)`` -> ``RunCheck`` (training.preflight):
  the schedule in words, the data set counted, the network's widths against the model's, problems by option;
  nothing is queued or encoded.
- ``session.start_find_lr(network, data_dir, **options)`` -> ``Job`` of kind ``find_lr``: the learning-rate range
  test with the training options and ``find_lr_*`` options, queued like a training job; its view's ``lr_find``
  holds the curve, the suggested rate and schedule string once done.
- ``session.job(job_id)`` -> ``Job`` or None; ``job.view(history=True)`` -> kind, state, step, total, loss,
  learn_rate, eta_s, history (loss, LR and time per step), validation (loss and effect size per evaluation),
  guard (the overtraining guard's actions), previews, checkpoints, files, messages, lr_find, error;
  ``job.task_id`` is webui's task id (its progress API and progress bar follow it).
- ``session.interrupt(job_id)``: a queued job never starts, a running one saves, then stops.
- ``session.newest_checkpoint(network)`` -> the checkpoint a resume would start from (or None).
- ``session.generation``: the networks of the current txt2img/img2img (our extra network drives it).
- ``session.on_model_loaded(sd_model)``, ``session.unload()``: called by the webui callbacks in ``glue``.
"""
from __future__ import annotations

import logging
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

from ..errors import ConfigError
from ..families import check_fit
from ..schedules import LRSchedule
from ..training.preflight import RunCheck, check_request
from . import settings
from .generation import GenerationNetworks, model_widths
from .jobs import FAILED, FIND_LR, QUEUED, RUNNING, Job
from .library import LISTED_WHERE, NetworkLibrary
from .train_request import build_finder, build_plan, finder_fields, option_default, set_data_dir

logger = logging.getLogger(__name__)


@dataclass
class NetworkInfo:
    """One listed network (the REST API's list item is this without the descriptor)."""
    name: str
    path: str
    format: str
    sizes: List[int]
    step: int
    hash: Optional[str]
    structure: Dict[str, Any]
    sd_checkpoint: Optional[str]
    sd_checkpoint_name: Optional[str]
    descriptor: object = field(repr=False, compare=False, metadata={"internal": True})


def _hypernetwork_dir() -> str:
    from modules import shared

    return shared.cmd_opts.hypernetwork_dir


class Session:
    """See the module docstring."""

    def __init__(self, folder=_hypernetwork_dir):
        self.library = NetworkLibrary(folder, lambda: settings.get("hypernet_ext_network_cache"), LISTED_WHERE)
        self.generation = GenerationNetworks(self.library)
        self.jobs: Dict[str, Job] = {}
        self.replaced: Dict[str, object] = {}   # webui's own extra network and page while ours stand in
        self.routes: list = []                   # our REST routes on webui's app, removed on unload
        self.lock = threading.RLock()

    # ---- networks ----

    def network_names(self) -> List[str]:
        return list(self.library.scan())

    def list_networks(self) -> List[NetworkInfo]:
        from modules import hashes

        out = []
        for entry, info in self.library.listing():
            digest = hashes.sha256_from_cache(str(entry.path), f"hypernet/{entry.name}") or \
                hashes.sha256(str(entry.path), f"hypernet/{entry.name}")
            out.append(NetworkInfo(entry.name, str(entry.path), info.format, list(info.widths), int(info.step),
                                   digest, info.config.to_dict(), info.sd_checkpoint, info.sd_checkpoint_name, info))
        return out

    def model_widths(self) -> List[int]:
        from modules import shared

        return model_widths(shared.sd_model.model.diffusion_model)

    def model_family(self) -> str:
        from modules import shared

        from .host import model_family

        return model_family(shared.sd_model)

    def create_network(self, name, overwrite: bool = False, **fields) -> Path:
        """Write a new network file (see the module docstring); ConfigError / FileExistsError on bad input."""
        from modules import shared

        path = self.library.create(name, overwrite, self.model_widths, **fields)
        shared.reload_hypernetworks()   # webui's own list (its "Add hypernetwork to prompt" setting) sees it too
        return path

    def newest_checkpoint(self, network) -> Optional[Path]:
        return self.library.newest_checkpoint(self.library.resolve(network))

    # ---- training ----

    def _plan(self, network, data_dir, resume: bool, options: dict):
        """(entry, TrainPlan) of a request; ConfigError (with ``field``) / UnknownNetwork / NotSupported."""
        from .run import log_folder, refuse_unsupported

        refuse_unsupported()
        entry = self.library.resolve(network)
        set_data_dir(options, data_dir)
        options["template"] = _webui_template(options.get("template", option_default("template", settings.get,
                                                                                         settings.webui_option)))
        log_dir = log_folder(settings.get("hypernet_ext_log_dir"), entry.name)
        plan = build_plan(options, entry.name, str(entry.path.parent), str(log_dir), resume)
        _check_plan(plan)
        return entry, plan

    def start_training(self, network, data_dir=None, resume: bool = False, **options) -> Job:
        """Validate, then queue a training job (see the module docstring)."""
        entry, plan = self._plan(network, data_dir, resume, options)
        return self._queue(Job(id=secrets.token_hex(6), network=entry.name, task_id="", resume=bool(resume)),
                           plan, entry)

    def _refuse_misfit(self, entry) -> None:
        """A network with none of the loaded model's widths is refused before it is queued (ConfigError about
        'network', naming the family it was made for); the job checks again as it starts, before any image is
        encoded, since the model may change while it waits."""
        try:
            check_fit(entry.name, self.library.describe(entry.path).widths, self.model_widths(), self.model_family())
        except ValueError as err:
            error = ConfigError(str(err))
            error.field = "network"
            raise error from None

    def check_training(self, network, data_dir=None, resume: bool = False, **options) -> RunCheck:
        """What a run with these options would do, checked before it starts (training.preflight): the schedule
        in words, the data set counted, the network's widths against the model's; problems instead of errors."""
        return check_request(lambda: self._plan(network, data_dir, resume, options), self.library,
                             self.model_widths)

    def start_find_lr(self, network, data_dir=None, **options) -> Job:
        """Queue a learning-rate range test (hypernet_ext.training.lr_finder) on a copy of ``network`` with the
        training options and ``find_lr_*`` options; its job view's ``lr_find`` holds the curve and the suggested
        rate and schedule when it is done. The network's file is never touched."""
        finder = build_finder({k: options.pop(k) for k in list(options) if k in finder_fields()})
        entry, plan = self._plan(network, data_dir, False, options)
        job = Job(id=secrets.token_hex(6), network=entry.name, task_id="", kind=FIND_LR)
        return self._queue(job, plan, entry, finder)

    def _queue(self, job: Job, plan, entry, finder=None) -> Job:
        self._refuse_misfit(entry)
        job.task_id = f"task(hypernet-ext-{job.id})"
        with self.lock:
            self.jobs[job.id] = job
        thread = threading.Thread(target=self._worker, args=(job, plan, entry, finder),
                                  name=f"hypernet-ext-{job.id}", daemon=True)
        thread.start()
        return job

    def _worker(self, job: Job, plan, entry, finder=None) -> None:
        from modules import call_queue

        from .run import run_job

        def body(task_id):
            run_job(self, job, plan, entry, finder)
            return [job.state]

        try:
            call_queue.wrap_gradio_gpu_call(body, extra_outputs=[""])(job.task_id)
        finally:
            if job.state in (QUEUED, RUNNING):   # the queue itself failed: webui reported it
                job.update(state=FAILED, error=job.error or "the job could not run; see webui's console")
            job.update(finished=time.time())   # after webui's queue has let go of the job

    def job(self, job_id) -> Optional[Job]:
        with self.lock:
            return self.jobs.get(str(job_id))

    def running_job(self) -> Optional[Job]:
        with self.lock:
            return next((job for job in self.jobs.values() if job.state == RUNNING), None)

    def interrupt(self, job_id) -> Optional[Job]:
        job = self.job(job_id)
        if job is not None:
            job.interrupt()
        return job

    # ---- webui events ----

    def on_model_loaded(self, sd_model) -> None:
        job = self.running_job()
        if job is not None:
            text = "webui loaded another model during training; the job saves and stops"
            job.update(model_changed=text)
            job.add("messages", text)
        self.generation.reattach(sd_model)

    def unload(self) -> None:
        """Script unload: detach generation networks and drop caches; running jobs go on (they own their hooks)."""
        self.generation.detach()
        self.library.forget()
        job = self.running_job()
        if job is not None:
            logger.info("a hypernetwork training job (%s) keeps running through the script reload", job.network)


def _webui_template(template) -> str:
    """A template named like a file in webui's textual-inversion templates folder is that file; other names are
    hypernet_ext's shipped templates or paths (DataConfig resolves them)."""
    from modules.textual_inversion import textual_inversion

    templates = textual_inversion.textual_inversion_templates or textual_inversion.list_textual_inversion_templates()
    text = str(template or "").strip()
    for key in (text, f"{text}.txt"):
        found = templates.get(key)
        if found is not None:
            return found.path
    return text


def _check_plan(plan) -> None:
    """What can be checked before queueing: schedules against the steps, the optimizer, the sampler."""
    from ..optim import load_optimizer_class
    from .previews import sampler_name

    try:
        LRSchedule.from_config(plan.train.schedule, plan.train.steps)
    except ConfigError as err:
        if getattr(err, "field", None) is None:
            err.field = "learn_rate"
        raise
    try:
        load_optimizer_class(plan.train.optimizer.name)
    except ConfigError as err:
        err.field = "optimizer"
        raise
    try:
        sampler_name(plan.run.preview_sampler)
    except ConfigError as err:
        err.field = "preview_sampler"
        raise


_session: Optional[Session] = None
_session_lock = threading.Lock()


def get_session() -> Session:
    """The session, created on first use (never at import)."""
    global _session
    with _session_lock:
        if _session is None:
            _session = Session()
        return _session
