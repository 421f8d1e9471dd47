"""Training inside webui (stand-in modules of v1.10.1, tests/webui_stub; the tiny ldm model as sd_model): jobs go
through webui's queue and progress, write the expected files, leave the model exactly as before (success or
failure), keep webui's attention optimization on, stop on webui's Interrupt and resume with the optimizer state,
refuse --lowvram, work with --medvram, stop cleanly when the checkpoint changes, and render previews through
txt2img without changing the training run."""
import threading

import pytest
import torch

from hypernet_ext import create, formats
from hypernet_ext.checkpoint import optim_path
from hypernet_ext.training.logs import read_loss_csv
from hypernet_ext.webui import model_state

pytest.importorskip("ldm")

FAST = dict(resize="fixed", width=32, height=32, min_side=16, template="captions_only", learn_rate="1e-3",
            tensorboard=False)


def new_network(folder, name="hn", **fields):
    fields = dict(dict(sizes=(768, 32, 64), layer_structure=(1, 2, 1), activation="relu", seed=0), **fields)
    return formats.save(create(name=name, **fields), folder / f"{name}.pt")


def captions(folder):
    return {p.read_text(encoding="utf-8") for p in folder.glob("*.txt")}


def train(webui, images, name="hn", **options):
    return webui.session.start_training(name, data_dir=str(images), **dict(FAST, **options))


def test_a_job_writes_its_files_reports_progress_and_leaves_the_model_as_it_was(webui, train_images):
    from modules import progress, sd_hijack_optimizations, shared

    new_network(webui.hn_dir)
    before = model_state.capture(shared.sd_model)
    forward = type(next(m for m in shared.sd_model.modules() if hasattr(m, "to_k"))).forward
    assert forward is sd_hijack_optimizations.scaled_dot_product_attention_forward
    job = train(webui, train_images, steps=6, save_every=2)
    view = webui.wait(job)
    assert view["state"] == "done", view
    assert view["step"] == view["total"] == 6 and len(view["history"]) == 6
    assert view["loss"] is not None and view["learn_rate"] == pytest.approx(1e-3)
    files = {p.name for p in webui.hn_dir.iterdir()}
    assert files == {"hn.pt", "hn.pt.optim", "hn.safetensors"} | {f"hn-{k}.pt" for k in (2, 4, 6)} \
        | {f"hn-{k}.pt.optim" for k in (2, 4, 6)}
    assert formats.load(webui.hn_dir / "hn.pt").step == 6
    assert [c.rsplit("/", 1)[-1] for c in view["checkpoints"]] == ["hn-2.pt", "hn-4.pt", "hn-6.pt", "hn.pt"]
    logs = list((webui.tmp / "webui-data" / "textual_inversion").glob("*/hn/hypernetwork_loss.csv"))
    assert len(logs) == 1 and [r["step"] for r in read_loss_csv(logs[0])] == [1, 2, 3, 4, 5, 6]
    assert job.task_id in progress.finished_tasks and job.task_id not in progress.pending_tasks
    assert model_state.differences(before, model_state.capture(shared.sd_model)) == []
    assert all(p.requires_grad for p in shared.sd_model.model.parameters())   # webui never freezes its UNet
    assert type(next(m for m in shared.sd_model.modules() if hasattr(m, "to_k"))).forward is forward


def test_the_attention_optimization_stays_on_while_training(webui, train_images, monkeypatch):
    from modules import shared

    from hypernet_ext.webui import jobs

    new_network(webui.hn_dir)
    forwards = []
    original = jobs.JobCallbacks.on_progress

    def on_progress(self, *args):
        attention = next(m for m in shared.sd_model.modules() if hasattr(m, "to_k"))
        forwards.append(type(attention).forward.__name__)
        original(self, *args)

    monkeypatch.setattr(jobs.JobCallbacks, "on_progress", on_progress)
    assert webui.wait(train(webui, train_images, steps=2))["state"] == "done"
    assert forwards == ["scaled_dot_product_attention_forward"] * 2


