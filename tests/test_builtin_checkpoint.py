"""ldm's own checkpointing (``use_checkpoint: True`` in the SD yamls and on webui's sd_model) gives an attached
hypernetwork no gradient; disable_builtin_checkpointing turns it off on the instances, gives exactly the
gradient of an unflagged model, composes with our gradient checkpointing, and remove() restores every flag.
"""
import pytest
import torch
from torch import nn

from hypernet_ext import create
from hypernet_ext.attach import attach
from hypernet_ext.training.recompute import disable_builtin_checkpointing, enable_gradient_checkpointing

openaimodel = pytest.importorskip("ldm.modules.diffusionmodules.openaimodel")
from hypernet_ext.standalone.tiny import tiny_unet  # noqa: E402  (needs ldm)

CONTEXT = {"sd1-tiny": 768, "sd2-tiny": 1024}
FLAGS = ("checkpoint", "use_checkpoint")


def net(preset):
    return create(name="hn", sizes=(32, 64, CONTEXT[preset]), layer_structure=(1, 0.5, 1), activation="relu",
                  normal_std=0.05, seed=0)


def frozen_unet(preset="sd1-tiny", use_checkpoint=True):
    return tiny_unet(preset, use_checkpoint=use_checkpoint).requires_grad_(False)


def loss_of(unet, preset="sd1-tiny"):
    gen = torch.Generator().manual_seed(0)
    x, c = torch.randn(2, 4, 8, 8, generator=gen), torch.randn(2, 6, CONTEXT[preset], generator=gen)
    return unet(x, torch.tensor([10, 700]), context=c).square().mean()


def grads(unet, network, preset="sd1-tiny", cache=True):
    """The hypernetwork's gradient of a loss through ``unet`` (None where a parameter got none)."""
    network.zero_grad(set_to_none=True)
    with attach(unet, [network], cache=cache):
        loss = loss_of(unet, preset)
        loss.backward()
    return loss.detach(), [None if p.grad is None else p.grad.clone() for p in network.parameters()]


def flag_state(model):
    """Every flag attribute an instance holds, and which modules have an instance forward."""
    flags = {(name, a): m.__dict__[a] for name, m in model.named_modules() for a in FLAGS if a in m.__dict__}
    forwards = {name for name, m in model.named_modules() if "forward" in m.__dict__}
    return flags, forwards


def test_the_yaml_flag_puts_every_block_through_ldm_checkpointing():
    unet = frozen_unet()
    on = {type(m).__name__ for m in unet.modules() for a in FLAGS if m.__dict__.get(a) is True}
    assert on == {"BasicTransformerBlock", "ResBlock", "UNetModel"}


@pytest.mark.parametrize("cache", [True, False])
def test_without_the_handle_a_hypernetwork_gets_no_gradient(cache):
    with pytest.raises(RuntimeError, match="does not require grad"):   # frozen base: nothing to differentiate
        grads(frozen_unet(), net("sd1-tiny"), cache=cache)
    trainable = tiny_unet(use_checkpoint=True)   # webui's sd_model is not frozen: the backward runs, uselessly
    _, found = grads(trainable, net("sd1-tiny"), cache=cache)
    assert all(g is None for g in found)


@pytest.mark.parametrize("preset", ["sd1-tiny", "sd2-tiny"])
@pytest.mark.parametrize("cache", [True, False])
def test_with_the_handle_the_gradient_is_that_of_the_unflagged_model(preset, cache):
    flagged, plain = frozen_unet(preset), frozen_unet(preset, use_checkpoint=False)
    expected_loss, expected = grads(plain, net(preset), preset, cache)
    with disable_builtin_checkpointing(flagged) as handle:
        assert handle.flags == 16 and handle.blocks == 0   # 7 transformer blocks, 8 ResBlocks, the UNet
        loss, found = grads(flagged, net(preset), preset, cache)
    assert all(g is not None and g.abs().sum() > 0 for g in found)
    torch.testing.assert_close(loss, expected_loss, rtol=0, atol=0)
    for g, e in zip(found, expected):
        torch.testing.assert_close(g, e, rtol=1e-6, atol=1e-9)
    with pytest.raises(RuntimeError, match="does not require grad"):   # removed: ldm's checkpointing is back
        grads(flagged, net(preset), preset, cache)


