"""attach(): pre-hooks on to_k/to_v give exactly what webui's in-forward hypernetworks give, under several
attention forwards; remove() restores the host bit for bit; the per-call context cache changes how often
the networks run, never the result or the gradient.
"""
import types

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from hypernet_ext import create
from hypernet_ext.attach import attach, attention_modules, is_attached
from hypernet_ext.errors import AttachError
from hypernet_ext.layers import HypernetworkModule

attention = pytest.importorskip("ldm.modules.attention")
from hypernet_ext.standalone.tiny import tiny_unet  # noqa: E402  (needs ldm)

CONTEXT = {"sd1-tiny": 768, "sd2-tiny": 1024}


def net(sizes, seed=0, **fields):
    return create(sizes=sizes, seed=seed, normal_std=0.05, activation="relu", **fields)


def inputs(preset="sd1-tiny", seed=0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(2, 4, 16, 16, generator=gen), torch.tensor([10, 500]),
            torch.randn(2, 8, CONTEXT[preset], generator=gen))


def unet_runner(preset="sd1-tiny"):
    model = tiny_unet(preset)
    x, t, c = inputs(preset)
    return model, lambda context=c: model(x, t, context=context)


# ---- webui's way: the networks run inside the attention forward (apply_hypernetworks, then to_k/to_v) ----

def webui_hyper(networks):
    def apply(context):
        k = v = context
        for network, strength in networks:
            pair = network.pair(context.shape[-1])
            if pair is not None:
                k, v = pair[0](k, strength), pair[1](v, strength)
        return k, v
    return apply


def no_hyper(context):
    return context, context


def einsum_forward(hyper):  # webui's attention_CrossAttention_forward (optimization "None")
    def forward(self, x, context=None, mask=None):
        h = self.heads
        q = self.to_q(x)
        ctx_k, ctx_v = hyper(x if context is None else context)
        k, v = self.to_k(ctx_k), self.to_v(ctx_v)
        q, k, v = (rearrange(t, "b n (h d) -> (b h) n d", h=h) for t in (q, k, v))
        sim = torch.einsum("b i d, b j d -> b i j", q, k) * self.scale
        out = torch.einsum("b i j, b j d -> b i d", sim.softmax(dim=-1), v)
        return self.to_out(rearrange(out, "(b h) n d -> b n (h d)", h=h))
    return forward


