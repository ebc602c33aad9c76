"""A minimal Hugging Face Hub on 127.0.0.1 for tests: enough of the API for huggingface_hub 2.4.0 to
create a repo, commit files (inline base64, never LFS / Xet) and download them again, and for
``datasets`` to stream a dataset repo's files through ``hf://datasets/...`` (HfFileSystem).

Endpoints (model repos, ids ``namespace/name``; dataset repos the same under ``/api/datasets/`` and
``/datasets/{repo}/resolve/``, stored as ``datasets/namespace/name``):

    POST /api/repos/create                           create_repo (409 when it exists)
    POST /api/validate-yaml                          README.md metadata check before a commit
    POST /api/models/{repo}/preupload/{revision}     upload mode per file: always "regular"
    POST /api/models/{repo}/commit/{revision}        NDJSON commit: header, file (base64), deletedFile/Folder
    GET  /api/models/{repo}[/revision/{revision}]    repo_info / model_info (sha, siblings)
    GET  /api/models/{repo}/tree/{revision}[/{path}] list_repo_tree (recursive or not)
    POST /api/models/{repo}/paths-info/{revision}    get_paths_info (HfFileSystem.info)
    HEAD/GET /{repo}/resolve/{revision}/{path}       file metadata (X-Repo-Commit, ETag, Content-Length) and bytes
                                                     (a ``Range: bytes=a-b`` header gets 206 and those bytes)

Errors follow the Hub's conventions (``X-Error-Code`` RepoNotFound / RevisionNotFound / EntryNotFound,
a JSON ``{"error": message}`` body) so the client raises its usual exception types. Writes need the
server's token as ``Authorization: Bearer <token>``. ``fail_next(route, status, message)`` makes the
next request to a route (``"create"``, ``"preupload"``, ``"commit"``, ...) fail, for unhappy-path tests.

Usage::

    with HubServer(token="hf_test") as hub:
        os.environ["HF_ENDPOINT"] = hub.url
        ...
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import re
import socket
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

DEFAULT_BRANCH = "main"
DEFAULT_NAMESPACE = "fourm-tester"


def git_blob_sha1(content: bytes) -> str:
    """The git object id of a file's content (what the Hub reports as a regular file's oid / ETag)."""
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass
class Repo:
    """One model repo: its commits (oid -> {path: bytes}) and branch heads."""

    repo_id: str
    private: bool = False
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)

    def resolve(self, revision: str) -> str | None:
        """Branch name or commit oid -> commit oid (None when unknown)."""
        if revision in self.branches:
            return self.branches[revision]
        return revision if revision in self.commits else None


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, extra: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.extra = status, message, code, extra or {}


class HubServer:
    """The Hub on a free port of 127.0.0.1, served from a background thread; repos live in memory."""

    def __init__(self, token: str = "hf_test_token"):
        self.token = token
        self.repos: dict[str, Repo] = {}
        self.requests: list[tuple[str, str]] = []  # (method, path) of every request, for assertions
        self._failures: dict[str, tuple[int, str]] = {}
        self._cut_filename: str | None = None
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "HubServer":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> "HubServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def fail_next(self, route: str, status: int, message: str) -> None:
        """The next request to ``route`` answers ``status`` with ``message`` instead of being served."""
        self._failures[route] = (status, message)

    def cut_downloads(self, filename: str | None) -> None:
        """Every GET of a file named ``filename`` sends its headers and half its bytes, then drops the connection
        (a server stopping mid-download); None serves downloads whole again."""
        self._cut_filename = filename

    def files(self, repo_id: str, revision: str = DEFAULT_BRANCH) -> dict[str, bytes]:
        """path -> content of a repo at a revision (for assertions)."""
        repo = self.repos[repo_id]
        return dict(repo.commits[repo.resolve(revision)])

    # ---------------------------------------------------------------------------------- operations

    def take_failure(self, route: str) -> None:
        failure = self._failures.pop(route, None)
        if failure is not None:
            raise HubError(failure[0], failure[1])

    def repo(self, repo_id: str) -> Repo:
        if repo_id not in self.repos:
            raise HubError(404, f"Repository {repo_id} not found", "RepoNotFound")
        return self.repos[repo_id]

    def snapshot(self, repo_id: str, revision: str) -> tuple[str, dict[str, bytes]]:
        repo = self.repo(repo_id)
        oid = repo.resolve(revision)
        if oid is None:
            raise HubError(404, f"Revision {revision} not found in {repo_id}", "RevisionNotFound")
        return oid, repo.commits[oid]

    def create_repo(self, payload: dict) -> dict:
        if payload.get("type", "model") not in ("model", "dataset"):
            raise HubError(400, "This test Hub only hosts model and dataset repos")
        repo_id = f"{payload.get('organization') or DEFAULT_NAMESPACE}/{payload['name']}"
        if payload.get("type") == "dataset":
            repo_id = f"datasets/{repo_id}"
        with self._lock:
            if repo_id in self.repos:
                # the Hub's 409 names the existing repo's url; create_repo(exist_ok=True) reads it
                raise HubError(409, "You already created this model repo", extra={"url": f"{self.url}/{repo_id}"})
            repo = Repo(repo_id, private=payload.get("visibility") == "private")
            initial = self.new_commit_oid(repo_id, "", "initial commit", {})
            repo.commits[initial] = {}
            repo.branches[DEFAULT_BRANCH] = initial
            self.repos[repo_id] = repo
        return {"url": f"{self.url}/{repo_id}", "name": repo_id}

    def commit(self, repo_id: str, revision: str, lines: list[dict]) -> dict:
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "A commit starts with a header line")
        with self._lock:
            repo = self.repo(repo_id)
            if revision not in repo.branches:
                raise HubError(404, f"Branch {revision} not found in {repo_id}", "RevisionNotFound")
            tree = dict(repo.commits[repo.branches[revision]])
            for line in lines[1:]:
                key, value = line.get("key"), line.get("value", {})
                if key == "file":
                    if value.get("encoding") != "base64":
                        raise HubError(400, f"{value.get('path')}: unsupported encoding {value.get('encoding')!r}")
                    tree[value["path"]] = base64.b64decode(value["content"])
                elif key == "deletedFile":
                    if value["path"] not in tree:
                        raise HubError(404, f"A file with this name doesn't exist: {value['path']}", "EntryNotFound")
                    del tree[value["path"]]
                elif key == "deletedFolder":
                    prefix = value["path"].rstrip("/") + "/"
                    tree = {path: data for path, data in tree.items() if not path.startswith(prefix)}
                else:  # lfsFile, copies: this Hub never asks for them
                    raise HubError(400, f"Unsupported commit operation {key!r} (the preupload answer was 'regular')")
            oid = self.new_commit_oid(repo_id, repo.branches[revision], lines[0]["value"].get("summary", ""), tree)
            repo.commits[oid] = tree
            repo.branches[revision] = oid
        return {"commitUrl": f"{self.url}/{repo_id}/commit/{oid}", "commitOid": oid, "pullRequestUrl": None}

    @staticmethod
    def new_commit_oid(repo_id: str, parent: str, message: str, tree: dict[str, bytes]) -> str:
        """A 40-hex commit id from the repo, the parent commit, the message and the files."""
        digest = hashlib.sha1(f"{repo_id}\0{parent}\0{message}".encode())
        for path in sorted(tree):
            digest.update(b"\0" + path.encode() + b"\0" + git_blob_sha1(tree[path]).encode())
        return digest.hexdigest()


# ------------------------------------------------------------------------------------------------ HTTP

_REPO = r"(?P<repo>[\w.-]+/[\w.-]+)"
_API = r"^/api/(?P<kind>models|datasets)/" + _REPO
_RESOLVE = rf"^/(?:(?P<kind>datasets)/)?{_REPO}/resolve/(?P<revision>[^/]+)/(?P<path>.+)$"
_API_ROUTES = [
    ("POST", "create", re.compile(r"^/api/repos/create$")),
    ("POST", "validate-yaml", re.compile(r"^/api/validate-yaml$")),
    ("POST", "preupload", re.compile(rf"{_API}/preupload/(?P<revision>[^/]+)$")),
    ("POST", "commit", re.compile(rf"{_API}/commit/(?P<revision>[^/]+)$")),
    ("POST", "paths-info", re.compile(rf"{_API}/paths-info/(?P<revision>[^/]+)$")),
    ("GET", "tree", re.compile(rf"{_API}/tree/(?P<revision>[^/]+)(?:/(?P<path>.*))?$")),
    ("GET", "info", re.compile(rf"{_API}(?:/revision/(?P<revision>[^/]+))?$")),
    ("GET", "resolve", re.compile(_RESOLVE)),
    ("HEAD", "resolve", re.compile(_RESOLVE)),
]
_WRITE_ROUTES = {"create", "preupload", "commit"}


def _make_handler(hub: HubServer):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # quiet
            pass

        def do_GET(self):
            self.handle_request("GET")

        def do_HEAD(self):
            self.handle_request("HEAD")

        def do_POST(self):
            self.handle_request("POST")

        def handle_request(self, method: str) -> None:
            url = urlsplit(self.path)
            path = unquote(url.path)
            hub.requests.append((method, path))
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0)) if method == "POST" else b""
            try:
                for route_method, route, pattern in _API_ROUTES:
                    match = pattern.match(path)
                    if route_method == method and match:
                        hub.take_failure(route)
                        if route in _WRITE_ROUTES and self.headers.get("Authorization") != f"Bearer {hub.token}":
                            raise HubError(401, "Invalid credentials in Authorization header")
                        groups = match.groupdict()
                        if groups.get("kind") == "datasets":  # dataset repos are stored as datasets/<id>
                            groups["repo"] = f"datasets/{groups['repo']}"
                        return getattr(self, f"serve_{route.replace('-', '_')}")(groups, parse_qs(url.query), body, method)
                raise HubError(404, f"No such endpoint: {method} {path}")
            except HubError as error:
                self.send_error_json(error)

        # ------------------------------------------------------------------------------ responses

        def send_json(self, payload, status: int = 200) -> None:
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def send_error_json(self, error: HubError) -> None:
            data = json.dumps({"error": error.message, **error.extra}).encode()
            self.send_response(error.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("X-Error-Message", error.message)
            if error.code:
                self.send_header("X-Error-Code", error.code)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        # ------------------------------------------------------------------------------- routes

        def serve_create(self, match, query, body, method):
            self.send_json(hub.create_repo(json.loads(body)))

        def serve_validate_yaml(self, match, query, body, method):
            content = json.loads(body)["content"]
            errors = []
            if content.startswith("---"):
                try:
                    metadata = yaml.safe_load(content.split("---", 2)[1])
                    if not isinstance(metadata, dict):
                        errors.append("the metadata block must be a YAML mapping")
                except (yaml.YAMLError, IndexError) as error:
                    errors.append(f"invalid YAML: {error}")
            if errors:
                return self.send_json({"errors": [{"message": m} for m in errors], "warnings": []}, status=400)
            self.send_json({"errors": [], "warnings": []})

        def serve_preupload(self, match, query, body, method):
            _, tree = hub.snapshot(match["repo"], match["revision"])
            files = []
            for entry in json.loads(body)["files"]:
                existing = tree.get(entry["path"])
                files.append({"path": entry["path"], "uploadMode": "regular", "shouldIgnore": False,
                              "oid": None if existing is None else git_blob_sha1(existing)})
            self.send_json({"files": files, "commitOid": hub.snapshot(match["repo"], match["revision"])[0]})

        def serve_commit(self, match, query, body, method):
            if query.get("create_pr"):
                raise HubError(400, "This test Hub does not support pull requests")
            lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
            self.send_json(hub.commit(match["repo"], match["revision"], lines))

        def serve_info(self, match, query, body, method):
            repo = hub.repo(match["repo"])
            oid, tree = hub.snapshot(match["repo"], match["revision"] or DEFAULT_BRANCH)
            public_id = repo.repo_id.removeprefix("datasets/")
            self.send_json({"id": public_id, "modelId": public_id, "sha": oid, "private": repo.private,
                            "siblings": [{"rfilename": path} for path in sorted(tree)]})

        def serve_tree(self, match, query, body, method):
            _, tree = hub.snapshot(match["repo"], match["revision"])
            root = (match["path"] or "").strip("/")
            prefix = root + "/" if root else ""
            recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
            if root and root not in tree and not any(path.startswith(prefix) for path in tree):
                raise HubError(404, f"{root} does not exist", "EntryNotFound")
            entries, folders = [], set()
            for path in sorted(tree):
                if not path.startswith(prefix):
                    continue
                parts = path[len(prefix):].split("/")
                for depth in range(1, len(parts)):  # the folders on the way to this file
                    folder = prefix + "/".join(parts[:depth])
                    if folder not in folders and (recursive or depth == 1):
                        folders.add(folder)
                        entries.append({"type": "directory", "oid": hashlib.sha1(folder.encode()).hexdigest(), "path": folder})
                if recursive or len(parts) == 1:
                    entries.append({"type": "file", "oid": git_blob_sha1(tree[path]), "size": len(tree[path]), "path": path})
            self.send_json(entries)

        def serve_paths_info(self, match, query, body, method):
            _, tree = hub.snapshot(match["repo"], match["revision"])
            form = parse_qs(body.decode()) if not body.startswith(b"{") else json.loads(body)
            entries = []
            for path in form.get("paths", []):
                if path in tree:
                    entries.append({"type": "file", "oid": git_blob_sha1(tree[path]), "size": len(tree[path]), "path": path})
                elif any(name.startswith(path.rstrip("/") + "/") for name in tree):
                    entries.append({"type": "directory", "oid": hashlib.sha1(path.encode()).hexdigest(), "path": path})
            self.send_json(entries)

        def serve_resolve(self, match, query, body, method):
            oid, tree = hub.snapshot(match["repo"], match["revision"])
            content = tree.get(match["path"])
            if content is None:
                raise HubError(404, f"Entry {match['path']} not found", "EntryNotFound")
            etag = git_blob_sha1(content)
            byte_range = re.match(r"^bytes=(\d*)-(\d*)$", self.headers.get("Range") or "")
            if byte_range and content:
                first, last = byte_range.groups()
                start = int(first) if first else max(0, len(content) - int(last))
                stop = min(len(content) - 1, int(last)) if first and last else len(content) - 1
                content = content[start: stop + 1]
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{stop}/{len(tree[match['path']])}")
            else:
                self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(len(content)))
            self.send_header("ETag", f'"{etag}"')
            self.send_header("X-Repo-Commit", oid)
            self.end_headers()
            if method == "GET" and match["path"].rsplit("/", 1)[-1] == hub._cut_filename:
                self.wfile.write(content[: len(content) // 2])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
            elif method == "GET":
                self.wfile.write(content)

    return Handler


@contextlib.contextmanager
def huggingface_hub_pointed_at(server: HubServer, cache):
    """Point huggingface_hub at ``server`` with an empty cache folder ``cache``, here and in child processes.

    huggingface_hub (and datasets) read HF_ENDPOINT and the cache folder when imported, so the module
    constants that hold them are set too; a child process sees the environment variables. Undone on exit.
    """
    import huggingface_hub.constants as hub_constants
    import pytest

    cache = Path(cache)
    with pytest.MonkeyPatch.context() as patch:
        for name, value in dict(HF_ENDPOINT=server.url, HF_TOKEN=server.token, HF_HOME=str(cache),
                                HF_HUB_CACHE=str(cache / "hub"), HF_HUB_DISABLE_TELEMETRY="1").items():
            patch.setenv(name, value)
        patch.delenv("HF_HUB_OFFLINE", raising=False)
        patch.delenv("TRANSFORMERS_OFFLINE", raising=False)
        patch.setattr(hub_constants, "ENDPOINT", server.url)
        patch.setattr(hub_constants, "HUGGINGFACE_CO_URL_TEMPLATE", server.url + "/{repo_id}/resolve/{revision}/{filename}")
        patch.setattr(hub_constants, "HF_HUB_CACHE", str(cache / "hub"))
        patch.setattr(hub_constants, "HF_HUB_OFFLINE", False)
        patch.setattr(hub_constants, "HF_HUB_DISABLE_TELEMETRY", True)
        with contextlib.suppress(ImportError):  # datasets reads the endpoint at import (hf://datasets streaming)
            import datasets.config

            patch.setattr(datasets.config, "HF_ENDPOINT", server.url)
        yield server
