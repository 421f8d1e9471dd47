"""Loading a Stable Diffusion checkpoint with its ldm yaml needs no pretrained text-encoder weights: ldm's real
FrozenCLIPEmbedder (SD1) and FrozenOpenCLIPEmbedder (SD2) are built from their configuration inside
weightless_text_encoders, every weight then comes from the checkpoint, and only CLIP's tokenizer files are
read (from the Hugging Face cache; when they are missing offline the error names them and the place).

The yamls follow the published v1-inference.yaml and v2-inference-v.yaml (tests/sd_configs.py) with the UNet,
the VAE and (for these tests) the text model shrunk; the network is cut off (every connect raises), so a
download attempt fails.
"""
import socket
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf
from sd_configs import write_tiny_sd_yaml

from hypernet_ext.errors import ConfigError, FormatError
from hypernet_ext.standalone.demo import _write_tokenizer
from hypernet_ext.standalone.text_encoders import weightless_text_encoders

encoders = pytest.importorskip("ldm.modules.encoders.modules")
from hypernet_ext.standalone.ldm_host import load_ldm_checkpoint  # noqa: E402  (needs ldm)

TINY_CLIP = "tiny-test/clip-text"   # a hub id that exists only in the test's cache
TINY_OPEN_CLIP = "tiny-test-open-clip"


