"""Stand-in of sgm/modules/encoders/modules.py: SDXL's conditioner and the embedders its yaml names.

GeneralConditioner runs each embedder on ``batch[embedder.input_key]`` and concatenates the outputs by
dimension: 2-D ones into ``vector`` (dim 1), 3-D ones into ``crossattn`` (dim 2). FrozenCLIPEmbedder and
FrozenOpenCLIPEmbedder2 wrap the real transformers CLIPTextModel and open_clip text tower; tests build small
ones from local configs. The names CLIPTokenizer, CLIPTextModel and open_clip are module globals, as in sgm.
"""
from contextlib import nullcontext
from typing import Dict, List, Optional, Union

import numpy as np
import open_clip
import torch
import torch.nn as nn
from einops import rearrange
from omegaconf import ListConfig
from transformers import CLIPTextModel, CLIPTokenizer

from ...util import autocast, disabled_train, expand_dims_like, instantiate_from_config
from ..diffusionmodules.openaimodel import Timestep


class AbstractEmbModel(nn.Module):
    """(sgm/modules/encoders/modules.py: AbstractEmbModel) is_trainable, ucg_rate and input_key properties."""

    def __init__(self):
        super().__init__()
        self._is_trainable = None
        self._ucg_rate = None
        self._input_key = None

    @property
    def is_trainable(self) -> bool:
        return self._is_trainable

    @is_trainable.setter
    def is_trainable(self, value: bool):
        self._is_trainable = value

    @property
    def ucg_rate(self) -> Union[float, torch.Tensor]:
        return self._ucg_rate

    @ucg_rate.setter
    def ucg_rate(self, value):
        self._ucg_rate = value

    @property
    def input_key(self) -> str:
        return self._input_key

    @input_key.setter
    def input_key(self, value: str):
        self._input_key = value


class GeneralConditioner(nn.Module):
    """(sgm/modules/encoders/modules.py: GeneralConditioner)"""

    OUTPUT_DIM2KEYS = {2: "vector", 3: "crossattn", 4: "concat", 5: "concat"}
    KEY2CATDIM = {"vector": 1, "crossattn": 2, "concat": 1}

    def __init__(self, emb_models: Union[List, ListConfig]):
        super().__init__()
        embedders = []
        for embconfig in emb_models:
            embedder = instantiate_from_config(embconfig)
            if not isinstance(embedder, AbstractEmbModel):
                raise TypeError(f"embedder model {embedder.__class__.__name__} has to inherit from AbstractEmbModel")
            embedder.is_trainable = embconfig.get("is_trainable", False)
            embedder.ucg_rate = embconfig.get("ucg_rate", 0.0)
            if not embedder.is_trainable:
                embedder.train = disabled_train
                for param in embedder.parameters():
                    param.requires_grad = False
                embedder.eval()
            if "input_key" in embconfig:
                embedder.input_key = embconfig["input_key"]
            elif "input_keys" in embconfig:
                embedder.input_keys = embconfig["input_keys"]
            else:
                raise KeyError(f"need either 'input_key' or 'input_keys' for embedder {embedder.__class__.__name__}")
            embedder.legacy_ucg_val = embconfig.get("legacy_ucg_value", None)
            if embedder.legacy_ucg_val is not None:
                embedder.ucg_prng = np.random.RandomState()
            embedders.append(embedder)
        self.embedders = nn.ModuleList(embedders)

    def forward(self, batch: Dict, force_zero_embeddings: Optional[List] = None) -> Dict:
        output = dict()
        force_zero_embeddings = force_zero_embeddings or []
        for embedder in self.embedders:
            context = nullcontext if embedder.is_trainable else torch.no_grad
            with context():
                if getattr(embedder, "input_key", None) is not None:
                    emb_out = embedder(batch[embedder.input_key])
                else:
                    emb_out = embedder(*[batch[k] for k in embedder.input_keys])
            if not isinstance(emb_out, (list, tuple)):
                emb_out = [emb_out]
            for emb in emb_out:
                out_key = self.OUTPUT_DIM2KEYS[emb.dim()]
                if embedder.ucg_rate > 0.0 and embedder.legacy_ucg_val is None:
                    keep = torch.bernoulli((1.0 - embedder.ucg_rate) * torch.ones(emb.shape[0], device=emb.device))
                    emb = expand_dims_like(keep, emb) * emb
                if getattr(embedder, "input_key", None) in force_zero_embeddings:
                    emb = torch.zeros_like(emb)
                if out_key in output:
                    output[out_key] = torch.cat((output[out_key], emb), self.KEY2CATDIM[out_key])
                else:
                    output[out_key] = emb
        return output


