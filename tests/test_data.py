"""The data layer on tiny synthetic images and a fake encoder: captions, prompts, buckets, flips, repeats,
latent sampling, alpha weights, the latent cache, micro_batch(index) purity and bad data."""
import math
import os
import random
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from hypernet_ext.data import DataConfig, images, prepare_dataset
from hypernet_ext.data.buckets import assign_bucket, contain_pad, cover_crop, make_buckets
from hypernet_ext.data.captions import (
    caption_from_name,
    file_words,
    load_template,
    make_prompt,
    read_caption,
    shipped_templates,
)
from hypernet_ext.errors import ConfigError, DataError

SCALE = 0.5


class FakeEncoder:
    """Downsamples 8x: mean = 4 channels (RGB averages and their mean), logvar = a fixed pattern. Counts calls."""

    def __init__(self):
        self.calls = 0
        self.images = 0

    def __call__(self, pixels):
        assert not torch.is_grad_enabled()
        self.calls += 1
        self.images += pixels.shape[0]
        pooled = F.avg_pool2d(pixels, 8)
        mean = torch.cat([pooled, pooled.mean(1, keepdim=True)], 1)
        logvar = torch.full_like(mean, -2.0) + 0.1 * mean
        return torch.cat([mean, logvar], 1).double()   # the data layer must make it float32


def expected_mean(img):
    """The fake encoder's mean for a PIL image already at its bucket size, times SCALE."""
    pixels = torch.from_numpy(np.asarray(img.convert("RGB"), dtype=np.float32) / 127.5 - 1).permute(2, 0, 1)
    with torch.no_grad():
        return FakeEncoder()(pixels[None])[0, :4].float() * SCALE


def picture(w, h, seed=0, mode="RGB"):
    rng = np.random.default_rng(seed)
    channels = 4 if mode == "RGBA" else 3
    return Image.fromarray(rng.integers(0, 256, (h, w, channels), dtype=np.uint8), mode)


def save(folder, name, w=64, h=64, seed=0, caption=None, mode="RGB"):
    img = picture(w, h, seed, mode)
    img.save(folder / name)
    if caption is not None:
        (folder / name).with_suffix(".txt").write_text(caption, encoding="utf-8")
    return img


def config(folder, **fields):
    base = dict(data_dir=str(folder), width=64, height=64, min_side=32, max_side=128, divisor=32,
                latent_sampling="deterministic", name="zzz")
    base.update(fields)
    return DataConfig(**base)


def prepare(cfg, enc=None, **kw):
    return prepare_dataset(cfg, enc or FakeEncoder(), SCALE, **kw)


