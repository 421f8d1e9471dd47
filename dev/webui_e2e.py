"""The "Done when" of the webui integration against a running webui v1.10.1 with hypernet_ext installed
(dev/webui-e2e.sh starts it): through the REST API and the prompt, as a new user would.

Create a network; train 30 steps on eight 64x64 images with a snapshot every 10 (and txt2img previews); the
.pt, .optim and snapshot files exist and webui's own loader takes them (and their .optim); interrupt a second run
with webui's /sdapi/v1/interrupt, resume it, and it continues with the optimizer state; txt2img with
<hypernet:NAME:1> changes the image, <hypernet:NAME:0> does not; then, in one sitting, seconds per training step
of ours against webui's native trainer (same model, data, batch, steps) and txt2img time with and without a
network. Exit status 0 only when every check passes. Run with the harness's python (it has requests).
"""
import argparse
import base64
import io
import json
import os
import statistics
import subprocess
import sys
import threading
import time

import requests
from PIL import Image, ImageChops, ImageDraw

BASE = "/hypernet-ext/v1"
NAME = "e2e_hn"
STEPS = 30
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


class Sampler:
    """Samples (wall seconds, CPU seconds of webui's process, step) every 20 ms while a job runs, so a step's time
    can be read both as wall time and as CPU time (the latter barely moves when other work shares the machine)."""

    def __init__(self, pid, step_of):
        import psutil  # webui's own requirement: in its venv

        self.process, self.step_of, self.marks = psutil.Process(pid), step_of, []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        last = None
        while not self.done.is_set():
            step = self.step_of()
            if step is not None and step != last:
                cpu = self.process.cpu_times()
                self.marks.append((time.perf_counter(), cpu.user + cpu.system, step))
                last = step
            time.sleep(0.02)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.done.set()
        self.thread.join()

    def per_step(self):
        """(median wall s/step, median CPU s/step) over consecutive marks one step apart, from step 2 on (the first
        step includes the start of the job)."""
        pairs = [(b[0] - a[0], b[1] - a[1]) for a, b in zip(self.marks, self.marks[1:])
                 if a[2] and a[2] >= 1 and b[2] == a[2] + 1]
        if not pairs:
            return float("nan"), float("nan")
        return statistics.median(w for w, _ in pairs), statistics.median(c for _, c in pairs)


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


def speed(api, data, pid, template, rounds=3):
    """Ours and webui's native trainer, same model, data, batch 1, 30 steps, alternating, in one sitting. Both use
    ``template``, webui's one-line template ``none``: webui picks one template line per image for the whole run and
    encodes its caption once before the first step, ours picks a line per sample and encodes each caption the first
    time it is drawn; with one line both encode the same one caption once and the steps compare the same work."""
    structure = dict(sizes=[768, 320, 640, 1280], layer_structure="1, 2, 1", activation="linear",
                     weight_init="Normal")
    timings = {"ours": [], "native": []}
    for round_ in range(rounds):
        api.post(f"{BASE}/networks", json=dict(structure, name="e2e_speed_ours", overwrite=True))
        job = api.train(network="e2e_speed_ours", data_dir=data, steps=STEPS, save_every=0,
                        **dict(COMMON, template=template))
        poller = Client(api.url)   # a session of its own: requests sessions are not shared between threads
        with Sampler(pid, lambda job=job, poller=poller: poller.job(job)["step"]) as sampler:
            api.wait(job)
        timings["ours"].append(sampler.per_step())
        timings["native"].append(native_per_step(api, data, pid, template))
        for label in timings:
            wall, cpu = timings[label][-1]
            print(f"TIMING round {round_ + 1} {label}: {wall:.4f} s/step wall, {cpu:.4f} s/step CPU (medians)",
                  flush=True)
    result = {}
    for kind, index in (("wall", 0), ("CPU", 1)):
        ours = statistics.median(t[index] for t in timings["ours"])
        native = statistics.median(t[index] for t in timings["native"])
        result[kind] = native / ours
        print(f"TIMING training 64x64 batch 1, {STEPS} steps, {rounds} rounds ({kind}): ours {ours:.4f} s/step, "
              f"webui native {native:.4f} s/step: ours is {native / ours:.1f}x faster", flush=True)
    plain, net = [], []
    for _ in range(6):
        plain.append(api.txt2img("a photo of a red circle")[2])
        net.append(api.txt2img(f"a photo of a red circle <hypernet:{NAME}:1>")[2])
    without, with_net = statistics.median(plain[1:]), statistics.median(net[1:])
    print(f"TIMING txt2img 64x64 8 steps Euler (median of 5): without {without:.3f} s, with <hypernet> "
          f"{with_net:.3f} s (ratio {with_net / without:.2f})", flush=True)
    return result


