"""A fake Hugging Face Hub on 127.0.0.1: any folder served as a model repo, open or gated.

It answers what huggingface_hub 2.4.0 and diffusers 0.42.1 ask (see shared/notes/huggingface-hub.md):
model info (`/api/models/{id}` and `/revision/{rev}`, with file sizes), the recursive tree with
`Link: rel="next"` pagination, `HEAD`/`GET /{id}/resolve/{rev}/{path}` with `X-Repo-Commit`, `ETag`,
`X-Linked-Etag`/`X-Linked-Size` for weight files and `Range` answers, `whoami-v2`, and the gated
answers (401 without a token, 403 for a token without access, both `X-Error-Code: GatedRepo`). It never
sends a Xet hash, so the real client stays on plain HTTP.

The upload side answers what `HfApi.create_repo` and `create_commit` send when given file objects (the
plain LFS protocol, no Xet): `POST /api/repos/create`, `/api/validate-yaml`, `/api/models/{id}/preupload/
{rev}` (LFS for weights, pictures and binary samples), `POST /{id}.git/info/lfs/objects/batch` (no action
for an object it already holds), `PUT` of each object to an href on this server (its sha256 checked) and its
verify call, and the NDJSON `/api/models/{id}/commit/{rev}`, which makes a new commit (`history`). Writing
needs a token with the write role, or a fine-grained one with "repo.write" on the namespace
(`add_fine_grained_token`); `uploads` lists every upload request, `fail_upload(oid)` refuses one PUT.
A hostile Hub (or mirror) is one `add_repo` option away: `commit=` replaces the repo's commit id and
`etags={path: etag}` the ETag a file is served with, so tests can answer with names, commits and
ETags a downloader must not turn into paths.

Tests read `served[(repo, path)]` (bytes sent per file) to prove nothing is fetched twice, and
`hold(repo, path, after)` stops a file's next GET after `after` bytes until `release()`, then drops
the connection (with `release()` at once, a plain cut).

    with FakeHub() as hub:
        hub.add_repo("test/tiny-flux", folder)
        hub.add_token("hf_ok", "ada", access={"test/gated"})
"""
from __future__ import annotations

import base64
import hashlib
import json
import threading
from contextlib import contextmanager
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".ckpt", ".gguf")
CHUNK = 64 * 1024


@dataclass
class Repo:
    repo_id: str
    files: dict[str, bytes]
    gated: bool = False
    sha: str = ""
    private: bool = False
    history: list = field(default_factory=list)  # commits made through the upload side: {"oid", "summary", "paths"}
    lfs_paths: set = field(default_factory=set)  # files committed as LFS objects (whatever their suffix)
    commit: str | None = None  # served instead of the computed sha (a hostile answer)
    etags: dict[str, str] = field(default_factory=dict)  # path -> ETag served instead of the real one

    def __post_init__(self) -> None:
        digest = hashlib.sha1(self.repo_id.encode())
        for path in sorted(self.files):
            digest.update(path.encode() + hashlib.sha1(self.files[path]).digest())
        self.sha = self.commit if self.commit is not None else digest.hexdigest()

    def is_lfs(self, path: str) -> bool:
        return path.endswith(LFS_SUFFIXES) or path in self.lfs_paths

    def etag(self, path: str) -> str:
        if path in self.etags:
            return self.etags[path]
        data = self.files[path]
        if self.is_lfs(path):
            return hashlib.sha256(data).hexdigest()
        return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()  # git's blob id, as the Hub sends


@dataclass
class Hold:
    after: int
    released: threading.Event = field(default_factory=threading.Event)
    reached: threading.Event = field(default_factory=threading.Event)


