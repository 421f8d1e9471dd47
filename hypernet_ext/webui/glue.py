"""The functions scripts/hypernet_ext.py registers with webui's script_callbacks, and the undo of each.

on_ui_settings: our settings section. on_ui_train_tabs: our Create, Train and Compare tabs in webui's Train
tab (hypernet_ext.ui on the session, through ui_backend). on_model_loaded: the session follows a new model
(generation networks move, a running job stops). on_before_ui: our ``hypernet`` extra network and Hypernetworks
page replace webui's (webui re-registers its defaults just before, at start and on every UI reload).
on_app_started: the REST routes (when webui serves its API: --api or --nowebui), behind --api-auth when set.
on_script_unloaded: all of it undone. Every callback works on the session from ``session.get_session()``.
"""
from __future__ import annotations

import logging

logger = logging.getLogger(__name__)


def _session():
    from .session import get_session

    return get_session()


def on_ui_settings() -> None:
    from . import settings

    settings.register()


def on_ui_train_tabs(params) -> None:
    from ..ui.tabs import build_tabs
    from .ui_backend import WebuiBackend

    build_tabs(WebuiBackend(_session()), list(params.txt2img_preview_params))


def on_model_loaded(sd_model) -> None:
    _session().on_model_loaded(sd_model)


def on_before_ui() -> None:
    from . import extra_network

    extra_network.install(_session())


def on_app_started(demo, app) -> None:
    from modules import shared

    from . import api

    opts = shared.cmd_opts
    if not (getattr(opts, "api", False) or getattr(opts, "nowebui", False)):
        logger.debug("hypernet_ext: webui runs without --api; no REST routes")
        return
    session = _session()
    _remove_routes(session)
    session.routes = [(app, api.register(app, session, getattr(opts, "api_auth", None) or None))]


def _remove_routes(session) -> None:
    from . import api

    for app, routes in session.routes:
        api.unregister(app, routes)
    session.routes = []


def on_script_unloaded() -> None:
    from . import extra_network, settings

    session = _session()
    extra_network.uninstall(session)
    _remove_routes(session)
    settings.remove()
    session.unload()
