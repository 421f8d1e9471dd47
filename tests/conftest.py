"""Shared fixtures: the tiny SD1-like ldm LatentDiffusion (real FrozenCLIPEmbedder with an offline tokenizer,
small AutoencoderKL, tiny UNet), built once per session, and a small captioned image folder encoded with it; a tiny
SDXL built with the sgm stand-in (tests/sgm_env.py).

The CLIP folder is built in a session temporary folder, or in $HYPERNET_EXT_CACHE when that is set (faster
reruns). Tests must not change base weights; training freezes them and removes its hooks. ``webui`` sets up the
stand-in webui of tests/webui_env.py.
"""
import os

import pytest


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory):
    """The cache root the tiny model's CLIP folder lives in (pass it to subprocesses as HYPERNET_EXT_CACHE)."""
    env = os.environ.get("HYPERNET_EXT_CACHE")
    return env if env else str(tmp_path_factory.mktemp("hypernet-ext-cache"))


@pytest.fixture(scope="session")
def tiny_ldm(tiny_cache):
    """The demo's tiny eps-prediction LatentDiffusion (seed 0): the same weights in every process."""
    pytest.importorskip("ldm")
    from hypernet_ext.standalone.demo import build_tiny_ldm

    return build_tiny_ldm(parameterization="eps", seed=0, root=tiny_cache)


@pytest.fixture(scope="session")
def tiny_ldm_v(tiny_cache):
    """The same tiny model in v-prediction mode (SD2's parameterisation)."""
    pytest.importorskip("ldm")
    from hypernet_ext.standalone.demo import build_tiny_ldm

    return build_tiny_ldm(parameterization="v", seed=0, root=tiny_cache)


@pytest.fixture
def ldm_host(tiny_ldm):
    from hypernet_ext.standalone.ldm_host import LdmHost

    return LdmHost(tiny_ldm, model_name="tiny-sd1", model_hash="tinysd1-v1")


@pytest.fixture(scope="session")
def shapes_dir(tmp_path_factory):
    """Four 32x32 images of coloured shapes with sidecar captions."""
    from hypernet_ext.standalone.demo import make_shapes_dataset

    folder = tmp_path_factory.mktemp("shapes")
    make_shapes_dataset(folder, count=4, seed=0, sizes=[(32, 32)])
    return folder


def small_data_config(folder, **changes):
    """Fixed 32x32 images (4x4 latents), batch 2, flips: cheap and still exercising the data options."""
    from hypernet_ext.data import DataConfig

    fields = dict(data_dir=str(folder), template="captions_only", resize="fixed", width=32, height=32,
                  min_side=16, batch_size=2, flip=0.5, seed=0)
    fields.update(changes)
    return DataConfig(**fields)


@pytest.fixture(scope="session")
def shapes_dataset(tiny_ldm, shapes_dir):
    """shapes_dir encoded by the tiny model's VAE (a LatentDataset; micro_batch(index) is pure)."""
    from hypernet_ext.data import prepare_dataset
    from hypernet_ext.standalone.ldm_host import LdmHost

    host = LdmHost(tiny_ldm)
    return prepare_dataset(small_data_config(shapes_dir), host.encode_images, host.scale_factor, model_id="tiny")


@pytest.fixture
def webui(tiny_ldm, tmp_path, monkeypatch):
    """The stand-in webui v1.10.1 (tests/webui_env.py) with our script loaded and the tiny model as sd_model."""
    from webui_env import WebuiEnv

    env = WebuiEnv(tiny_ldm, tmp_path, monkeypatch)
    yield env
    env.close()


@pytest.fixture(scope="session")
def train_images(tmp_path_factory):
    """Eight 32x32 images of coloured shapes with sidecar captions (a training folder for webui jobs)."""
    from hypernet_ext.standalone.demo import make_shapes_dataset

    folder = tmp_path_factory.mktemp("train-images")
    make_shapes_dataset(folder, count=8, seed=1, sizes=[(32, 32)])
    return folder


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the test item (``item.rep_call``): the UI tests take a screenshot on failure."""
    outcome = yield
    report = outcome.get_result()
    setattr(item, f"rep_{report.when}", report)


@pytest.fixture(scope="session")
def tiny_sdxl(tiny_cache):
    """A tiny SDXL DiffusionEngine built with the sgm stand-in (tests/sgm_env.py), seed 0."""
    pytest.importorskip("ldm")
    from sgm_env import build_tiny_sdxl

    return build_tiny_sdxl(tiny_cache, seed=0)


@pytest.fixture
def sdxl_host(tiny_sdxl):
    from hypernet_ext.standalone.sgm_host import SgmHost

    return SgmHost(tiny_sdxl, model_name="tiny-sdxl", model_hash="tinysdxl-v1")