@pytest.fixture
def no_network(monkeypatch):
    def refuse(self, *args, **kwargs):
        raise OSError("network is off in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)


def cache_repo(cache: Path, repo: str, files: dict) -> Path:
    """A Hugging Face cache entry (refs/main and one snapshot) as huggingface_hub lays it out."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    root = cache / ("models--" + repo.replace("/", "--"))
    snapshot = root / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (root / "refs").mkdir()
    (root / "refs" / "main").write_text(commit)
    for name, write in files.items():
        write(snapshot / name)
    return snapshot


def tokenizer_files(folder: Path):
    _write_tokenizer(folder)


@pytest.fixture
def hub(tmp_path, monkeypatch, no_network):
    """An offline Hugging Face cache holding the tiny CLIP text model's config and tokenizer."""
    cache = tmp_path / "hf-cache"
    for variable in ("TRANSFORMERS_CACHE", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.setenv(variable, str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = '{"model_type": "clip_text_model", "hidden_size": 64, "intermediate_size": 128, ' \
             '"num_hidden_layers": 1, "num_attention_heads": 2, "max_position_embeddings": 77, "vocab_size": 49408}'
    scratch = tmp_path / "tok"
    scratch.mkdir()
    tokenizer_files(scratch)
    files = {name: (lambda p, n=name: p.write_bytes((scratch / n).read_bytes())) for name in ("vocab.json",
                                                                                             "merges.txt")}
    cache_repo(cache, TINY_CLIP, dict(files, **{"config.json": lambda p: p.write_text(config)}))
    return cache


def write_checkpoint(yaml_path: Path, tmp_path: Path, drop=()) -> dict:
    """Build the model from the yaml (without downloads), give it random weights, save them as a checkpoint."""
    from ldm.util import instantiate_from_config
    from safetensors.torch import save_file

    with weightless_text_encoders():
        model = instantiate_from_config(OmegaConf.load(yaml_path).model)
    gen = torch.Generator().manual_seed(7)
    state = {k: torch.randn(v.shape, generator=gen) if v.is_floating_point() and "position_ids" not in k else
             v.clone() for k, v in model.state_dict().items() if not any(k.startswith(d) for d in drop)}
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "model.safetensors"))
    return state


def assert_loaded(host, state):
    loaded = host.model.state_dict()
    text = [k for k in state if k.startswith("cond_stage_model.") and k in loaded]
    assert text and all(torch.equal(loaded[k], state[k]) for k in text)   # the encoder's weights: the checkpoint's
    assert all(torch.equal(loaded[k], state[k]) for k in state if k.startswith(("model.", "first_stage_model.")))


def test_sd1_loads_offline_with_only_tokenizer_and_config_files(hub, tmp_path):
    yaml_path = write_tiny_sd_yaml("sd1", 64, {"version": TINY_CLIP, "device": "cpu"}, tmp_path)
    state = write_checkpoint(yaml_path, tmp_path)
    host = load_ldm_checkpoint(tmp_path / "model.safetensors", yaml_path)
    assert type(host.model.cond_stage_model) is encoders.FrozenCLIPEmbedder
    assert_loaded(host, state)
    cond = host.encode_prompts(["a photo of a cat"])
    assert cond.shape == (1, 77, 64)
    out = host.predict(torch.randn(1, 4, 8, 8), torch.tensor([10]), cond)
    assert out.shape == (1, 4, 8, 8) and torch.isfinite(out).all()


def test_sd2_openclip_is_built_without_its_pretrained_weights(tmp_path, monkeypatch, no_network):
    import open_clip

    tiny = {"embed_dim": 64, "vision_cfg": {"image_size": 32, "layers": 1, "width": 64, "patch_size": 16},
            "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2}}
    monkeypatch.setitem(open_clip.factory._MODEL_CONFIGS, TINY_OPEN_CLIP, tiny)
    # the yaml's pretrained tag (laion2b_s32b_b79k) stays: asking for it would be a download (or an error)
    yaml_path = write_tiny_sd_yaml("sd2-v", 64, {"arch": TINY_OPEN_CLIP, "device": "cpu"}, tmp_path)
    state = write_checkpoint(yaml_path, tmp_path, drop=("cond_stage_model.model.text_projection",
                                                        "cond_stage_model.model.logit_scale"))
    host = load_ldm_checkpoint(tmp_path / "model.safetensors", yaml_path)
    assert type(host.model.cond_stage_model) is encoders.FrozenOpenCLIPEmbedder and host.parameterization == "v"
    assert_loaded(host, state)
    assert host.encode_prompts(["a photo of a cat"]).shape == (1, 77, 64)


def test_text_encoder_weights_missing_from_the_checkpoint_are_an_error(hub, tmp_path):
    yaml_path = write_tiny_sd_yaml("sd1", 64, {"version": TINY_CLIP, "device": "cpu"}, tmp_path)
    write_checkpoint(yaml_path, tmp_path, drop=("cond_stage_model.transformer.text_model.encoder.",))
    with pytest.raises(FormatError, match=r"text encoder weights missing, e\.g\. cond_stage_model\.transformer"):
        load_ldm_checkpoint(tmp_path / "model.safetensors", yaml_path)


def test_sd1s_own_text_encoder_needs_only_the_tokenizer(tmp_path, monkeypatch, no_network):
    """The v1 yaml's FrozenCLIPEmbedder as it is (openai/clip-vit-large-patch14): CLIP ViT-L/14's text model,
    built from the known configuration; the cache holds nothing but vocab.json and merges.txt."""
    cache = tmp_path / "hf-cache"
    for variable in ("TRANSFORMERS_CACHE", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.setenv(variable, str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    scratch = tmp_path / "tok"
    scratch.mkdir()
    tokenizer_files(scratch)
    cache_repo(cache, "openai/clip-vit-large-patch14",
               {n: (lambda p, n=n: p.write_bytes((scratch / n).read_bytes())) for n in ("vocab.json", "merges.txt")})
    with weightless_text_encoders():
        embedder = encoders.FrozenCLIPEmbedder(device="cpu")
    text = embedder.transformer.text_model
    assert (len(text.encoder.layers), text.config.hidden_size, text.config.intermediate_size) == (12, 768, 3072)
    assert sum(p.numel() for p in embedder.transformer.parameters()) == 123_060_480   # CLIP ViT-L/14's text model
    ids = embedder.tokenizer("a photo of a cat")["input_ids"]
    assert ids == [49406, 320, 1125, 539, 320, 2368, 49407]


@pytest.mark.parametrize("offline", [True, False])
def test_missing_tokenizer_files_are_named_with_the_cache_path(tmp_path, monkeypatch, no_network, offline):
    cache = tmp_path / "empty-cache"
    for variable in ("TRANSFORMERS_CACHE", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.setenv(variable, str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1" if offline else "0")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr("time.sleep", lambda seconds: None)   # huggingface_hub's retries back off for 23 s
    with pytest.raises(ConfigError) as info:
        with weightless_text_encoders():
            encoders.FrozenCLIPEmbedder(device="cpu")
    text = str(info.value)
    assert "vocab.json, merges.txt" in text and str(cache / "models--openai--clip-vit-large-patch14") in text
    assert ("downloads are off" in text) == offline


def test_ldms_names_are_put_back_even_after_an_error():
    before = {name: encoders.__dict__[name] for name in ("CLIPTokenizer", "CLIPTextModel", "open_clip")}
    with pytest.raises(RuntimeError, match="inside"):
        with weightless_text_encoders():
            assert encoders.CLIPTextModel is not before["CLIPTextModel"]
            raise RuntimeError("inside")
    assert {name: encoders.__dict__[name] for name in before} == before
    assert all(encoders.__dict__[name] is value for name, value in before.items())