class FakeHub:
    def __init__(self, page_size: int = 50) -> None:
        self.repos: dict[str, Repo] = {}
        self.tokens: dict[str, tuple[str, set[str]]] = {}
        self.served: Counter = Counter()
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Range)
        self.page_size = page_size
        self._holds: dict[tuple[str, str], Hold] = {}
        self.uploads: list[dict] = []  # {"method", "path", "json"} of every upload-side request
        self.lfs: dict[str, bytes] = {}  # LFS objects received, by sha256
        self.scopes: dict[str, list] = {}  # fine-grained tokens: their "scoped" entries
        self.failing: dict[str, int] = {}  # oid -> status the next PUT of it is answered with
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    # ---- set-up ---------------------------------------------------------------------------
    def add_repo(self, repo_id: str, folder: Path | None = None, gated: bool = False,
                 files: dict[str, bytes] | None = None, commit: str | None = None,
                 etags: dict[str, str] | None = None) -> Repo:
        found = {}
        if folder is not None:
            for path in sorted(Path(folder).rglob("*")):
                if path.is_file():
                    found[path.relative_to(folder).as_posix()] = path.read_bytes()
        found.update(files or {})
        repo = Repo(repo_id, found, gated, commit=commit, etags=dict(etags or {}))
        self.repos[repo_id] = repo
        return repo

    def add_token(self, token: str, user: str, access: set[str] | tuple = (), role: str = "read") -> None:
        self.tokens[token] = (user, set(access), role)

    def add_fine_grained_token(self, token: str, user: str, permissions: dict[str, list[str]]) -> None:
        """A fine-grained token: `permissions` maps a namespace to its scopes (e.g. ["repo.write"])."""
        self.tokens[token] = (user, set(), "fineGrained")
        self.scopes[token] = [{"entity": {"type": "user", "name": name}, "permissions": list(scopes)}
                              for name, scopes in permissions.items()]

    def fail_upload(self, oid: str, status: int = 400) -> None:
        """The next PUT of this LFS object is read whole, then refused with `status` (not retried below 500)."""
        self.failing[oid] = status

    def hold(self, repo_id: str, path: str, after: int) -> Hold:
        """The next GET of this file sends `after` bytes, waits for `release()`, then drops the connection."""
        hold = Hold(after)
        self._holds[(repo_id, path)] = hold
        return hold

    def cut(self, repo_id: str, path: str, after: int) -> Hold:
        hold = self.hold(repo_id, path, after)
        hold.released.set()
        return hold

    def bytes_served(self, repo_id: str) -> int:
        return sum(n for (repo, _), n in self.served.items() if repo == repo_id)

    # ---- server ---------------------------------------------------------------------------
    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> "FakeHub":
        hub = self

        class Handler(_UploadHandler):
            fake = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        for hold in self._holds.values():
            hold.released.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "FakeHub":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class _Handler(BaseHTTPRequestHandler):
    fake: FakeHub
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # quiet
        pass

    # ---- plumbing -------------------------------------------------------------------------
    def _send(self, status: int, body: bytes = b"", headers: dict | None = None, head: bool = False) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, str(value))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _json(self, data, status: int = 200, headers: dict | None = None, head: bool = False) -> None:
        self._send(status, json.dumps(data).encode(), {"Content-Type": "application/json", **(headers or {})}, head)

    def _error(self, status: int, code: str, message: str, head: bool = False) -> None:
        self._json({"error": message}, status, {"X-Error-Code": code, "X-Error-Message": message}, head)

    def _token(self) -> str | None:
        auth = self.headers.get("Authorization", "")
        return auth[7:] if auth.startswith("Bearer ") else None

    def _user(self):
        """(known, entry): an unknown token is refused everywhere, as the Hub does."""
        token = self._token()
        if token is None:
            return True, None
        entry = self.fake.tokens.get(token)
        return entry is not None, entry

    # ---- routes ---------------------------------------------------------------------------
    def do_HEAD(self) -> None:
        self._route(head=True)

    def do_GET(self) -> None:
        self._route(head=False)

    def _route(self, head: bool) -> None:
        parsed = urlparse(self.path)
        path = unquote(parsed.path)
        query = parse_qs(parsed.query)
        self.fake.requests.append((self.command, path, self.headers.get("Range")))
        known, entry = self._user()
        if not known:
            return self._error(401, "", "Invalid credentials in Authorization header", head)
        if path == "/api/whoami-v2":
            if entry is None:
                return self._error(401, "", "Invalid credentials in Authorization header", head)
            user, _, role = entry
            token = {"displayName": f"{user}-token", "role": role}
            if role == "fineGrained":
                token["fineGrained"] = {"scoped": self.fake.scopes.get(self._token(), []), "global": []}
            return self._json({"type": "user", "name": user, "fullname": user.title(), "orgs": [],
                               "auth": {"type": "access_token", "accessToken": token}}, head=head)
        if path.startswith("/api/models/"):
            return self._api(path[len("/api/models/"):], query, head)
        parts = path.lstrip("/").split("/")
        if len(parts) >= 5 and parts[2] == "resolve":
            return self._resolve("/".join(parts[:2]), parts[3], "/".join(parts[4:]), entry, head)
        self._error(404, "", f"Nothing at {path}", head)

    def _repo(self, repo_id: str, head: bool) -> Repo | None:
        repo = self.fake.repos.get(repo_id)
        entry = self.fake.tokens.get(self._token() or "")
        if repo is not None and repo.private and (entry is None or entry[0] != repo_id.split("/")[0]):
            repo = None  # a private repo is not there for anyone else
        if repo is None:
            status = 404 if self._token() else 401
            self._error(status, "RepoNotFound", "Repository not found", head)
        return repo

    def _api(self, rest: str, query: dict, head: bool) -> None:
        parts = rest.split("/")
        repo = self._repo("/".join(parts[:2]), head)
        if repo is None:
            return
        tail = parts[2:]
        if not tail or tail[0] == "revision":
            siblings = [{"rfilename": p, "size": len(d), "blobId": repo.etag(p) if not repo.is_lfs(p) else
                         hashlib.sha1(p.encode()).hexdigest(),
                         **({"lfs": {"sha256": repo.etag(p), "size": len(d), "pointerSize": 134}}
                            if repo.is_lfs(p) else {})} for p, d in sorted(repo.files.items())]
            card = card_data(repo.files.get("README.md", b""))  # the Hub serves a card's YAML as cardData
            return self._json({"id": repo.repo_id, "modelId": repo.repo_id, "sha": repo.sha, "private": repo.private,
                               "gated": "manual" if repo.gated else False, "disabled": False, "tags": [],
                               "library_name": "diffusers", "siblings": siblings,
                               **({"cardData": card} if card else {})}, head=head)
        if tail[0] == "tree":
            return self._tree(repo, "/".join(tail[2:]), query, head)
        self._error(404, "", "Unknown API path", head)

    def _tree(self, repo: Repo, under: str, query: dict, head: bool) -> None:
        recursive = query.get("recursive", ["false"])[0].lower() == "true"
        prefix = f"{under.strip('/')}/" if under.strip("/") else ""
        entries, folders = [], set()
        for path, data in sorted(repo.files.items()):
            if not path.startswith(prefix):
                continue
            rest = path[len(prefix):]
            pieces = rest.split("/")
            for depth in range(1, len(pieces)):
                folder = prefix + "/".join(pieces[:depth])
                if folder not in folders and (recursive or depth == 1):
                    folders.add(folder)
                    entries.append({"type": "directory", "oid": hashlib.sha1(folder.encode()).hexdigest(),
                                    "size": 0, "path": folder})
            if len(pieces) > 1 and not recursive:
                continue
            item = {"type": "file", "oid": repo.etag(path) if not repo.is_lfs(path) else
                    hashlib.sha1(path.encode()).hexdigest(), "size": len(data), "path": path}
            if repo.is_lfs(path):
                item["lfs"] = {"oid": repo.etag(path), "size": len(data), "pointerSize": 134}
            entries.append(item)
        start = int(query.get("cursor", ["0"])[0])
        page = entries[start:start + self.fake.page_size]
        headers = {}
        if start + self.fake.page_size < len(entries):
            url = f"http://{self.headers['Host']}{urlparse(self.path).path}?recursive={str(recursive).lower()}" \
                  f"&expand=false&cursor={start + self.fake.page_size}"
            headers["Link"] = f'<{url}>; rel="next"'
        self._json(page, headers=headers, head=head)

    def _resolve(self, repo_id: str, revision: str, path: str, entry, head: bool) -> None:
        repo = self._repo(repo_id, head)
        if repo is None:
            return
        if repo.gated:
            if entry is None:
                return self._error(401, "GatedRepo", f"Access to model {repo_id} is restricted. You must have "
                                   "access to it and be authenticated to access it. Please log in.", head)
            if repo_id not in entry[1]:
                return self._error(403, "GatedRepo", f"Access to model {repo_id} is restricted and you are not "
                                   "in the authorized list. Visit https://huggingface.co/" + repo_id + " to ask "
                                   "for access.", head)
        if revision not in ("main", repo.sha):
            return self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}", head)
        if path not in repo.files:
            return self._error(404, "EntryNotFound", f"{path} does not exist", head)
        data = repo.files[path]
        headers = {"X-Repo-Commit": repo.sha, "ETag": f'"{repo.etag(path)}"', "Accept-Ranges": "bytes"}
        if repo.is_lfs(path):
            headers.update({"X-Linked-Etag": f'"{repo.etag(path)}"', "X-Linked-Size": len(data)})
        start = 0
        wanted = self.headers.get("Range")
        if wanted and wanted.startswith("bytes="):
            start = int(wanted[6:].split("-")[0] or 0)
        if start > len(data):
            return self._send(416, b"", {"Content-Range": f"bytes */{len(data)}"}, head)
        status = 206 if wanted else 200
        if wanted:
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
        body = data[start:]
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, str(value))
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if head:
            return
        hold = self.fake._holds.pop((repo_id, path), None)
        sent = 0
        try:
            while sent < len(body):
                size = CHUNK if hold is None else min(CHUNK, hold.after - sent)
                if hold is not None and size <= 0:
                    self.wfile.flush()
                    hold.reached.set()
                    hold.released.wait(60)
                    self.close_connection = True
                    self.connection.shutdown(2)  # the client sees the stream end early
                    return
                piece = body[sent:sent + size]
                self.wfile.write(piece)
                with self.fake._lock:
                    self.fake.served[(repo_id, path)] += len(piece)
                sent += len(piece)
        except (BrokenPipeError, ConnectionResetError, OSError):
            self.close_connection = True


