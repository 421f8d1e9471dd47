"""The tabs' Backend (hypernet_ext.ui.backend) inside webui: the session for networks and jobs, webui for the rest
(its prompt templates and samplers, its settings as defaults, txt2img's processing for Compare's pictures).

Compare renders each picture through ``processing.process_images`` with ``<hypernet:NAME:STRENGTH>`` in the
prompt, so the picture, its infotext and hashes are exactly what txt2img gives for that prompt (webui's
"Add hypernetwork to prompt" setting is off for it). It holds webui's queue lock, as a txt2img does, and refuses
while one of our training jobs runs (it would wait for the whole run).
"""
from __future__ import annotations

import logging
from contextlib import closing
from pathlib import Path
from typing import List

from ..data import shipped_templates
from ..errors import HypernetError
from . import settings
from .train_request import webui_defaults

logger = logging.getLogger(__name__)


class WebuiBackend:
    """See the module docstring."""

    def __init__(self, session):
        self.session = session

    # ---- networks and jobs: the session's ----

    def network_names(self):
        return sorted(self.session.network_names(), key=str.lower)

    def model_widths(self):
        """The loaded model's widths; none while webui is still loading it (building the tabs must not wait)."""
        from modules import sd_models

        return self.session.model_widths() if sd_models.model_data.sd_model is not None else []

    def create_network(self, name, overwrite=False, **fields):
        return self.session.create_network(name, overwrite=overwrite, **fields)

    def check_training(self, network, data_dir=None, resume=False, **options):
        return self.session.check_training(network, data_dir, resume, **options)

    def start_training(self, network, data_dir=None, resume=False, **options):
        return self.session.start_training(network, data_dir, resume, **options)

    def start_find_lr(self, network, data_dir=None, **options):
        return self.session.start_find_lr(network, data_dir, **options)

    def job(self, job_id):
        return self.session.job(job_id)

    def interrupt(self, job_id):
        return self.session.interrupt(job_id)

    def newest_checkpoint(self, network):
        return self.session.newest_checkpoint(network)

    def running_job(self):
        jobs = list(self.session.jobs.values())
        return self.session.running_job() or next((j for j in reversed(jobs) if j.state == "queued"), None)

    def snapshots(self, network):
        return [(entry.name, step) for entry, step in self.session.library.snapshots(network)]

    def template_names(self) -> List[str]:
        """webui's template files (textual-inversion templates folder), then ours that they do not shadow."""
        from modules.textual_inversion import textual_inversion

        webui = sorted(textual_inversion.list_textual_inversion_templates())
        return webui + [n for n in shipped_templates() if n not in webui and f"{n}.txt" not in webui]

    def sampler_names(self) -> List[str]:
        from modules import sd_samplers

        return list(sd_samplers.visible_sampler_names())

    def option_defaults(self):
        return webui_defaults()

    def output_folder(self, network) -> Path:
        from .run import log_folder

        return log_folder(settings.get("hypernet_ext_log_dir"), network) / "compare"

    def presets_folder(self) -> Path:
        from modules import paths_internal

        return Path(paths_internal.data_path) / "hypernet_ext" / "presets"

    def render(self, network, strength, options):
        """(image, infotext) of txt2img with ``<hypernet:network:strength>`` (see the module docstring)."""
        from modules import call_queue, processing, shared

        from .previews import sampler_name

        if self.session.running_job() is not None:
            raise HypernetError("a training job is running: Compare renders once it has ended (or interrupt it)")
        prompt = options.prompt + (f" <hypernet:{network}:{float(strength):g}>" if network else "")
        with call_queue.queue_lock:
            shared.state.begin(job="hypernet_ext_compare")
            try:
                p = processing.StableDiffusionProcessingTxt2Img(
                    sd_model=shared.sd_model, prompt=prompt, negative_prompt=options.negative_prompt,
                    steps=options.steps, sampler_name=sampler_name(options.sampler), cfg_scale=options.cfg_scale,
                    seed=options.seed, width=options.width, height=options.height, do_not_save_grid=True,
                    do_not_save_samples=True, override_settings={"sd_hypernetwork": "None"})
                with closing(p):
                    processed = processing.process_images(p)
            finally:
                shared.state.end()
        if not processed.images:
            raise HypernetError("txt2img returned no picture (interrupted?)")
        info = processed.infotexts[0] if getattr(processed, "infotexts", None) else processed.info
        return processed.images[0], info
