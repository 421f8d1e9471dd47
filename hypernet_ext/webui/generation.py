"""Networks named in a prompt (``<hypernet:name:strength>``), attached to webui's UNet for one generation.

``GenerationNetworks.activate(p, params_list)`` is what our ``hypernet`` extra network does for webui: it also
honours webui's "Add hypernetwork to prompt" option, clears ``shared.loaded_hypernetworks`` (webui's own path
never applies a network as well), loads through the library's cache, attaches every network in one handle,
records each network with its hash in the generation info, and warns there when a network does not fit the
model's widths. ``detach()`` removes it; ``reattach(sd_model)`` moves it to a reloaded model.
"""
from __future__ import annotations

import logging
import math
import threading
from typing import List, Optional, Tuple

from ..attach import attach
from ..errors import HypernetError
from ..families import check_fit
from ..training.preflight import model_widths
from .host import model_family

logger = logging.getLogger(__name__)

HASHES_KEY = "Hypernet hashes"
WARNING_KEY = "Hypernet warning"


def parse_params(params_list) -> Tuple[List[Tuple[str, float]], List[str]]:
    """(name, strength) per ``<hypernet:name[:strength]>`` (webui's ExtraNetworkParams), and warnings."""
    wanted, warnings = [], []
    for params in params_list:
        items = [str(item) for item in params.positional] if getattr(params, "positional", None) else \
            [str(item) for item in params.items]
        if not items or not items[0].strip():
            warnings.append("an empty <hypernet:> tag was ignored")
            continue
        name, strength = items[0].strip(), 1.0
        if len(items) > 1:
            try:
                strength = float(items[1])
            except ValueError:
                strength = float("nan")
            if not math.isfinite(strength):
                warnings.append(f"<hypernet:{name}:{items[1]}>: the strength must be a number; ignored")
                continue
        wanted.append((name, strength))
    return wanted, warnings


class GenerationNetworks:
    """The attachment of the current generation; owned by the session."""

    def __init__(self, library):
        self.library = library
        self.handle = None
        self.key: Optional[tuple] = None      # (id of the UNet, ((path, mtime, strength), ...))
        self.names: List[Tuple[str, float]] = []
        self.lock = threading.RLock()

    def activate(self, p, params_list) -> None:
        from modules import devices, shared

        wanted, warnings = parse_params(params_list)
        extra = _webui_default_network(p, wanted)
        if extra:
            wanted.append(extra)
        shared.loaded_hypernetworks.clear()
        unet = shared.sd_model.model.diffusion_model
        widths = set(model_widths(unet))
        family = model_family(shared.sd_model)
        family = None if family == "other" else family
        entries, hashes = [], []
        for name, strength in wanted:
            try:
                entry = self.library.resolve(name)
            except HypernetError as err:
                warnings.append(str(err))
                continue
            hashes.append(f"{entry.name}: {_short_hash(entry)}")
            if strength == 0:
                continue   # the identity: nothing to load or attach
            try:
                network = self.library.load(entry, devices.device)
            except (HypernetError, OSError) as err:
                warnings.append(f"{entry.name}: {err}")
                continue
            try:
                _, warning = check_fit(entry.name, network.widths, widths, family)
            except ValueError as err:   # made for another family: the generation goes on without it
                logger.error("%s; not applied", err)
                warnings.append(f"{err}; not applied")
                continue
            if warning:
                warnings.append(warning)
            entries.append((entry, network, strength))
        self._attach(unet, entries)
        if hashes:
            p.extra_generation_params[HASHES_KEY] = ", ".join(hashes)
        if warnings:
            p.extra_generation_params[WARNING_KEY] = "; ".join(warnings)
            for text in warnings:
                if not text.endswith("not applied"):
                    logger.warning("%s", text)

    def _attach(self, unet, entries) -> None:
        from modules import shared

        key = (id(unet), tuple((str(e.path), e.mtime, s) for e, _, s in entries))
        with self.lock:
            if self.handle is not None and not self.handle.removed and key == self.key:
                return
            self.detach()
            if not entries:
                return
            # --medvram / --lowvram move the UNet to the device only while it runs (sd_models_types.py: lowvram)
            moving = bool(getattr(shared.sd_model, "lowvram", False))
            self.handle = attach(unet, [(network, strength) for _, network, strength in entries],
                                 check_device=not moving)
            self.key = key
            self.names = [(entry.name, strength) for entry, _, strength in entries]

    def detach(self) -> None:
        with self.lock:
            if self.handle is not None:
                self.handle.remove()
            self.handle, self.key, self.names = None, None, []

    def reattach(self, sd_model) -> None:
        """After a model (re)load: put the current networks on the new model's UNet."""
        from modules import devices

        with self.lock:
            if self.handle is None or self.handle.removed:
                return
            networks = list(self.handle.networks)
            self.handle.remove()
            self.library.move_loaded(devices.device)
            unet = sd_model.model.diffusion_model
            self.handle = attach(unet, [(n.to(devices.device), s) for n, s in networks], check_device=False)
            self.key = (id(unet), self.key[1] if self.key else ())


def _webui_default_network(p, wanted) -> Optional[Tuple[str, float]]:
    """webui's option "Add hypernetwork to prompt" (sd_hypernetwork), as webui's own extra network does it."""
    from modules import shared

    name = getattr(shared.opts, "sd_hypernetwork", "None")
    if not name or name == "None" or any(n == name for n, _ in wanted):
        return None
    strength = float(getattr(shared.opts, "extra_networks_default_multiplier", 1.0))
    p.all_prompts = [f"{prompt}<hypernet:{name}:{strength}>" for prompt in p.all_prompts]
    return name, strength


def _short_hash(entry) -> str:
    """First 10 hex digits of the file's SHA-256, through webui's hash cache (shared with its own page)."""
    from modules import hashes

    value = hashes.sha256(str(entry.path), f"hypernet/{entry.name}")
    return value[:10] if value else "unknown"
