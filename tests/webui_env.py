"""A webui v1.10.1 as the glue tests see it: the stand-in ``modules`` (tests/webui_stub) set up the way webui's
start-up does it, with a real tiny ldm LatentDiffusion as ``shared.sd_model`` and our script loaded the way
webui loads scripts. ``WebuiEnv.close()`` unloads the script, takes the attention optimization off and checks
that nothing of ours is left."""
import argparse
import importlib.util
import os
import sys
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parent
STUB = TESTS / "webui_stub"
REPO = TESTS.parent
SCRIPT = REPO / "scripts" / "hypernet_ext.py"

WEBUI_OPTIONS = {   # webui's own settings the glue reads, with v1.10.1's defaults (modules/shared_options.py)
    "sd_model_checkpoint": None,
    "sd_hypernetwork": "None",
    "extra_networks_default_multiplier": 1.0,
    "samples_format": "png",
    "dataset_filename_word_regex": "",
    "dataset_filename_join_string": " ",
    "save_optimizer_state": False,
    "sdxl_crop_top": 0,
    "sdxl_crop_left": 0,
    "sdxl_refiner_low_aesthetic_score": 2.5,
    "sdxl_refiner_high_aesthetic_score": 6.0,
}
WEBUI_TEMPLATE = "[filewords]\n"   # a template file in webui's templates folder (captions only)


def load_script(path=SCRIPT):
    """Load a script as webui does (modules/scripts.py: load_scripts): its extension folder first on sys.path
    only while it is imported (modules/script_loading.py: load_module)."""
    saved = sys.path
    sys.path = [str(Path(path).parent.parent)] + sys.path
    try:
        spec = importlib.util.spec_from_file_location(os.path.basename(path), path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path = saved
    return module


class WebuiEnv:
    """See the module docstring. ``cmd`` overrides webui's command-line options (e.g. lowvram=True)."""

    def __init__(self, model, tmp_path, monkeypatch, app=True, **cmd):
        from sgm_env import use_sgm

        use_sgm()   # webui imports sgm at start (sd_models_xl, sd_hijack); the stand-in of tests/sgm_stub
        monkeypatch.syspath_prepend(str(STUB))
        from modules import (
            extra_networks,
            lowvram,
            options,
            paths_internal,
            script_callbacks,
            sd_hijack,
            sd_models,
            shared,
            shared_state,
            ui_extra_networks,
        )
        from modules.textual_inversion import textual_inversion

        self.model, self.tmp = model, Path(tmp_path)
        self.hn_dir = self.tmp / "hypernetworks"
        self.hn_dir.mkdir()
        templates = self.tmp / "ti_templates"
        templates.mkdir()
        (templates / "webui_captions.txt").write_text(WEBUI_TEMPLATE, encoding="utf-8")
        shared.cmd_opts = argparse.Namespace(**dict(dict(
            hypernetwork_dir=str(self.hn_dir), textual_inversion_templates_dir=str(templates),
            embeddings_dir=str(self.tmp / "embeddings"), lowvram=False, medvram=False, api=True, nowebui=False,
            api_auth=None), **cmd))
        shared.opts = options.Options({k: options.OptionInfo(v) for k, v in WEBUI_OPTIONS.items()})
        shared.state = shared_state.State()
        shared.loaded_hypernetworks = []
        shared.hypernetworks = {}
        paths_internal.data_path = str(self.tmp / "webui-data")
        lowvram.module_in_gpu = None
        sd_models.checkpoints_list.clear()
        sd_models.checkpoint_aliases.clear()
        sd_models.loads.clear()
        self.checkpoints = []
        for stem in ("tiny-a", "tiny-b"):
            info = sd_models.CheckpointInfo(str(self.tmp / f"{stem}.safetensors"))
            info.register()
            sd_models.models[info.filename] = model
            self.checkpoints.append(info)
        self.grads = [p.requires_grad for p in model.parameters()]
        for param in model.model.parameters():   # as webui loads it: the UNet is never frozen (other tests may have)
            param.requires_grad_(True)
        script_callbacks.clear_callbacks()
        self.script = load_script()
        script_callbacks.ui_settings_callback()
        sd_models.load_model(self.checkpoints[0])
        sd_hijack.apply_optimizations()
        shared.reload_hypernetworks()
        extra_networks.initialize()
        extra_networks.register_default_extra_networks()
        ui_extra_networks.initialize()
        ui_extra_networks.register_default_pages()
        textual_inversion.list_textual_inversion_templates()
        script_callbacks.before_ui_callback()
        self.app = None
        if app:
            from fastapi import FastAPI

            self.app = FastAPI()
            script_callbacks.app_started_callback(None, self.app)
        self.shared, self.script_callbacks = shared, script_callbacks

    @property
    def session(self):
        from hypernet_ext.webui.session import get_session

        return get_session()

    def client(self, auth=None):
        from fastapi.testclient import TestClient

        client = TestClient(self.app)
        if auth is not None:
            client.auth = auth   # an httpx.Client property (starlette 0.26's TestClient takes no auth argument)
        return client

    def wait(self, job, timeout=300.0):
        """Block until ``job`` has finished; its view."""
        end = time.monotonic() + timeout
        while not job.finished_state:
            if time.monotonic() > end:
                raise TimeoutError(f"job {job.id} still {job.state} after {timeout} s")
            time.sleep(0.02)
        return job.view(history=True)

    def close(self):
        from modules import sd_hijack, sd_hijack_checkpoint

        from hypernet_ext.webui import session as session_module

        session = session_module._session
        for job in list(session.jobs.values()) if session is not None else []:
            job.interrupt()
            self.wait(job)
        self.script_callbacks.script_unloaded_callback()
        sd_hijack.undo_optimizations()
        sd_hijack.current_optimizer = None
        sd_hijack_checkpoint.remove()
        session_module._session = None
        for param, grad in zip(self.model.parameters(), self.grads):
            param.requires_grad_(grad)
        self.model.eval()
