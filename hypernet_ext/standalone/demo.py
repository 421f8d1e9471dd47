"""The demo job: a tiny SD1-like ldm LatentDiffusion built in memory, a synthetic captioned data set, a run.

The model has random weights but real parts: ldm's UNetModel, a small AutoencoderKL and the real
FrozenCLIPEmbedder on a 1-layer CLIP text model whose tokenizer files are built offline from open_clip's
bundled BPE vocabulary (in a cache folder, once). ``run_demo`` trains and writes files, previews and a plot.
"""
from __future__ import annotations

import contextlib
import gzip
import importlib.util
import io
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Dict, Optional

import torch
from PIL import Image, ImageDraw

from ..fileio import child
from .tiny import UNET_PRESETS, rerandomize_zero_init

logger = logging.getLogger(__name__)

CLIP_FOLDER = "tiny-clip-768-v1"
MERGES = 49152 - 256 - 2   # merges CLIP uses from the BPE file: vocabulary 49,408 with the 2 special tokens
DEMO_PROMPTS = ("a red circle on a blue background", "a yellow square on a green background",
                "a white triangle on a black background", "a blue star on a yellow background")


def cache_root(root=None) -> Path:
    """Where generated model files live: ``root``, $HYPERNET_EXT_CACHE, or ~/.cache/hypernet_ext."""
    if root is not None:
        return Path(root)
    env = os.environ.get("HYPERNET_EXT_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "hypernet_ext"


def _bpe_file() -> Path:
    spec = importlib.util.find_spec("open_clip")   # the file only; importing open_clip is slow
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("open_clip is not installed: pip install --no-deps open-clip-torch==2.20.0")
    return Path(list(spec.submodule_search_locations)[0]) / "bpe_simple_vocab_16e6.txt.gz"


def _write_tokenizer(folder: Path) -> None:
    """vocab.json and merges.txt of the CLIP tokenizer, from open_clip's BPE file (what CLIP was built from)."""
    from transformers.models.clip.tokenization_clip import bytes_to_unicode

    lines = gzip.open(_bpe_file(), "rt", encoding="utf-8").read().split("\n")[1:MERGES + 1]
    merges = [tuple(line.split()) for line in lines]
    symbols = list(bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({v: i for i, v in enumerate(vocab)}), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges) + "\n",
                                       encoding="utf-8")


def tiny_clip_dir(root=None) -> Path:
    """A folder FrozenCLIPEmbedder loads offline: tokenizer files and a random 1-layer, 768-wide text model.

    Built once per cache root (in a temporary folder, then renamed), with a fixed seed: every build is the same.
    """
    target = cache_root(root) / CLIP_FOLDER
    if (target / "config.json").is_file():
        return target
    from transformers import CLIPTextConfig, CLIPTextModel

    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{CLIP_FOLDER}.", dir=target.parent))
    try:
        _write_tokenizer(work)
        config = CLIPTextConfig(vocab_size=49408, hidden_size=768, intermediate_size=1536, num_hidden_layers=1,
                                num_attention_heads=12, max_position_embeddings=77, projection_dim=768)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(1234)
            model = CLIPTextModel(config)
        model.half().save_pretrained(str(work), safe_serialization=True)
        try:
            os.replace(work, target)
        except OSError:   # another process finished first: theirs is the same
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def tiny_ldm_config(clip_dir, parameterization: str = "eps", preset: str = "sd1-tiny") -> dict:
    """The ldm config of the tiny model (UNet from tiny.UNET_PRESETS, VAE with the real factor 8, CLIP)."""
    p = UNET_PRESETS[preset]
    levels = len(p["channel_mult"])
    unet = dict(image_size=32, in_channels=4, out_channels=4, model_channels=p["model_channels"],
                num_res_blocks=1, attention_resolutions=[2 ** i for i in range(levels)],
                channel_mult=list(p["channel_mult"]), num_head_channels=p["head_channels"],
                use_spatial_transformer=True, transformer_depth=1, context_dim=768,
                use_linear_in_transformer=p["linear"], legacy=False, use_checkpoint=False)
    vae = dict(embed_dim=4, lossconfig={"target": "torch.nn.Identity"},
               ddconfig=dict(double_z=True, z_channels=4, resolution=64, in_channels=3, out_ch=3, ch=32,
                             ch_mult=[1, 2, 4, 4], num_res_blocks=1, attn_resolutions=[], dropout=0.0))
    return {"target": "ldm.models.diffusion.ddpm.LatentDiffusion", "params": dict(
        linear_start=0.00085, linear_end=0.0120, timesteps=1000, first_stage_key="jpg", cond_stage_key="txt",
        image_size=8, channels=4, cond_stage_trainable=False, conditioning_key="crossattn", monitor=None,
        scale_factor=0.18215, use_ema=False, parameterization=parameterization,
        unet_config={"target": "ldm.modules.diffusionmodules.openaimodel.UNetModel", "params": unet},
        first_stage_config={"target": "ldm.models.autoencoder.AutoencoderKL", "params": vae},
        cond_stage_config={"target": "ldm.modules.encoders.modules.FrozenCLIPEmbedder",
                           "params": {"version": str(clip_dir), "device": "cpu"}})}