class FrozenCLIPEmbedder(AbstractEmbModel):
    """(sgm/modules/encoders/modules.py: FrozenCLIPEmbedder) CLIP text encoder; SDXL takes a hidden layer."""

    LAYERS = ["last", "pooled", "hidden"]

    def __init__(self, version="openai/clip-vit-large-patch14", device="cuda", max_length=77, freeze=True,
                 layer="last", layer_idx=None, always_return_pooled=False):
        super().__init__()
        if layer not in self.LAYERS:
            raise ValueError(layer)
        self.tokenizer = CLIPTokenizer.from_pretrained(version)
        self.transformer = CLIPTextModel.from_pretrained(version)
        self.device = device
        self.max_length = max_length
        if freeze:
            self.freeze()
        self.layer = layer
        self.layer_idx = layer_idx
        self.return_pooled = always_return_pooled
        if layer == "hidden" and (layer_idx is None or abs(layer_idx) > 12):
            raise ValueError(f"layer_idx {layer_idx}")

    def freeze(self):
        self.transformer = self.transformer.eval()
        for param in self.parameters():
            param.requires_grad = False

    @autocast
    def forward(self, text):
        batch_encoding = self.tokenizer(text, truncation=True, max_length=self.max_length, return_length=True,
                                        return_overflowing_tokens=False, padding="max_length", return_tensors="pt")
        tokens = batch_encoding["input_ids"].to(self.device)
        outputs = self.transformer(input_ids=tokens, output_hidden_states=self.layer == "hidden")
        if self.layer == "last":
            z = outputs.last_hidden_state
        elif self.layer == "pooled":
            z = outputs.pooler_output[:, None, :]
        else:
            z = outputs.hidden_states[self.layer_idx]
        return (z, outputs.pooler_output) if self.return_pooled else z

    def encode(self, text):
        return self(text)


class FrozenOpenCLIPEmbedder2(AbstractEmbModel):
    """(sgm/modules/encoders/modules.py: FrozenOpenCLIPEmbedder2) OpenCLIP text tower; SDXL takes the
    penultimate layer and the pooled, projected end-of-text embedding."""

    LAYERS = ["pooled", "last", "penultimate"]

    def __init__(self, arch="ViT-H-14", version="laion2b_s32b_b79k", device="cuda", max_length=77, freeze=True,
                 layer="last", always_return_pooled=False, legacy=True):
        super().__init__()
        if layer not in self.LAYERS:
            raise ValueError(layer)
        model, _, _ = open_clip.create_model_and_transforms(arch, device=torch.device("cpu"), pretrained=version)
        del model.visual
        self.model = model
        self.device = device
        self.max_length = max_length
        self.return_pooled = always_return_pooled
        if freeze:
            self.freeze()
        self.layer = layer
        if self.layer == "last":
            self.layer_idx = 0
        elif self.layer == "penultimate":
            self.layer_idx = 1
        else:
            raise NotImplementedError()
        self.legacy = legacy

    def freeze(self):
        self.model = self.model.eval()
        for param in self.parameters():
            param.requires_grad = False

    @autocast
    def forward(self, text):
        tokens = open_clip.tokenize(text)
        z = self.encode_with_transformer(tokens.to(self.device))
        if not self.return_pooled and self.legacy:
            return z
        if self.return_pooled:
            if self.legacy:
                raise ValueError("always_return_pooled needs legacy False")
            return z[self.layer], z["pooled"]
        return z[self.layer]

    def encode_with_transformer(self, text):
        x = self.model.token_embedding(text)
        x = x + self.model.positional_embedding
        x = x.permute(1, 0, 2)   # NLD -> LND
        x = self.text_transformer_forward(x, attn_mask=self.model.attn_mask)
        if self.legacy:
            return self.model.ln_final(x[self.layer])
        o = self.model.ln_final(x["last"])
        x["pooled"] = self.pool(o, text)
        return x

    def pool(self, x, text):
        """The end-of-text token's features (the highest token id in each row), projected."""
        return x[torch.arange(x.shape[0]), text.argmax(dim=-1)] @ self.model.text_projection

    def text_transformer_forward(self, x: torch.Tensor, attn_mask=None):
        outputs = {}
        blocks = self.model.transformer.resblocks
        for i, r in enumerate(blocks):
            if i == len(blocks) - 1:
                outputs["penultimate"] = x.permute(1, 0, 2)   # LND -> NLD
            x = r(x, attn_mask=attn_mask)
        outputs["last"] = x.permute(1, 0, 2)
        return outputs

    def encode(self, text):
        return self(text)


class ConcatTimestepEmbedderND(AbstractEmbModel):
    """(sgm/modules/encoders/modules.py: ConcatTimestepEmbedderND) each of the d numbers of a row embedded
    sinusoidally with ``outdim`` channels, concatenated: (B, d) -> (B, d * outdim)."""

    def __init__(self, outdim):
        super().__init__()
        self.timestep = Timestep(outdim)
        self.outdim = outdim

    def forward(self, x):
        if x.ndim == 1:
            x = x[:, None]
        if len(x.shape) != 2:
            raise ValueError(f"expected (B, d), got {tuple(x.shape)}")
        b, dims = x.shape[0], x.shape[1]
        emb = self.timestep(rearrange(x, "b d -> (b d)"))
        return rearrange(emb, "(b d) d2 -> b (d d2)", b=b, d=dims, d2=self.outdim)
