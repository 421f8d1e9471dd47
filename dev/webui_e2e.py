"""The "Done when" of the webui integration against a running webui v1.10.1 with hypernet_ext installed
(dev/webui-e2e.sh starts it): through the REST API and the prompt, as a new user would.

Create a network; train 30 steps on eight 64x64 images with a snapshot every 10 (and txt2img previews); the
.pt, .optim and snapshot files exist and webui's own loader takes them (and their .optim); interrupt a second run
with webui's /sdapi/v1/interrupt, resume it, and it continues with the optimizer state; txt2img with
<hypernet:NAME:1> changes the image, <hypernet:NAME:0> does not; then, in one sitting, txt2img time with and
without a network and seconds per training step of ours against webui's native trainer (same model, data,
batch): each from a 30-step and a 130-step run, the difference over the extra 100 steps, by the clock and by the
CPU time of webui's process. ``--speed-only`` measures only the speed, ours first (on a freshly started webui).
Exit status 0 only when every check passes. Run with the harness's python (it has requests).
"""
import argparse
import base64
import io
import json
import os
import statistics
import subprocess
import sys
import time

import requests
from PIL import Image, ImageChops, ImageDraw

BASE = "/hypernet-ext/v1"
NAME = "e2e_hn"
STEPS = 30
SPEED_STRUCTURE = dict(sizes=[768, 320, 640, 1280], layer_structure="1, 2, 1", activation="linear",
                       weight_init="Normal")
COMMON = dict(resize="fixed", width=64, height=64, batch_size=1, learn_rate="0.005", template="hypernetwork",
              latent_sampling="once")
failures = []


def check(condition, message):
    print(("PASS " if condition else "FAIL ") + message, flush=True)
    if not condition:
        failures.append(message)
    return condition


class Client:
    def __init__(self, url):
        self.url = url.rstrip("/")
        self.s = requests.Session()
        self.s.trust_env = False   # loopback only

    def get(self, path, **kw):
        return self.s.get(self.url + path, timeout=600, **kw)

    def post(self, path, **kw):
        return self.s.post(self.url + path, timeout=3600, **kw)

    def job(self, job_id, history=False):
        return self.get(f"{BASE}/jobs/{job_id}", params={"history": str(history).lower()}).json()

    def wait(self, job_id, until=None, timeout=1800):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            body = self.job(job_id)
            if body["state"] in ("done", "interrupted", "failed") or (until and until(body)):
                return body
            time.sleep(0.2)
        raise TimeoutError(job_id)

    def train(self, **request):
        response = self.post(f"{BASE}/train", json=request)
        if not check(response.ok, f"train request accepted ({response.status_code} {response.text[:300]})"):
            sys.exit(1)
        return response.json()["job_id"]

    def txt2img(self, prompt, seed=1234):
        payload = dict(prompt=prompt, negative_prompt="", steps=8, sampler_name="Euler", width=64, height=64,
                       seed=seed, cfg_scale=7.0, batch_size=1, n_iter=1, send_images=True, save_images=False)
        t0 = time.perf_counter()
        response = self.post("/sdapi/v1/txt2img", json=payload)
        elapsed = time.perf_counter() - t0
        response.raise_for_status()
        body = response.json()
        image = Image.open(io.BytesIO(base64.b64decode(body["images"][0].split(",", 1)[-1]))).convert("RGB")
        return image, json.loads(body["info"])["infotexts"][0], elapsed


def make_images(folder):
    os.makedirs(folder, exist_ok=True)
    colors = [("red", (220, 30, 30)), ("green", (30, 200, 60)), ("blue", (40, 60, 220)), ("yellow", (230, 220, 40)),
              ("purple", (150, 40, 180)), ("orange", (240, 140, 20)), ("cyan", (30, 210, 220)), ("white", (245,) * 3)]
    for i, (name, rgb) in enumerate(colors):
        image = Image.new("RGB", (64, 64), (20, 20, 20))
        shape = "circle" if i % 2 == 0 else "square"
        (ImageDraw.Draw(image).ellipse if shape == "circle" else ImageDraw.Draw(image).rectangle)(
            [14, 14, 50, 50], fill=rgb)
        image.save(os.path.join(folder, f"{i:02d}.png"))
        with open(os.path.join(folder, f"{i:02d}.txt"), "w") as f:
            f.write(f"a {name} {shape} on a dark background")
    return folder


