"""A fake Replicate HTTP API on 127.0.0.1, for driving the real `replicate` client in tests.

It answers the paths replicate 1.0.7 calls (files, models, versions, predictions, trainings) with
the same JSON shapes, moves jobs through starting → processing → succeeded one poll at a time with
growing logs, and serves outputs it makes on the fly: PNGs whose color encodes the inputs and a tiny
real .safetensors LoRA (inside a .tar, as Replicate's FLUX trainers publish it). Every request is
recorded so tests can assert what the client sent.

    with FakeReplicate(token="r8_test") as fake:
        client = replicate.Client(api_token="r8_test", base_url=fake.url)

Like Replicate's FLUX predictors (replicate/cog-flux), `go_fast` defaults to true when a request
leaves it out, and with it on every LoRA scale is multiplied by 1.5: the colour of an output encodes
the scale actually applied, so a test catches a call that forgot to send `go_fast`.

The account: `GET /v1/account` names `username`; `GET /v1/models` lists the account's models (created with
`POST /v1/models`, kept in `fake.models`) and one public model of someone else.

Failure hooks: a prompt or trigger word containing "FAIL" makes the job fail, "HANG" keeps it
running forever, `fail_if(input)` fails the predictions it picks, and `fake.inject(status, ...)` answers
the next matching requests with an error (a 429 with a Retry-After header when asked).

Time, like a GPU's: with `prediction_latency` (seconds, or a function of the input) a prediction finishes
that long after it was created, however often it is polled, and a create sent with `Prefer: wait[=n]`
is held open until the prediction finishes or n seconds (60 by default) pass, as Replicate's sync mode
does. Without it, predictions move on one poll at a time and `Prefer: wait` is answered at once.
`running()` lists the predictions still running now; `peak_running` is the most there ever were at once.
"""
from __future__ import annotations

import hashlib
import io
import json
import re
import struct
import tarfile
import threading
import time
import uuid
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.parser import BytesParser
from email.policy import default as email_policy
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

from PIL import Image

MAX_BODY = 64 * 1024 * 1024
TERMINAL = ("succeeded", "failed", "canceled")
SYNC_WAIT_DEFAULT = 60.0  # Replicate holds a `Prefer: wait` create this long unless told otherwise
GO_FAST_FACTOR = 1.5
ASPECTS = {"1:1": (1, 1), "16:9": (16, 9), "21:9": (21, 9), "3:2": (3, 2), "2:3": (2, 3), "4:5": (4, 5),
           "5:4": (5, 4), "3:4": (3, 4), "4:3": (4, 3), "9:16": (9, 16), "9:21": (9, 21)}


@dataclass
class Recorded:
    method: str
    path: str
    body: Any  # parsed JSON, {"fields":..., "files":...} for multipart, or None
    authorized: bool
    prefer: str | None = None  # the Prefer header (sync mode)
    at: float = 0.0  # time.monotonic() when it arrived
    injected: int | None = None  # the status an injected error answered it with


@dataclass
class Job:
    kind: str  # "prediction" | "training"
    id: str
    model: str
    version: str
    input: dict
    destination: str | None = None
    status: str = "starting"
    polls: int = 0
    logs: str = ""
    output: Any = None
    error: str | None = None
    created_at: str = field(default_factory=lambda: _now())
    started_at: str | None = None
    completed_at: str | None = None
    applied: dict = field(default_factory=dict)  # what the fake model really ran with (go_fast, scales)
    latency: float | None = None  # wall-clock seconds to finish (None: finish after `prediction_polls` polls)
    born: float = field(default_factory=time.monotonic)
    fail: bool = False


@dataclass
class Injected:
    status: int
    detail: str
    method: str | None
    path_prefix: str | None
    times: int
    retry_after: str | None = None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


def _new_id() -> str:
    return uuid.uuid4().hex[:24]