@pytest.mark.parametrize("failure", ["no usable images", "error inside a step"])
def test_a_failed_job_reports_the_error_and_leaves_the_model_as_it_was(webui, train_images, tmp_path, monkeypatch,
                                                                       failure):
    from modules import shared

    from hypernet_ext.training import step

    new_network(webui.hn_dir)
    before = model_state.capture(shared.sd_model)
    images = train_images
    if failure == "no usable images":
        images = tmp_path / "bad"
        images.mkdir()
        (images / "a.png").write_bytes(b"not a png")
    else:
        monkeypatch.setattr(step.StepRunner, "run", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("boom")))
    view = webui.wait(train(webui, images, steps=3))
    assert view["state"] == "failed"
    assert ("no usable image" in view["error"]) if failure == "no usable images" else ("boom" in view["error"])
    assert model_state.differences(before, model_state.capture(shared.sd_model)) == []
    assert shared.state.job == "" and not shared.state.interrupted


def test_webuis_interrupt_saves_then_stops_and_resume_continues_with_the_optimizer_state(webui, train_images,
                                                                                        monkeypatch):
    from modules import shared

    from hypernet_ext.webui import jobs

    new_network(webui.hn_dir)
    assert webui.wait(train(webui, train_images, steps=4, save_every=2))["state"] == "done"
    original = jobs.JobCallbacks.on_progress

    def interrupt_at_6(self, step, *args):
        original(self, step, *args)
        if step == 6:
            shared.state.interrupt()    # what webui's Interrupt button and /sdapi/v1/interrupt do

    monkeypatch.setattr(jobs.JobCallbacks, "on_progress", interrupt_at_6)
    view = webui.wait(train(webui, train_images, steps=10, save_every=2))
    assert view["state"] == "interrupted" and view["step"] == 6
    assert formats.load(webui.hn_dir / "hn.pt").step == 6 and optim_path(webui.hn_dir / "hn.pt").is_file()
    monkeypatch.setattr(jobs.JobCallbacks, "on_progress", original)
    assert webui.session.newest_checkpoint("hn") == webui.hn_dir / "hn.pt"
    view = webui.wait(train(webui, train_images, steps=10, save_every=2, resume=True))
    assert view["state"] == "done" and view["history"][0]["step"] == 7 and view["step"] == 10
    assert any("optimizer state restored from" in m and "hn.pt.optim" in m for m in view["messages"])
    assert formats.load(webui.hn_dir / "hn.pt").step == 10


def test_a_queued_job_waits_for_the_gpu_lock_and_one_interrupted_there_never_starts(webui, train_images):
    from modules import call_queue

    new_network(webui.hn_dir)
    with call_queue.queue_lock:
        job = train(webui, train_images, steps=2)
        first = webui.session.job(job.id).view()
        threading.Event().wait(0.3)
        assert job.state == "queued" and first["state"] == "queued"
        webui.session.interrupt(job.id)
    view = webui.wait(job)
    assert view["state"] == "interrupted" and view["step"] == 0
    assert "before it started" in " ".join(view["messages"])
    assert formats.load(webui.hn_dir / "hn.pt").step == 0


def test_lowvram_is_refused_before_anything_is_queued(webui, train_images):
    from modules import shared

    from hypernet_ext.webui.host import NotSupported

    new_network(webui.hn_dir)
    shared.cmd_opts.lowvram = True
    with pytest.raises(NotSupported, match="--lowvram.*--medvram works"):
        train(webui, train_images)
    assert webui.session.jobs == {}


def test_medvram_trains_with_the_unet_on_the_device(webui, train_images):
    from modules import lowvram, shared

    new_network(webui.hn_dir)
    shared.cmd_opts.medvram = True
    shared.sd_model.lowvram = True
    lowvram.calls.clear()
    try:
        view = webui.wait(train(webui, train_images, steps=2, unload_vae=True))
    finally:
        shared.sd_model.lowvram = False
    assert view["state"] == "done"
    assert lowvram.calls == ["send_everything_to_cpu"]
    assert any("--medvram already moves it" in m for m in view["messages"])