def tiny_model_hash(seed: int) -> str:
    """The model hash of the tiny model built from ``seed``: another seed is another model (another VAE), so
    latents cached for one must not be used for another. Seed 0 keeps the hash it always had."""
    return "tinysd1-v1" if int(seed) == 0 else f"tinysd1-v1-seed{int(seed)}"


def build_tiny_ldm(parameterization: str = "eps", seed: int = 0, root=None, preset: str = "sd1-tiny"):
    """The tiny LatentDiffusion, the same for the same seed in every process; the global RNG is untouched."""
    from ldm.util import instantiate_from_config
    from omegaconf import OmegaConf

    config = OmegaConf.create(tiny_ldm_config(tiny_clip_dir(root), parameterization, preset))
    with torch.random.fork_rng(devices=[]), contextlib.redirect_stdout(io.StringIO()):
        torch.manual_seed(seed)
        model = instantiate_from_config(config)
    rerandomize_zero_init(model.model.diffusion_model, seed=seed)
    return model.eval()


def make_shapes_dataset(folder, count: int = 8, seed: int = 0, sizes=((64, 64), (80, 48), (48, 80))) -> Path:
    """``count`` images of coloured shapes (sizes taken in turn) with sidecar .txt captions."""
    import random

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    colors = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 70, 220), "yellow": (235, 210, 40),
              "white": (245, 245, 245), "black": (15, 15, 15)}
    sizes = list(sizes)
    for i in range(count):
        fg, bg = rng.sample(sorted(colors), 2)
        shape = ("circle", "square", "triangle")[i % 3]
        w, h = sizes[i % len(sizes)]
        image = Image.new("RGB", (w, h), colors[bg])
        draw = ImageDraw.Draw(image)
        r = min(w, h) // 3
        cx, cy = w // 2 + rng.randint(-4, 4), h // 2 + rng.randint(-4, 4)
        if shape == "circle":
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colors[fg])
        elif shape == "square":
            draw.rectangle((cx - r, cy - r, cx + r, cy + r), fill=colors[fg])
        else:
            draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colors[fg])
        image.save(folder / f"shape_{i:02d}.png")
        (folder / f"shape_{i:02d}.txt").write_text(f"a {fg} {shape} on a {bg} background", encoding="utf-8")
    return folder


def demo_data_config(data_dir, seed: int = 0, batch_size: int = 2):
    from ..data import DataConfig

    return DataConfig(data_dir=str(data_dir), template="captions_only", resize="bucket", width=64, height=64,
                      min_side=32, max_side=128, divisor=16, batch_size=batch_size, flip=0.5, seed=seed)


