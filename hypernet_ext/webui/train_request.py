"""A training request inside webui: the options of hypernet_ext.training.request, with webui's settings as the
defaults of those webui has a setting for (``SETTING_DEFAULTS``); the rest default to the config dataclasses.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Tuple

from ..training import request
from ..training.request import (  # noqa: F401 - the request API as webui's code and the REST routes use it
    ALIASES,
    NESTED_PREFIX,
    SET_BY_SESSION,
    RequestField,
    RunConfig,
    TrainPlan,
    build_finder,
    finder_fields,
    nested_configs,
    request_fields,
    set_data_dir,
    sources,
)

# option -> (setting key, fallback); "webui:" = webui's own option; "a|b": true when either is (on/off options)
SETTING_DEFAULTS: Dict[str, Tuple[str, Any]] = {
    "save_every": ("hypernet_ext_save_every", None),
    "preview_every": ("hypernet_ext_preview_every", None),
    "save_optimizer": ("hypernet_ext_save_optimizer_state|webui:save_optimizer_state", False),
    "optimizer_to_cpu": ("hypernet_ext_optimizer_to_cpu", None),
    "unload_vae": ("hypernet_ext_unload_vae", None),
    "unload_text_encoder": ("hypernet_ext_unload_text_encoder", None),
    "filename_regex": ("webui:dataset_filename_word_regex", ""),
    "filename_join": ("webui:dataset_filename_join_string", " "),
}


def option_default(name: str, setting: Callable[[str], Any], webui_option: Callable[[str, Any], Any]) -> Any:
    """The default of option ``name`` inside webui: its setting when it has one, else the config's default."""
    if name not in SETTING_DEFAULTS:
        return request_fields()[name].default
    keys, fallback = SETTING_DEFAULTS[name]
    values = [webui_option(key[len("webui:"):], fallback) if key.startswith("webui:") else setting(key)
              for key in keys.split("|")]
    return any(values) if len(values) > 1 else values[0]


def webui_defaults(setting: Optional[Callable[[str], Any]] = None) -> Dict[str, Any]:
    """Option -> default for every option webui has a setting for (``setting(option)``; default: webui's
    settings as they are now)."""
    if setting is None:
        from . import settings

        def setting(option):
            return option_default(option, settings.get, settings.webui_option)

    return {option: setting(option) for option in SETTING_DEFAULTS}


def build_plan(values: Dict[str, Any], name: str, out_dir: str, log_dir: str, resume: bool,
               defaults: Optional[Callable[[str], Any]] = None) -> TrainPlan:
    """hypernet_ext.training.request.build_plan with webui's settings (or ``defaults(option)``) as the defaults."""
    return request.build_plan(values, name, out_dir, log_dir, resume, webui_defaults(defaults))
