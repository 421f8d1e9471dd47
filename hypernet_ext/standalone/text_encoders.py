"""ldm's and sgm's text encoders built from their configuration, without downloading or loading pretrained weights.

ldm's FrozenCLIPEmbedder calls ``CLIPTextModel.from_pretrained("openai/clip-vit-large-patch14")`` and SD2's
FrozenOpenCLIPEmbedder ``open_clip.create_model_and_transforms(..., pretrained=...)``; sgm's SDXL embedders do the
same: all fetch weights that the checkpoint then replaces. ``weightless_text_encoders(module)`` gives the encoder
module (ldm's by default, or sgm's), for one with block, stand-ins for those names that build the same modules
from their configuration; only CLIP's tokenizer files are read.
"""
from __future__ import annotations

import contextlib
import importlib
import logging
import os
from pathlib import Path
from typing import Iterator, Sequence

from ..errors import ConfigError

logger = logging.getLogger(__name__)

# the text half of openai/clip-vit-large-patch14's config.json (SD1's text encoder): no download for the config
KNOWN_CLIP_TEXT = {
    "openai/clip-vit-large-patch14": dict(vocab_size=49408, hidden_size=768, intermediate_size=3072,
                                          num_hidden_layers=12, num_attention_heads=12, max_position_embeddings=77,
                                          projection_dim=768, hidden_act="quick_gelu", layer_norm_eps=1e-5),
}
TOKENIZER_FILES = ("vocab.json", "merges.txt")
_SMALL_VISION = {"image_size": 32, "layers": 1, "width": 64, "head_width": 64, "patch_size": 32}


@contextlib.contextmanager
def weightless_text_encoders(module=None) -> Iterator[None]:
    """Inside the block, ldm's FrozenCLIPEmbedder and FrozenOpenCLIPEmbedder build their text models with
    random weights from the configuration (no weight download), and CLIP's tokenizer comes from a local folder
    or the Hugging Face cache (downloaded there when missing and online). The module's own names are put back
    on leaving, whatever happens inside. ``module``: ldm's encoder module (default: imported)."""
    module = module or importlib.import_module("ldm.modules.encoders.modules")
    stand_ins = {"CLIPTokenizer": _ClipTokenizer, "CLIPTextModel": _ClipTextModel}
    if "open_clip" in module.__dict__:
        stand_ins["open_clip"] = _OpenClip(module.__dict__["open_clip"])
    saved = {name: module.__dict__[name] for name in stand_ins if name in module.__dict__}
    try:
        for name in saved:
            setattr(module, name, stand_ins[name])
        yield
    finally:
        for name, value in saved.items():
            setattr(module, name, value)


class _ClipTokenizer:
    """Stands in for transformers.CLIPTokenizer in ldm's module: from_pretrained reads local files only."""

    @staticmethod
    def from_pretrained(version, *args, **kwargs):
        from transformers import CLIPTokenizer

        return CLIPTokenizer.from_pretrained(str(local_files(version, TOKENIZER_FILES, "CLIP tokenizer")))


class _ClipTextModel:
    """Stands in for transformers.CLIPTextModel in ldm's module: from_pretrained builds it from its config."""

    @staticmethod
    def from_pretrained(version, *args, **kwargs):
        from transformers import CLIPTextModel

        logger.info("building the CLIP text model of %s without its pretrained weights (the checkpoint holds them)",
                    version)
        return CLIPTextModel(clip_text_config(version))


