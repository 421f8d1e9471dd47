"""The REST routes on webui's FastAPI app, through FastAPI's TestClient with webui's pins (fastapi 0.94.0,
httpx 0.24.1, pydantic 1.x): listing, creating, training and polling a job, interrupting it, errors that name
the bad field, --api-auth, names that cannot leave the hypernetwork folder, and request models that cover every
config field."""
import dataclasses
import time

import pytest

from hypernet_ext import create, formats
from hypernet_ext.webui.train_request import SET_BY_SESSION, nested_configs, request_fields, sources

pytest.importorskip("ldm")
pytest.importorskip("fastapi")

BASE = "/hypernet-ext/v1"
FAST = dict(resize="fixed", width=32, height=32, min_side=16, template="captions_only", learn_rate="1e-3",
            tensorboard=False, save_every=0)


def poll(client, job_id, timeout=120.0):
    end = time.monotonic() + timeout
    while True:
        body = client.get(f"{BASE}/jobs/{job_id}").json()
        if body["state"] in ("done", "interrupted", "failed") or time.monotonic() > end:
            return body
        time.sleep(0.05)


def test_create_list_train_and_poll(webui, train_images):
    client = webui.client()
    response = client.post(f"{BASE}/networks", json={"name": "style", "layer_structure": "1, 1.5, 1",
                                                     "activation": "relu"})
    assert response.status_code == 200, response.text
    assert response.json() == {"name": "style", "path": str(webui.hn_dir / "style.pt")}
    listed = client.get(f"{BASE}/networks").json()
    assert [n["name"] for n in listed] == ["style"]
    item = listed[0]
    assert item["sizes"] == webui.session.model_widths() and item["format"] == "webui-pt" and item["step"] == 0
    assert len(item["hash"]) == 64 and item["structure"]["layer_structure"] == [1.0, 1.5, 1.0]
    response = client.post(f"{BASE}/train", json=dict(FAST, network="style", data_dir=str(train_images), steps=3,
                                                      val_every=2, val_max_images=2, val_timesteps=1))
    assert response.status_code == 200, response.text
    job_id = response.json()["job_id"]
    assert response.json()["task_id"] == f"task(hypernet-ext-{job_id})"
    body = poll(client, job_id)
    assert body["state"] == "done" and body["step"] == body["total"] == 3, body
    assert body["files"] and body["error"] is None and body["history"] is None
    assert [v["step"] for v in body["validation"]] == [0, 2] and body["validation"][0]["loss"] > 0
    history = client.get(f"{BASE}/jobs/{job_id}", params={"history": "true"}).json()["history"]
    assert [row["step"] for row in history] == [1, 2, 3]
    assert 0 < history[0]["time"] < history[1]["time"] < history[2]["time"]
    listed = {n["name"]: n["step"] for n in client.get(f"{BASE}/networks").json()}
    assert listed["style"] == 3 and set(listed) <= {"style", "style-best"}   # the best snapshot is listed too


def test_creating_over_an_existing_file_needs_overwrite(webui):
    client = webui.client()
    assert client.post(f"{BASE}/networks", json={"name": "a", "sizes": [768]}).status_code == 200
    response = client.post(f"{BASE}/networks", json={"name": "a", "sizes": [768]})
    assert response.status_code == 409 and "already exists" in response.json()["detail"]["error"]
    assert client.post(f"{BASE}/networks", json={"name": "a", "sizes": [320], "overwrite": True}).status_code == 200
    assert formats.describe(webui.hn_dir / "a.pt").widths == (320,)


def test_replacing_a_network_sets_its_snapshots_aside_so_a_resume_starts_from_the_new_one(webui, train_images):
    client = webui.client()
    assert client.post(f"{BASE}/networks", json={"name": "a", "sizes": [768]}).status_code == 200
    body = poll(client, client.post(f"{BASE}/train", json=dict(FAST, network="a", data_dir=str(train_images),
                                                               steps=4, save_every=2)).json()["job_id"])
    assert body["state"] == "done" and (webui.hn_dir / "a-4.pt").is_file(), body
    assert client.post(f"{BASE}/networks", json={"name": "a", "sizes": [768], "overwrite": True}).status_code == 200
    body = poll(client, client.post(f"{BASE}/train", json=dict(FAST, network="a", data_dir=str(train_images),
                                                               steps=2, resume=True)).json()["job_id"])
    assert body["state"] == "done" and body["step"] == 2 and formats.describe(webui.hn_dir / "a.pt").step == 2, body
    assert {p.name for p in webui.hn_dir.glob("a-*.pt")} >= {"a-2-replaced.pt", "a-4-replaced.pt"}
    assert not (webui.hn_dir / "a-4.pt").exists()


