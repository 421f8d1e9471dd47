"""The protocol between the Create / Train / Compare tabs and whatever runs the model: webui's session (adapter in
hypernet_ext.webui.ui_backend) or the standalone app's tiny model (hypernet_ext.standalone.backend).

The tabs call nothing else. Jobs are hypernet_ext.training.jobs.Job (``view(history=True)`` is what the tabs
draw), checks are hypernet_ext.training.preflight.RunCheck, options are hypernet_ext.training.request's.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Protocol, Tuple


@dataclass
class RenderSettings:
    """One picture of Compare: the prompt and sampling settings (seed and strength vary per cell)."""
    prompt: str
    negative_prompt: str = ""
    steps: int = 20
    sampler: str = ""
    cfg_scale: float = 7.0
    seed: int = 1234
    width: int = 512
    height: int = 512


class Backend(Protocol):
    """What the tabs need from their host. Errors are hypernet_ext.errors.HypernetError (or FileExistsError for
    a name already taken) with messages the tabs show as they are."""

    def network_names(self) -> List[str]:
        """Names of the networks in the host's hypernetwork folder (snapshots included), sorted."""

    def model_widths(self) -> List[int]:
        """Attention widths of the loaded model: what a new network covers by default."""

    def create_network(self, name: str, overwrite: bool = False, **fields) -> Path:
        """Write a new network from NetworkConfig fields; returns the path written."""

    def template_names(self) -> List[str]:
        """Prompt templates the Train tab offers."""

    def sampler_names(self) -> List[str]:
        """Samplers of previews and Compare."""

    def option_defaults(self) -> Dict[str, Any]:
        """The host's defaults of training options (e.g. webui's settings); others default to the configs'."""

    def check_training(self, network: str, data_dir=None, resume: bool = False, **options):
        """A RunCheck of these options; nothing is queued or encoded."""

    def start_training(self, network: str, data_dir=None, resume: bool = False, **options):
        """Queue a training job; returns the Job."""

    def start_find_lr(self, network: str, data_dir=None, **options):
        """Queue a learning-rate range test (training options plus ``find_lr_*``); returns the Job."""

    def job(self, job_id: str):
        """The Job with this id, or None."""

    def running_job(self):
        """The job running now (or the newest queued one), or None."""

    def interrupt(self, job_id: str):
        """Stop a job: a queued one never starts, a running one saves, then stops."""

    def newest_checkpoint(self, network: str) -> Optional[Path]:
        """The checkpoint a resume of ``network`` starts from, or None."""

    def snapshots(self, network: str) -> List[Tuple[str, int]]:
        """(name, step) of the network's snapshots and the network itself, by step; names work in render."""

    def render(self, network: Optional[str], strength: float, settings: RenderSettings) -> Tuple[Any, str]:
        """(PIL image, infotext) of one picture with ``network`` at ``strength`` (None: without a network)."""

    def output_folder(self, network: str) -> Path:
        """Where Compare saves its grids for ``network``."""

    def presets_folder(self) -> Path:
        """Where presets are saved (``create`` and ``train`` sub-folders)."""
