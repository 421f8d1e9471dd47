"""REST routes on webui's FastAPI app, with pydantic request/response models (they show on webui's /docs page).

  GET  /hypernet-ext/v1/networks                 -> [NetworkItem]
  POST /hypernet-ext/v1/networks                 CreateNetworkRequest -> {name, path}
  GET  /hypernet-ext/v1/model                    -> {family, label, widths} of webui's loaded model
  POST /hypernet-ext/v1/train                    TrainRequest -> {job_id, task_id}   (queued like a UI job)
  POST /hypernet-ext/v1/find-lr                  FindLRRequest -> {job_id, task_id}  (the LR range test)
  GET  /hypernet-ext/v1/jobs/{job_id}            -> JobResponse (?history=true: loss and LR per step)
  POST /hypernet-ext/v1/jobs/{job_id}/interrupt  -> JobResponse

Request models are built from the config dataclasses (every field, its help as description), so new fields
appear without edits here. Errors: 422 {field, error} for a bad value, 404 for an unknown network or job, 409
for an existing file or a mode we cannot train in. With ``--api-auth`` the routes take webui's credentials.
This module does not use postponed annotations: FastAPI reads the endpoint annotations at registration.
"""
import dataclasses
import logging
import typing
from secrets import compare_digest
from typing import Any, Dict, List, Optional, Tuple, Union

from ..config import NetworkConfig, default_of, help_of
from ..errors import HypernetError, error_field
from ..families import label
from .host import NotSupported
from .library import UnknownNetwork
from .train_request import SETTING_DEFAULTS, finder_fields, request_fields

logger = logging.getLogger(__name__)

PREFIX = "/hypernet-ext/v1"


def api_type(hint):
    """The pydantic type for a dataclass field's type: strict scalars (the dataclass validates and converts),
    lists also as comma-separated strings."""
    from pydantic import StrictBool, StrictFloat, StrictInt, StrictStr

    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Union:
        inner = [api_type(a) for a in args if a is not type(None)]
        kind = inner[0] if len(inner) == 1 else Union[tuple(inner)]
        return Optional[kind] if type(None) in args else kind
    if origin in (tuple, list):
        return Union[List[api_type(args[0]) if args else Any], StrictStr]
    if hint is dict or origin is dict:
        return Union[Dict[str, Any], StrictStr]
    return {bool: StrictBool, int: StrictInt, float: Union[StrictFloat, StrictInt], str: StrictStr}.get(hint, Any)


def _field(default, description, required=False):
    from pydantic import Field

    default = list(default) if isinstance(default, tuple) else default
    return Field(... if required else default, description=description)


def _create_fields() -> dict:
    from pydantic import StrictBool, StrictStr

    hints = typing.get_type_hints(NetworkConfig)
    fields = {"name": (StrictStr, _field(None, "Name of the network: its file is <name>.pt", True)),
              "overwrite": (StrictBool, _field(False, "Replace an existing file of that name."))}
    for f in dataclasses.fields(NetworkConfig):
        if f.metadata.get("internal"):
            continue
        default, text = default_of(NetworkConfig, f.name), help_of(NetworkConfig, f.name)
        if f.name == "sizes":
            default, text = None, text + " Empty: every attention width of the loaded model."
        fields[f.name] = (Optional[api_type(hints[f.name])], _field(default, text))
    return fields


def _train_fields() -> dict:
    from pydantic import StrictBool, StrictStr

    fields = {"network": (StrictStr, _field(None, "Name of the network to train (GET networks).", True)),
              "resume": (StrictBool, _field(False, "Continue from the newest checkpoint with its optimizer state "
                                                   "(.optim); false: from the network file with a fresh optimizer."))}
    for name, spec in request_fields().items():
        text = spec.help
        if name in SETTING_DEFAULTS:
            keys = SETTING_DEFAULTS[name][0].replace("webui:", "").replace("|", " or ")
            text += f" Default: webui's setting {keys}."
        fields[name] = (api_type(spec.type), _field(spec.default, text, required=name == "data_dir"))
    return fields


def _find_lr_fields() -> dict:
    """The train request's fields (resume aside) and the range test's ``find_lr_*`` options."""
    fields = {name: spec for name, spec in _train_fields().items() if name != "resume"}
    for name, spec in finder_fields().items():
        fields[name] = (api_type(spec.type), _field(spec.default, spec.help))
    return fields


def build_models() -> Dict[str, type]:
    """The request models (from the config dataclasses) and the response models."""
    from pydantic import BaseModel, create_model

    class Strict:   # an option we do not know is an error (422 naming it), not silently ignored
        extra = "forbid"

    from .session import NetworkInfo

    hints = typing.get_type_hints(NetworkInfo)
    item = {f.name: (hints[f.name], ...) for f in dataclasses.fields(NetworkInfo) if not f.metadata.get("internal")}

    class CreateNetworkResponse(BaseModel):
        name: str
        path: str

    class ModelResponse(BaseModel):
        family: str
        label: str
        widths: List[int]

    class TrainResponse(BaseModel):
        job_id: str
        task_id: str

    class JobResponse(BaseModel):
        job_id: str
        network: str
        task_id: str
        kind: str
        state: str
        step: int
        total: int
        loss: Optional[float]
        learn_rate: Optional[float]
        eta_s: Optional[float]
        files: List[str]
        checkpoints: List[str]
        validation: List[Dict[str, Any]]
        guard: List[Dict[str, Any]]
        previews: List[Dict[str, Any]]
        messages: List[str]
        error: Optional[str]
        lr_find: Optional[Dict[str, Any]] = None
        history: Optional[List[Dict[str, Any]]] = None

    return {"NetworkItem": create_model("HypernetExtNetworkItem", **item),
            "CreateNetworkResponse": CreateNetworkResponse, "TrainResponse": TrainResponse, "JobResponse": JobResponse,
            "ModelResponse": ModelResponse,
            "CreateNetworkRequest": create_model("HypernetExtCreateNetworkRequest", __config__=Strict,
                                                 **_create_fields()),
            "TrainRequest": create_model("HypernetExtTrainRequest", __config__=Strict, **_train_fields()),
            "FindLRRequest": create_model("HypernetExtFindLRRequest", __config__=Strict, **_find_lr_fields())}