@pytest.mark.parametrize("body, field, text", [
    ({"name": "../escaped"}, "name", "path separator"),
    ({"name": "/abs"}, "name", "path separator"),
    ({"name": ".hidden"}, "name", "starts with a dot"),
    ({"name": "a(b)"}, "name", "characters webui drops"),
    ({"name": "ok", "layer_structure": "2, 1"}, "layer_structure", "must start and end with 1"),
    ({"name": "ok", "activation": "glu"}, "activation", "cannot work"),
    ({"name": "ok", "bogus": 1}, "bogus", "extra fields not permitted"),
])
def test_bad_create_requests_name_the_field(webui, body, field, text):
    response = webui.client().post(f"{BASE}/networks", json=body)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    if isinstance(detail, list):   # pydantic's own validation: the location names the field
        assert detail[0]["loc"][-1] == field and text in detail[0]["msg"]
    else:
        assert detail["field"] == field and text in detail["error"]
    assert list(webui.hn_dir.iterdir()) == []
    assert not (webui.hn_dir.parent / "escaped.pt").exists()


@pytest.mark.parametrize("body, status, field, text", [
    ({"learn_rate": "1e-3:10, abc:20"}, 422, "learn_rate", "'abc:20'"),
    ({"learn_rate": "1e-3:10, 1e-4:x"}, 422, "learn_rate", "the step must be an integer"),
    ({"steps": 0}, 422, "steps", "at least 1"),
    ({"optimizer": "NoSuchOpt"}, 422, "optimizer", "NoSuchOpt"),
    ({"optimizer_args": "betas=0.9"}, 422, "optimizer_args", "betas"),
    ({"preview_sampler": "nope"}, 422, "preview_sampler", "not one of webui's samplers"),
    ({"data_dir": "/no/such/folder"}, 422, "data_dir", "is not a folder"),
    ({"network": "missing"}, 404, "network", "is not a hypernetwork in"),
    ({"network": "../hn"}, 422, "network", "path separator"),
    ({"batch_size": "two"}, 422, "batch_size", None),
    ({"bogus": 1}, 422, "bogus", None),
    ({"val_every": -1}, 422, "val_every", "validation.every"),
    ({"guard_action": "explode"}, 422, "guard_action", "explode"),
])
def test_bad_train_requests_name_the_field(webui, train_images, body, status, field, text):
    formats.save(create(sizes=(768,), name="hn"), webui.hn_dir / "hn.pt")
    request = dict(FAST, network="hn", data_dir=str(train_images), steps=2)
    request.update(body)
    response = webui.client().post(f"{BASE}/train", json=request)
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    if isinstance(detail, list):   # pydantic's own validation: the location names the field
        assert detail[0]["loc"][-1] == field
    else:
        assert detail["field"] == field and text in detail["error"], detail
    assert webui.session.jobs == {}


def test_options_of_nested_configs_reach_them(webui):
    from hypernet_ext.webui import settings
    from hypernet_ext.webui.train_request import build_plan, option_default

    plan = build_plan({"val_every": 5, "val_split": 0.25, "guard_action": "stop", "optimizer": "SGD",
                       "optimizer_args": "momentum=0.9", "learn_rate": "1e-4", "seed": 3}, "hn", "out", "logs",
                      False, lambda option: option_default(option, settings.get, settings.webui_option))
    train = plan.train
    assert (train.validation.every, train.validation.split, train.guard.action) == (5, 0.25, "stop")
    assert (train.optimizer.name, train.optimizer.kwargs, train.schedule.learn_rate) == ("SGD", {"momentum": 0.9},
                                                                                         "1e-4")
    assert train.seed == plan.data.seed == 3   # one seed, as on the command line


def test_lowvram_is_a_conflict(webui, train_images):
    from modules import shared

    formats.save(create(sizes=(768,), name="hn"), webui.hn_dir / "hn.pt")
    shared.cmd_opts.lowvram = True
    response = webui.client().post(f"{BASE}/train", json=dict(FAST, network="hn", data_dir=str(train_images)))
    assert response.status_code == 409 and "--lowvram" in response.json()["detail"]["error"]


