"""Benchmark of one training step: ours vs the floor (frozen UNet forward+backward w.r.t. its input) and vs a
step with UNet weight gradients on (what webui does), on the tiny and a mid-size ldm LatentDiffusion.

Run by hand: ``PYTHONPATH=. .venv/bin/python bench/train_step.py [--models tiny mid] [--batches 1 4]
[--latent 16] [--iters 7]``. On CUDA everything runs under fp16 autocast, as webui does; fp32 on CPU. Also
prints the parts of our step the floor lacks: prompt encoding and the AdamW update of the network.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from hypernet_ext import create
from hypernet_ext.attach import attach, attention_modules
from hypernet_ext.data import Batch
from hypernet_ext.optim import build_optimizer
from hypernet_ext.standalone.demo import build_tiny_ldm
from hypernet_ext.standalone.ldm_host import LdmHost
from hypernet_ext.training.recompute import enable_gradient_checkpointing
from hypernet_ext.training.step import StepRunner, autocast, resolve_precision

PRESETS = {"tiny": "sd1-tiny", "mid": "sd1-mid"}
PROMPTS = ["a red circle on a blue background", "a white square", "a yellow star", "a green triangle"]


def timed(fn, device, iters: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(iters):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def bench(model_name: str, batch: int, latent: int, iters: int, warmup: int, device: torch.device) -> dict:
    host = LdmHost(build_tiny_ldm(seed=0, preset=PRESETS[model_name])).to(device)
    host.freeze()
    unet = host.unet
    precision, dtype, _ = resolve_precision("auto", device)
    widths = sorted({w for _, _, w in attention_modules(unet)})
    network = create(sizes=widths, layer_structure=(1, 2, 1), seed=0).to(device)
    gen = torch.Generator().manual_seed(0)
    latents = torch.randn(batch, 4, latent, latent, generator=gen)
    prompts = (PROMPTS * batch)[:batch]
    x = latents.to(device)
    t = torch.randint(0, 1000, (batch,), generator=gen).to(device)
    with torch.no_grad(), autocast(device, dtype):
        cond = host.encode_prompts(prompts)

    def floor():   # frozen UNet, no network: forward and backward w.r.t. the input only
        xi = x.detach().requires_grad_(True)
        with autocast(device, dtype):
            out = host.predict(xi, t, cond)
        out.float().square().mean().backward()

    params = list(network.parameters())
    for p in params:
        p.requires_grad_(True)
    network.train()
    optimizer = build_optimizer(params, "AdamW", lr=1e-5)
    runner = StepRunner(host, params, optimizer, precision, dtype, 1, 0)
    data = Batch(index=0, epoch=0, latents=latents, prompts=prompts, weights=None, paths=[""] * batch,
                 flipped=[False] * batch)   # the trainer's own micro-batch type
    counter = iter(range(10 ** 9))

    def ours():
        runner.run(next(counter), [data], None)

    def webui_like():   # UNet weight gradients on, as webui leaves them; the optimizer still steps the network only
        with autocast(device, dtype):
            out = host.predict(x, t, host.encode_prompts(prompts))
        runner.scaler.scale(out.float().square().mean()).backward()
        runner.scaler.step(optimizer)
        runner.scaler.update()
        optimizer.zero_grad(set_to_none=True)
        unet.zero_grad(set_to_none=True)

    def encode():
        with torch.no_grad(), autocast(device, dtype):
            host.encode_prompts(prompts)

    def optimizer_step():   # AdamW over the network, gradients already there
        for p in params:
            p.grad = torch.zeros_like(p)
        optimizer.step()

    result = {"floor": timed(floor, device, iters, warmup), "encode": timed(encode, device, iters, warmup),
              "opt": timed(optimizer_step, device, iters, warmup)}
    optimizer.zero_grad(set_to_none=True)
    with attach(unet, network):
        result["ours"] = timed(ours, device, iters, warmup)
        for p in unet.parameters():
            p.requires_grad_(True)
        result["webui"] = timed(webui_like, device, iters, warmup)
        host.freeze()
    with attach(unet, network, cache=False), enable_gradient_checkpointing(unet):
        result["ours+gc"] = timed(ours, device, iters, warmup)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models", nargs="+", default=["tiny", "mid"], choices=sorted(PRESETS))
    parser.add_argument("--batches", nargs="+", type=int, default=[1, 4])
    parser.add_argument("--latent", type=int, default=None, help="latent side (default 16 on CPU, 64 on CUDA)")
    parser.add_argument("--iters", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    latent = args.latent or (64 if device.type == "cuda" else 16)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {name}; latent {latent}x{latent}; medians of {args.iters} steps; torch {torch.__version__}")
    print(f"{'model':6s} {'batch':>5s} {'floor ms':>9s} {'webui ms':>9s} {'ours ms':>8s} {'ours+gc ms':>10s} "
          f"{'ours/floor':>10s} {'ours/webui':>10s} {'gc/ours':>8s} {'encode ms':>9s} {'adamw ms':>8s}")
    for model_name in args.models:
        for batch in args.batches:
            r = bench(model_name, batch, latent, args.iters, args.warmup, device)
            print(f"{model_name:6s} {batch:5d} {r['floor'] * 1e3:9.1f} {r['webui'] * 1e3:9.1f} {r['ours'] * 1e3:8.1f} "
                  f"{r['ours+gc'] * 1e3:10.1f} {r['ours'] / r['floor']:10.2f} {r['ours'] / r['webui']:10.2f} "
                  f"{r['ours+gc'] / r['ours']:8.2f} {r['encode'] * 1e3:9.1f} {r['opt'] * 1e3:8.1f}", flush=True)


if __name__ == "__main__":
    main()
