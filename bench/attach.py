"""Benchmark of attach(): UNet forward time with a hypernetwork attached vs none, and cache on vs off.

Run by hand: ``PYTHONPATH=. .venv/bin/python bench/attach.py [--presets sd1-tiny sd1-mid] [--iters 7]``.
Prints medians, the ratios, and how many hypernetwork module calls one UNet forward makes.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from hypernet_ext import create
from hypernet_ext.attach import attach, attention_modules
from hypernet_ext.layers import HypernetworkModule
from hypernet_ext.standalone.tiny import tiny_unet

# 64x64 latents make sd1-mid's 4096-token self-attention take ~6 s a forward on 2 CPU cores: too slow here.
DEFAULT_LATENT = {"sd1-tiny": 32, "sd1-mid": 32}


def module_calls(unet, run, network, cache: bool) -> int:
    calls = [0]
    hooks = [m.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
             for m in network.modules() if isinstance(m, HypernetworkModule)]
    try:
        with attach(unet, network, cache=cache):
            run()
    finally:
        for hook in hooks:
            hook.remove()
    return calls[0]


def bench_preset(preset: str, latent: int, iters: int, warmup: int, device: str) -> None:
    unet = tiny_unet(preset).to(device)
    widths = sorted({w for _, _, w in attention_modules(unet)})
    network = create(sizes=widths, layer_structure=(1, 2, 1), seed=0).to(device)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, latent, latent, generator=gen).to(device)
    t = torch.tensor([100, 700], device=device)
    context = torch.randn(2, 77, 768, generator=gen).to(device)

    def run():
        unet(x, t, context=context)
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    modes = {"none": None, "cache on": True, "cache off": False}
    times = {name: [] for name in modes}
    with torch.no_grad():
        for i in range(warmup + iters):
            for name, cache in modes.items():  # interleaved, so drift in machine load hits all modes alike
                handle = attach(unet, network, cache=cache) if cache is not None else None
                start = time.perf_counter()
                run()
                elapsed = time.perf_counter() - start
                if handle is not None:
                    handle.remove()
                if i >= warmup:
                    times[name].append(elapsed)
        calls = {cache: module_calls(unet, run, network, cache) for cache in (True, False)}
    med = {name: statistics.median(values) for name, values in times.items()}
    targets = len(attention_modules(unet))
    print(f"\n{preset}: batch 2, latents {latent}x{latent}, context 2x77x768, fp32, {device}, "
          f"median of {iters} after {warmup} warmup; network 1-2-1 on widths {widths}, {targets} attention modules")
    for name in modes:
        print(f"  UNet forward, {name:<9} {med[name] * 1000:9.1f} ms")
    print(f"  ratio attached (cache on) / none:   {med['cache on'] / med['none']:.3f}x")
    print(f"  ratio attached (cache off) / none:  {med['cache off'] / med['none']:.3f}x")
    print(f"  ratio cache on / cache off:         {med['cache on'] / med['cache off']:.3f}x")
    print(f"  hypernetwork module calls per UNet forward: cache on {calls[True]}, cache off {calls[False]} "
          f"({calls[False] / calls[True]:.2f}x fewer with the cache)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=list(DEFAULT_LATENT))
    parser.add_argument("--latent", type=int, default=None, help="latent side; default per preset")
    parser.add_argument("--iters", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for preset in args.presets:
        bench_preset(preset, args.latent or DEFAULT_LATENT.get(preset, 32), args.iters, args.warmup, args.device)


if __name__ == "__main__":
    main()