def test_interrupt_route_stops_a_running_job_which_saves(webui, train_images, monkeypatch):
    from hypernet_ext.webui import jobs

    formats.save(create(sizes=(768, 32, 64), name="hn", seed=0), webui.hn_dir / "hn.pt")
    client = webui.client()
    original = jobs.JobCallbacks.on_progress

    def slow(self, step, *args):
        original(self, step, *args)
        time.sleep(0.1)

    monkeypatch.setattr(jobs.JobCallbacks, "on_progress", slow)
    job_id = client.post(f"{BASE}/train", json=dict(FAST, network="hn", data_dir=str(train_images),
                                                    steps=500)).json()["job_id"]
    end = time.monotonic() + 60
    while client.get(f"{BASE}/jobs/{job_id}").json()["step"] < 2 and time.monotonic() < end:
        time.sleep(0.05)
    assert client.post(f"{BASE}/jobs/{job_id}/interrupt").status_code == 200
    body = poll(client, job_id)
    assert body["state"] == "interrupted" and 2 <= body["step"] < 500
    assert formats.load(webui.hn_dir / "hn.pt").step == body["step"]
    assert client.get(f"{BASE}/jobs/nope").status_code == 404


def test_api_auth_takes_webuis_credentials(tiny_ldm, tmp_path, monkeypatch):
    from webui_env import WebuiEnv

    env = WebuiEnv(tiny_ldm, tmp_path, monkeypatch, api_auth="alice:s3cret,bob:pw")
    try:
        assert env.client().get(f"{BASE}/networks").status_code == 401
        assert env.client(auth=("alice", "wrong")).get(f"{BASE}/networks").status_code == 401
        assert env.client(auth=("alice", "s3cret")).get(f"{BASE}/networks").status_code == 200
        assert env.client(auth=("bob", "pw")).post(f"{BASE}/networks", json={"name": "x"}).status_code == 200
    finally:
        env.close()


def test_without_api_there_are_no_routes(tiny_ldm, tmp_path, monkeypatch):
    from webui_env import WebuiEnv

    env = WebuiEnv(tiny_ldm, tmp_path, monkeypatch, api=False)
    try:
        assert not [r for r in env.app.router.routes if r.path.startswith(BASE)]
    finally:
        env.close()


def test_the_train_request_covers_every_config_field_and_shows_on_the_openapi_page(webui):
    covered = {target for spec in request_fields().values() for target in spec.targets}
    nested = {cls for _, cls in nested_configs()}
    assert {"OptimizerConfig", "ScheduleConfig", "ValidationConfig", "GuardConfig"} <= {c.__name__ for c in nested}
    for cls, _ in sources():
        for f in dataclasses.fields(cls):
            if (cls, f.name) not in SET_BY_SESSION and not f.metadata.get("internal") and \
                    not any(getattr(f.type, "__name__", f.type) == n.__name__ for n in nested):
                assert (cls, f.name) in covered, f"{cls.__name__}.{f.name}"
    schema = webui.client().get("/openapi.json").json()
    train = schema["components"]["schemas"]["HypernetExtTrainRequest"]
    assert set(request_fields()) | {"network", "resume"} == set(train["properties"])
    assert train["required"] == ["network", "data_dir"]
    assert "Default: webui's setting hypernet_ext_save_every" in train["properties"]["save_every"]["description"]
    assert f"{BASE}/jobs/{{job_id}}" in schema["paths"]


def test_find_lr_runs_the_range_test_on_a_copy_and_suggests_a_schedule(webui, train_images):
    import hashlib

    path = formats.save(create(sizes=(768, 32, 64), name="hn", seed=0), webui.hn_dir / "hn.pt")
    before = hashlib.sha256(path.read_bytes()).hexdigest()
    client = webui.client()
    response = client.post(f"{BASE}/find-lr", json=dict(FAST, network="hn", data_dir=str(train_images),
                                                        find_lr_start=1e-4, find_lr_end=1e30, find_lr_steps=16))
    assert response.status_code == 200, response.text
    job_id = response.json()["job_id"]
    body = poll(client, job_id)
    assert body["state"] == "done" and body["kind"] == "find_lr" and body["error"] is None, body
    curve = body["lr_find"]
    assert curve["rates"] == sorted(curve["rates"]) and curve["rates"][0] == 1e-4 and len(curve["rates"]) >= 3
    assert curve["suggestion"] is not None and curve["suggestion"] < curve["best_rate"], curve["summary"]
    assert curve["blew_up_at"] is None or curve["best_rate"] < curve["blew_up_at"]
    assert curve["schedule"].startswith(f"{curve['suggestion']:.2g}:")
    assert any(f.endswith("hn-lr-find.png") for f in body["files"])
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before      # the network's file is never touched
    assert not list(webui.hn_dir.glob("hn-*.pt")) and formats.load(path).step == 0


