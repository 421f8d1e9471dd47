"""SDXL end to end against a running webui v1.10.1 that has loaded the tiny SDXL of dev/build_tiny_sdxl.py (real
sgm DiffusionEngine) with hypernet_ext installed (dev/webui-e2e-sdxl.sh starts it), through our REST API and the
prompt: the loaded model is SDXL; a new network gets the model's widths; a network made for SD1 is refused
naming SD1, one that fits in part trains with a warning; a run on images of two shapes (buckets, so two
different size conditionings) changes the network at every width, writes its files and a preview; a resumed run
continues with the optimizer state; txt2img with <hypernet:NAME:1> changes the image while <hypernet:NAME:0>
does not. Exit status 0 only when every check passes. Run with the harness's python (it has requests).
"""
import argparse
import json
import os
import sys
import time

from PIL import Image, ImageChops
from webui_e2e import BASE, Client, check, failures, make_images

NAME = "e2e_sdxl"
SIZES = [64, 128, 1152]   # the tiny SDXL's attention widths: self-attention 64/128 (SDXL: 640/1280), context
RUN = dict(resize="bucket", bucket_pixels=4096, min_side=32, max_side=128, divisor=32, batch_size=1,
           learn_rate="0.005", template="captions_only", latent_sampling="once", save_every=3, tensorboard=False)


def make_data(folder):
    """make_images' eight 64x64 images and, of four of them, a 96x48 copy: two buckets, two size conditionings."""
    make_images(folder)
    for i in range(0, 8, 2):
        stem = os.path.join(folder, f"{i:02d}")
        Image.open(stem + ".png").resize((96, 48)).save(stem + "-wide.png")
        with open(stem + ".txt") as src, open(stem + "-wide.txt", "w") as dst:
            dst.write(src.read() + ", wide")
    return folder


def loaded_model(api):
    # webui's live previews ("Approx NN") download an SDXL approximation model at the first txt2img: offline here
    check(api.post("/sdapi/v1/options", json={"live_previews_enable": False}).ok, "live previews off (offline)")
    options = api.get("/sdapi/v1/options").json()
    title = options.get("sd_model_checkpoint", "")
    check("tiny-sdxl" in title, f"webui loaded the tiny SDXL: {title}")
    print("cross_attention_optimization:", options.get("cross_attention_optimization"))


def widths(api):
    response = api.post(f"{BASE}/networks", json={"name": NAME, "overwrite": True, "activation": "relu"})
    check(response.ok, f"create {NAME} without sizes: {response.text}")
    listed = {n["name"]: n for n in api.get(f"{BASE}/networks").json()}
    check(listed.get(NAME, {}).get("sizes") == SIZES, f"it gets the loaded SDXL's widths: "
                                                       f"{listed.get(NAME, {}).get('sizes')}")
    for name, sizes in (("e2e_sd1", [768, 320, 640, 1280]), ("e2e_part", [1152, 2048])):
        check(api.post(f"{BASE}/networks", json={"name": name, "sizes": sizes, "overwrite": True}).ok,
              f"create {name} with widths {sizes}")


def fit(api, data):
    response = api.post(f"{BASE}/train", json=dict(network="e2e_sd1", data_dir=data, steps=2, **RUN))
    detail = response.json().get("detail", {}) if response.status_code == 422 else {}
    check(detail.get("field") == "network" and "made for SD1" in detail.get("error", ""),
          f"a network made for SD1 is refused before it is queued, naming SD1: {response.status_code} "
          f"{response.text[:300]}")
    body = api.wait(api.train(network="e2e_part", data_dir=data, steps=1, **RUN))
    warned = [m for m in body["messages"] if "2048 not in this model" in m]
    check(body["state"] == "done" and bool(warned), f"a network that fits in part trains with a warning: {warned}")


def weights(path):
    """The network's tensors as webui's .pt holds them (width -> (k, v) state dicts); our own file, so torch.load."""
    import torch

    saved = torch.load(path, map_location="cpu")
    return {f"{width}.{i}.{key}": value for width, pair in saved.items() if isinstance(width, int)
            for i, state in enumerate(pair) for key, value in state.items()}


