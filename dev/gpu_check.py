"""The CUDA paths, checked by hand on a machine with a GPU (CI has none): training under fp16 and bf16 autocast
(with the gradient scaler) and in fp32, exact resume on the GPU, files that load back, attachment to an fp16 model
under autocast and with torch's scaled_dot_product_attention in place of ldm's einsum attention (what webui's
"sdp" optimization does), and the train-step benchmark (bench/train_step.py) on the GPU.

    PYTHONPATH=. python dev/gpu_check.py [--out DIR] [--skip-bench]

Prints one ``CHECK`` line per check (PASS or FAIL and the numbers) and exits 1 when any failed. Where the
machine's ``transformers`` cannot build ldm's CLIP text encoder, prompts are embedded by ``HashEmbedder`` (a fixed
random context per prompt): the text encoder is frozen and outside what runs on the GPU here.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import logging
import sys
import tempfile
import types
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hypernet_ext import create, formats  # noqa: E402
from hypernet_ext.attach import attach  # noqa: E402
from hypernet_ext.host import Callbacks  # noqa: E402

logger = logging.getLogger("gpu_check")
failures = []


def check(ok: bool, text: str) -> None:
    print(f"CHECK {'PASS' if ok else 'FAIL'} {text}", flush=True)
    if not ok:
        failures.append(text)


class HashEmbedder(nn.Module):
    """A frozen text encoder's stand-in: each prompt gets a fixed random (77, 768) context drawn from its hash."""

    def __init__(self, **_):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(1), requires_grad=False)   # follows .to(device)

    def encode(self, prompts):
        rows = []
        for text in prompts:
            seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
            rows.append(torch.randn(77, 768, generator=torch.Generator().manual_seed(seed)))
        return torch.stack(rows).to(self.anchor.device)

    forward = encode


def prepare_ldm_imports(force_stand_in: bool = False) -> str:
    """ldm imports open_clip at module level; SD1's CLIP path never uses it, so an empty module stands in where it
    is missing. Returns how prompts are encoded."""
    try:
        import open_clip  # noqa: F401
    except ImportError:
        sys.modules["open_clip"] = types.ModuleType("open_clip")
    try:   # ldm's ddpm imports rank_zero_only from where pytorch_lightning 1.x kept it
        import pytorch_lightning.utilities.distributed  # noqa: F401
    except ImportError:
        from pytorch_lightning.utilities.rank_zero import rank_zero_only

        moved = types.ModuleType("pytorch_lightning.utilities.distributed")
        moved.rank_zero_only = rank_zero_only
        sys.modules[moved.__name__] = moved
    from hypernet_ext.standalone import demo

    try:
        if not force_stand_in:
            demo.build_tiny_ldm(seed=0)
            return "ldm's FrozenCLIPEmbedder (tiny CLIP)"
    except Exception as error:   # noqa: BLE001 - any failure of this machine's transformers: use the stand-in
        logger.warning("tiny CLIP unavailable here (%s: %s); prompts go through HashEmbedder", type(error).__name__,
                       str(error)[:200])
    original = demo.tiny_ldm_config

    def config_with_hash_embedder(clip_dir, parameterization="eps", preset="sd1-tiny"):
        config = original(clip_dir, parameterization, preset)
        config["params"]["cond_stage_config"] = {"target": "__main__.HashEmbedder", "params": {}}
        return config

    demo.tiny_ldm_config = config_with_hash_embedder
    demo.tiny_clip_dir = lambda root=None: "unused"
    return "HashEmbedder"


class StopAt(Callbacks):
    def __init__(self, stop_at=None):
        self.stop_at, self.step, self.losses = stop_at, 0, []

    def on_progress(self, step, total, loss, lr, eta_s):
        self.step = step
        if loss is not None:
            self.losses.append(float(loss))

    def should_stop(self):
        return self.stop_at is not None and self.step >= self.stop_at


def train_checks(out: Path, device) -> None:
    from hypernet_ext.data import DataConfig, prepare_dataset
    from hypernet_ext.standalone.demo import build_tiny_ldm, make_shapes_dataset
    from hypernet_ext.standalone.ldm_host import LdmHost
    from hypernet_ext.training import TrainConfig, Trainer
    from hypernet_ext.training.prompts import cache_conditioning

    host = LdmHost(build_tiny_ldm(seed=0)).to(device)
    host.freeze()
    folder = make_shapes_dataset(out / "shapes", count=6, seed=0, sizes=[(64, 64)])
    data = DataConfig(data_dir=str(folder), template="captions_only", resize="fixed", width=64, height=64,
                      batch_size=2, flip=0.5, seed=0)
    dataset = prepare_dataset(data, host.encode_images, host.scale_factor, model_id="tiny-gpu")
    cached, _ = cache_conditioning(host, dataset)

    def net():
        return create(name="hn", sizes=(32, 64, 768), layer_structure=(1, 2, 1), activation="relu", seed=0)

    for precision in (("fp16", "bf16", "no") if device.type == "cuda" else ("bf16", "no")):
        config = TrainConfig(name="hn", out_dir=str(out / precision / "a"), steps=8, save_every=0, tensorboard=False,
                             mixed_precision=precision, schedule={"learn_rate": "2e-3"})
        first = StopAt(stop_at=4)
        Trainer(cached, net(), dataset, config, first).train()
        path = out / precision / "a" / "hn.pt"
        resumed_net = formats.load(path)
        check(resumed_net.step == 4, f"{precision}: interrupted run saved step {resumed_net.step} (expected 4)")
        second = StopAt()
        Trainer(cached, resumed_net, dataset, config, second).train(resume_from=path)
        straight = StopAt()
        straight_net = net()
        Trainer(cached, straight_net, dataset, config.replace(out_dir=str(out / precision / "b")), straight).train()
        resumed = formats.load(path)
        diff = max((a.float().cpu() - b.float().cpu()).abs().max().item()
                   for a, b in zip(resumed.state_dict().values(), straight_net.state_dict().values()))
        losses = first.losses + second.losses
        finite = all(torch.isfinite(torch.tensor(losses)).tolist()) and len(losses) == 8
        check(finite, f"{precision}: 8 finite losses on {device} (first {losses[:1]}, last {losses[-1:]})")
        check(resumed.step == 8 and diff <= 1e-6,
              f"{precision}: resume at 4 then to 8 equals a straight run (max |difference| {diff:.3g})")
        moved = max((a.float().cpu() - b.float().cpu()).abs().max().item()
                    for a, b in zip(straight_net.state_dict().values(), net().state_dict().values()))
        check(moved > 0, f"{precision}: the network trained (max weight change {moved:.3g})")