class _UploadHandler(_Handler):
    """The requests huggingface_hub 2.4.0 sends to create a repo and commit files to it."""

    def do_POST(self) -> None:
        self._upload()

    def do_PUT(self) -> None:
        self._upload()

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = b""
            while True:
                size = int(self.rfile.readline().strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return data
                data += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _upload(self) -> None:
        path = unquote(urlparse(self.path).path)
        body = self._body()
        try:
            payload = json.loads(body) if self.headers.get("Content-Type", "").startswith(
                ("application/json", "application/vnd.git-lfs+json")) else None
        except ValueError:
            payload = None
        self.fake.uploads.append({"method": self.command, "path": path, "json": payload})
        self.fake.requests.append((self.command, path, None))
        known, entry = self._user()
        if not known:
            return self._error(401, "", "Invalid credentials in Authorization header")
        if path == "/api/validate-yaml":
            return self._json({"errors": [], "warnings": []})
        if path.startswith("/lfs-upload/"):
            return self._lfs_put(path.rsplit("/", 1)[1], body)
        if path.startswith("/lfs-verify/"):
            oid = path.rsplit("/", 1)[1]
            return self._json({}) if oid in self.fake.lfs else self._error(404, "", "object not found")
        if path == "/api/repos/create":
            return self._create(payload or {}, entry)
        if path.endswith(".git/info/lfs/objects/batch"):
            repo_id = path.lstrip("/")[: -len(".git/info/lfs/objects/batch")]
            return self._writable(repo_id, entry) and self._batch(payload or {})
        parts = path.split("/")  # /api/models/{owner}/{name}/(preupload|commit)/{rev}
        if len(parts) == 7 and parts[1:3] == ["api", "models"] and parts[5] in ("preupload", "commit"):
            repo_id = f"{parts[3]}/{parts[4]}"
            if not self._writable(repo_id, entry):
                return None
            return self._preupload(repo_id, payload or {}) if parts[5] == "preupload" else self._commit(repo_id, body)
        self._error(404, "", f"Nothing at {path}")

    def _may_write(self, namespace: str, entry) -> bool:
        if entry is None:
            return False
        user, _, role = entry
        if role == "write":
            return namespace == user
        if role == "fineGrained":
            return any(s["entity"]["name"] == namespace and "repo.write" in s["permissions"]
                       for s in self.fake.scopes.get(self._token(), []))
        return False

    def _writable(self, repo_id: str, entry) -> bool:
        if repo_id not in self.fake.repos:
            self._error(404, "RepoNotFound", "Repository not found")
            return False
        if not self._may_write(repo_id.split("/")[0], entry):
            self._error(403, "", "You don't have the rights to write to this repository")
            return False
        return True

    def _create(self, payload: dict, entry) -> None:
        namespace = payload.get("organization") or (entry[0] if entry else "")
        repo_id = f"{namespace}/{payload.get('name')}"
        if not self._may_write(namespace, entry):
            return self._error(403 if entry else 401, "", "You don't have the rights to create a model under "
                               f"this namespace")
        if repo_id in self.fake.repos:
            return self._json({"error": "You already created this model repo", "url": f"{self._base()}/{repo_id}"},
                              409)
        private = payload.get("visibility") == "private" or payload.get("private") is True
        self.fake.repos[repo_id] = Repo(repo_id, {}, private=private)
        self._json({"url": f"{self._base()}/{repo_id}", "name": repo_id})

    def _base(self) -> str:
        return f"http://{self.headers['Host']}"

    def _preupload(self, repo_id: str, payload: dict) -> None:
        repo, answers = self.fake.repos[repo_id], []
        for item in payload.get("files", []):
            sample = base64.b64decode(item.get("sample", ""))
            lfs = item["path"].endswith(LFS_SUFFIXES + (".png", ".jpg", ".jpeg", ".webp")) or b"\0" in sample
            known = item["path"] in repo.files and repo.is_lfs(item["path"]) == lfs
            answers.append({"path": item["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False,
                            "oid": repo.etag(item["path"]) if known else None})
        self._json({"files": answers, "commitOid": repo.sha})

    def _batch(self, payload: dict) -> None:
        objects = []
        for item in payload.get("objects", []):
            entry = {"oid": item["oid"], "size": item["size"], "authenticated": True}
            if item["oid"] not in self.fake.lfs:
                entry["actions"] = {"upload": {"href": f"{self._base()}/lfs-upload/{item['oid']}", "header": {}},
                                    "verify": {"href": f"{self._base()}/lfs-verify/{item['oid']}", "header": {}}}
            objects.append(entry)
        self._send(200, json.dumps({"transfer": "basic", "objects": objects}).encode(),
                   {"Content-Type": "application/vnd.git-lfs+json"})

    def _lfs_put(self, oid: str, body: bytes) -> None:
        status = self.fake.failing.pop(oid, None)
        if status is not None:
            return self._error(status, "", "The upload was refused (a test's fault)")
        if hashlib.sha256(body).hexdigest() != oid:
            return self._error(400, "", "The object's content does not match its oid")
        self.fake.lfs[oid] = body
        self._send(200)

    def _commit(self, repo_id: str, body: bytes) -> None:
        repo = self.fake.repos[repo_id]
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        header = next((line["value"] for line in lines if line.get("key") == "header"), {})
        files = dict(repo.files)
        for line in lines:
            value = line.get("value", {})
            if line.get("key") == "file":
                files[value["path"]] = base64.b64decode(value["content"])
            elif line.get("key") == "lfsFile":
                if value["oid"] not in self.fake.lfs:
                    return self._error(400, "", f"LFS object {value['oid']} was never uploaded")
                files[value["path"]] = self.fake.lfs[value["oid"]]
                repo.lfs_paths.add(value["path"])
            elif line.get("key") == "deletedFile":
                files.pop(value["path"], None)
            if line.get("key") == "file":
                repo.lfs_paths.discard(value["path"])
        repo.files = files
        repo.sha = hashlib.sha1((repo.sha + json.dumps(lines, sort_keys=True)).encode()).hexdigest()
        repo.history.append({"oid": repo.sha, "summary": header.get("summary", ""),
                             "paths": [line["value"]["path"] for line in lines if line.get("key") != "header"]})
        self._json({"commitUrl": f"{self._base()}/{repo_id}/commit/{repo.sha}", "commitOid": repo.sha,
                    "success": True})


def card_data(readme: bytes) -> dict | None:
    """A model card's YAML front matter, as the Hub's model info returns it."""
    import yaml

    text = readme.decode("utf-8", errors="replace")
    if not text.startswith("---"):
        return None
    data = yaml.safe_load(text.split("---", 2)[1]) if text.count("---") >= 2 else None
    return data if isinstance(data, dict) else None


def point_client_at(monkeypatch, url: str, home: Path) -> dict[str, str]:
    """Point huggingface_hub (already imported by conftest's imports) at a fake hub and a fresh HF_HOME,
    in this process and, through the returned environment, in subprocesses. The library reads these
    constants at call time; `login()` checks tokens through the module's default client, whose endpoint
    was fixed at import, so that one is moved too."""
    from huggingface_hub import constants, hf_api

    home = Path(home)
    values = {"ENDPOINT": url, "HUGGINGFACE_CO_URL_TEMPLATE": url + "/{repo_id}/resolve/{revision}/{filename}",
              "HF_HOME": str(home), "HF_HUB_CACHE": str(home / "hub"), "HF_TOKEN_PATH": str(home / "token"),
              "HF_STORED_TOKENS_PATH": str(home / "stored_tokens"), "HF_HUB_OFFLINE": False}
    for name, value in values.items():
        monkeypatch.setattr(constants, name, value)
    monkeypatch.setattr(hf_api.api, "endpoint", url)
    env = {"HF_ENDPOINT": url, "HF_HOME": str(home), "HF_HUB_CACHE": str(home / "hub"), "HF_HUB_OFFLINE": "0",
           "HF_HUB_DISABLE_TELEMETRY": "1"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH"):
        monkeypatch.delenv(name, raising=False)
    return env


def save_pipeline(pipe, folder: Path, extra: dict[str, bytes] | None = None) -> Path:
    """A pipeline in diffusers layout, plus root files a real repo carries and no pipeline loads."""
    pipe.save_pretrained(folder)
    for name, data in (extra or {"README.md": b"# test model\n", "flux1-dev.safetensors": b"\0" * 4096}).items():
        (Path(folder) / name).write_bytes(data)
    return Path(folder)


KLEIN_REPOS = {  # hub id -> (distilled, gated), as on the Hub: the 4 B pair open, the 9 B pair gated
    "black-forest-labs/FLUX.2-klein-4B": (True, False),
    "black-forest-labs/FLUX.2-klein-base-4B": (False, False),
    "black-forest-labs/FLUX.2-klein-9B": (True, True),
    "black-forest-labs/FLUX.2-klein-base-9B": (False, True),
}


def klein_folders(root: Path) -> dict[bool, Path]:
    """The tiny Klein saved in diffusers layout, distilled and base ({distilled: folder}), with the root
    single-file checkpoint and README a real Klein repo carries beside them."""
    from lora_studio.engines.builtin.klein import build_tiny_klein

    root = Path(root)
    return {distilled: save_pipeline(build_tiny_klein(distilled), root / ("distilled" if distilled else "base"),
                                     extra={"README.md": b"# tiny klein\n", "flux-2-klein.safetensors": b"\0" * 4096})
            for distilled in (True, False)}


def add_klein_repos(hub: FakeHub, folders: dict[bool, Path]) -> None:
    """Serve the tiny Klein under the four real FLUX.2 [klein] ids (the 9 B ids with the same tiny weights)."""
    for repo_id, (distilled, gated) in KLEIN_REPOS.items():
        hub.add_repo(repo_id, folders[distilled], gated=gated)


@contextmanager
def klein_hub(folders: dict[bool, Path], monkeypatch, hf_home: Path):
    """A fake hub serving the four Klein ids (open 4 B, gated 9 B), huggingface_hub pointed at it with its
    cache under `hf_home`; `hub.env` is that environment, for a subprocess."""
    with FakeHub() as fake:
        add_klein_repos(fake, folders)
        fake.env = point_client_at(monkeypatch, fake.url, hf_home)
        yield fake