@pytest.mark.parametrize("body, field", [
    ({"find_lr_steps": 1}, "find_lr_steps"),
    ({"find_lr_start": 1.0, "find_lr_end": 0.1}, "find_lr_start"),
    ({"resume": True}, "resume"),
    ({"learn_rate": "1e-3:x"}, "learn_rate"),
])
def test_bad_find_lr_requests_name_the_field(webui, train_images, body, field):
    formats.save(create(sizes=(768,), name="hn"), webui.hn_dir / "hn.pt")
    response = webui.client().post(f"{BASE}/find-lr", json=dict(FAST, network="hn", data_dir=str(train_images),
                                                                **body))
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert (detail[0]["loc"][-1] if isinstance(detail, list) else detail["field"]) == field, detail
    assert webui.session.jobs == {}


@pytest.mark.parametrize("config, family, widths", [("v1-inference", "sd1", [320, 640, 768, 1280]),
                                                    ("v2-inference", "sd2", [320, 640, 1024, 1280]),
                                                    ("sd_xl_base", "sdxl", [640, 1280, 2048])])
def test_a_new_network_gets_the_loaded_models_widths(webui, config, family, widths):
    """The published UNet of each family (on the meta device) as webui's loaded UNet: create without sizes gives
    its widths."""
    from modules import shared
    from sd_configs import meta_unet

    wrapper = shared.sd_model.model
    unet = wrapper.diffusion_model
    wrapper.diffusion_model = meta_unet(config)   # (monkeypatch would delete the submodule on undo)
    try:
        assert webui.session.model_widths() == widths
        client = webui.client()
        assert client.post(f"{BASE}/networks", json={"name": "new"}).status_code == 200
        listed = {n["name"]: n for n in client.get(f"{BASE}/networks").json()}
    finally:
        wrapper.diffusion_model = unet
    assert listed["new"]["sizes"] == widths
    assert formats.describe(webui.hn_dir / "new.pt").widths == tuple(widths)


@pytest.mark.parametrize("sizes, made_for", [((2048, 640, 1280), "SDXL"), ((1024, 320, 640, 1280), "SD2")])
def test_training_a_network_made_for_another_family_is_refused_naming_it(webui, train_images, sizes, made_for):
    client = webui.client()
    assert client.post(f"{BASE}/networks", json={"name": "other", "sizes": list(sizes)}).status_code == 200
    response = client.post(f"{BASE}/train", json=dict(FAST, network="other", data_dir=str(train_images), steps=2))
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert detail["field"] == "network" and f"(made for {made_for}) and this model (SD1) has attention widths 32, " \
        "64, 768: none of the network's widths applies" in detail["error"], detail
    assert webui.session.jobs == {}, "nothing was queued"


def test_a_job_whose_network_no_longer_fits_fails_before_encoding_an_image(webui, train_images, monkeypatch):
    """The model can change while a job waits in webui's queue: the job checks the fit again as it starts."""
    from hypernet_ext.webui import host

    encoded = []
    monkeypatch.setattr(host.WebuiHost, "encode_images", lambda self, pixels: encoded.append(pixels.shape))
    monkeypatch.setattr(webui.session, "_refuse_misfit", lambda entry: None, raising=False)   # fitted when queued
    client = webui.client()
    assert client.post(f"{BASE}/networks", json={"name": "other", "sizes": [2048, 640, 1280]}).status_code == 200
    response = client.post(f"{BASE}/train", json=dict(FAST, network="other", data_dir=str(train_images), steps=2))
    body = poll(client, response.json()["job_id"])
    assert body["state"] == "failed" and "(made for SDXL) and this model (SD1)" in body["error"], body
    assert encoded == []


def test_training_a_network_that_fits_in_part_warns_naming_what_is_left_out(webui, train_images):
    client = webui.client()
    assert client.post(f"{BASE}/networks", json={"name": "part", "sizes": [1024, 32]}).status_code == 200
    response = client.post(f"{BASE}/train", json=dict(FAST, network="part", data_dir=str(train_images), steps=1))
    body = poll(client, response.json()["job_id"])
    assert body["state"] == "done", body
    assert any("covers widths 32, 1024 (made for SD2); this model (SD1) has attention widths 32, 64, 768, so it "
               "applies at 32 only (1024 not in this model); only those widths are trained" in m
               for m in body["messages"]), body["messages"]