def sdp_forward(self, x, context=None, mask=None, **kwargs):
    """ldm's CrossAttention through torch's scaled_dot_product_attention (webui's "sdp" optimization)."""
    h = self.heads
    context = x if context is None else context
    q, k, v = self.to_q(x), self.to_k(context), self.to_v(context)
    b, n, _ = q.shape
    q, k, v = (t.reshape(b, t.shape[1], h, -1).transpose(1, 2) for t in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v)
    return self.to_out(out.transpose(1, 2).reshape(b, n, -1))


def inference_checks(device) -> None:
    from ldm.modules.attention import CrossAttention

    from hypernet_ext.standalone.demo import build_tiny_ldm

    network = create(name="hn", sizes=(32, 64, 768), layer_structure=(1, 2, 1), activation="relu", seed=1,
                     weight_init="Normal").to(device)
    gen = torch.Generator().manual_seed(0)
    x, context = torch.randn(2, 4, 32, 32, generator=gen), torch.randn(2, 77, 768, generator=gen)
    t = torch.tensor([10, 500], device=device)
    dtypes = (torch.float16, torch.bfloat16) if device.type == "cuda" else (torch.float32,)
    original = CrossAttention.forward
    for dtype in dtypes:
        unet = build_tiny_ldm(seed=0).model.diffusion_model.to(device, dtype)   # webui's half model
        for label in ("ldm einsum", "sdp"):
            CrossAttention.forward = sdp_forward if label == "sdp" else original
            try:
                cast = torch.autocast(device.type, dtype=dtype) if dtype != torch.float32 else contextlib.nullcontext()
                with torch.no_grad(), cast:
                    xs, cs = x.to(device, dtype), context.to(device, dtype)
                    plain = unet(xs, t, context=cs)
                    with attach(unet, [(network, 1.0)]):
                        changed = unet(xs, t, context=cs)
                    with attach(unet, [(network, 0.0)]):
                        zero = unet(xs, t, context=cs)
            finally:
                CrossAttention.forward = original
            check(bool(torch.isfinite(changed).all()) and not torch.equal(plain, changed) and torch.equal(plain, zero),
                  f"inference, {dtype} model under autocast, {label} attention: the network changes the output "
                  f"(max {(changed - plain).abs().max().item():.3g}); strength 0 leaves it exactly as it was")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", default=None)
    parser.add_argument("--skip-bench", action="store_true")
    parser.add_argument("--hash-embedder", action="store_true", help="prompts through HashEmbedder even where "
                        "the tiny CLIP can be built")
    parser.add_argument("--device", default="cuda", help="cpu: a dry run of the checks (bf16 only, no bench)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("no CUDA device here: nothing to check")
        return 2
    if device.type == "cuda":
        torch.use_deterministic_algorithms(True, warn_only=True)   # resume compares bit for bit where kernels allow
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else "CPU"
    print(f"torch {torch.__version__}, {name}; prompts through {prepare_ldm_imports(args.hash_embedder)}", flush=True)
    out = Path(args.out or tempfile.mkdtemp(prefix="gpu_check."))
    for name, fn in (("training", lambda: train_checks(out, device)), ("inference", lambda: inference_checks(device))):
        try:
            fn()
        except Exception as error:   # noqa: BLE001 - report and go on to the next group of checks
            logger.exception("%s checks failed", name)
            check(False, f"{name}: {type(error).__name__}: {error}")
    if not args.skip_bench and device.type == "cuda":
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))
        import train_step

        torch.cuda.reset_peak_memory_stats()
        sys.argv = ["train_step.py", "--device", "cuda", "--models", "tiny", "mid", "--batches", "1", "4",
                    "--latent", "64", "--iters", "10"]
        train_step.main()
        print(f"peak CUDA memory over the benchmark: {torch.cuda.max_memory_allocated() / 2 ** 20:.0f} MiB")
    print("ALL PASSED" if not failures else f"{len(failures)} FAILED")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