@pytest.fixture
def folder(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    return d


# ----------------------------------------------------------------------------------------------- config

@pytest.mark.parametrize("fields, message", [
    (dict(resize="crop"), "resize"),
    (dict(latent_sampling="sometimes"), "latent_sampling"),
    (dict(width=100), "width"),
    (dict(height=0), "height"),
    (dict(divisor=20), "divisor"),
    (dict(batch_size=0), "batch_size"),
    (dict(repeats=-1), "repeats"),
    (dict(flip=1.5), "flip"),
    (dict(tag_dropout=-0.1), "tag_dropout"),
    (dict(filename_regex="[oops"), "filename_regex"),
    (dict(filename_regex=r"(\w)-(\w)"), "filename_regex: .* has 2 groups"),
    (dict(template=""), "template"),
    (dict(min_side=512, max_side=256), "max_side"),
    (dict(bucket_pixels=1000), "bucket_pixels"),
    (dict(seed="x"), "seed"),
])
def test_bad_config_is_refused_with_the_field_named(fields, message):
    with pytest.raises(ConfigError, match=message):
        DataConfig(**fields)


def test_config_defaults_and_round_trip():
    cfg = DataConfig(data_dir="x")
    assert (cfg.width, cfg.height, cfg.min_side, cfg.max_side, cfg.divisor) == (512, 512, 256, 1024, 64)
    assert cfg.pixel_budget == 512 * 512 and cfg.filename_regex == "" and cfg.template == "hypernetwork"
    assert cfg.filename_join == " "   # webui v1.10.1: dataset_filename_word_regex "", join string " "
    assert DataConfig.from_dict({**cfg.to_dict(), "unknown": 1}) == cfg


# ---------------------------------------------------------------------------------------------- buckets

@pytest.mark.parametrize("budget, lo, hi, div", [
    (512 * 512, 256, 1024, 64), (768 * 768, 256, 1536, 64), (1024 * 1024, 512, 2048, 64),
    (640 * 448, 320, 960, 32), (64 * 64, 32, 128, 32), (500 * 500, 200, 900, 8),
])
def test_buckets_respect_budget_bounds_and_divisor(budget, lo, hi, div):
    buckets = make_buckets(budget, lo, hi, div)
    assert buckets == sorted(set(buckets))
    for w, h in buckets:
        assert w * h <= budget and lo <= w <= hi and lo <= h <= hi and w % div == 0 and h % div == 0
        assert (h, w) in buckets   # portrait and landscape alike
    assert any(w == h for w, h in buckets)
    assert max(w * h for w, h in buckets) > budget * 0.75   # the budget is used, not wasted
    # every aspect ratio gets a bucket, the closest one, and the same one every time
    ratios = [math.exp(x) for x in np.linspace(-2.5, 2.5, 101)]
    for r in ratios:
        w, h = max(1, round(1000 * r)), 1000
        b = assign_bucket(w, h, buckets)
        assert b in buckets and b == assign_bucket(w, h, list(reversed(buckets)))
        best = min(abs(math.log(x / y) - math.log(w / h)) for x, y in buckets)
        assert abs(math.log(b[0] / b[1]) - math.log(w / h)) == pytest.approx(best)


@pytest.mark.parametrize("size, bucket", [((1000, 700), (576, 448)), ((300, 900), (256, 832)), ((64, 64), (64, 64)),
                                          ((50, 40), (64, 64)), ((1023, 511), (704, 320))])
def test_cover_crop_covers_and_crops_the_minimum(size, bucket):
    (rw, rh), (left, top, right, bottom) = cover_crop(*size, bucket)
    assert rw >= bucket[0] and rh >= bucket[1] and (rw == bucket[0] or rh == bucket[1])
    assert (right - left, bottom - top) == bucket and 0 <= left and right <= rw and 0 <= top and bottom <= rh
    assert abs((right + left) - rw) <= 1 and abs((bottom + top) - rh) <= 1   # centred
    assert abs(rw / rh - size[0] / size[1]) < 0.02   # aspect ratio kept


def default_buckets():
    cfg = DataConfig(data_dir="x")
    return make_buckets(cfg.pixel_budget, cfg.min_side, cfg.max_side, cfg.divisor)


def test_bucket_mode_keeps_every_pixel_and_pads_at_most_a_seventh():
    """With the default settings (512x512 budget, sides 256-1024 in steps of 64) and every aspect ratio from
    1:4 to 4:1, an image is scaled to fit inside its bucket whole (nothing cut off, its aspect ratio kept) and
    at most 14.1% of the bucket is padding; bucket-crop cuts off up to 14.1% of the image instead."""
    buckets = default_buckets()
    worst_pad = worst_crop = 0.0
    for x in np.linspace(math.log(1 / 4), math.log(4), 801):
        w, h = max(1, round(1000 * math.exp(x))), 1000
        bw, bh = bucket = assign_bucket(w, h, buckets)
        (rw, rh), (left, top, right, bottom) = contain_pad(w, h, bucket)
        assert (right - left, bottom - top) == (rw, rh) and 0 <= left and right <= bw and 0 <= top and bottom <= bh
        assert rw == bw or rh == bh                                   # as large as the bucket allows
        assert abs(rw / rh - w / h) <= (w / h) * (1 / min(rw, rh))  # whole: only rounding changes the ratio
        assert abs((left + right) - bw) <= 1 and abs((top + bottom) - bh) <= 1   # centred
        worst_pad = max(worst_pad, 1 - rw * rh / (bw * bh))
        (cw, ch), _ = cover_crop(w, h, bucket)
        worst_crop = max(worst_crop, 1 - bw * bh / (cw * ch))
    assert 0.13 < worst_pad <= 0.141 and 0.13 < worst_crop <= 0.141
    (cw, ch), (left, _, right, _) = cover_crop(1000, 700, assign_bucket(1000, 700, buckets))
    assert (right - left) / cw == pytest.approx(0.9)   # bucket-crop: a 1000x700 image loses 10% of its width


def test_padding_gets_loss_weight_0_and_the_image_the_rest(folder):
    img = save(folder, "wide.png", 100, 70, seed=4)     # 1000x700 scaled down: bucket 80x48 with divisor 16
    cfg = config(folder, divisor=16, flip=1.0)
    ds = prepare(cfg)
    sample, = ds.samples
    assert sample.bucket == (80, 48)
    assert contain_pad(100, 70, (80, 48)) == ((69, 48), (5, 0, 74, 48))
    fitted = np.asarray(images.fit_image(img.convert("RGB"), (80, 48), "bucket"))
    assert np.array_equal(fitted[:, 5:74], np.asarray(img.resize((69, 48), Image.BICUBIC)))   # all of it
    assert (fitted[:, :5] == fitted[:, 5:6]).all() and (fitted[:, 74:] == fitted[:, 73:74]).all()   # edge repeated
    assert torch.allclose(sample.latents[0].mean * SCALE, expected_mean(Image.fromarray(fitted)), atol=1e-5)
    weight = sample.weight[0]   # latent columns of 8 pixels: the first holds 3 image pixels, the last 2
    coverage = torch.tensor([3, 8, 8, 8, 8, 8, 8, 8, 8, 2]) / 8
    assert torch.allclose(weight, (coverage / coverage.mean()).expand(6, 10))
    batch = ds.micro_batch(0)
    assert batch.flipped == [True] and torch.equal(batch.weights[0], sample.weight.flip(-1))
    cropped = prepare(cfg.replace(resize="bucket-crop")).samples[0]
    assert cropped.weight is None   # the old way: cover and centre-crop
    (cw, ch), crop_box = cover_crop(100, 70, (80, 48))
    expected = expected_mean(img.resize((cw, ch), Image.BICUBIC).crop(crop_box))
    assert torch.allclose(cropped.latents[0].mean * SCALE, expected, atol=1e-5)


def test_alpha_weights_are_0_on_the_padding_too(folder, tmp_path):
    rgba = picture(100, 70, 3, "RGBA")
    rgba.putalpha(255)
    rgba.save(folder / "opaque.png")
    with_alpha = prepare(config(folder, divisor=16, use_alpha_weight=True)).samples[0].weight
    picture(100, 70, 3).save(tmp_path / "plain.png")
    without = prepare(config(tmp_path, divisor=16)).samples[0].weight
    assert with_alpha[0, :, 0].max() < 1 and torch.allclose(with_alpha, without, atol=1e-6)


def test_a_batch_mixing_padded_and_exact_images_weighs_the_exact_ones_1(folder):
    save(folder, "exact.png", 80, 48, seed=1)
    save(folder, "wide.png", 100, 70, seed=2)
    ds = prepare(config(folder, divisor=16, batch_size=2))
    batch = ds.micro_batch(0)
    exact = batch.paths.index(str(folder / "exact.png"))
    assert torch.equal(batch.weights[exact], torch.ones(1, 6, 10))
    assert batch.weights[1 - exact].min() < 1


# --------------------------------------------------------------------------------------------- captions

def webui_filename_text(filename, word_regex, join):
    """webui v1.10.1 textual_inversion/dataset.py: the caption of an image without a .txt, as it computes it."""
    filename_text = os.path.splitext(filename)[0]
    filename_text = re.sub(re.compile(r"^[-\d]+\s*"), "", filename_text)
    re_word = re.compile(word_regex) if word_regex else None
    if re_word:
        tokens = re_word.findall(filename_text)
        filename_text = (join or "").join(tokens)
    return filename_text


NAMES = ["00012-a cat, sitting.png", "123-456 red_dog.jpg", "red dog (1).webp", "12 plain name.png",
         "2024-01-05 girl, solo, red hair.png", "-- 3 a b.png", "0001.png", "v1.2 final, best.png", "cat_1 dog_2.png"]


@pytest.mark.parametrize("regex, join", [("", " "), (r"[\w]+", " "), (r"[^,]+", ","), (r"[a-z]+", "_"),
                                         (r"(\w+)_\d", " "), (r"[\w]+", "")])
def test_caption_from_the_file_name_is_webuis(regex, join):
    for name in NAMES:
        stem = name.rsplit(".", 1)[0]
        assert caption_from_name(stem, regex, join) == webui_filename_text(name, regex, join), name


@pytest.mark.parametrize("stem, regex, join, expected", [
    ("00012-a cat, sitting", "", " ", "a cat, sitting"),   # webui's default: the whole name, commas kept
    ("00012-a cat, sitting", r"[\w]+", " ", "a cat sitting"),
    ("00012-a cat, sitting", r"[^,]+", ",", "a cat, sitting"),
    ("123-456 red_dog", r"[\w]+", " ", "red_dog"),
    ("red dog (1)", r"[a-z]+", "_", "red_dog"),
    ("12 plain name", "", " ", "plain name"),
    ("cat_1 dog_2", r"(\w+)_\d", "+", "cat+dog"),   # findall gives the group
])
def test_caption_from_the_file_name_follows_webui(stem, regex, join, expected):
    assert caption_from_name(stem, regex, join) == expected


def test_by_default_a_file_name_caption_keeps_its_tags_for_shuffle_and_dropout(folder, tmp_path):
    save(folder, "0007-girl, solo, red hair.png")
    assert read_caption(folder / "0007-girl, solo, red hair.png") == "girl, solo, red hair"
    (tmp_path / "t.txt").write_text("[filewords]", encoding="utf-8")
    ds = prepare(config(folder, template=str(tmp_path / "t.txt"), shuffle_tags=True))
    assert [s.caption for s in ds.samples] == ["girl, solo, red hair"]
    prompts = {ds.micro_batch(k).prompts[0] for k in range(60)}
    assert {tuple(sorted(p.split(", "))) for p in prompts} == {("girl", "red hair", "solo")}
    assert len(prompts) == 6   # every order of the three tags


def test_sidecar_caption_wins_over_the_file_name(folder):
    save(folder, "0001-ignored name.png", caption="  a red fox,\nsnow \n")
    save(folder, "0002-fox in snow.jpg")
    assert read_caption(folder / "0001-ignored name.png") == "a red fox, snow"
    assert read_caption(folder / "0002-fox in snow.jpg") == "fox in snow"
    ds = prepare(config(folder))
    assert sorted(s.caption for s in ds.samples) == ["a red fox, snow", "fox in snow"]


def test_shipped_templates_and_template_files(tmp_path):
    assert {"hypernetwork", "none", "captions_only", "style", "style_filewords", "subject",
            "subject_filewords"} <= set(shipped_templates())
    for name in shipped_templates():
        assert load_template(name)
    assert all("[filewords]" in line for line in load_template("hypernetwork"))
    own = tmp_path / "mine.txt"
    own.write_text("one [name]\n\n  two [filewords]  \n", encoding="utf-8")
    assert load_template(str(own)) == ["one [name]", "two [filewords]"]
    with pytest.raises(DataError, match="shipped templates are"):
        load_template("no_such_template")
    (tmp_path / "empty.txt").write_text("\n\n", encoding="utf-8")
    with pytest.raises(DataError, match="no prompt lines"):
        load_template(str(tmp_path / "empty.txt"))


@pytest.mark.parametrize("name, at_least, placeholders", [
    # as many lines as webui v1.10.1's template of the same name, in our own words
    ("hypernetwork", 27, {"[filewords]"}),
    ("subject", 27, {"[name]"}),
    ("subject_filewords", 27, {"[name]", "[filewords]"}),
    ("style", 19, {"[name]"}),
    ("style_filewords", 17, {"[name]", "[filewords]"}),
    ("none", 1, set()),
    ("captions_only", 1, {"[filewords]"}),
])
def test_shipped_templates_vary_as_much_as_webuis(name, at_least, placeholders):
    lines = load_template(name)
    assert len(lines) >= at_least and len(set(lines)) == len(lines)
    for line in lines:
        assert {p for p in ("[name]", "[filewords]") if p in line} == placeholders, line
        assert not re.search(r"\[(?!name\]|filewords\])", line), line   # no other placeholder
    if name == "captions_only":
        assert lines == ["[filewords]"]


def test_tag_dropout_and_shuffle_statistics():
    caption = ", ".join(f"t{i}" for i in range(10))
    rng = random.Random(1)
    kept, firsts = 0, Counter()
    for _ in range(2000):
        tags = file_words(caption, shuffle=True, dropout=0.3, rng=rng).split(", ")
        tags = [t for t in tags if t]
        kept += len(tags)
        if tags:
            firsts[tags[0]] += 1
        assert len(set(tags)) == len(tags) and set(tags) <= {f"t{i}" for i in range(10)}
    assert kept / 20000 == pytest.approx(0.7, abs=0.02)
    assert len(firsts) == 10 and min(firsts.values()) > 100   # every tag leads sometimes
    assert file_words(caption, shuffle=False, dropout=0.0, rng=rng) == caption
    in_order = file_words(caption, shuffle=False, dropout=0.5, rng=rng).split(", ")
    assert in_order == sorted(in_order, key=lambda t: int(t[1:]))   # dropout alone keeps the order


def test_prompt_fills_name_and_filewords():
    rng = random.Random(0)
    assert make_prompt(["[name] by [filewords]"], "zzz", "a, b", False, 0.0, rng) == "zzz by a, b"


def test_template_line_is_fresh_per_sample_with_name_and_filewords(folder, tmp_path):
    save(folder, "a.png", caption="red, green, blue")
    lines = [f"line{i} [name] [filewords]" for i in range(8)]
    (tmp_path / "t.txt").write_text("\n".join(lines), encoding="utf-8")
    ds = prepare(config(folder, template=str(tmp_path / "t.txt"), shuffle_tags=True, tag_dropout=0.2))
    prompts = [ds.micro_batch(k).prompts[0] for k in range(200)]
    assert {p.split()[0] for p in prompts} == {f"line{i}" for i in range(8)}   # one image, every line used
    assert all(p.split()[1] == "zzz" and "[" not in p for p in prompts)
    words = Counter(p.split(" ", 2)[2] for p in prompts)
    assert len(words) > 6   # tags shuffled and dropped anew each time
    assert any(w.startswith("blue") for w in words) and any(w.startswith("red") for w in words)


# ------------------------------------------------------------------------------------ batches and epochs

def mixed_folder(folder):
    sizes = [(64, 64), (64, 64), (64, 64), (128, 64), (128, 64), (120, 60), (64, 128), (60, 128), (96, 96)]
    for i, (w, h) in enumerate(sizes):
        save(folder, f"img{i}.png", w, h, seed=i, caption=f"tag{i}")
    return len(sizes)


def test_batches_hold_one_bucket_so_mixed_shapes_train_with_batch_size_above_1(folder):
    n = mixed_folder(folder)
    ds = prepare(config(folder, batch_size=2))
    assert len(ds) == n and len(ds.buckets) == 3
    assert ds.summary.buckets == {(64, 64): 4, (96, 32): 3, (32, 96): 2}
    assert ds.steps_per_epoch == 2 + 2 + 1
    seen = Counter()
    for k in range(ds.steps_per_epoch):
        b = ds.micro_batch(k)
        assert 1 <= len(b) <= 2 and b.latents.dtype == torch.float32 and b.latents.device.type == "cpu"
        buckets = {s.bucket for s in ds.samples if s.path in b.paths}
        assert len(buckets) == 1
        w, h = buckets.pop()
        assert b.latents.shape == (len(b), 4, h // 8, w // 8)
        seen.update(b.paths)
    assert sorted(seen.values()) == [1] * n   # one epoch = every image once
    assert sum(len(ds.micro_batch(k)) for k in range(ds.steps_per_epoch)) == n


def test_repeats_multiply_the_epoch(folder):
    n = mixed_folder(folder)
    one, three = prepare(config(folder, batch_size=1)), prepare(config(folder, batch_size=1, repeats=3))
    assert three.steps_per_epoch == 3 * one.steps_per_epoch == 3 * n
    seen = Counter(p for k in range(three.steps_per_epoch) for p in three.micro_batch(k).paths)
    assert set(seen.values()) == {3}
    two = prepare(config(folder, batch_size=2, repeats=2))
    seen = Counter(p for k in range(two.steps_per_epoch) for p in two.micro_batch(k).paths)
    assert set(seen.values()) == {2} and len(seen) == n


def test_epochs_are_reshuffled(folder):
    mixed_folder(folder)
    ds = prepare(config(folder))
    orders = {tuple(p for k in range(e * ds.steps_per_epoch, (e + 1) * ds.steps_per_epoch)
                    for p in ds.micro_batch(k).paths) for e in range(4)}
    assert len(orders) > 1


def test_a_micro_batch_is_a_pure_function_of_seed_and_index(folder):
    mixed_folder(folder)
    cfg = config(folder, batch_size=2, flip=0.5, shuffle_tags=True, tag_dropout=0.3, latent_sampling="random",
                 repeats=2)
    a, b = prepare(cfg), prepare(cfg)
    steps = [0, 1, 5, 17, 3, 40, 5]
    straight = {k: a.micro_batch(k) for k in range(41)}
    for k in steps:   # out of order, repeated, and from a fresh data set: all the same
        for other in (a.micro_batch(k), b.micro_batch(k)):
            ref = straight[k]
            assert other.prompts == ref.prompts and other.paths == ref.paths and other.flipped == ref.flipped
            assert torch.equal(other.latents, ref.latents)
    resumed = list(b.iter_batches(17, 20))
    assert [x.index for x in resumed] == [17, 18, 19]
    assert all(torch.equal(x.latents, straight[x.index].latents) for x in resumed)
    c = prepare(cfg.replace(seed=1))
    assert any(c.micro_batch(k).paths != a.micro_batch(k).paths or c.micro_batch(k).prompts != a.micro_batch(k).prompts
               for k in range(5))
    with pytest.raises(ValueError):
        a.micro_batch(-1)


# -------------------------------------------------------------------------------------- latents and flips

def test_fixed_mode_stretches_to_width_x_height(folder):
    save(folder, "wide.png", 128, 64)
    img = save(folder, "square.png", 96, 96, seed=3)
    ds = prepare(config(folder, resize="fixed", width=64, height=32))
    assert ds.buckets == [(64, 32)]
    sq = next(s for s in ds.samples if s.path.endswith("square.png"))
    assert torch.allclose(sq.latents[0].mean * SCALE, expected_mean(img.resize((64, 32), Image.BICUBIC)), atol=1e-5)


@pytest.mark.parametrize("w, h", [(64, 64), (128, 64), (160, 64)])
def test_flip_encodes_the_mirrored_image(folder, w, h):
    img = save(folder, "a.png", w, h, seed=5)
    enc = FakeEncoder()
    ds = prepare(config(folder, flip=1.0, max_side=256), enc)
    assert enc.images == 2   # the image and its mirror image, each encoded once
    (bw, bh), = ds.buckets
    fitted = images.fit_image(img, (bw, bh), "bucket")
    mirrored = fitted.transpose(Image.FLIP_LEFT_RIGHT)
    for k in range(3):
        b = ds.micro_batch(k)
        assert b.flipped == [True]
        assert torch.allclose(b.latents[0], expected_mean(mirrored), atol=1e-5)
    plain = prepare(config(folder, flip=0.0, max_side=256))
    assert torch.allclose(plain.micro_batch(0).latents[0], expected_mean(fitted), atol=1e-5)
    half = prepare(config(folder, flip=0.5, max_side=256))
    flips = [half.micro_batch(k).flipped[0] for k in range(200)]
    assert 60 < sum(flips) < 140


def test_latent_sampling_modes(folder):
    img = save(folder, "a.png", seed=2)
    mean = expected_mean(img)
    det = prepare(config(folder, latent_sampling="deterministic"))
    assert all(torch.allclose(det.micro_batch(k).latents[0], mean, atol=1e-6) for k in range(3))
    once = prepare(config(folder, latent_sampling="once"))
    first = once.micro_batch(0).latents[0]
    assert not torch.allclose(first, mean, atol=1e-3)
    assert all(torch.equal(once.micro_batch(k).latents[0], first) for k in range(1, 5))   # same sample every epoch
    assert torch.equal(prepare(config(folder, latent_sampling="once")).micro_batch(3).latents[0], first)
    rnd = prepare(config(folder, latent_sampling="random"))
    draws = torch.stack([rnd.micro_batch(k).latents[0] for k in range(300)])
    assert len({d.sum().item() for d in draws}) == 300   # a fresh sample each step
    std = torch.exp(0.5 * (-2.0 + 0.1 * mean / SCALE)) * SCALE
    assert torch.allclose(draws.mean(0), mean, atol=5 * float(std.max()) / 300 ** 0.5)
    assert torch.allclose(draws.std(0), std, rtol=0.25)


def test_encode_output_is_moved_to_cpu_float32_and_checked(folder):
    save(folder, "a.png")
    ds = prepare(config(folder))
    assert ds.samples[0].latents[0].mean.dtype == torch.float32
    with pytest.raises(DataError, match="expected VAE moments"):
        prepare(config(folder), lambda px: px[:, :3])


# ------------------------------------------------------------------------------------------ alpha weights

def test_alpha_channel_becomes_a_loss_weight_with_mean_1(folder):
    rgba = picture(64, 64, 1, "RGBA")
    alpha = np.zeros((64, 64), dtype=np.uint8)
    alpha[:, 32:] = 255   # right half opaque
    rgba.putalpha(Image.fromarray(alpha))
    rgba.save(folder / "cut.png")
    save(folder, "plain.png", seed=2)
    ds = prepare(config(folder, use_alpha_weight=True, flip=1.0, batch_size=2))
    b = ds.micro_batch(0)
    assert b.weights.shape == (2, 1, 8, 8)
    cut = b.paths.index(str(folder / "cut.png"))
    w = b.weights[cut, 0]
    assert torch.allclose(w.mean(), torch.tensor(1.0)) and torch.all(w[:, 4:] == 0) and torch.all(w[:, :4] == 2)
    assert torch.equal(b.weights[1 - cut], torch.ones(1, 8, 8))   # no alpha: weight 1
    unflipped = next(s for s in ds.samples if s.path.endswith("cut.png")).weight[0]
    assert torch.all(unflipped[:, :4] == 0) and torch.all(unflipped[:, 4:] == 2)
    assert prepare(config(folder)).micro_batch(0).weights is None


def test_fully_transparent_image_is_skipped_with_alpha_weights(folder):
    rgba = picture(64, 64, 1, "RGBA")
    rgba.putalpha(0)
    rgba.save(folder / "ghost.png")
    save(folder, "plain.png")
    ds = prepare(config(folder, use_alpha_weight=True))
    assert len(ds) == 1 and ds.summary.skipped == {"fully transparent": [str(folder / "ghost.png")]}
    assert len(prepare(config(folder))) == 2


# ------------------------------------------------------------------------------------------------ cache

def test_cache_hit_calls_encode_zero_times(folder, tmp_path):
    mixed_folder(folder)
    cache = tmp_path / "cache"
    cfg = config(folder, cache_dir=str(cache), flip=0.5, latent_sampling="once", batch_size=2)
    first_enc, second_enc = FakeEncoder(), FakeEncoder()
    first = prepare(cfg, first_enc, model_id="m1")
    assert first_enc.images == 2 * len(first) and first.summary.encoded == 2 * len(first)
    assert not [p for p in cache.iterdir() if p.suffix != ".pt"]   # no temp files left behind
    second = prepare(cfg, second_enc, model_id="m1")
    assert second_enc.calls == 0 and second.summary.from_cache == 2 * len(second)
    for k in range(12):
        assert torch.equal(first.micro_batch(k).latents, second.micro_batch(k).latents)
        assert first.micro_batch(k).prompts == second.micro_batch(k).prompts
    other = FakeEncoder()
    prepare(cfg, other, model_id="m2")   # another model: encode again
    assert other.images == 2 * len(first)
    bigger = FakeEncoder()
    prepare(cfg.replace(resize="fixed", width=96, height=96), bigger, model_id="m1")
    assert bigger.images == 2 * len(first)


def test_damaged_cache_file_is_ignored_and_rewritten(folder, tmp_path):
    save(folder, "a.png")
    cfg = config(folder, cache_dir=str(tmp_path / "cache"))
    prepare(cfg)
    (path,) = (tmp_path / "cache").iterdir()
    path.write_bytes(b"not a torch file")
    enc = FakeEncoder()
    prepare(cfg, enc)
    assert enc.images == 1
    enc = FakeEncoder()
    prepare(cfg, enc)
    assert enc.calls == 0


# --------------------------------------------------------------------------------------------- bad data

def test_unreadable_and_too_small_images_are_skipped_and_counted(folder):
    save(folder, "good.png")
    save(folder, "tiny.png", 20, 30)
    save(folder, "thin.png", 24, 64)   # one side long enough: kept
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (folder / "notes.md").write_text("hello")
    good = folder / "good.png"
    truncated = folder / "truncated.jpg"
    picture(64, 64).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:len(truncated.read_bytes()) * 3 // 5])  # header intact
    progress = []
    ds = prepare(config(folder), progress=lambda done, total: progress.append((done, total)))
    s = ds.summary
    assert s.found == 5 and s.used == 2 and s.ignored_files == 1 and s.skipped_count == 3
    assert s.skipped["too small"] == [str(folder / "tiny.png")]
    assert sorted(s.skipped["unreadable"]) == [str(folder / "broken.png"), str(truncated)]
    assert sorted(ds.micro_batch(k).paths[0] for k in range(2)) == [str(good), str(folder / "thin.png")]
    assert progress[-1] == (3, 3) and "5 images found" in str(s)


@pytest.mark.parametrize("resize, used, skipped", [
    ("bucket", ["big.png", "thin.png"], {"too small": ["tiny.png"]}),
    ("fixed", ["big.png", "thin.png", "tiny.png"], {}),   # webui's fixed mode stretches every image
])
def test_min_side_skips_small_images_only_in_bucket_mode(folder, resize, used, skipped):
    save(folder, "big.png", 64, 64)
    save(folder, "thin.png", 24, 64)
    tiny = save(folder, "tiny.png", 20, 30, seed=5)   # both sides under min_side 32
    ds = prepare(config(folder, resize=resize, width=64, height=64))
    assert sorted(Path(s.path).name for s in ds.samples) == used
    assert {k: [Path(p).name for p in v] for k, v in ds.summary.skipped.items()} == skipped
    if resize == "fixed":
        sample = next(s for s in ds.samples if s.path.endswith("tiny.png"))
        assert sample.bucket == (64, 64)
        expected = expected_mean(tiny.resize((64, 64), Image.BICUBIC))
        assert torch.allclose(sample.latents[0].mean * SCALE, expected, atol=1e-5)


@pytest.mark.parametrize("resize", ["bucket", "fixed"])
def test_images_without_pixels_are_skipped_in_every_mode(folder, monkeypatch, resize):
    save(folder, "good.png")
    save(folder, "empty.png")
    real = images.image_size
    monkeypatch.setattr(images, "image_size", lambda path: (0, 64) if path.name == "empty.png" else real(path))
    ds = prepare(config(folder, resize=resize))
    assert [Path(s.path).name for s in ds.samples] == ["good.png"]
    assert ds.summary.skipped == {"unreadable": [str(folder / "empty.png")]} and "1 unreadable" in str(ds.summary)


def test_missing_empty_and_unusable_folders_raise_before_encoding(folder, tmp_path):
    enc = FakeEncoder()
    with pytest.raises(DataError, match="does not exist"):
        prepare(config(tmp_path / "nope"), enc)
    with pytest.raises(DataError, match="no folder given"):
        prepare(config(""), enc)
    with pytest.raises(DataError, match="no images in"):
        prepare(config(folder), enc)
    (folder / "readme.txt").write_text("x")
    save(folder, "small.png", 16, 16)
    (folder / "bad.jpg").write_bytes(b"nope")
    with pytest.raises(DataError, match="no usable image") as info:
        prepare(config(folder), enc)
    assert "1 too small" in str(info.value) and "1 unreadable" in str(info.value)
    assert enc.calls == 0


def test_recursive_search_and_hidden_files(folder):
    (folder / "sub").mkdir()
    (folder / ".hidden").mkdir()
    save(folder, "top.png")
    save(folder / "sub", "inner.webp")
    save(folder / ".hidden", "secret.png")
    save(folder, "x.bmp", seed=4)
    assert len(prepare(config(folder))) == 2
    ds = prepare(config(folder, recursive=True))
    assert sorted(s.path for s in ds.samples) == sorted(str(p) for p in
                                                        (folder / "top.png", folder / "sub" / "inner.webp",
                                                         folder / "x.bmp"))