class FakeReplicate:
    """The fake server; use as a context manager. `url` is what to pass as the client's base_url."""

    def __init__(self, token: str = "r8_test", *, prediction_polls: int = 2, training_polls: int = 4,
                 weights_as_tar: bool = True, lifetime_s: float = 120.0, username: str = "fake-user",
                 prediction_latency: float | Callable[[dict], float] | None = None,
                 fail_if: Callable[[dict], bool] | None = None) -> None:
        self.token = token
        self.username = username  # the account the token belongs to (GET /v1/account)
        self.models: dict[str, dict] = {}  # "owner/name" -> model JSON, the account's own models
        self.prediction_polls = prediction_polls  # GETs before a prediction finishes
        self.training_polls = training_polls  # GETs before a training finishes
        self.weights_as_tar = weights_as_tar
        self.prediction_latency = prediction_latency
        self.fail_if = fail_if  # predictions whose input it picks fail, every time
        self.peak_running = 0
        self.lifetime_s = lifetime_s  # a forgotten fake still shuts itself down
        self.requests: list[Recorded] = []
        self.files: dict[str, dict] = {}  # id -> {"name", "content_type", "data"}
        self.jobs: dict[str, Job] = {}
        self.canceled: list[str] = []  # ids the client asked to cancel
        self.outputs: dict[str, tuple[str, bytes]] = {}  # path -> (content type, data)
        self._injected: list[Injected] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._timer: threading.Timer | None = None

    # ----------------------------------------------------------------- lifecycle

    @property
    def url(self) -> str:
        assert self._server is not None, "start the fake first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "FakeReplicate":
        fake = self

        class Handler(_Handler):
            owner = fake

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fake-replicate", daemon=True)
        self._thread.start()
        self._timer = threading.Timer(self.lifetime_s, self.close)
        self._timer.daemon = True
        self._timer.start()
        return self

    def close(self) -> None:
        server, self._server = self._server, None
        if self._timer and self._timer is not threading.current_thread():
            self._timer.cancel()
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)

    def __enter__(self) -> "FakeReplicate":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # ----------------------------------------------------------------- test helpers

    def inject(self, status: int, detail: str = "injected error", *, method: str | None = None,
               path_prefix: str | None = None, times: int = 1, retry_after: str | None = None) -> None:
        """Answer the next `times` matching requests with an HTTP error (402, 429, 500...), with a
        Retry-After header when `retry_after` is given."""
        with self._lock:
            self._injected.append(Injected(status, detail, method, path_prefix, times, retry_after))

    def running(self) -> list[Job]:
        """Predictions and trainings still starting or processing now (what the account is billed for)."""
        with self._lock:
            for job in self.jobs.values():
                if job.latency is not None:
                    self._advance(job)
            return [j for j in self.jobs.values() if j.status not in TERMINAL]

    def created(self, kind: str) -> list[Job]:
        """Jobs of one kind ("prediction" / "training") in creation order."""
        with self._lock:
            return [j for j in self.jobs.values() if j.kind == kind]

    def prediction_inputs(self) -> list[dict]:
        return [j.input for j in self.created("prediction")]

    def served(self, kind: str = "prediction") -> int:
        """How many jobs of this kind were created: each one is a paid call on the real Replicate."""
        return len(self.created(kind))

    def find(self, method: str, pattern: str) -> list[Recorded]:
        """Recorded requests whose path matches the regex `pattern`."""
        with self._lock:
            return [r for r in self.requests if r.method == method and re.search(pattern, r.path)]

    # ----------------------------------------------------------------- API behavior

    def handle(self, method: str, path: str, headers, body: bytes) -> tuple[int, str, bytes, dict]:
        path = path.split("?", 1)[0]
        parsed = _parse_body(headers.get("Content-Type", ""), body)
        auth = headers.get("Authorization", "")
        authorized = auth in (f"Bearer {self.token}", f"Token {self.token}")
        prefer = headers.get("Prefer")
        record = Recorded(method, path, parsed, authorized, prefer, time.monotonic())
        with self._lock:
            self.requests.append(record)
            if method == "GET" and path in self.outputs:  # output files are public, like replicate.delivery
                content_type, data = self.outputs[path]
                return 200, content_type, data, {}
            if not authorized:
                return (*_problem(401, "Unauthenticated", "You did not pass a valid authentication token"), {})
            for rule in self._injected:
                if (rule.method in (None, method)) and path.startswith(rule.path_prefix or ""):
                    rule.times -= 1
                    if rule.times <= 0:
                        self._injected.remove(rule)
                    extra = {"Retry-After": rule.retry_after} if rule.retry_after is not None else {}
                    record.injected = rule.status
                    return (*_problem(rule.status, "Injected", rule.detail), extra)
            status, ctype, data = self._route(method, path, parsed)
            job = self._created_now(method, status, data)
        if job is None or job.latency is None or not prefer or not prefer.startswith("wait"):
            return status, ctype, data, {}
        return (*self._hold(job, _wait_seconds(prefer)), {})

    def _created_now(self, method: str, status: int, data: bytes) -> Job | None:
        """The prediction a POST just created (None for anything else)."""
        if method != "POST" or status != 201:
            return None
        job = self.jobs.get(json.loads(data).get("id", ""))
        if job is None or job.kind != "prediction":
            return None
        for other in self.jobs.values():
            if other.latency is not None:
                self._advance(other)
        self.peak_running = max(self.peak_running, sum(j.status not in TERMINAL for j in self.jobs.values()))
        return job

    def _hold(self, job: Job, seconds: float) -> tuple[int, str, bytes]:
        """Sync mode: answer when the prediction is done or `seconds` have passed, as it stands then."""
        deadline = time.monotonic() + seconds
        while True:
            with self._lock:
                self._advance(job)
                now = time.monotonic()
                if job.status in TERMINAL or now >= deadline:
                    return _json(201, self._job_json(job))
                due = job.born + (job.latency or 0.0)  # sleep until it is due (a cancel is seen within 50 ms)
            time.sleep(min(0.05, max(0.001, min(due, deadline) - now)))

    def _route(self, method: str, path: str, body: Any) -> tuple[int, str, bytes]:
        parts = [p for p in path.split("/") if p]
        if parts[:1] != ["v1"]:
            return _problem(404, "Not found", f"No route for {path}")
        parts = parts[1:]
        if method == "POST" and parts == ["files"]:
            return self._upload(body)
        if parts[:1] == ["files"] and len(parts) >= 2 and method == "GET":
            entry = self.files.get(parts[1])
            if entry is None:
                return _problem(404, "Not found", "No such file")
            if parts[2:] == ["download"]:
                return 200, entry["content_type"], entry["data"]
            return _json(200, self._file_json(parts[1]))
        if method == "GET" and parts == ["account"]:
            return _json(200, {"type": "user", "username": self.username, "name": self.username.title(),
                               "github_url": None})
        if parts == ["models"]:
            if method == "GET":  # one page: the account's models, then someone else's public one
                others = [self._model_json("someone", "public-model")]
                return _json(200, {"next": None, "previous": None, "results": [*self.models.values(), *others]})
            if method == "POST":
                return self._create_model(body)
        if parts[:1] == ["models"] and len(parts) >= 3:
            owner, name, rest = parts[1], parts[2], parts[3:]
            if method == "GET" and not rest:
                if owner == self.username and f"{owner}/{name}" not in self.models:
                    return _problem(404, "Not found", "Model not found")
                return _json(200, self.models.get(f"{owner}/{name}") or self._model_json(owner, name))
            if method == "GET" and len(rest) == 2 and rest[0] == "versions":
                return _json(200, _version_json(rest[1]))
            if method == "POST" and rest == ["predictions"]:
                return self._create("prediction", f"{owner}/{name}", "", body)
            if method == "POST" and len(rest) == 3 and rest[0] == "versions" and rest[2] == "trainings":
                return self._create("training", f"{owner}/{name}", rest[1], body)
        if parts[:1] in (["predictions"], ["trainings"]):
            kind = parts[0][:-1]
            if method == "POST" and parts == ["predictions"]:
                version = (body or {}).get("version", "")
                return self._create("prediction", "fake/versioned-model", version.split(":")[-1], body)
            job = self.jobs.get(parts[1]) if len(parts) >= 2 else None
            if job is None or job.kind != kind:
                return _problem(404, "Not found", f"No such {kind}")
            if method == "GET" and len(parts) == 2:
                self._advance(job)
                return _json(200, self._job_json(job))
            if method == "POST" and parts[2:] == ["cancel"]:
                self.canceled.append(job.id)
                if job.latency is not None:  # a timed prediction may have finished by now
                    self._advance(job)
                if job.status not in TERMINAL:
                    job.status, job.completed_at = "canceled", _now()
                return _json(200, self._job_json(job))
        return _problem(404, "Not found", f"No route for {method} {path}")

    def _create_model(self, body: Any) -> tuple[int, str, bytes]:
        """POST /v1/models as Replicate answers it: owner must be the account, a name free, hardware given."""
        body = body if isinstance(body, dict) else {}
        owner, name = body.get("owner"), body.get("name")
        if owner != self.username:
            return _problem(403, "Forbidden", f"You cannot create models for {owner}")
        if not isinstance(name, str) or not re.match(r"^[a-z0-9][a-z0-9._-]*$", name):
            return _problem(422, "Invalid", "name is invalid")
        if body.get("visibility") not in ("public", "private") or not body.get("hardware"):
            return _problem(422, "Invalid", "visibility and hardware are required")
        if f"{owner}/{name}" in self.models:
            return _problem(409, "Conflict", "A model with that name already exists")
        model = {**self._model_json(owner, name), "visibility": body["visibility"], "latest_version": None}
        self.models[f"{owner}/{name}"] = model
        return _json(201, model)

    def _upload(self, body: Any) -> tuple[int, str, bytes]:
        if not isinstance(body, dict) or "content" not in body.get("files", {}):
            return _problem(400, "Bad request", "expected a multipart upload with a 'content' part")
        name, content_type, data = body["files"]["content"]
        file_id = _new_id()
        self.files[file_id] = {"name": name, "content_type": content_type, "data": data}
        return _json(201, self._file_json(file_id))

    def _create(self, kind: str, model: str, version: str, body: Any) -> tuple[int, str, bytes]:
        body = body if isinstance(body, dict) else {}
        inputs = body.get("input")
        if not isinstance(inputs, dict):
            return _problem(422, "Invalid input", "input is required")
        if kind == "training" and not body.get("destination"):
            return _problem(422, "Invalid input", "destination is required")
        job = Job(kind, _new_id(), model, version or hashlib.sha256(model.encode()).hexdigest(), inputs,
                  destination=body.get("destination"))
        if kind == "prediction":
            latency = self.prediction_latency
            job.latency = latency(inputs) if callable(latency) else latency
            job.fail = bool(self.fail_if and self.fail_if(inputs))
        self.jobs[job.id] = job
        return _json(201, self._job_json(job))

    def _advance(self, job: Job) -> None:
        """One look moves a running job on: one stage per poll, or as far as the clock says (latency)."""
        if job.status in TERMINAL:
            return
        job.polls += 1
        job.status, job.started_at = "processing", job.started_at or _now()
        text = " ".join(str(job.input.get(k, "")) for k in ("prompt", "trigger_word"))
        if "HANG" in text:
            if job.latency is None or not job.logs:  # timed jobs are looked at often: say it once
                job.logs += "waiting for a GPU...\n"
            return
        if job.kind == "prediction":
            self._advance_prediction(job, "FAIL" in text or job.fail)
        else:
            self._advance_training(job, "FAIL" in text)

    def _advance_prediction(self, job: Job, fail: bool) -> None:
        total = max(int(job.input.get("num_inference_steps", 28)), 1)
        if job.latency is not None:
            share = (time.monotonic() - job.born) / max(job.latency, 1e-9)
        else:
            share = job.polls / self.prediction_polls
        done = min(total, int(total * share))
        line = f"{done * 100 // total:3d}%|{'#' * (done * 10 // total):10}| {done}/{total} [00:01<00:01]\n"
        if job.latency is None or not job.logs.endswith(line):  # timed jobs: a line per step, not per look
            job.logs += line
        if share < 1:
            return
        job.completed_at = _now()
        if fail:
            job.status, job.error = "failed", "Prediction failed: the fake was asked to FAIL"
            return
        try:
            image = self._render(job)
        except ValueError as exc:
            job.status, job.error = "failed", str(exc)
            return
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        path = f"/outputs/{job.id}/out-0.png"
        self.outputs[path] = ("image/png", buf.getvalue())
        job.status, job.output = "succeeded", self.url + path

    def _render(self, job: Job) -> Image.Image:
        """A flat image whose color encodes seed, the LoRA scale applied (after go_fast) and prompt."""
        inp = job.input
        if "input_image" in inp:
            source = self._resolve_file(str(inp["input_image"]))
            try:
                size = Image.open(io.BytesIO(source["data"])).size
            except Exception:
                raise ValueError("input_image is not a readable image") from None
        else:
            w, h = ASPECTS.get(str(inp.get("aspect_ratio", "1:1")), (1, 1))
            size = (64, max(1, round(64 * h / w)))
        seed = int(inp.get("seed", 0))
        scale = self._apply_go_fast(job)
        digest = hashlib.sha256(str(inp.get("prompt", "")).encode()).digest()
        color = ((seed * 37) % 256, int(round(scale * 100)) % 256, digest[0])
        return Image.new("RGB", size, color)

    @staticmethod
    def _apply_go_fast(job: Job) -> float:
        """cog-flux's rule: go_fast defaults to true and multiplies LoRA scales by 1.5 (fp8 weights)."""
        inp = job.input
        go_fast = bool(inp.get("go_fast", True))
        factor = GO_FAST_FACTOR if go_fast else 1.0
        job.applied = {"go_fast": go_fast}
        if "lora_weights" in inp:
            job.applied["lora_scale"] = float(inp.get("lora_scale", 1.0)) * factor
        if "extra_lora" in inp:
            job.applied["extra_lora_scale"] = float(inp.get("extra_lora_scale", 1.0)) * factor
        return job.applied.get("lora_scale", 0.0)

    def _advance_training(self, job: Job, fail: bool) -> None:
        total = max(int(job.input.get("steps", 1000)), 1)
        if job.polls == 1:
            try:
                count = self._check_dataset(str(job.input.get("input_images", "")))
            except ValueError as exc:
                job.status, job.error, job.completed_at = "failed", str(exc), _now()
                return
            job.logs += f"Extracted {count} images from the dataset zip\n"
        done = min(total, total * job.polls // self.training_polls)
        loss = 0.5 / (1 + job.polls)
        job.logs += f"step {done}/{total}, loss: {loss:.4f}\n"
        job.logs += f"flux_train: {done * 100 // total:3d}%|{'#' * (done * 10 // total):10}| {done}/{total} [00:0{job.polls}<00:10, 2.1it/s, loss={loss:.3f}]\n"
        if fail and job.polls >= 2:
            job.status, job.error, job.completed_at = "failed", "Training failed: CUDA out of memory (fake)", _now()
            return
        if job.polls < self.training_polls:
            return
        weights = _tiny_safetensors(job.input.get("lora_rank", 4))
        if self.weights_as_tar:
            path = f"/outputs/{job.id}/trained_model.tar"
            self.outputs[path] = ("application/x-tar", _tar({"output/flux_train_replicate/lora.safetensors": weights,
                                                            "output/flux_train_replicate/config.yaml": b"steps: 1\n"}))
        else:
            path = f"/outputs/{job.id}/lora.safetensors"
            self.outputs[path] = ("application/octet-stream", weights)
        version = hashlib.sha256(job.id.encode()).hexdigest()
        job.status, job.completed_at = "succeeded", _now()
        job.output = {"version": f"{job.destination}:{version}", "weights": self.url + path}

    def _resolve_file(self, url: str) -> dict:
        match = re.search(r"/v1/files/([0-9a-f]+)", url)
        entry = self.files.get(match.group(1)) if match else None
        if entry is None:
            raise ValueError(f"could not download {url}")
        return entry

    def _check_dataset(self, url: str) -> int:
        data = self._resolve_file(url)["data"]
        try:
            names = zipfile.ZipFile(io.BytesIO(data)).namelist()
        except zipfile.BadZipFile:
            raise ValueError("input_images is not a zip file") from None
        count = sum(n.lower().endswith((".png", ".jpg", ".jpeg", ".webp")) for n in names)
        if not count:
            raise ValueError("input_images holds no images")
        return count

    # ----------------------------------------------------------------- JSON shapes

    def _file_json(self, file_id: str) -> dict:
        entry = self.files[file_id]
        return {
            "id": file_id, "name": entry["name"], "content_type": entry["content_type"],
            "size": len(entry["data"]), "etag": hashlib.md5(entry["data"]).hexdigest(),
            "checksums": {"sha256": hashlib.sha256(entry["data"]).hexdigest()}, "metadata": {},
            "created_at": _now(), "expires_at": None, "urls": {"get": f"{self.url}/v1/files/{file_id}"},
        }

    def _model_json(self, owner: str, name: str) -> dict:
        return {
            "url": f"https://replicate.com/{owner}/{name}", "owner": owner, "name": name,
            "description": "fake model", "visibility": "public", "github_url": None, "paper_url": None,
            "license_url": None, "run_count": 0, "cover_image_url": None, "default_example": None,
            "latest_version": _version_json(hashlib.sha256(f"{owner}/{name}".encode()).hexdigest()),
        }

    def _job_json(self, job: Job) -> dict:
        base = f"{self.url}/v1/{job.kind}s/{job.id}"
        data = {
            "id": job.id, "model": job.model, "version": job.version, "status": job.status,
            "input": job.input, "output": job.output, "logs": job.logs, "error": job.error,
            "created_at": job.created_at, "started_at": job.started_at, "completed_at": job.completed_at,
            "urls": {"get": base, "cancel": f"{base}/cancel"},
        }
        if job.kind == "prediction":
            data["metrics"] = {"predict_time": 0.1} if job.status == "succeeded" else {}
        else:
            data["destination"] = job.destination
        return data


@contextmanager
def serving(monkeypatch, token: str, **options):
    """A started fake, with what the real client reads from the environment pointed at it: the token
    and a fast poll interval. `options` go to FakeReplicate (prediction_polls, training_polls...)."""
    monkeypatch.setenv("REPLICATE_POLL_INTERVAL", "0.01")
    monkeypatch.setenv("REPLICATE_API_TOKEN", token)
    with FakeReplicate(token=token, **options) as server:
        yield server


def _wait_seconds(prefer: str) -> float:
    """`Prefer: wait` → 60 s, `Prefer: wait=5` → 5 s."""
    _, _, value = prefer.partition("=")
    try:
        return max(0.0, min(float(value), SYNC_WAIT_DEFAULT)) if value else SYNC_WAIT_DEFAULT
    except ValueError:
        return SYNC_WAIT_DEFAULT


def _version_json(version_id: str) -> dict:
    return {"id": version_id, "created_at": "2025-01-01T00:00:00Z", "cog_version": "0.14.0",
            "openapi_schema": {}}


class _Handler(BaseHTTPRequestHandler):
    owner: FakeReplicate

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        extra: dict = {}
        if length > MAX_BODY:
            status, ctype, data = _problem(413, "Too large", "request body too large")
        else:
            body = self.rfile.read(length) if length else b""
            status, ctype, data, extra = self.owner.handle(self.command, self.path, self.headers, body)
        self.send_response(status)
        for name, value in extra.items():
            self.send_header(name, value)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_DELETE = _serve

    def log_message(self, format: str, *args) -> None:  # keep test output quiet
        pass


def _parse_body(content_type: str, body: bytes) -> Any:
    if not body:
        return None
    if content_type.startswith("application/json"):
        return json.loads(body)
    if content_type.startswith("multipart/form-data"):
        message = BytesParser(policy=email_policy).parsebytes(
            b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body)
        fields, files = {}, {}
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            payload = part.get_payload(decode=True) or b""
            if part.get_filename():
                files[name] = (part.get_filename(), part.get_content_type(), payload)
            else:
                fields[name] = payload.decode()
        return {"fields": fields, "files": files}
    return body


def _json(status: int, obj: Any) -> tuple[int, str, bytes]:
    return status, "application/json", json.dumps(obj).encode()


def _problem(status: int, title: str, detail: str) -> tuple[int, str, bytes]:
    return status, "application/problem+json", json.dumps({"title": title, "detail": detail, "status": status}).encode()


def _tiny_safetensors(rank: Any) -> bytes:
    """A real, loadable safetensors file with one LoRA A/B pair (float32, little-endian)."""
    rank = max(1, min(int(rank or 4), 16))
    shapes = {
        "transformer.single_transformer_blocks.0.attn.to_q.lora_A.weight": [rank, 8],
        "transformer.single_transformer_blocks.0.attn.to_q.lora_B.weight": [8, rank],
    }
    header: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    blobs, offset = [], 0
    for name, shape in shapes.items():
        count = shape[0] * shape[1]
        blob = struct.pack(f"<{count}f", *[(i % 7) / 70.0 for i in range(count)])
        header[name] = {"dtype": "F32", "shape": shape, "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    head = json.dumps(header).encode()
    head += b" " * (-len(head) % 8)
    return struct.pack("<Q", len(head)) + head + b"".join(blobs)


def _tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()