def sdp_forward(hyper):  # like webui's "sdp" optimization
    def forward(self, x, context=None, mask=None):
        h = self.heads
        q = self.to_q(x)
        ctx_k, ctx_v = hyper(x if context is None else context)
        k, v = self.to_k(ctx_k), self.to_v(ctx_v)
        q, k, v = (t.view(t.shape[0], -1, h, t.shape[-1] // h).transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v)
        return self.to_out(out.transpose(1, 2).reshape(out.shape[0], -1, h * out.shape[-1]))
    return forward


def fake_xformers_attention(q, k, v, attn_bias=None, op=None):
    return F.scaled_dot_product_attention(q, k, v)


def meca_forward(hyper):  # ldm's MemoryEfficientCrossAttention.forward with the networks inside
    def forward(self, x, context=None, mask=None):
        q = self.to_q(x)
        ctx_k, ctx_v = hyper(x if context is None else context)
        k, v = self.to_k(ctx_k), self.to_v(ctx_v)
        b, heads, d = q.shape[0], self.heads, self.dim_head
        q, k, v = (t.reshape(b, t.shape[1], heads, d).permute(0, 2, 1, 3).reshape(b * heads, t.shape[1], d)
                   .contiguous() for t in (q, k, v))
        out = fake_xformers_attention(q, k, v)
        out = out.reshape(b, heads, out.shape[1], d).permute(0, 2, 1, 3).reshape(b, out.shape[1], heads * d)
        return self.to_out(out)
    return forward


def diffusers_forward(hyper):  # diffusers' Attention with AttnProcessor2_0, reduced to what matters here
    def forward(self, hidden_states, encoder_hidden_states=None, attention_mask=None):
        q = self.to_q(hidden_states)
        ctx_k, ctx_v = hyper(hidden_states if encoder_hidden_states is None else encoder_hidden_states)
        k, v = self.to_k(ctx_k), self.to_v(ctx_v)
        q, k, v = (t.view(t.shape[0], -1, self.heads, t.shape[-1] // self.heads).transpose(1, 2) for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v).transpose(1, 2)
        return self.to_out[1](self.to_out[0](out.reshape(out.shape[0], out.shape[1], -1)))
    return forward


class DiffusersAttention(nn.Module):
    """Stand-in for diffusers.models.attention_processor.Attention: to_q/to_k/to_v/to_out, no ldm."""

    def __init__(self, dim, context_dim=None, heads=2):
        super().__init__()
        self.heads = heads
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(context_dim or dim, dim, bias=False)
        self.to_v = nn.Linear(context_dim or dim, dim, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim), nn.Dropout(0.0)])

    forward = diffusers_forward(no_hyper)


class DiffusersBlocks(nn.Module):
    def __init__(self, depth=2, dim=32, context_dim=768):
        super().__init__()
        self.blocks = nn.ModuleList(nn.ModuleDict({"attn1": DiffusersAttention(dim),
                                                   "attn2": DiffusersAttention(dim, context_dim)})
                                    for _ in range(depth))

    def forward(self, hidden_states, encoder_hidden_states):
        for block in self.blocks:
            hidden_states = hidden_states + block["attn1"](hidden_states)
            hidden_states = hidden_states + block["attn2"](hidden_states, encoder_hidden_states=encoder_hidden_states)
        return hidden_states


def build(monkeypatch, impl, preset):
    """(model, run, class whose forward the reference replaces, reference forward factory)."""
    if impl == "diffusers":
        torch.manual_seed(0)
        model = DiffusersBlocks().eval()
        h, c = torch.randn(2, 16, 32), torch.randn(2, 8, 768)
        return model, lambda: model(h, c), DiffusersAttention, diffusers_forward
    if impl == "meca":
        if not hasattr(attention, "MemoryEfficientCrossAttention"):
            pytest.skip("this ldm has no MemoryEfficientCrossAttention")
        monkeypatch.setattr(attention, "XFORMERS_IS_AVAILBLE", True)
        monkeypatch.setattr(attention, "xformers", types.SimpleNamespace(
            ops=types.SimpleNamespace(memory_efficient_attention=fake_xformers_attention)), raising=False)
        model, run = unet_runner(preset)
        assert {type(m).__name__ for _, m, _ in attention_modules(model)} == {"MemoryEfficientCrossAttention"}
        return model, run, attention.MemoryEfficientCrossAttention, meca_forward
    model, run = unet_runner(preset)
    if impl == "sdp":
        monkeypatch.setattr(attention.CrossAttention, "forward", sdp_forward(no_hyper))
        return model, run, attention.CrossAttention, sdp_forward
    return model, run, attention.CrossAttention, einsum_forward  # ldm's own forward while attached


MATCH_CASES = [  # impl, preset, [(network sizes, strength), ...]
    ("einsum", "sd1-tiny", [((768, 32, 64), 1.0)]),
    ("einsum", "sd2-tiny", [((1024, 32, 64), 1.0)]),
    ("einsum", "sd1-tiny", [((768, 32, 64), 0.7), ((768,), 1.3)]),
    ("einsum", "sd1-tiny", [((32,), 1.0)]),
    ("sdp", "sd1-tiny", [((768, 32, 64), 0.6)]),
    ("sdp", "sd2-tiny", [((1024, 64), 1.0), ((32, 64), -0.5)]),
    ("meca", "sd1-tiny", [((768, 32, 64), 1.0)]),
    ("diffusers", None, [((768, 32), 1.0), ((768,), 0.5)]),
]


@pytest.mark.parametrize("cache", [True, False], ids=["cache", "nocache"])
@pytest.mark.parametrize("impl, preset, stack", MATCH_CASES)
def test_attached_output_equals_webui_style_forward(monkeypatch, impl, preset, stack, cache):
    model, run, cls, reference = build(monkeypatch, impl, preset)
    networks = [(net(sizes, seed=i), s) for i, (sizes, s) in enumerate(stack)]
    with torch.no_grad():
        base = run()
        with attach(model, networks, cache=cache):
            got = run()
        monkeypatch.setattr(cls, "forward", reference(webui_hyper(networks)))
        want = run()
    assert not torch.equal(want, base)  # the networks change something
    assert torch.equal(got, want)


def hook_state(model):
    return [(name, len(m._forward_pre_hooks), len(m._forward_hooks), sorted(m.__dict__))
            for name, m in model.named_modules()]


def test_attach_then_remove_restores_the_unet_bit_for_bit():
    model, run = unet_runner()
    before, state = run(), hook_state(model)
    handle = attach(model, net((768, 32, 64)))
    assert is_attached(model) and handle.targets == 14
    assert [s[3] for s in hook_state(model)] == [s[3] for s in state]  # no attributes added to host modules
    assert not torch.equal(run(), before)
    handle.remove()
    handle.remove()  # idempotent
    assert hook_state(model) == state and not is_attached(model) and handle.removed
    assert torch.equal(run(), before)


@pytest.mark.parametrize("stack", [[0.0], [0.0, 0.0]])
def test_strength_zero_is_the_identity(stack):
    model, run = unet_runner()
    before = run()
    with attach(model, [(net((768, 32, 64), seed=i), s) for i, s in enumerate(stack)]):
        assert torch.equal(run(), before)


def test_set_strengths_equals_attaching_with_those_strengths():
    model, run = unet_runner()
    n1, n2 = net((768, 32, 64), seed=1), net((768,), seed=2)
    with attach(model, [(n1, 0.5), (n2, 0.0)]):
        want = run()
    handle = attach(model, [n1, n2])
    handle.set_strengths([0.5, 0.0])
    assert handle.strengths == (0.5, 0.0) and handle.networks == ((n1, 0.5), (n2, 0.0))
    assert torch.equal(run(), want)
    with pytest.raises(AttachError, match="one per network"):
        handle.set_strengths([1.0])
    with pytest.raises(AttachError, match="not a number"):
        handle.set_strengths([1.0, "strong"])
    handle.remove()


@pytest.mark.parametrize("networks_arg", ["bare", "list", "pair", "pairs"])
def test_networks_may_be_given_bare_or_as_pairs(networks_arg):
    model, _ = unet_runner()
    n = net((768,))
    arg = {"bare": n, "list": [n], "pair": (n, 0.5), "pairs": [(n, 0.5)]}[networks_arg]
    with attach(model, arg) as handle:
        assert handle.networks == ((n, 1.0 if networks_arg in ("bare", "list") else 0.5),)
        assert handle.targets == 7


@pytest.mark.parametrize("model_kind, networks, message", [
    ("unet", [net((1024,))],
     r"covers widths 1024 \(made for SD2\) and this model \(SD1\) has attention widths 32, 64, 768: none"),
    ("unet", [net((768,)), net((320, 640), seed=1)],
     r"covers widths 320, 640 and this model \(SD1\) has attention widths 32, 64, 768"),
    ("unet", [net((768,)).to("meta")], r"is on meta but the model is on cpu: move it"),
    ("unet", [], r"list is empty"),
    ("unet", ["model.pt"], r"expected a Hypernetwork"),
    ("unet", [(net((768,)), float("nan"))], r"not finite"),
    ("unet", [(net((768,)), None)], r"not a number"),
    ("linear", [net((768,))], r"no attention modules with to_k and to_v"),
])
def test_attach_refuses_with_a_useful_message(model_kind, networks, message):
    model = unet_runner()[0] if model_kind == "unet" else nn.Linear(768, 768)
    state = hook_state(model)
    with pytest.raises(AttachError, match=message):
        attach(model, networks)
    assert hook_state(model) == state


def test_without_the_device_check_attach_succeeds_and_a_mismatch_shows_at_run_time():
    # webui's --medvram keeps the UNet on the CPU until it runs; the device is checked when the layers run
    model, run = unet_runner()
    with attach(model, net((768,)).to("meta"), check_device=False) as handle:
        assert not handle.removed
        with pytest.raises(AttachError, match="is on meta but the attention input is on cpu"):
            run()


def test_attaching_twice_raises_and_works_again_after_remove():
    model, _ = unet_runner()
    wrapper = nn.Module()
    wrapper.model = nn.Module()
    wrapper.model.diffusion_model = model
    handle = attach(model, net((768,)))
    for target in (model, wrapper):
        with pytest.raises(AttachError, match="already has hypernetworks attached.*one attach"):
            attach(target, net((768, 32), seed=1))
    handle.remove()
    attach(wrapper, net((768,))).remove()


def test_context_manager_removes_on_exception():
    model, run = unet_runner()
    before, state = run(), hook_state(model)
    with pytest.raises(RuntimeError, match="boom"):
        with attach(model, net((768, 32, 64))):
            raise RuntimeError("boom")
    assert hook_state(model) == state and torch.equal(run(), before)


def count_calls(network):
    calls = [0]
    hooks = [m.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
             for m in network.modules() if isinstance(m, HypernetworkModule)]
    return calls, hooks


@pytest.mark.parametrize("sizes, with_cache, without_cache", [
    ((768,), 2, 14),           # one context tensor for 7 cross-attentions: k and v once each
    ((32,), 6, 6),             # self-attention: a new input in each of the 3 layers of width 32
    ((768, 32, 64), 16, 28),   # 1 context + 7 self-attention inputs, times (k, v)
])
def test_cache_runs_each_module_once_per_context_per_call(sizes, with_cache, without_cache):
    model, run = unet_runner()
    wrapper = nn.Module()  # like LatentDiffusion: the UNet sits deeper, apply_model calls it
    wrapper.model = nn.Module()
    wrapper.model.diffusion_model = model
    network = net(sizes)
    calls, _ = count_calls(network)
    for cache, expected in ((True, with_cache), (False, without_cache)):
        with torch.no_grad(), attach(wrapper, network, cache=cache) as handle:
            assert handle.root is model
            for _ in (1, 2):  # nothing carries over from one call to the next
                calls[0] = 0
                run()
                assert calls[0] == expected and handle.stats["held"] == 0


@pytest.mark.parametrize("mode", [torch.no_grad, torch.inference_mode])
def test_cache_gives_the_right_answer_for_a_new_context_next_call(mode):
    model, run = unet_runner()
    c1, c2 = inputs(seed=1)[2], inputs(seed=2)[2]
    network = net((768, 32, 64))
    with mode():
        with attach(model, network, cache=False):
            want = run(c2)
        with attach(model, network, cache=True) as handle:
            run(c1)
            assert torch.equal(run(c2), want) and handle.stats["reused"] == 2 * 12  # 6 layers x (k, v) per call


class ManyContexts(nn.Module):
    """One root call that frees each context before making the next: freed ids get reused."""

    def __init__(self):
        super().__init__()
        self.a = attention.CrossAttention(32, context_dim=768, heads=2, dim_head=16)
        self.b = attention.CrossAttention(32, context_dim=768, heads=2, dim_head=16)

    def forward(self, x, n=10):
        out = torch.zeros_like(x)
        for i in range(n):
            context = torch.full((1, 4, 768), 0.1 * i)
            out = out + self.a(x, context) + self.b(x, context)
            del context
        return out


def test_cache_is_not_fooled_by_a_reused_tensor_id():
    torch.manual_seed(0)
    model, x = ManyContexts(), torch.randn(1, 6, 32)
    network = net((768,))
    with torch.no_grad():
        with attach(model, network, cache=False):
            want = model(x)
        with attach(model, network, cache=True) as handle:
            assert torch.equal(model(x), want) and handle.stats["reused"] == 20


def test_gradients_are_the_same_with_and_without_cache():
    model, run = unet_runner()
    model.requires_grad_(False)
    network = net((768, 32, 64))
    network.train().requires_grad_(True)
    grads = []
    for cache in (True, False):
        network.zero_grad(set_to_none=True)
        with attach(model, network, cache=cache):
            run().square().mean().backward()
        grads.append([p.grad.clone() for p in network.parameters()])
    assert all(g.abs().sum() > 0 for g in grads[0])
    for with_cache, without_cache in zip(*grads):
        torch.testing.assert_close(with_cache, without_cache, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("fields", [
    dict(activation="relu", use_dropout=True, dropout_structure=(0, 0.3, 0)),
    dict(activation="rrelu"),   # RReLU draws its slopes in training
], ids=["dropout", "rrelu"])
def test_random_layers_in_training_are_drawn_per_layer_so_they_are_not_cached(fields):
    model, run = unet_runner()
    network = create(sizes=(768,), seed=0, normal_std=0.05, **fields).train()
    calls, _ = count_calls(network)
    with torch.no_grad(), attach(model, network) as handle:
        run()
        assert calls[0] == 14 and handle.stats["reused"] == 0
        network.eval()
        calls[0] = 0
        run()
        assert calls[0] == 2


STRUCTURES = {  # every structure option of NetworkConfig, attached to real ldm attention
    "layer-norm": dict(add_layer_norm=True, activation="relu"),
    "activate-output": dict(activation="gelu", activate_output=True),
    "float-layers": dict(layer_structure=(1, 1.5, 0.5, 1), activation="swish"),
    "dropout-in-eval": dict(use_dropout=True, dropout_structure=(0, 0.2, 0), activation="elu"),
    "skip-connection": dict(skip_connection=True, activation="tanh"),
    "skip-linear-upsample": dict(skip_connection=True, upsample="Linear", add_layer_norm=True,
                                 layer_structure=(1, 2, 2, 1), activation="silu"),
    "kaiming-mish": dict(weight_init="KaimingNormal", activation="mish"),
    "xavier-linear": dict(weight_init="XavierUniform"),
}


@pytest.mark.parametrize("impl", ["einsum", "sdp"])
@pytest.mark.parametrize("fields", list(STRUCTURES.values()), ids=list(STRUCTURES))
def test_every_structure_option_matches_webui_style_forward(monkeypatch, impl, fields):
    model, run, cls, reference = build(monkeypatch, impl, "sd1-tiny")
    networks = [(create(sizes=(768, 32, 64), seed=3, normal_std=0.05, **fields), 0.8)]
    with torch.no_grad():
        base = run()
        with attach(model, networks):
            got = run()
        monkeypatch.setattr(cls, "forward", reference(webui_hyper(networks)))
        want = run()
    assert not torch.equal(want, base)
    assert torch.equal(got, want)


class Before(nn.Module):
    """``layer(transform(x))``: the reference way to put a network in front of a projection."""

    def __init__(self, transform, layer):
        super().__init__()
        self.transform = transform
        self.layer = layer

    def forward(self, x):
        return self.layer(self.transform(x))


def wrapped_reference(model, networks, kind_of_layer=("to_k", "to_v")):
    """A copy of ``model`` whose to_k / to_v layers run the networks (in order) on their input first."""
    import copy

    reference = copy.deepcopy(model)
    for _, module, _ in attention_modules(reference):
        for kind, attr in enumerate(kind_of_layer):
            layer = getattr(module, attr)
            width = layer.in_features

            def transform(x, kind=kind, width=width):
                for network, strength in networks:
                    pair = network.pair(width)
                    x = pair[kind](x, strength) if pair is not None else x
                return x
            setattr(module, attr, Before(transform, layer))
    return reference


@pytest.mark.parametrize("processor", ["AttnProcessor", "AttnProcessor2_0"])
def test_real_diffusers_attention(processor):
    diffusers_attention = pytest.importorskip("diffusers.models.attention")
    processors = pytest.importorskip("diffusers.models.attention_processor")
    torch.manual_seed(0)
    model = nn.Sequential(*[diffusers_attention.BasicTransformerBlock(
        dim=32, num_attention_heads=2, attention_head_dim=16, cross_attention_dim=768) for _ in range(2)]).eval()
    for _, module, _ in attention_modules(model):
        module.set_processor(getattr(processors, processor)())
    assert {type(m).__name__ for _, m, _ in attention_modules(model)} == {"Attention"}
    h, c = torch.randn(2, 16, 32), torch.randn(2, 8, 768)

    def run(m):
        for block in m:
            h_out = block(h, encoder_hidden_states=c)
        return h_out

    networks = [(net((768, 32), seed=1), 0.9), (net((768,), seed=2), 0.5)]
    reference = wrapped_reference(model, networks)
    with torch.no_grad():
        base = run(model)
        with attach(model, networks) as handle:
            assert handle.targets == 4
            got = run(model)
        want = run(reference)
        assert torch.equal(run(model), base)
    assert not torch.equal(want, base)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


class SplitWidths(nn.Module):
    """An attention-like module whose to_v reads a context of another width than its to_k."""

    def __init__(self):
        super().__init__()
        self.to_k = nn.Linear(48, 32, bias=False)
        self.to_v = nn.Linear(24, 32, bias=False)

    def forward(self, a, b):
        return self.to_k(a) * self.to_v(b)


def test_each_projection_gets_the_network_for_its_own_width():
    torch.manual_seed(0)
    model, a, b = SplitWidths(), torch.randn(1, 5, 48), torch.randn(1, 5, 24)
    network = net((48, 24), seed=4)
    with torch.no_grad():
        with attach(model, network):
            got = model(a, b)
        want = model.to_k(network.pair(48)[0](a, 1.0)) * model.to_v(network.pair(24)[1](b, 1.0))
    assert torch.equal(got, want)
