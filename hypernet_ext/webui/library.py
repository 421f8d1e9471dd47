"""webui's hypernetwork folder: hypernet_ext.library's NetworkLibrary on ``--hypernetwork-dir``."""
from __future__ import annotations

from ..library import SUFFIXES, Entry, NetworkLibrary, UnknownNetwork  # noqa: F401 - as webui's code uses them

LISTED_WHERE = "GET /hypernet-ext/v1/networks (or the Extra Networks page)"