class CpuClock:
    """Wall seconds and CPU seconds of webui's process (all its threads), read together."""

    def __init__(self, pid):
        import psutil  # webui's own requirement: in its venv

        self.process = psutil.Process(pid)

    def read(self):
        cpu = self.process.cpu_times()
        return time.perf_counter(), cpu.user + cpu.system


def first_run(api, data, folder):
    response = api.post(f"{BASE}/networks", json={"name": NAME, "overwrite": True})
    check(response.ok and response.json()["path"].endswith(f"{NAME}.pt"), f"create {NAME}: {response.text}")
    listed = {n["name"]: n for n in api.get(f"{BASE}/networks").json()}
    check(NAME in listed and listed[NAME]["sizes"], f"listed with the model's widths {listed.get(NAME, {})}")
    job = api.train(network=NAME, data_dir=data, steps=STEPS, save_every=10, preview_every=15, preview_steps=4,
                    **COMMON)
    body = api.wait(job)
    check(body["state"] == "done" and body["step"] == STEPS, f"run 1: {body['state']} at {body['step']} "
                                                              f"(error {body['error']})")
    print("run 1 messages:", *body["messages"], sep="\n  ")
    expected = [f"{NAME}.pt", f"{NAME}.pt.optim"] + [f"{NAME}-{k}.pt{x}" for k in (10, 20, 30) for x in ("", ".optim")]
    missing = [f for f in expected if not os.path.isfile(os.path.join(folder, f))]
    check(not missing, f".pt, .optim and snapshots written in {folder} (missing: {missing})")
    check(len(body["previews"]) == 2 and all(os.path.isfile(p["path"]) for p in body["previews"]),
          f"previews through txt2img: {[p['path'] for p in body['previews']]}")
    return body


def loader_check(args, folder):
    files = [os.path.join(folder, f) for f in (f"{NAME}.pt", f"{NAME}-10.pt", f"{NAME}-20.pt", f"{NAME}-30.pt")]
    out = subprocess.run([args.python, args.loader_check] + files, cwd=args.webui, capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=args.webui), timeout=600)
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    for row in rows:
        print("  webui loader:", row)
    check(out.returncode == 0 and len(rows) == 4 and all(r.get("optim_taken") for r in rows),
          "webui's own loader takes the .pt files and their .optim (hash matches)" + (out.stderr[-800:] if
                                                                                        out.returncode else ""))
    steps = [r.get("step") for r in rows]
    check(steps == [30, 10, 20, 30], f"steps as webui reads them: {steps}")


def interrupt_and_resume(api, data):
    job = api.train(network=NAME, data_dir=data, steps=60, save_every=10, **COMMON)
    api.wait(job, until=lambda b: b["step"] >= 40)
    api.post("/sdapi/v1/interrupt")
    body = api.wait(job)
    stopped = body["step"]
    check(body["state"] == "interrupted" and 40 <= stopped < 60, f"run 2 stops on /sdapi/v1/interrupt: "
                                                                   f"{body['state']} at {stopped}")
    job = api.train(network=NAME, data_dir=data, steps=60, save_every=10, resume=True, **COMMON)
    api.wait(job)
    body = api.job(job, history=True)
    check(body["state"] == "done" and body["history"][0]["step"] == stopped + 1 and body["step"] == 60,
          f"run 3 resumes at step {body['history'][0]['step']} and ends at {body['step']}")
    restored = [m for m in body["messages"] if "optimizer state restored from" in m]
    check(bool(restored) and f"{NAME}.pt.optim" in restored[0], f"optimizer state restored: {restored}")