def test_remove_restores_every_flag_exactly_and_twice_is_harmless():
    unet = frozen_unet()
    before = flag_state(unet)
    handle = disable_builtin_checkpointing(unet)
    flags, forwards = flag_state(unet)
    assert set(flags) == set(before[0]) and not any(flags.values()) and forwards == before[1]
    handle.remove()
    assert flag_state(unet) == before
    handle.remove()
    assert flag_state(unet) == before


def test_it_composes_with_our_gradient_checkpointing():
    flagged, plain = frozen_unet(), frozen_unet(use_checkpoint=False)
    _, expected = grads(plain, net("sd1-tiny"), cache=False)
    before = flag_state(flagged)
    builtin = disable_builtin_checkpointing(flagged)
    ours = enable_gradient_checkpointing(flagged)
    _, found = grads(flagged, net("sd1-tiny"), cache=False)
    ours.remove()
    builtin.remove()
    for g, e in zip(found, expected):
        torch.testing.assert_close(g, e, rtol=1e-6, atol=1e-9)
    assert flag_state(flagged) == before


def test_an_attention_block_that_always_checkpoints_is_run_directly():
    block = openaimodel.AttentionBlock(32, num_head_channels=16).requires_grad_(False)   # forward ignores its flag
    x = torch.randn(1, 32, 4, 4, requires_grad=True)
    with pytest.raises(RuntimeError, match="does not require grad"):
        block(x).sum().backward()
    expected = torch.autograd.grad(block._forward(x).sum(), x)[0]
    with disable_builtin_checkpointing(block) as handle:
        assert handle.blocks == 1
        found = torch.autograd.grad(block(x).sum(), x)[0]
    torch.testing.assert_close(found, expected, rtol=0, atol=0)
    assert "forward" not in block.__dict__


# ---- duck typing: which modules count, and what remove() leaves ----

class BasicTransformerBlock(nn.Module):   # named like ldm's: found by class name
    def __init__(self, value):
        super().__init__()
        self.checkpoint = value


class ResBlock(nn.Module):   # the flag only on the class: set on the instance, then deleted again
    use_checkpoint = True


class Mine(nn.Module):   # not ldm/sgm: its flag is its own business
    def __init__(self):
        super().__init__()
        self.checkpoint = True


class AttentionBlock(nn.Module):   # sgm's shape: forward(x, **kwargs) always checkpoints, _forward(x) does not
    def forward(self, x, **kwargs):
        raise AssertionError("the always-checkpointing forward ran")

    def _forward(self, x):
        return x * 2


@pytest.mark.parametrize("module, attribute, during, after", [
    (BasicTransformerBlock(True), "checkpoint", {"checkpoint": False}, {"checkpoint": True}),
    (BasicTransformerBlock(False), "checkpoint", {"checkpoint": False}, {"checkpoint": False}),
    (BasicTransformerBlock(1), "checkpoint", {"checkpoint": 1}, {"checkpoint": 1}),   # not a bool: untouched
    (ResBlock(), "use_checkpoint", {"use_checkpoint": False}, {}),
    (Mine(), "checkpoint", {"checkpoint": True}, {"checkpoint": True}),
])
def test_flags_are_found_by_class_and_restored_to_what_was_there(module, attribute, during, after):
    root = nn.Sequential(module)
    with disable_builtin_checkpointing(root):
        assert {k: v for k, v in module.__dict__.items() if k in FLAGS} == during
    assert {k: v for k, v in module.__dict__.items() if k in FLAGS} == after
    assert getattr(module, attribute) == (after.get(attribute, True))


def test_the_direct_forward_drops_keywords_the_inner_forward_does_not_take():
    block = AttentionBlock()
    with disable_builtin_checkpointing(nn.Sequential(block)) as handle:
        assert handle.blocks == 1
        assert torch.equal(block(torch.ones(2), emb=None), torch.full((2,), 2.0))
    assert "forward" not in block.__dict__


def test_a_forward_someone_else_put_on_a_block_is_left_alone(caplog):
    block = AttentionBlock()
    theirs = block.__dict__["forward"] = lambda x, **kwargs: x
    with disable_builtin_checkpointing(nn.Sequential(block)) as handle:
        assert handle.blocks == 0 and block.forward is theirs
    assert block.__dict__["forward"] is theirs and "already has its own forward" in caplog.text
