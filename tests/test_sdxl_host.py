"""SDXL through sgm's DiffusionEngine (the stand-in of tests/sgm_stub: real ldm UNet blocks and attention, real
CLIP and OpenCLIP text towers): the host follows the protocol, each image's size conditioning is what sgm's
conditioner gives for it, networks attach at the model's widths with the cross-attention cache, a run trains only
the network and resumes exactly, the trained network changes what the model predicts, gradient checkpointing
recomputes sgm's blocks with the same gradients, and the text encoders run once per prompt."""
import pytest
import torch

from hypernet_ext import create
from hypernet_ext.attach import attach
from hypernet_ext.data import prepare_dataset
from hypernet_ext.data.buckets import SizeCond, size_conditioning
from hypernet_ext.host import Callbacks, HostModel
from hypernet_ext.sdxl import size_inputs
from hypernet_ext.training import TrainConfig, Trainer
from hypernet_ext.training.prompts import CachedConditioning, conditioning, dataset_prompts
from hypernet_ext.training.recompute import disable_builtin_checkpointing, enable_gradient_checkpointing
from hypernet_ext.webui.generation import model_widths

pytest.importorskip("ldm")
from conftest import small_data_config  # noqa: E402
from sgm_env import WIDTHS  # noqa: E402

PROMPTS = ["a red circle on a blue background", "a yellow square"]


@pytest.fixture(scope="module")
def sdxl_dataset(tiny_sdxl, shapes_dir):
    from hypernet_ext.standalone.sgm_host import SgmHost

    host = SgmHost(tiny_sdxl)
    return prepare_dataset(small_data_config(shapes_dir), host.encode_images, host.scale_factor, model_id="sdxl")


def network(seed=0, **fields):
    fields = dict(dict(sizes=WIDTHS, layer_structure=(1, 0.5, 1), activation="relu", seed=seed), **fields)
    return create(name="hn", **fields)


def test_the_sgm_host_follows_the_protocol(sdxl_host, tiny_sdxl):
    from sgm.modules.diffusionmodules.discretizer import LegacyDDPMDiscretization

    assert isinstance(sdxl_host, HostModel)
    assert sdxl_host.parameterization == "eps" and sdxl_host.scale_factor == pytest.approx(0.13025)
    torch.testing.assert_close(sdxl_host.alphas_cumprod,
                               torch.tensor(LegacyDDPMDiscretization().alphas_cumprod, dtype=torch.float32))
    assert sdxl_host.encode_images(torch.rand(2, 3, 32, 64) * 2 - 1).shape == (2, 8, 4, 8)
    cond = sdxl_host.encode_prompts(PROMPTS)
    assert cond["crossattn"].shape == (2, 77, 80) and cond["vector"].shape == (2, 128)
    assert sdxl_host.predict(torch.randn(2, 4, 4, 8), torch.tensor([1, 999]), cond).shape == (2, 4, 4, 8)
    assert sdxl_host.attention_root() is tiny_sdxl.model.diffusion_model
    assert sdxl_host.decode_latents(torch.randn(1, 4, 4, 4)).shape == (1, 3, 32, 32)
    assert model_widths(sdxl_host.unet) == WIDTHS


