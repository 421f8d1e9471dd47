"""Stand-in for webui v1.10.1 modules/script_callbacks.py: callback lists, registration and the runners."""
import dataclasses
import inspect
import os

from modules import errors, extensions


@dataclasses.dataclass
class ScriptCallback:
    """(modules/script_callbacks.py: ScriptCallback)"""
    script: str
    callback: object
    name: str = "unnamed"


class UiTrainTabParams:
    """(modules/script_callbacks.py: UiTrainTabParams)"""

    def __init__(self, txt2img_preview_params):
        self.txt2img_preview_params = txt2img_preview_params


callback_map = dict(
    callbacks_app_started=[], callbacks_model_loaded=[], callbacks_ui_tabs=[], callbacks_ui_train_tabs=[],
    callbacks_ui_settings=[], callbacks_script_unloaded=[], callbacks_before_ui=[], callbacks_on_reload=[],
)


def add_callback(callbacks, fun, *, name=None, category='unknown', filename=None):
    """Append a callback named after the file that registers it (modules/script_callbacks.py: add_callback)."""
    if filename is None:
        stack = [x for x in inspect.stack() if x.filename != __file__]
        filename = stack[0].filename if stack else 'unknown file'
    extension = extensions.find_extension(filename)
    extension_name = extension.canonical_name if extension else 'base'
    callback_name = f"{extension_name}/{os.path.basename(filename)}/{category}"
    if name is not None:
        callback_name += f'/{name}'
    callbacks.append(ScriptCallback(filename, fun, callback_name))


def clear_callbacks():
    """(modules/script_callbacks.py: clear_callbacks)"""
    for callback_list in callback_map.values():
        callback_list.clear()


def _run(category, *args, reverse=False):
    items = callback_map['callbacks_' + category]
    for c in (reversed(items) if reverse else list(items)):
        try:
            c.callback(*args)
        except Exception:
            errors.report(f"Error executing callback {category} for {c.script}", exc_info=True)


def app_started_callback(demo, app):
    """(modules/script_callbacks.py: app_started_callback)"""
    _run('app_started', demo, app)


def model_loaded_callback(sd_model):
    """(modules/script_callbacks.py: model_loaded_callback)"""
    _run('model_loaded', sd_model)


def ui_settings_callback():
    """(modules/script_callbacks.py: ui_settings_callback)"""
    _run('ui_settings')


def ui_train_tabs_callback(params: UiTrainTabParams):
    """(modules/script_callbacks.py: ui_train_tabs_callback)"""
    _run('ui_train_tabs', params)


def script_unloaded_callback():
    """Called in reverse order of registration (modules/script_callbacks.py: script_unloaded_callback)."""
    _run('script_unloaded', reverse=True)


def before_ui_callback():
    """Called in reverse order of registration (modules/script_callbacks.py: before_ui_callback)."""
    _run('before_ui', reverse=True)


def on_app_started(callback, *, name=None):
    """(modules/script_callbacks.py: on_app_started)"""
    add_callback(callback_map['callbacks_app_started'], callback, name=name, category='app_started')


def on_model_loaded(callback, *, name=None):
    """(modules/script_callbacks.py: on_model_loaded)"""
    add_callback(callback_map['callbacks_model_loaded'], callback, name=name, category='model_loaded')


def on_ui_train_tabs(callback, *, name=None):
    """(modules/script_callbacks.py: on_ui_train_tabs)"""
    add_callback(callback_map['callbacks_ui_train_tabs'], callback, name=name, category='ui_train_tabs')


def on_ui_settings(callback, *, name=None):
    """(modules/script_callbacks.py: on_ui_settings)"""
    add_callback(callback_map['callbacks_ui_settings'], callback, name=name, category='ui_settings')


def on_script_unloaded(callback, *, name=None):
    """(modules/script_callbacks.py: on_script_unloaded)"""
    add_callback(callback_map['callbacks_script_unloaded'], callback, name=name, category='script_unloaded')


def on_before_ui(callback, *, name=None):
    """(modules/script_callbacks.py: on_before_ui)"""
    add_callback(callback_map['callbacks_before_ui'], callback, name=name, category='before_ui')