def http_error(err: Exception):
    """The HTTPException for an error a request caused."""
    from fastapi import HTTPException

    if isinstance(err, UnknownNetwork):
        status = 404
    elif isinstance(err, (FileExistsError, NotSupported)):
        status = 409
    else:
        status = 422
    return HTTPException(status_code=status, detail={"field": error_field(err), "error": str(err)})


def auth_dependency(api_auth: str):
    """A dependency that accepts the credentials of webui's --api-auth ('user:password,...'), as webui's own."""
    from fastapi import Depends, HTTPException
    from fastapi.security import HTTPBasic, HTTPBasicCredentials

    credentials: Dict[str, str] = {}
    for pair in api_auth.split(","):
        user, _, password = pair.strip().partition(":")
        credentials[user] = password

    def check(given: HTTPBasicCredentials = Depends(HTTPBasic())):
        expected = credentials.get(given.username)
        if expected is not None and compare_digest(given.password, expected):
            return True
        raise HTTPException(status_code=401, detail="Incorrect username or password",
                            headers={"WWW-Authenticate": "Basic"})

    return check


def register(app, session, api_auth: Optional[str]) -> List[Any]:
    """Add the routes to ``app``; returns them (``unregister`` removes them)."""
    from fastapi import Depends

    models = build_models()
    job_response, item_model = models["JobResponse"], models["NetworkItem"]
    CreateNetworkRequest, TrainRequest = models["CreateNetworkRequest"], models["TrainRequest"]
    FindLRRequest = models["FindLRRequest"]

    def list_networks():
        names = list(item_model.__fields__)
        return [item_model(**{name: getattr(info, name) for name in names}) for info in session.list_networks()]

    def create_network(request: CreateNetworkRequest):
        values = request.dict(exclude_unset=True)
        name, overwrite = values.pop("name"), values.pop("overwrite", False)
        try:
            path = session.create_network(name, overwrite=overwrite, **values)
        except (HypernetError, FileExistsError) as err:
            raise http_error(err) from None
        return models["CreateNetworkResponse"](name=path.stem, path=str(path))

    def loaded_model():
        family = session.model_family()
        return models["ModelResponse"](family=family, label=label(family), widths=session.model_widths())

    def train(request: TrainRequest):
        values = request.dict(exclude_unset=True)
        network, resume = values.pop("network"), values.pop("resume", False)
        try:
            job = session.start_training(network, resume=resume, **values)
        except HypernetError as err:
            raise http_error(err) from None
        return models["TrainResponse"](job_id=job.id, task_id=job.task_id)

    def find_lr(request: FindLRRequest):
        values = request.dict(exclude_unset=True)
        network = values.pop("network")
        try:
            job = session.start_find_lr(network, **values)
        except HypernetError as err:
            raise http_error(err) from None
        return models["TrainResponse"](job_id=job.id, task_id=job.task_id)

    def get_job(job_id: str, history: bool = False):
        return job_response(**_job(session, job_id).view(history=history))

    def interrupt_job(job_id: str):
        job = _job(session, job_id)
        session.interrupt(job.id)
        return job_response(**job.view())

    extra = {"dependencies": [Depends(auth_dependency(api_auth))]} if api_auth else {}
    table: List[Tuple[str, Any, str, Any]] = [
        ("/networks", list_networks, "GET", List[item_model]),
        ("/networks", create_network, "POST", models["CreateNetworkResponse"]),
        ("/model", loaded_model, "GET", models["ModelResponse"]),
        ("/train", train, "POST", models["TrainResponse"]),
        ("/find-lr", find_lr, "POST", models["TrainResponse"]),
        ("/jobs/{job_id}", get_job, "GET", job_response),
        ("/jobs/{job_id}/interrupt", interrupt_job, "POST", job_response),
    ]
    before = list(app.router.routes)
    for path, endpoint, method, response in table:
        app.add_api_route(PREFIX + path, endpoint, methods=[method], response_model=response,
                          tags=["hypernet_ext"], **extra)
    app.openapi_schema = None   # /docs shows the new routes
    return [route for route in app.router.routes if route not in before]


def unregister(app, routes) -> None:
    for route in routes:
        if route in app.router.routes:
            app.router.routes.remove(route)
    app.openapi_schema = None


def _job(session, job_id):
    from fastapi import HTTPException

    job = session.job(job_id)
    if job is None:
        raise HTTPException(status_code=404, detail={"field": "job_id", "error": f"no job {job_id!r}; the train "
                                                     "request answers with the id of the job it queued"})
    return job
