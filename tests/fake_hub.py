"""A fake Hugging Face Hub on 127.0.0.1: any folder served as a model repo, open or gated.

It answers what huggingface_hub 2.4.0 and diffusers 0.42.1 ask (see shared/notes/huggingface-hub.md):
model info (`/api/models/{id}` and `/revision/{rev}`, with file sizes), the recursive tree with
`Link: rel="next"` pagination, `HEAD`/`GET /{id}/resolve/{rev}/{path}` with `X-Repo-Commit`, `ETag`,
`X-Linked-Etag`/`X-Linked-Size` for weight files and `Range` answers, `whoami-v2`, and the gated
answers (401 without a token, 403 for a token without access, both `X-Error-Code: GatedRepo`). It never
sends a Xet hash, so the real client stays on plain HTTP.

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

import hashlib
import json
import threading
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
    commit: str | None = None  # served instead of the computed sha (a hostile answer)
    etags: dict[str, str] = field(default_factory=dict)  # path -> ETag served instead of the real one

    def __post_init__(self) -> None:
        digest = hashlib.sha1(self.repo_id.encode())
        for path in sorted(self.files):
            digest.update(path.encode() + hashlib.sha1(self.files[path]).digest())
        self.sha = self.commit if self.commit is not None else digest.hexdigest()

    def is_lfs(self, path: str) -> bool:
        return path.endswith(LFS_SUFFIXES)

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

        class Handler(_Handler):
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
            return self._json({"type": "user", "name": user, "fullname": user.title(),
                               "auth": {"type": "access_token",
                                        "accessToken": {"displayName": f"{user}-token", "role": role}}}, head=head)
        if path.startswith("/api/models/"):
            return self._api(path[len("/api/models/"):], query, head)
        parts = path.lstrip("/").split("/")
        if len(parts) >= 5 and parts[2] == "resolve":
            return self._resolve("/".join(parts[:2]), parts[3], "/".join(parts[4:]), entry, head)
        self._error(404, "", f"Nothing at {path}", head)

    def _repo(self, repo_id: str, head: bool) -> Repo | None:
        repo = self.fake.repos.get(repo_id)
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
            return self._json({"id": repo.repo_id, "modelId": repo.repo_id, "sha": repo.sha, "private": False,
                               "gated": "manual" if repo.gated else False, "disabled": False, "tags": [],
                               "library_name": "diffusers", "siblings": siblings}, head=head)
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