def extra_networks_page(api):
    """webui's Extra Networks endpoint renders our card of the network (our page stands in for webui's)."""
    response = api.get("/sd_extra_networks/get-single-card",
                       params={"page": "hypernetworks", "tabname": "txt2img", "name": NAME})
    html = response.json().get("html", "") if response.ok else ""
    check(response.ok and f"&lt;hypernet:{NAME}:" in html and "widths 32, 64, 768" in html and "step 60" in html,
          f"Extra Networks card: {html[:200]!r}")


def prompts(api):
    base, info, _ = api.txt2img("a photo of a red circle")
    full, info_full, _ = api.txt2img(f"a photo of a red circle <hypernet:{NAME}:1>")
    zero, _, _ = api.txt2img(f"a photo of a red circle <hypernet:{NAME}:0>")
    check(ImageChops.difference(base, full).getbbox() is not None, "<hypernet:NAME:1> changes the image")
    check(ImageChops.difference(base, zero).getbbox() is None, "<hypernet:NAME:0> leaves it exactly as it was")
    check(f'Hypernet hashes: "{NAME}: ' in info_full and "Hypernet" not in info, f"infotext: {info_full!r}")
    return base


SHORT, LONG = STEPS, STEPS + 100   # a run's fixed costs cancel in the difference of the two


def ours_run(api, clock, data, template, steps):
    """(wall s, CPU s) of one run of ours from the request to the end, polled every 0.1 s (a step is slower than
    that; finer polling would itself cost webui's process time)."""
    api.post(f"{BASE}/networks", json=dict(SPEED_STRUCTURE, name="e2e_speed_ours", overwrite=True))
    wall0, cpu0 = clock.read()
    job = api.train(network="e2e_speed_ours", data_dir=data, steps=steps, save_every=0,
                    **dict(COMMON, template=template))
    while api.job(job)["state"] not in ("done", "interrupted", "failed"):
        time.sleep(0.1)
    wall1, cpu1 = clock.read()
    return wall1 - wall0, cpu1 - cpu0


def native_run(api, clock, data, template, steps):
    """(wall s, CPU s) of one run of webui's native trainer (its API call returns when the run ends)."""
    name = "e2e_speed_native"
    api.post("/sdapi/v1/create/hypernetwork", json=dict(
        name=name, enable_sizes=[str(w) for w in SPEED_STRUCTURE["sizes"]], overwrite_old=True,
        layer_structure=SPEED_STRUCTURE["layer_structure"], activation_func=SPEED_STRUCTURE["activation"],
        weight_init=SPEED_STRUCTURE["weight_init"], add_layer_norm=False, use_dropout=False,
        dropout_structure="0, 0, 0"))
    request = dict(id_task="e2e_native", hypernetwork_name=name, learn_rate="0.005", batch_size=1, gradient_step=1,
                   data_root=data, log_directory="textual_inversion", training_width=64, training_height=64,
                   varsize=False, steps=steps, clip_grad_mode="disabled", clip_grad_value="0.1", shuffle_tags=False,
                   tag_drop_out=0.0, latent_sampling_method="once", use_weight=False, create_image_every=0,
                   save_hypernetwork_every=steps + 1000, template_filename=f"{template}.txt",
                   preview_from_txt2img=False, preview_prompt="", preview_negative_prompt="", preview_steps=20,
                   preview_sampler_name="Euler a", preview_cfg_scale=7.0, preview_seed=-1, preview_width=64,
                   preview_height=64)
    wall0, cpu0 = clock.read()
    response = api.post("/sdapi/v1/train/hypernetwork", json=request)
    wall1, cpu1 = clock.read()
    check("error: None" in response.text, f"webui's native training ran {steps} steps")
    return wall1 - wall0, cpu1 - cpu0


def per_step(run, *args):
    """(wall s/step, CPU s/step) from a SHORT and a LONG run: the difference of the two over the extra steps."""
    (w1, c1), (w2, c2) = run(*args, SHORT), run(*args, LONG)
    return (w2 - w1) / (LONG - SHORT), (c2 - c1) / (LONG - SHORT)


