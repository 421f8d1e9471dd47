"""Peak memory and seconds per training step of a hypernetwork on SDXL's UNet (sd_xl_base's layout, random weights:
speed and memory do not depend on the values), batch 1, at a given image size, as hypernet_ext trains inside webui:
frozen fp16 UNet, the network in fp32 under fp16 autocast with a gradient scaler, AdamW, conditioning cached
(random ``crossattn`` (1, 77, 2048) and ``vector`` (1, 2816): the text encoders and VAE have left the device),
webui's "sdp" attention (torch's scaled_dot_product_attention), ldm/sgm's own checkpointing off; with and without
our gradient checkpointing (with it, the cross-attention cache is off, as in the trainer). Run by hand:

    PYTHONPATH=.:tests/sgm_stub python bench/sdxl_step.py [--size 1024] [--steps 10] [--tiny --device cpu]

Prints one JSON line per setting. ``--tiny`` shrinks the UNet (a smoke run on a CPU).
"""
import argparse
import json
import math
import sys
import time
import types
from pathlib import Path

import torch
import torch.nn.functional as F

STUB = Path(__file__).resolve().parent.parent / "tests" / "sgm_stub"


def build_unet(tiny: bool, device, dtype):
    """sd_xl_base's UNet (sgm's openaimodel.UNetModel, through the stand-in of tests/sgm_stub: ldm's classes)."""
    if str(STUB) not in sys.path:
        sys.path.insert(0, str(STUB))
    package = types.ModuleType("sgm.modules")   # its __init__ builds the text encoders' imports: not needed here
    package.__path__ = [str(STUB / "sgm" / "modules")]
    sys.modules.setdefault("sgm.modules", package)
    from sgm.modules.attention import CrossAttention
    from sgm.modules.diffusionmodules.openaimodel import UNetModel

    from dev.gpu_check import sdp_forward  # webui's "sdp" attention
    from hypernet_ext.standalone.model_configs import CONFIGS
    from hypernet_ext.standalone.tiny import rerandomize_zero_init

    params = dict(CONFIGS["sd_xl_base"]()["model"]["params"]["network_config"]["params"])
    if tiny:
        params.update(model_channels=32, transformer_depth=[1, 1, 2], num_head_channels=16)
    CrossAttention.forward = sdp_forward
    with torch.device(device):
        unet = UNetModel(**params)
    rerandomize_zero_init(unet)   # zero-initialised output layers would give the network no gradient
    return unet.to(dtype).requires_grad_(False).eval(), params


def run(unet, params, args, device, checkpointing: bool) -> dict:
    from hypernet_ext import create
    from hypernet_ext.attach import attach
    from hypernet_ext.training.recompute import disable_builtin_checkpointing, enable_gradient_checkpointing
    from hypernet_ext.webui.generation import model_widths

    widths = model_widths(unet)
    network = create(sizes=widths, layer_structure=(1, 2, 1), activation="relu", seed=0).to(device)
    network.train()
    optimizer = torch.optim.AdamW(network.parameters(), lr=1e-5)
    cuda = device.type == "cuda"
    scaler = torch.cuda.amp.GradScaler(enabled=cuda)
    side = args.size // 8
    gen = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(1, 4, side, side, generator=gen).to(device)
    context = torch.randn(1, 77, params["context_dim"], generator=gen).to(device)
    vector = torch.randn(1, params["adm_in_channels"], generator=gen).to(device)
    times = []
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated() if cuda else 0
    with disable_builtin_checkpointing(unet), attach(unet, [(network, 1.0)], cache=not checkpointing):
        recompute = enable_gradient_checkpointing(unet) if checkpointing else None
        for step in range(args.warmup + args.steps):
            start = time.perf_counter()
            noise = torch.randn_like(x)
            t = torch.randint(0, 1000, (1,), device=device)
            with torch.autocast(device.type, dtype=torch.float16 if cuda else torch.bfloat16, enabled=cuda):
                out = unet(x + noise, t, context=context, y=vector)
            loss = F.mse_loss(out.float(), noise)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            if cuda:
                torch.cuda.synchronize()
            if step >= args.warmup:
                times.append(time.perf_counter() - start)
        if recompute is not None:
            recompute.remove()
    assert math.isfinite(loss.item())
    peak = torch.cuda.max_memory_allocated() if cuda else 0
    return {"size": args.size, "checkpointing": checkpointing, "s_per_step_median": sorted(times)[len(times) // 2],
            "s_per_step_min": min(times), "peak_GiB": round(peak / 2**30, 2),
            "before_run_GiB": round(base / 2**30, 2), "network_params": sum(p.numel() for p in network.parameters()),
            "widths": widths}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true")
    args = parser.parse_args()
    device = torch.device(args.device)
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    unet, params = build_unet(args.tiny, device, dtype)
    weights = sum(p.numel() * p.element_size() for p in unet.parameters())
    print(json.dumps({"torch": torch.__version__, "device": torch.cuda.get_device_name() if device.type == "cuda"
                      else "cpu", "unet_params": sum(p.numel() for p in unet.parameters()),
                      "unet_weights_GiB": round(weights / 2**30, 2)}), flush=True)
    for checkpointing in (False, True):
        print(json.dumps(run(unet, params, args, device, checkpointing)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