@pytest.mark.parametrize("preview_every", [0, 2])
def test_a_checkpoint_change_during_training_stops_the_job_cleanly(webui, train_images, monkeypatch, preview_every):
    from modules import sd_models, shared

    from hypernet_ext.webui import jobs

    new_network(webui.hn_dir)
    original = jobs.JobCallbacks.on_progress

    def change_at_2(self, step, *args):
        original(self, step, *args)
        if step == 2:   # what the settings page does before webui's queued reload runs
            shared.opts.data["sd_model_checkpoint"] = webui.checkpoints[1].title

    monkeypatch.setattr(jobs.JobCallbacks, "on_progress", change_at_2)
    loads = len(sd_models.loads)
    view = webui.wait(train(webui, train_images, steps=8, preview_every=preview_every, preview_steps=2))
    assert view["state"] == "interrupted" and view["step"] == 2
    assert "checkpoint setting changed to tiny-b" in view["error"]
    assert len(sd_models.loads) == loads                          # not reloaded under the job
    assert formats.load(webui.hn_dir / "hn.pt").step == 2


def test_previews_come_from_txt2img_and_do_not_change_the_training(webui, train_images, tmp_path):
    from modules import shared

    new_network(webui.hn_dir, "a")
    new_network(webui.hn_dir, "b")
    plain = webui.wait(train(webui, train_images, "a", steps=4, save_safetensors=False))
    rng = torch.get_rng_state()
    previewed = webui.wait(train(webui, train_images, "b", steps=4, save_safetensors=False, preview_every=2,
                                 preview_steps=2, preview_sampler="euler a"))
    assert torch.equal(torch.get_rng_state(), rng)   # txt2img seeds the global generator; the run puts it back
    assert plain["state"] == previewed["state"] == "done"
    a, b = formats.load(webui.hn_dir / "a.pt"), formats.load(webui.hn_dir / "b.pt")
    for (key, value), other in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(value, other), key
    assert [p["step"] for p in previewed["previews"]] == [2, 4]
    from PIL import Image

    image = Image.open(previewed["previews"][0]["path"])
    assert image.size == (32, 32) and "Steps: 2, Sampler: Euler a" in image.text["parameters"]
    assert "Seed: 1234" in image.text["parameters"]
    assert shared.state.current_image is not None


def test_the_text_encoder_is_not_used_once_every_prompt_is_cached(webui, train_images, monkeypatch):
    from modules import shared

    new_network(webui.hn_dir)
    calls = []
    encoder = shared.sd_model.cond_stage_model
    monkeypatch.setattr(type(encoder), "forward", lambda self, text, _f=type(encoder).forward: calls.append(
        len(text)) or _f(self, text))
    view = webui.wait(train(webui, train_images, steps=3, batch_size=2, unload_text_encoder=True, unload_vae=True))
    assert view["state"] == "done"
    assert sum(calls) == len(captions(train_images))   # captions_only: each distinct caption encoded once
    assert any("text encoder waits on the CPU" in m for m in view["messages"])
    assert any("VAE waits on the CPU" in m for m in view["messages"])