def speed(api, data, pid, before, template="none", plan=("ours", "native", "ours", "native")):
    """Ours and webui's native trainer, same model, data, batch 1, in one sitting, in the order ``plan`` gives.
    Both use ``template``, webui's one-line template ``none``: webui picks one template line per image for the whole
    run and encodes its caption once before the first step, ours picks a line per sample and encodes each caption
    once; with one line both encode the same one caption once and the steps compare the same work. Each
    measurement is labelled with what ran in webui's process before it: on the CPU, once any of webui's own
    threads has run torch (a generation, webui's trainer), GNU OpenMP's thread pools of that thread and of our job
    share two cores and throttle their spin-waits, which slows a run of many tiny operations (see the README)."""
    clock, runs = CpuClock(pid), {"ours": ours_run, "native": native_run}
    rows = []
    for label in plan:
        wall, cpu = per_step(runs[label], api, clock, data, template)
        rows.append((label, before, wall, cpu))
        print(f"TIMING {label:6s} {wall:.4f} s/step wall, {cpu:.4f} s/step CPU (before it: {before})", flush=True)
        before = {"ours": "our training", "native": "webui's native training"}[label]
    ratios = []
    for (a, a_before, a_wall, a_cpu), (b, _, b_wall, b_cpu) in zip(rows, rows[1:]):
        if (a, b) == ("ours", "native"):
            ratios.append((a_before, b_wall / a_wall, b_cpu / a_cpu))
            print(f"TIMING training 64x64 batch 1 (after {a_before}): ours {a_wall:.4f} s/step, webui native "
                  f"{b_wall:.4f} s/step: ours is {b_wall / a_wall:.1f}x faster by the clock, {b_cpu / a_cpu:.1f}x by "
                  "CPU time", flush=True)
    return ratios


def txt2img_speed(api):
    plain, net = [], []
    for _ in range(6):
        plain.append(api.txt2img("a photo of a red circle")[2])
        net.append(api.txt2img(f"a photo of a red circle <hypernet:{NAME}:1>")[2])
    without, with_net = statistics.median(plain[1:]), statistics.median(net[1:])
    print(f"TIMING txt2img 64x64 8 steps Euler (median of 5): without {without:.3f} s, with <hypernet> "
          f"{with_net:.3f} s (ratio {with_net / without:.2f})", flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--webui", required=True, help="webui's folder")
    ap.add_argument("--data", required=True, help="folder for the training images")
    ap.add_argument("--python", required=True, help="webui's python")
    ap.add_argument("--loader-check", required=True)
    ap.add_argument("--pid", type=int, required=True, help="webui's process id (for its CPU time)")
    ap.add_argument("--speed-only", action="store_true",
                    help="only the training speed, starting with ours (run it on a freshly started webui)")
    args = ap.parse_args()
    api = Client(args.url)
    folder = os.path.join(args.webui, "models", "hypernetworks")
    if args.speed_only:
        for before, wall, cpu in speed(api, make_images(args.data), args.pid, "nothing: a fresh process"):
            check(wall > 1.0 and cpu > 1.0, f"ours is faster than webui's native trainer after {before} "
                                            f"({wall:.1f}x by the clock, {cpu:.1f}x by CPU time; goal 4x)")
        return finish(folder)
    check(api.get(f"{BASE}/networks").ok, "our routes answer")
    options = api.get("/sdapi/v1/options").json()
    print("cross_attention_optimization:", options.get("cross_attention_optimization"))
    data = make_images(args.data)
    first_run(api, data, folder)
    loader_check(args, folder)
    interrupt_and_resume(api, data)
    extra_networks_page(api)
    prompts(api)
    txt2img_speed(api)
    for before, wall, cpu in speed(api, data, args.pid, "generations and training", plan=("native", "ours", "native")):
        check(wall > 1.0 and cpu > 1.0, f"ours is faster than webui's native trainer after {before} ({wall:.1f}x "
                                        f"by the clock, {cpu:.1f}x by CPU time; goal 4x)")
    return finish(folder)


def finish(folder):
    for name in os.listdir(folder):
        if name.startswith("e2e_"):
            os.remove(os.path.join(folder, name))
    print("\n" + ("ALL PASSED" if not failures else f"{len(failures)} FAILED: " + "; ".join(failures)))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