def train_and_resume(api, data, folder):
    created = weights(os.path.join(folder, f"{NAME}.pt"))
    start = time.perf_counter()
    body = api.wait(api.train(network=NAME, data_dir=data, steps=6, preview_every=6, preview_steps=4, **RUN))
    elapsed = time.perf_counter() - start
    check(body["state"] == "done" and body["step"] == 6, f"run 1: {body['state']} at {body['step']} "
                                                         f"(error {body['error']}), {elapsed:.1f} s")
    print("run 1 messages:", *body["messages"], sep="\n  ")
    trained = weights(os.path.join(folder, f"{NAME}.pt"))
    changed = sorted({key.split(".")[0] for key, value in trained.items() if not value.equal(created[key])})
    check(changed == sorted(str(w) for w in SIZES),
          f"the network got gradients through sgm's blocks (sgm's own checkpointing off): widths changed {changed}")
    check(not any("not left exactly" in m for m in body["messages"]), "webui's model left exactly as it was")
    check(len(body["previews"]) == 1 and os.path.isfile(body["previews"][0]["path"]),
          f"a preview through webui's txt2img on SDXL: {[p['path'] for p in body['previews']]}")
    buckets = [m for m in body["messages"] if "; buckets " in m]
    check(bool(buckets) and len(buckets[0].split("; buckets ")[1].split(",")) == 2,
          f"two buckets, so two size conditionings: {buckets}")
    expected = [f"{NAME}.pt", f"{NAME}.pt.optim", f"{NAME}-3.pt", f"{NAME}-6.pt"]
    missing = [f for f in expected if not os.path.isfile(os.path.join(folder, f))]
    check(not missing, f"files written in {folder} (missing: {missing})")
    job = api.train(network=NAME, data_dir=data, steps=9, resume=True, **RUN)
    api.wait(job)
    body = api.job(job, history=True)
    check(body["state"] == "done" and body["step"] == 9 and body["history"][0]["step"] == 7,
          f"run 2 resumes at step {body['history'][0]['step'] if body['history'] else None} and ends at "
          f"{body['step']} ({body['state']})")
    restored = [m for m in body["messages"] if "optimizer state restored from" in m]
    if not check(bool(restored), f"optimizer state restored: {restored}"):
        print("run 2:", json.dumps({k: body.get(k) for k in ("job_id", "resume", "total", "messages", "error")}))


def prompts(api):
    base, info, seconds = api.txt2img("a photo of a red circle")
    full, info_full, seconds_full = api.txt2img(f"a photo of a red circle <hypernet:{NAME}:1>")
    zero, _, _ = api.txt2img(f"a photo of a red circle <hypernet:{NAME}:0>")
    check(ImageChops.difference(base, full).getbbox() is not None, "<hypernet:NAME:1> changes the SDXL image")
    check(ImageChops.difference(base, zero).getbbox() is None, "<hypernet:NAME:0> leaves it exactly as it was")
    check(f'Hypernet hashes: "{NAME}: ' in info_full and "Hypernet" not in info, f"infotext: {info_full!r}")
    print(f"txt2img 64x64, 8 steps: {seconds:.2f} s without, {seconds_full:.2f} s with the network")


def remove_ours(folder):
    for name in os.listdir(folder) if os.path.isdir(folder) else ():
        if name.startswith("e2e_"):
            os.remove(os.path.join(folder, name))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--url", required=True)
    ap.add_argument("--webui", required=True, help="webui's folder")
    ap.add_argument("--data", required=True, help="folder for the training images")
    args = ap.parse_args()
    api = Client(args.url)
    check(api.get(f"{BASE}/networks").ok, "our routes answer")
    loaded_model(api)
    folder = os.path.join(args.webui, "models", "hypernetworks")
    data = make_data(args.data)
    remove_ours(folder)   # a run stopped earlier leaves snapshots that a resume would take as the newest
    widths(api)
    fit(api, data)
    train_and_resume(api, data, folder)
    prompts(api)
    remove_ours(folder)
    print("\n" + ("ALL PASSED" if not failures else f"{len(failures)} FAILED: " + "; ".join(failures)))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
