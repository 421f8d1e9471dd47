"""hypernet_ext's only webui script: it registers our callbacks with webui and does nothing else.

webui puts this extension's folder on sys.path only while it imports this file, so the package is imported
here (the import does no work); later imports of its submodules go through the package's own path.
"""
import logging
import os

from modules import script_callbacks

import hypernet_ext
from hypernet_ext.webui import glue

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if os.path.dirname(os.path.abspath(hypernet_ext.__file__)) != os.path.join(_ROOT, "hypernet_ext"):
    logging.getLogger("hypernet_ext").warning("another copy of hypernet_ext is loaded (%s), not the one in %s; "
                                              "remove the other copy", hypernet_ext.__file__, _ROOT)

script_callbacks.on_ui_settings(glue.on_ui_settings)
script_callbacks.on_ui_train_tabs(glue.on_ui_train_tabs)
script_callbacks.on_model_loaded(glue.on_model_loaded)
script_callbacks.on_before_ui(glue.on_before_ui)
script_callbacks.on_app_started(glue.on_app_started)
script_callbacks.on_script_unloaded(glue.on_script_unloaded)