class Previewer:
    """Writes ``<out>/previews/<name>-<step>.png``: DDIM samples for fixed prompts (for callbacks.on_preview)."""

    def __init__(self, host, out_dir, name: str, prompts=DEMO_PROMPTS[:2], latent_hw=(8, 8), steps: int = 8,
                 seed: int = 0):
        self.host, self.folder, self.name = host, Path(out_dir) / "previews", name
        self.prompts, self.latent_hw, self.steps, self.seed = list(prompts), latent_hw, steps, seed

    def images(self):
        from ..training.preview import ddim_sample, to_images

        latents = ddim_sample(self.host, self.prompts, self.latent_hw, self.steps, self.seed)
        return to_images(self.host.decode_latents(latents))

    def __call__(self, step: int, network=None) -> Path:
        from ..training.preview import image_grid

        self.folder.mkdir(parents=True, exist_ok=True)
        path = child(self.folder, f"{self.name}-{step}.png", "name")
        image_grid([self.images()]).save(path)
        return path


def _difference(before, after, gain: float = 4.0):
    """|after - before| per pixel, amplified: where the network changed the picture."""
    from PIL import ImageChops

    return [ImageChops.difference(a, b).point(lambda v: min(255, int(v * gain))) for a, b in zip(before, after)]


class WithPreviews:
    """Callbacks that write preview images with ``previewer`` and pass everything on to ``inner``."""

    def __init__(self, inner, previewer):
        from ..host import Callbacks

        self.inner = inner if inner is not None else Callbacks()
        self.previewer = previewer

    def on_preview(self, step: int, network) -> None:
        path = self.previewer(step, network)
        logger.info("preview for step %d: %s", step, path)
        self.inner.on_message(f"preview written: {path}")
        self.inner.on_preview(step, network)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def run_demo(out_dir, steps: int = 100, seed: int = 0, callbacks=None, root=None) -> Dict[str, Optional[str]]:
    """Build the tiny model and data, train a hypernetwork ``steps`` steps, write files; returns their paths."""
    from .. import create
    from ..attach import attach, attention_modules
    from ..data import prepare_dataset
    from ..training import TrainConfig, Trainer
    from ..training.preview import image_grid, loss_plot
    from .ldm_host import LdmHost

    out = Path(out_dir)
    host = LdmHost(build_tiny_ldm(seed=seed, root=root), model_name="tiny-sd1",
                  model_hash=tiny_model_hash(seed))
    data_dir = make_shapes_dataset(out / "data", seed=seed)
    dataset = prepare_dataset(demo_data_config(data_dir, seed), host.encode_images, host.scale_factor,
                              model_id=host.model_id)
    widths = sorted({width for _, _, width in attention_modules(host.unet)})
    network = create(name="demo", sizes=widths, layer_structure=(1, 2, 1), activation="relu", seed=seed)
    previewer = Previewer(host, out, "demo", prompts=DEMO_PROMPTS, seed=seed)
    before = previewer.images()
    callbacks = WithPreviews(callbacks, Previewer(host, out, "demo", seed=seed))
    config = TrainConfig(name="demo", out_dir=str(out), steps=steps, save_every=max(1, steps // 2),
                         preview_every=max(1, steps // 2), seed=seed,
                         schedule={"learn_rate": f"2e-3:{max(1, steps // 2)}, 5e-4:-1", "warmup_steps": 5})
    result = Trainer(host, network, dataset, config, callbacks).train()
    with attach(host.unet, network):
        after = previewer.images()
    files = {"network": result.final_path, "optim": result.final_path + ".optim",
             "safetensors": str(Path(result.final_path).with_suffix(".safetensors")),
             "loss_csv": str(out / "hypernetwork_loss.csv"), "data": str(data_dir)}
    files["preview"] = str(out / "demo-preview.png")
    image_grid([before, after, _difference(before, after)], labels=["base", "trained", "change x4"]).save(
        files["preview"])
    files["loss_plot"] = str(out / "demo-loss.png")
    steps_axis = list(range(int(network.step) - len(result.losses) + 1, int(network.step) + 1))
    loss_plot(steps_axis, result.losses, title=f"demo: loss per step ({len(dataset)} images, batch 2)").save(
        files["loss_plot"])
    files["summary"] = (f"{result.step} steps, last loss {result.last_loss:.4f}, {result.skipped_steps} skipped; "
                        f"data: {dataset.summary}")
    return files
