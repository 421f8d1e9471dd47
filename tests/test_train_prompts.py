"""Conditioning cached per prompt (hypernet_ext.training.prompts): the prompts a data set can give, the cache
answering like the host, each prompt encoded once, rows of different lengths padded as webui's trainer does,
and a sealed cache (text encoder gone) refusing a prompt it does not hold."""
import pytest
import torch

from hypernet_ext.errors import TrainingError
from hypernet_ext.training.prompts import CachedConditioning, dataset_prompts, stack_rows

pytest.importorskip("ldm")


class Counting:
    """A host whose encode_prompts is the tiny model's conditioning, counting the prompts it encodes."""

    def __init__(self, model):
        self.model, self.calls, self.device = model, [], "cpu"

    def encode_prompts(self, prompts):
        self.calls.append(list(prompts))
        return self.model.get_learned_conditioning(list(prompts))


def test_dataset_prompts_lists_every_prompt_the_stream_gives(shapes_dataset):
    prompts = dataset_prompts(shapes_dataset)
    assert prompts is not None and len(prompts) == len(set(prompts))
    seen = {p for step in range(40) for p in shapes_dataset.micro_batch(step).prompts}
    assert seen <= set(prompts)
    assert dataset_prompts(shapes_dataset, limit=1) is None


def test_tag_shuffle_or_dropout_makes_the_prompts_unbounded(shapes_dataset):
    import copy

    for change in ({"shuffle_tags": True}, {"tag_dropout": 0.2}):
        dataset = copy.copy(shapes_dataset)
        dataset.config = shapes_dataset.config.replace(**change)
        assert dataset_prompts(dataset) is None


def test_the_cache_answers_like_the_host_and_encodes_each_prompt_once(tiny_ldm):
    host = Counting(tiny_ldm)
    cached = CachedConditioning(host, batch_size=2)
    cached.fill(["a", "b", "c", "a"])
    assert [len(c) for c in host.calls] == [2, 1]
    batch = ["c", "a", "a"]
    with torch.no_grad():
        direct = tiny_ldm.get_learned_conditioning(batch)
    torch.testing.assert_close(cached.encode_prompts(batch), direct, rtol=1e-5, atol=1e-5)
    cached.encode_prompts(["d", "a"])
    assert host.calls[-1] == ["d"] and cached.encoded == 4
    assert cached.device == "cpu"   # the rest of the host shows through


def test_a_sealed_cache_refuses_what_it_does_not_hold(tiny_ldm):
    cached = CachedConditioning(Counting(tiny_ldm))
    cached.fill(["a"])
    cached.sealed = True
    cached.encode_prompts(["a"])
    with pytest.raises(TrainingError, match="text encoder was moved off"):
        cached.encode_prompts(["b"])


def test_rows_of_different_lengths_are_padded_by_repeating_their_last_vector():
    short, long = torch.arange(6.).reshape(2, 3), torch.arange(12.).reshape(4, 3)
    out = stack_rows([short, long])
    assert out.shape == (2, 4, 3)
    assert torch.equal(out[0, 2:], short[-1:].expand(2, 3)) and torch.equal(out[1], long)
    both = stack_rows([{"crossattn": short, "vector": torch.ones(5)}, {"crossattn": long, "vector": torch.zeros(5)}])
    assert both["crossattn"].shape == (2, 4, 3) and both["vector"].shape == (2, 5)