class _OpenClip:
    """open_clip as ldm's and sgm's modules see it, except that create_model_and_transforms never loads pretrained
    weights and builds the vision tower (which both delete at once) one layer deep: ViT-bigG's would be 1.8
    billion parameters allocated for nothing."""

    def __init__(self, real):
        self._real = real

    def create_model_and_transforms(self, model_name, pretrained=None, **kwargs):
        if pretrained:
            logger.info("building OpenCLIP %s without its pretrained weights %s (the checkpoint holds them)",
                        model_name, pretrained)
        config = self._real.get_model_config(model_name)
        text = (config or {}).get("text_cfg", {})
        if not config or config.get("custom_text") or "hf_model_name" in text \
                or "timm_model_name" in config.get("vision_cfg", {}):
            return self._real.create_model_and_transforms(model_name, pretrained=None, **kwargs)
        clip = importlib.import_module("open_clip.model").CLIP
        model = clip(embed_dim=config["embed_dim"], vision_cfg=dict(_SMALL_VISION), text_cfg=text,
                     quick_gelu=config.get("quick_gelu", False))
        if kwargs.get("device") is not None:
            model.to(kwargs["device"])
        return model, None, None

    def __getattr__(self, name):
        return getattr(self._real, name)


def clip_text_config(version):
    """The CLIPTextConfig of ``version``: a known model's from KNOWN_CLIP_TEXT, else its config.json (a local
    folder's, or from the Hugging Face cache)."""
    from transformers import CLIPTextConfig

    if str(version) in KNOWN_CLIP_TEXT:
        return CLIPTextConfig(**KNOWN_CLIP_TEXT[str(version)])
    return CLIPTextConfig.from_pretrained(str(local_files(version, ("config.json",), "CLIP text model config")))


def local_files(version, names: Sequence[str], what: str) -> Path:
    """The folder holding ``names`` for ``version``: the folder itself when it is one, else the Hugging Face
    cache's snapshot of that repository, downloading the missing files into it when not offline. ConfigError
    naming the files and the place otherwise."""
    folder = Path(str(version)).expanduser()
    if folder.is_dir():
        missing = [name for name in names if not (folder / name).is_file()]
        if missing:
            raise ConfigError(f"the {what} folder {folder} lacks {', '.join(missing)}")
        return folder
    found = _cached(str(version), names)
    if found is not None:
        return found
    cache = hub_cache()
    where = f"{cache / ('models--' + str(version).replace('/', '--'))}"
    if offline():
        raise ConfigError(f"the {what} of {version} is not on this machine and downloads are off (HF_HUB_OFFLINE "
                          f"or TRANSFORMERS_OFFLINE): {', '.join(names)} are missing in the Hugging Face cache at "
                          f"{where}. Download them once while online (they are small; the weights come from the "
                          "checkpoint), or copy them from a machine that has them (webui's cache does).")
    try:
        from huggingface_hub import hf_hub_download

        for name in names:
            hf_hub_download(str(version), name, cache_dir=str(cache))
    except (OSError, ValueError) as err:
        raise ConfigError(f"the {what} of {version} is not on this machine and could not be downloaded ("
                          f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}): {', '.join(names)} "
                          f"are missing in the Hugging Face cache at {where}. Connect once to fetch them (they are "
                          "small; the weights come from the checkpoint), or copy them there.") from None
    found = _cached(str(version), names)
    if found is None:
        raise ConfigError(f"the {what} of {version}: {', '.join(names)} were downloaded but are not in one snapshot "
                          f"at {where}; remove that folder and try again")
    return found


def _cached(repo_id: str, names: Sequence[str]):
    """The cache snapshot folder holding every one of ``names``, or None."""
    from huggingface_hub import try_to_load_from_cache

    folders = set()
    for name in names:
        try:
            path = try_to_load_from_cache(repo_id, name, cache_dir=str(hub_cache()))
        except ValueError:   # not a valid repository id
            return None
        if not isinstance(path, str):
            return None
        folders.add(Path(path).parent)
    return folders.pop() if len(folders) == 1 else None


def hub_cache() -> Path:
    """Where transformers 4.30 keeps hub files, from the environment as it is now (not at import)."""
    for variable in ("TRANSFORMERS_CACHE", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(variable):
            return Path(os.environ[variable]).expanduser()
    home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "huggingface")
    return Path(home).expanduser() / "hub"


def offline() -> bool:
    return any(os.environ.get(v, "").strip().upper() in ("1", "ON", "YES", "TRUE")
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