def test_a_network_webuis_own_trainer_left_applied_takes_no_part_in_the_run(webui, train_images):
    from modules import shared

    new_network(webui.hn_dir, "a")
    new_network(webui.hn_dir, "b")
    assert webui.wait(train(webui, train_images, "a", steps=2, save_safetensors=False))["state"] == "done"
    left = [lambda context: (context * 0, context * 0)]   # webui's trainer sets loaded_hypernetworks, never clears
    shared.loaded_hypernetworks = left
    assert webui.wait(train(webui, train_images, "b", steps=2, save_safetensors=False))["state"] == "done"
    assert shared.loaded_hypernetworks is left
    a, b = formats.load(webui.hn_dir / "a.pt").state_dict(), formats.load(webui.hn_dir / "b.pt").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_webuis_training_checkpoint_hijack_is_taken_off_for_the_run_and_put_back(webui, train_images):
    from modules import sd_hijack_checkpoint

    path = new_network(webui.hn_dir)
    start = formats.load(path).state_dict()
    sd_hijack_checkpoint.add()
    view = webui.wait(train(webui, train_images, steps=2, save_safetensors=False))
    assert view["state"] == "done"
    assert len(sd_hijack_checkpoint.stored) == 3                  # on again
    trained = formats.load(path).state_dict()
    assert any(not torch.equal(trained[k], v) for k, v in start.items())   # and the network got its gradient


def test_webuis_template_folder_and_filename_settings_are_the_defaults(webui, train_images):
    new_network(webui.hn_dir)
    view = webui.wait(train(webui, train_images, steps=1, template="webui_captions"))
    assert view["state"] == "done"
    # webui's file holds "[filewords]" only: one prompt per distinct caption (the shipped template has 27 lines)
    assert f"{len(captions(train_images))} distinct prompts encoded once" in " ".join(view["messages"])


def test_the_host_uses_webuis_conditioning_vae_and_schedule(webui):
    from modules import shared

    from hypernet_ext.webui.host import NotSupported, WebuiHost

    model = shared.sd_model
    host = WebuiHost(model)
    prompts = ["a (red:1.2) circle", "a square"]
    with torch.no_grad():
        torch.testing.assert_close(host.encode_prompts(prompts), model.get_learned_conditioning(prompts))
        pixels = torch.rand(1, 3, 32, 32) * 2 - 1
        posterior = model.encode_first_stage(pixels)
        torch.testing.assert_close(host.encode_images(pixels), torch.cat([posterior.mean, posterior.logvar], 1))
    model.alphas_cumprod_original = model.alphas_cumprod * 1   # webui keeps the loaded schedule here
    original = model.alphas_cumprod
    model.alphas_cumprod = original * 0.5                     # e.g. its zero-terminal-SNR sampling option
    try:
        assert torch.equal(host.alphas_cumprod, original.float())
    finally:
        model.alphas_cumprod = original
    assert host.model_hash == webui.checkpoints[0].shorthash and host.model_id.endswith("|vae:builtin")
    model.is_sd3 = True
    try:
        with pytest.raises(NotSupported, match="the loaded model is SD3; hypernet_ext trains on SD1, SD2 and SDXL"):
            WebuiHost(model)
    finally:
        model.is_sd3 = False


@pytest.mark.parametrize("ours, webuis, saved", [(True, False, True), (False, True, True), (False, False, False)])
def test_the_optimizer_state_is_saved_when_our_setting_or_webuis_says_so(webui, train_images, ours, webuis, saved):
    from modules import shared

    new_network(webui.hn_dir)
    shared.opts.data["hypernet_ext_save_optimizer_state"] = ours
    shared.opts.data["save_optimizer_state"] = webuis
    assert webui.wait(train(webui, train_images, steps=1))["state"] == "done"
    assert optim_path(webui.hn_dir / "hn.pt").is_file() == saved


def test_webuis_progress_bar_gets_one_line_of_plain_text():
    """webui's progressbar.js shows textinfo as plain text, and only when it has no line break."""
    from hypernet_ext.webui.jobs import Job, progress_text

    job = Job(id="1", network="a<b>", task_id="t", step=12, total=40, loss=0.5, learn_rate=0.005, eta_s=34,
              checkpoints=["/x/hn/a-10.pt"])
    text = progress_text(job)
    assert text == ("Training hypernetwork a<b>: step 12/40, loss 0.50000, learning rate 0.005, ETA 00:00:34, "
                    "last checkpoint a-10.pt")