def native_per_step(api, data, pid, template):
    name = "e2e_speed_native"
    api.post("/sdapi/v1/create/hypernetwork", json=dict(
        name=name, enable_sizes=["768", "320", "640", "1280"], overwrite_old=True, layer_structure="1, 2, 1",
        activation_func="linear", weight_init="Normal", add_layer_norm=False, use_dropout=False,
        dropout_structure="0, 0, 0"))
    request = dict(id_task="e2e_native", hypernetwork_name=name, learn_rate="0.005", batch_size=1, gradient_step=1,
                   data_root=data, log_directory="textual_inversion", training_width=64, training_height=64,
                   varsize=False, steps=STEPS, clip_grad_mode="disabled", clip_grad_value="0.1", shuffle_tags=False,
                   tag_drop_out=0.0, latent_sampling_method="once", use_weight=False, create_image_every=0,
                   save_hypernetwork_every=STEPS + 1000, template_filename=f"{template}.txt",
                   preview_from_txt2img=False, preview_prompt="", preview_negative_prompt="", preview_steps=20,
                   preview_sampler_name="Euler a", preview_cfg_scale=7.0, preview_seed=-1, preview_width=64,
                   preview_height=64)

    poller = Client(api.url)

    def job_no():
        try:
            state = poller.get("/sdapi/v1/progress", params={"skip_current_image": "true"}).json()["state"]
        except (requests.RequestException, ValueError, KeyError):
            return None
        return state["job_no"] if state.get("job") in ("train_hypernetwork", "train-hypernetwork") else None

    with Sampler(pid, job_no) as sampler:
        response = api.post("/sdapi/v1/train/hypernetwork", json=request)
    print("  native:", response.text[:200])
    check("error: None" in response.text and len(sampler.marks) >= 2, "webui's native training ran")
    return sampler.per_step()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--webui", required=True, help="webui's folder")
    ap.add_argument("--data", required=True, help="folder for the training images")
    ap.add_argument("--python", required=True, help="webui's python")
    ap.add_argument("--loader-check", required=True)
    ap.add_argument("--pid", type=int, required=True, help="webui's process id (for its CPU time)")
    args = ap.parse_args()
    api = Client(args.url)
    check(api.get(f"{BASE}/networks").ok, "our routes answer")
    options = api.get("/sdapi/v1/options").json()
    print("cross_attention_optimization:", options.get("cross_attention_optimization"))
    folder = os.path.join(args.webui, "models", "hypernetworks")
    data = make_images(args.data)
    first_run(api, data, folder)
    loader_check(args, folder)
    interrupt_and_resume(api, data)
    extra_networks_page(api)
    prompts(api)
    ratio = speed(api, data, args.pid, template="none")
    check(ratio["CPU"] > 1.0 and ratio["wall"] > 1.0, f"ours is faster than webui's native trainer "
                                                       f"({ratio['wall']:.1f}x wall, {ratio['CPU']:.1f}x CPU; goal 4x)")
    for name in os.listdir(folder):
        if name.startswith("e2e_"):
            os.remove(os.path.join(folder, name))
    print("\n" + ("ALL PASSED" if not failures else f"{len(failures)} FAILED: " + "; ".join(failures)))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