def test_noise_and_timesteps_are_those_of_sgms_denoiser(sdxl_host, tiny_sdxl):
    """The trainer's x_t = sqrt(a_t) x0 + sqrt(1 - a_t) eps and predict at timestep t (webui's apply_model) give
    the noise sgm's DiscreteDenoiser finds in x0 + sigma_t eps: the two conventions agree step for step."""
    from hypernet_ext.training.step import add_noise

    cond = sdxl_host.encode_prompts(PROMPTS)
    x0, eps, t = torch.randn(2, 4, 4, 4), torch.randn(2, 4, 4, 4), torch.tensor([20, 700])
    sigma = tiny_sdxl.denoiser.sigmas[t]
    with torch.no_grad():
        noisy = x0 + sigma[:, None, None, None] * eps
        denoised = tiny_sdxl.denoiser(tiny_sdxl.model, noisy, sigma, cond)
        ours = sdxl_host.predict(add_noise(x0, eps, sdxl_host.alphas_cumprod, t), t, cond)
    torch.testing.assert_close(ours, (noisy - denoised) / sigma[:, None, None, None], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("index", [0, 1])
def test_the_size_conditioning_is_what_sgms_conditioner_gives_for_each_image(sdxl_host, tiny_sdxl, index):
    sizes = [SizeCond((1000, 700), (12, 0), (448, 576)), SizeCond((64, 64), (0, 0), (64, 64))]
    sizes = sizes[index:] + sizes[:index]
    cached = sdxl_host.encode_prompts(PROMPTS)
    spliced = sdxl_host.size_conditioning(cached, sizes)
    direct = tiny_sdxl.conditioner({"txt": PROMPTS, **size_inputs(sizes)})
    assert torch.equal(spliced["vector"], direct["vector"]) and torch.equal(spliced["crossattn"], direct["crossattn"])
    assert torch.equal(spliced["vector"][:, :32], cached["vector"][:, :32])        # the pooled text part is kept
    assert not torch.equal(spliced["vector"][:, 32:], cached["vector"][:, 32:])
    assert conditioning(sdxl_host, PROMPTS, sizes)["vector"].equal(direct["vector"])


@pytest.mark.parametrize("mode, size, flipped, expected", [
    ("bucket-crop", (1001, 700), False, SizeCond((700, 1001), (0, 32), (448, 576))),
    ("bucket-crop", (1001, 700), True, SizeCond((700, 1001), (0, 33), (448, 576))),   # mirrored with the pixels
    ("bucket-crop", (600, 1000), False, SizeCond((1000, 600), (85, 0), (576, 448))),
    ("bucket", (1001, 700), True, SizeCond((700, 1001), (0, 0), (448, 576))),          # padded: nothing cut off
    ("fixed", (1001, 700), False, SizeCond((700, 1001), (0, 0), (448, 576))),          # stretched
])
def test_size_conditioning_follows_the_resize_mode(mode, size, flipped, expected):
    bucket = (448, 576) if size[1] > size[0] else (576, 448)
    assert size_conditioning(size, bucket, mode, flipped) == expected


def test_batches_carry_each_images_size_conditioning(tmp_path):
    from PIL import Image

    for name, size in (("wide", (100, 60)), ("tall", (60, 100))):
        Image.new("RGB", size, "red").save(tmp_path / f"{name}.png")
    config = small_data_config(tmp_path, resize="bucket-crop", bucket_pixels=64 * 64, min_side=32, max_side=128,
                               divisor=16, batch_size=1, flip=1.0)
    dataset = prepare_dataset(config, lambda px: torch.zeros(len(px), 8, px.shape[2] // 8, px.shape[3] // 8), 1.0)
    for index in range(4):
        batch = dataset.micro_batch(index)
        sample = next(s for s in dataset.samples if s.path == batch.paths[0])
        width, height = (100, 60) if "wide" in batch.paths[0] else (60, 100)
        assert batch.sizes == [size_conditioning((width, height), sample.bucket, "bucket-crop", batch.flipped[0])]
        assert batch.sizes[0].target == (sample.bucket[1], sample.bucket[0]) and batch.flipped[0]


def test_networks_attach_at_the_models_widths_with_the_cache(sdxl_host):
    cond = sdxl_host.encode_prompts(PROMPTS)
    x, t = torch.randn(2, 4, 4, 4), torch.tensor([10, 500])
    net = network()
    outs, stats = {}, {}
    for cache in (True, False):
        with torch.no_grad(), attach(sdxl_host.unet, net, cache=cache) as handle:
            outs[cache] = sdxl_host.predict(x, t, cond)
            stats[cache] = handle.stats
    assert torch.equal(outs[True], outs[False])
    assert stats[True]["computed"] < stats[False]["computed"]
    assert stats[True]["reused"] > 0   # one context tensor, transformed once for every cross-attention layer


class Stopper(Callbacks):
    def __init__(self, at=None):
        self.at, self.step = at, 0

    def on_progress(self, step, total, loss, lr, eta_s):
        self.step = step

    def should_stop(self):
        return self.at is not None and self.step >= self.at


def run(host, dataset, out, net, steps=4, stop_at=None, resume_from=None, **fields):
    config = TrainConfig(name="hn", out_dir=str(out), steps=steps, save_every=2, tensorboard=False, seed=1,
                         schedule={"learn_rate": "5e-3:2, 1e-3:-1"}, **fields)
    return Trainer(host, net, dataset, config, Stopper(stop_at)).train(resume_from=resume_from)


def test_training_changes_only_the_network_and_resumes_exactly(sdxl_host, tiny_sdxl, sdxl_dataset, tmp_path):
    from hypernet_ext import formats

    base = {k: v.clone() for k, v in tiny_sdxl.state_dict().items()}
    straight, start = network(use_dropout=True, dropout_structure=(0, 0.1, 0)), network().state_dict()
    result = run(sdxl_host, sdxl_dataset, tmp_path / "a", straight)
    assert result.step == 4 and {p.name for p in (tmp_path / "a").glob("*.pt")} == {"hn-2.pt", "hn-4.pt", "hn.pt"}
    assert all(torch.equal(v, base[k]) for k, v in tiny_sdxl.state_dict().items())
    assert any(not torch.equal(v, start[k]) for k, v in straight.state_dict().items())
    run(sdxl_host, sdxl_dataset, tmp_path / "b", network(use_dropout=True, dropout_structure=(0, 0.1, 0)), stop_at=2)
    path = tmp_path / "b" / "hn.pt"
    resumed = formats.load(path)
    assert resumed.step == 2
    run(sdxl_host, sdxl_dataset, tmp_path / "b", resumed, resume_from=path)
    for key, value in formats.load(path).state_dict().items():
        torch.testing.assert_close(value, straight.state_dict()[key], rtol=0, atol=1e-7, msg=key)


def test_the_trained_network_changes_the_prediction_and_removal_restores_it(sdxl_host, sdxl_dataset, tmp_path):
    from hypernet_ext.training.preview import ddim_sample

    net = network()
    run(sdxl_host, sdxl_dataset, tmp_path, net, steps=3)
    cond = sdxl_host.encode_prompts(PROMPTS)
    x, t = torch.randn(2, 4, 4, 4), torch.tensor([10, 500])
    with torch.no_grad():
        base = sdxl_host.predict(x, t, cond)
        with attach(sdxl_host.unet, [(net, 1.0)]) as handle:
            applied = sdxl_host.predict(x, t, cond)
            handle.set_strengths([0.0])
            identity = sdxl_host.predict(x, t, cond)
            handle.set_strengths([1.0])
            sample = ddim_sample(sdxl_host, PROMPTS, (4, 4), steps=3)
        assert torch.equal(sdxl_host.predict(x, t, cond), base)
        plain = ddim_sample(sdxl_host, PROMPTS, (4, 4), steps=3)
    assert not torch.allclose(applied, base) and torch.equal(identity, base)
    assert not torch.allclose(sample, plain)


def test_gradient_checkpointing_on_sgm_blocks_gives_the_same_gradients(sdxl_host, tiny_sdxl):
    """The tiny config has use_checkpoint: True, as SDXL's yaml: with sgm's own checkpointing the network gets no
    gradient; the trainer turns it off and its own recomputation (non-reentrant) gives the same gradients."""
    root = sdxl_host.unet
    assert any(m.__dict__.get("checkpoint") is True for m in root.modules())
    cond = sdxl_host.encode_prompts(PROMPTS)
    x, t = torch.randn(2, 4, 4, 4), torch.tensor([10, 500])
    sdxl_host.freeze()

    def grads(recompute):
        net = network()
        with attach(root, net, cache=not recompute):
            handles = [disable_builtin_checkpointing(root)]
            if recompute:
                handles.append(enable_gradient_checkpointing(root))
                assert handles[-1].blocks > 0
            sdxl_host.predict(x, t, cond).square().mean().backward()
            for handle in handles:
                handle.remove()
        return [p.grad for p in net.parameters()]

    plain, recomputed = grads(False), grads(True)
    assert all(g is not None for g in plain) and any(g.abs().sum() > 0 for g in plain)
    for a, b in zip(plain, recomputed):
        torch.testing.assert_close(a, b)
    with attach(root, network()):   # sgm's CheckpointFunction: no gradient path from the output to the network
        assert not sdxl_host.predict(x, t, cond).requires_grad
    assert any(m.__dict__.get("checkpoint") is True for m in root.modules())   # the flags are back


def test_the_text_encoders_run_once_per_prompt_and_can_then_go(sdxl_host, tiny_sdxl, sdxl_dataset, tmp_path,
                                                                monkeypatch):
    calls = []
    text = [e for e in tiny_sdxl.conditioner.embedders if e.input_key == "txt"]
    for embedder in text:
        forward = embedder.forward
        monkeypatch.setattr(embedder, "forward", lambda batch, f=forward: calls.append(len(batch)) or f(batch))
    cached = CachedConditioning(sdxl_host)
    prompts = dataset_prompts(sdxl_dataset)
    cached.fill(prompts)
    assert sum(calls) == 2 * len(prompts)   # both encoders, each prompt once
    cached.sealed = True
    run(cached, sdxl_dataset, tmp_path, network(), steps=3, validation={"every": 2})
    assert sum(calls) == 2 * len(prompts)
