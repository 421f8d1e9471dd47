"""Previews during training, rendered by webui's own txt2img (``processing``) with the training network
attached at strength 1 and ``disable_extra_networks`` set, so the picture shows the network and nothing else.

The seed is fixed by default (previews compare across steps), the sampler is picked by webui's name or alias,
and the trainer forks the RNG around each preview. Optionally the optimizer state waits on the CPU and parts
moved off the device (VAE, text encoder) come back for the preview. A preview is skipped, and the job asked to
stop, when webui's checkpoint setting no longer names the model being trained (txt2img would load it; the job's
callbacks stop the job at its next step).
"""
from __future__ import annotations

import contextlib
import logging
from contextlib import closing
from pathlib import Path
from typing import Callable, List, Optional, Tuple

import torch

from ..errors import ConfigError

logger = logging.getLogger(__name__)


def sampler_name(name: str) -> Optional[str]:
    """webui's sampler name for ``name`` (a name or an alias, any case); None for webui's default (empty)."""
    from modules import sd_samplers

    if not name:
        return None
    found = sd_samplers.samplers_map.get(name.lower())
    if found is None:
        known = ", ".join(sorted(set(sd_samplers.samplers_map.values())))
        raise ConfigError(f"preview_sampler: {name!r} is not one of webui's samplers ({known})")
    return found


def checkpoint_changed() -> Optional[str]:
    """The checkpoint webui's setting now names, when it is not the loaded model's (else None). Looked up the way
    sd_models.select_checkpoint does, without its fallback (which prints for an unknown name)."""
    from modules import sd_models, shared

    wanted = sd_models.checkpoint_aliases.get(getattr(shared.opts, "sd_model_checkpoint", None))
    loaded = getattr(shared.sd_model, "sd_checkpoint_info", None)
    if wanted is None or loaded is None or getattr(wanted, "filename", None) == getattr(loaded, "filename", None):
        return None
    return getattr(wanted, "title", None) or str(getattr(wanted, "filename", wanted))


@contextlib.contextmanager
def optimizer_on_cpu(optimizer, enabled: bool):
    """Move the optimizer's state tensors to the CPU inside the block, and back to their devices after it."""
    moved: List[Tuple[dict, str, torch.device]] = []
    if enabled and optimizer is not None:
        for state in optimizer.state.values():
            for key, value in state.items():
                if isinstance(value, torch.Tensor) and value.device.type != "cpu":
                    moved.append((state, key, value.device))
                    state[key] = value.to("cpu")
    try:
        yield len(moved)
    finally:
        for state, key, device in moved:
            state[key] = state[key].to(device)


class Previewer:
    """Renders the preview of step ``step`` (called by JobCallbacks.on_preview); ``parts_on_device`` is a context
    manager that brings the VAE and text encoder back when they were moved off the device."""

    def __init__(self, run, name: str, folder: Path, size: Tuple[int, int], first_prompt: str,
                 parts_on_device: Callable = contextlib.nullcontext):
        self.run = run
        self.name = name
        self.folder = Path(folder)
        self.width = run.preview_width or size[0]
        self.height = run.preview_height or size[1]
        self.prompt = run.preview_prompt or first_prompt
        self.sampler = sampler_name(run.preview_sampler)
        self.parts_on_device = parts_on_device
        self.trainer = None       # set by the run: its optimizer exists once training has begun

    def __call__(self, step: int, network):
        if checkpoint_changed():   # txt2img would load it under the job; the job stops at its next step
            return None
        optimizer = getattr(self.trainer, "optimizer", None)
        with optimizer_on_cpu(optimizer, self.run.optimizer_to_cpu), self.parts_on_device():
            image, info = self._render()
        if image is None:
            return None
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"{self.name}-{step}.png"
        image.save(path, pnginfo=_pnginfo(info))
        return path, image

    def _render(self):
        from modules import processing, shared

        state = shared.state
        kept = {key: getattr(state, key) for key in ("job", "job_no", "job_count", "textinfo", "sampling_step",
                                                     "sampling_steps")}
        p = processing.StableDiffusionProcessingTxt2Img(
            sd_model=shared.sd_model, prompt=self.prompt, negative_prompt=self.run.preview_negative_prompt,
            steps=self.run.preview_steps, sampler_name=self.sampler, cfg_scale=self.run.preview_cfg_scale,
            seed=self.run.preview_seed, width=self.width, height=self.height, do_not_save_grid=True,
            do_not_save_samples=True)
        p.disable_extra_networks = True
        try:
            with closing(p):
                processed = processing.process_images(p)
        finally:
            for key, value in kept.items():
                setattr(state, key, value)
        if not processed.images:
            return None, ""
        info = processed.infotexts[0] if getattr(processed, "infotexts", None) else processed.info
        return processed.images[0], info


def _pnginfo(info: str):
    from PIL.PngImagePlugin import PngInfo

    meta = PngInfo()
    if info:
        meta.add_text("parameters", info)
    return meta
