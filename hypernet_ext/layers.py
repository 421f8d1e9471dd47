"""The residual MLP that transforms one attention context, and its activation and init registries.

Two layouts: webui's plain one (``x + f(x) * strength``, module keys ``linear.N.*`` exactly as webui builds
them) and the peer extension's residual-block one (``skip_connection``: keys ``linear.N.linear.M.*``).
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch import nn

# webui's names: its seven, then every torch activation class by lower-cased name ('swish' stays Hardswish).
_WEBUI_BASE = {
    "linear": nn.Identity, "relu": nn.ReLU, "leakyrelu": nn.LeakyReLU, "elu": nn.ELU,
    "swish": nn.Hardswish, "tanh": nn.Tanh, "sigmoid": nn.Sigmoid,
}
_TORCH_NAMES = ("RReLU", "Hardtanh", "ReLU6", "Hardsigmoid", "SiLU", "Mish", "Hardswish", "CELU", "SELU",
                "GELU", "Hardshrink", "LogSigmoid", "Softplus", "Softshrink", "PReLU", "Softsign", "Tanhshrink",
                "Softmin", "Softmax", "Softmax2d", "LogSoftmax")
# Loadable: what webui can build and run. Softmax and friends normalise over the batch dimension (implicit
# dim on 3-D input), so they load for compatibility but are not offered for new networks.
ACTIVATIONS = dict(_WEBUI_BASE)
ACTIVATIONS.update({n.lower(): getattr(nn, n) for n in _TORCH_NAMES if hasattr(nn, n) and n.lower() not in ACTIVATIONS})
_NOT_CREATABLE = {"softmin", "softmax", "softmax2d", "logsoftmax"}
CREATABLE_ACTIVATIONS = frozenset(ACTIVATIONS) - _NOT_CREATABLE
# Listed by webui but unusable: Threshold and MultiheadAttention need arguments, GLU halves the width.
REFUSED_ACTIVATIONS = frozenset({"threshold", "glu", "multiheadattention"})

WEIGHT_INITS = ("Normal", "XavierUniform", "XavierNormal", "KaimingUniform", "KaimingNormal")
UPSAMPLE_MODES = (None, "Linear")


def init_linear(layer: nn.Linear, weight_init: str, std: float, activation: str, gen: torch.Generator) -> None:
    """Initialise one Linear like webui does, drawing from ``gen`` only (no global RNG)."""
    w = layer.weight.data
    fan_out, fan_in = w.shape
    with torch.no_grad():
        if weight_init == "Normal":
            w.normal_(0.0, std, generator=gen)
        elif weight_init in ("XavierUniform", "XavierNormal"):
            if weight_init == "XavierUniform":
                bound = math.sqrt(6.0 / (fan_in + fan_out))
                w.uniform_(-bound, bound, generator=gen)
            else:
                w.normal_(0.0, math.sqrt(2.0 / (fan_in + fan_out)), generator=gen)
        elif weight_init in ("KaimingUniform", "KaimingNormal"):
            # webui passes nonlinearity 'leaky_relu' (slope 0) or 'relu': both give gain sqrt(2).
            k_std = math.sqrt(2.0) / math.sqrt(fan_in)
            if weight_init == "KaimingUniform":
                w.uniform_(-math.sqrt(3.0) * k_std, math.sqrt(3.0) * k_std, generator=gen)
            else:
                w.normal_(0.0, k_std, generator=gen)
        else:
            raise ValueError(f"unknown weight_init {weight_init!r}")
        if layer.bias is not None:
            layer.bias.data.zero_()


def _activation(name: str) -> Optional[nn.Module]:
    if name in ("linear", None):
        return None
    return ACTIVATIONS[name]()


def _plain_layers(dim: int, structure: Sequence[float], activation: str, add_layer_norm: bool,
                  dropout: Sequence[float], activate_output: bool) -> list:
    """webui's exact order: Linear, activation (not after the last unless activate_output), LayerNorm, Dropout."""
    layers = []
    n = len(structure)
    for i in range(n - 1):
        width_out = int(dim * structure[i + 1])
        layers.append(nn.Linear(int(dim * structure[i]), width_out))
        if not (i >= n - 2 and not activate_output):
            act = _activation(activation)
            if act is not None:
                layers.append(act)
        if add_layer_norm:
            layers.append(nn.LayerNorm(width_out))
        if dropout[i + 1] > 0:
            layers.append(nn.Dropout(p=dropout[i + 1]))
    return layers


class ResBlock(nn.Module):
    """One residual block of the peer's skip-connection layout: ``up(x) + seq(x)``."""

    def __init__(self, n_in: int, n_out: int, activation: str, add_layer_norm: bool, dropout_p: float,
                 upsample: Optional[str]):
        super().__init__()
        self.n_out = n_out
        self.upsample_layer = nn.Linear(n_in, n_out, bias=False) if upsample == "Linear" else None
        seq = [nn.Linear(n_in, n_out)]
        if add_layer_norm:
            seq.append(nn.LayerNorm(n_out))
        if dropout_p > 0:
            seq.append(nn.Dropout(p=dropout_p))
        act = _activation(activation)
        if act is not None:
            seq.append(act)
        self.linear = nn.Sequential(*seq)

    def forward(self, x):
        if self.upsample_layer is not None:
            up = self.upsample_layer(x)
        elif x.shape[-1] == self.n_out:
            up = x
        else:
            up = nn.functional.interpolate(x, size=self.n_out, mode="nearest-exact")
        return up + self.linear(x)


class HypernetworkModule(nn.Module):
    """Transforms a context of width ``dim``: ``x + f(x) * strength``."""

    def __init__(self, dim: int, config, generator: Optional[torch.Generator] = None):
        super().__init__()
        self.dim = dim
        self.skip_connection = config.skip_connection
        ls, ds = config.layer_structure, config.dropout_structure
        if self.skip_connection:
            blocks = [ResBlock(int(dim * ls[i]), int(dim * ls[i + 1]), config.activation, config.add_layer_norm,
                               ds[i + 1], config.upsample) for i in range(len(ls) - 1)]
            self.linear = nn.Sequential(*blocks)
        else:
            self.linear = nn.Sequential(*_plain_layers(dim, ls, config.activation, config.add_layer_norm, ds,
                                                       config.activate_output))
        if generator is not None:
            self.reset_parameters(config, generator)

    def reset_parameters(self, config, gen: torch.Generator) -> None:
        for layer in self.modules():
            if isinstance(layer, nn.Linear):
                if layer.bias is None:  # a residual block's linear up-projection starts as a plain projection
                    init_linear(layer, "XavierUniform", config.normal_std, config.activation, gen)
                else:
                    init_linear(layer, config.weight_init, config.normal_std, config.activation, gen)
            elif isinstance(layer, nn.LayerNorm):
                # webui draws LayerNorm weights from N(0, 0.01): that starts every output near zero.
                nn.init.ones_(layer.weight)
                nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor, strength: float = 1.0) -> torch.Tensor:
        if self.skip_connection:
            return x + (self.linear(x) - x) * strength
        return x + self.linear(x) * strength
