"""A minimal Hugging Face Hub on 127.0.0.1 for tests: the real ``huggingface_hub`` client talks to it over HTTP.

Why our own: the PyPI package ``hf-local-hub`` (3.0.0) ships only a Python CLI that shells out to a Go server
binary which is not in the wheel, so it serves nothing after ``pip install``.

Only model repos (``namespace/name``) and regular (non-LFS, non-Xet) files. Endpoints, as ``huggingface_hub`` 2.4
calls them (``{rev}`` is URL-quoted, ``refs%2Fpr%2F1`` style):

- ``POST /api/repos/create``  body ``{"name", "organization", "private"|"visibility"}``: 200 ``{"url"}``, 409 if taken
  (``create_repo``).
- ``POST /api/models/{repo}/branch/{branch}``  body ``{"startingPoint"?}``: 200, 409 if it exists (``create_branch``).
- ``POST /api/validate-yaml``: always 200 ``{}`` (``create_commit`` calls it when README.md is in the commit).
- ``POST /api/models/{repo}/preupload/{rev}``: every file ``uploadMode: "regular"`` (``preupload_lfs_files``).
- ``POST /api/models/{repo}/commit/{rev}``  ndjson: a ``header`` line then ``file`` (base64) / ``deletedFile`` lines;
  200 ``{"commitUrl", "commitOid"}`` (``create_commit``, ``upload_folder``, ``upload_file``).
- ``GET /api/models/{repo}[/revision/{rev}]``: ``{"id", "sha", "private", "siblings"}`` (``repo_info``,
  ``snapshot_download``).
- ``GET /api/models/{repo}/tree/{rev}[/{path}]``: a one-page recursive listing (``list_repo_tree``,
  ``snapshot_download``).
- ``HEAD|GET /{repo}/resolve/{rev}/{path}``: the file with ``ETag`` (git blob sha1, quoted), ``X-Repo-Commit``,
  ``Content-Length`` (``hf_hub_download``, ``file_exists``, ``get_hf_file_metadata``).

Errors carry the ``X-Error-Code`` header the client maps to exceptions: ``RepoNotFound`` (404 for a missing repo,
401 for a private repo without the server's token), ``RevisionNotFound`` and ``EntryNotFound`` (404). Writes need the
server's token (``Authorization: Bearer <token>``), else 401. ``{rev}`` is a branch name or a full commit sha.
Blobs live on disk under ``root`` (content-addressed); repos, branches and commits are kept in memory.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit


@dataclass
class _Repo:
    private: bool
    branches: dict[str, str] = field(default_factory=dict)  # branch name -> commit sha
    commits: dict[str, dict[str, str]] = field(default_factory=dict)  # commit sha -> {path: blob sha1}


class HubError(Exception):
    """An HTTP error answer: status, ``X-Error-Code`` and message."""

    def __init__(self, status: int, code: str | None, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def _git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class LocalHub:
    """Repos in memory, blobs in ``root``; ``serve()`` starts the HTTP server in a daemon thread."""

    def __init__(self, root: str | Path, token: str) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.token = token
        self.repos: dict[str, _Repo] = {}
        self.lock = threading.Lock()
        self.requests: list[tuple[str, str]] = []  # (method, path) of every request, for debugging tests
        self._server: ThreadingHTTPServer | None = None

    # ---- state ----
    def _commit(self, repo: _Repo, parent: str | None, files: dict[str, str], message: str) -> str:
        listing = json.dumps(sorted(files.items())).encode()
        sha = hashlib.sha1(f"{parent}\n{message}\n{len(repo.commits)}\n".encode() + listing).hexdigest()
        repo.commits[sha] = files
        return sha

    def _get_repo(self, repo_id: str, authorized: bool) -> _Repo:
        repo = self.repos.get(repo_id)
        if repo is None:
            raise HubError(404, "RepoNotFound", f"Repository {repo_id} not found")
        if repo.private and not authorized:
            raise HubError(401, "RepoNotFound", f"Repository {repo_id} not found")
        return repo

    @staticmethod
    def _resolve(repo: _Repo, revision: str) -> str:
        if revision in repo.branches:
            return repo.branches[revision]
        if revision in repo.commits:
            return revision
        raise HubError(404, "RevisionNotFound", f"Invalid rev id: {revision}")

    def _blob(self, sha: str) -> bytes:
        return (self.root / sha).read_bytes()

    # ---- server ----
    def serve(self) -> str:
        """Start on a free port of 127.0.0.1; return the endpoint URL (``http://127.0.0.1:PORT``)."""
        hub = self

        class Handler(_Handler):
            pass

        Handler.hub = hub
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def shutdown(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


class _Handler(BaseHTTPRequestHandler):
    hub: LocalHub
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - keep the test output quiet
        pass

    # ---- plumbing ----
    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, obj: object) -> None:
        self._send(status, json.dumps(obj).encode(), {"Content-Type": "application/json"})

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _authorized(self) -> bool:
        return self.headers.get("Authorization", "") == f"Bearer {self.hub.token}"

    def _endpoint(self) -> str:
        return f"http://{self.headers.get('Host')}"

    def _dispatch(self) -> None:
        body = self._body() if self.command == "POST" else b""
        raw_path = urlsplit(self.path).path
        self.hub.requests.append((self.command, raw_path))
        parts = raw_path.strip("/").split("/")  # still quoted: a quoted revision stays one segment
        try:
            with self.hub.lock:
                self._route(parts, body)
        except HubError as err:
            headers = {"X-Error-Message": err.message}
            if err.code:
                headers["X-Error-Code"] = err.code
            self._send(err.status, json.dumps({"error": err.message}).encode(), headers)

    do_GET = do_HEAD = do_POST = _dispatch

    # ---- routes ----
    def _route(self, parts: list[str], body: bytes) -> None:
        method = self.command
        if method == "POST" and parts == ["api", "repos", "create"]:
            return self._create_repo(json.loads(body or b"{}"))
        if method == "POST" and parts == ["api", "validate-yaml"]:
            return self._json(200, {})
        if parts[:2] == ["api", "models"] and len(parts) >= 4:
            repo_id, rest = unquote(parts[2]) + "/" + unquote(parts[3]), parts[4:]
            action = rest[0] if rest else None
            if method == "GET" and action in (None, "revision"):
                return self._repo_info(repo_id, unquote(rest[1]) if len(rest) > 1 else "main")
            if method == "GET" and action == "tree" and len(rest) >= 2:
                return self._tree(repo_id, unquote(rest[1]), unquote("/".join(rest[2:])))
            if method == "POST" and action in ("preupload", "commit", "branch") and len(rest) == 2:
                return getattr(self, f"_{action}")(repo_id, unquote(rest[1]), body)
        if method in ("GET", "HEAD") and len(parts) >= 5 and parts[2] == "resolve":
            repo_id = unquote(parts[0]) + "/" + unquote(parts[1])
            return self._resolve_file(repo_id, unquote(parts[3]), unquote("/".join(parts[4:])))
        raise HubError(404, None, f"No route for {method} {'/'.join(parts)} on this test Hub")

    def _require_write(self) -> None:
        if not self._authorized():
            raise HubError(401, None, "Invalid credentials in Authorization header")

    def _create_repo(self, payload: dict) -> None:
        self._require_write()
        repo_id = f"{payload.get('organization')}/{payload['name']}"
        if payload.get("organization") is None:
            raise HubError(400, None, "This test Hub needs a namespaced repo id (user/name)")
        if repo_id in self.hub.repos:
            return self._json(409, {"error": "You already created this model repo", "url": self._url(repo_id)})
        private = bool(payload.get("private")) or payload.get("visibility") == "private"
        repo = _Repo(private=private)
        repo.branches["main"] = self.hub._commit(repo, None, {}, "initial commit")
        self.hub.repos[repo_id] = repo
        self._json(200, {"url": self._url(repo_id)})

    def _url(self, repo_id: str) -> str:
        return f"{self._endpoint()}/{repo_id}"

    def _branch(self, repo_id: str, branch: str, body: bytes) -> None:
        self._require_write()
        repo = self.hub._get_repo(repo_id, True)
        if branch in repo.branches:
            raise HubError(409, None, f"Reference {branch} already exists")
        start = (json.loads(body) if body else {}).get("startingPoint") or "main"
        repo.branches[branch] = self.hub._resolve(repo, start)
        self._json(200, {})

    def _preupload(self, repo_id: str, revision: str, body: bytes) -> None:
        self.hub._get_repo(repo_id, self._authorized())
        files = json.loads(body)["files"]
        modes = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]
        self._json(200, {"files": modes})

    def _commit(self, repo_id: str, revision: str, body: bytes) -> None:
        self._require_write()
        repo = self.hub._get_repo(repo_id, True)
        if revision not in repo.branches:
            raise HubError(404, "RevisionNotFound", f"Invalid rev id: {revision} (commits go to an existing branch)")
        parent = repo.branches[revision]
        files = dict(repo.commits[parent])
        message = ""
        for line in body.splitlines():
            item = json.loads(line)
            key, value = item["key"], item["value"]
            if key == "header":
                message = value.get("summary", "")
            elif key == "file":
                data = base64.b64decode(value["content"])
                sha = _git_blob_sha1(data)
                (self.hub.root / sha).write_bytes(data)
                files[value["path"]] = sha
            elif key == "deletedFile":
                files.pop(value["path"], None)
            elif key == "deletedFolder":
                prefix = value["path"].rstrip("/") + "/"
                files = {p: s for p, s in files.items() if not p.startswith(prefix)}
            else:
                raise HubError(400, None, f"This test Hub does not accept {key!r} commit operations (no LFS/Xet)")
        sha = self.hub._commit(repo, parent, files, message)
        repo.branches[revision] = sha
        self._json(200, {"commitUrl": f"{self._url(repo_id)}/commit/{sha}", "commitOid": sha})

    def _repo_info(self, repo_id: str, revision: str) -> None:
        repo = self.hub._get_repo(repo_id, self._authorized())
        sha = self.hub._resolve(repo, revision)
        siblings = [{"rfilename": path} for path in sorted(repo.commits[sha])]
        self._json(200, {"id": repo_id, "modelId": repo_id, "sha": sha, "private": repo.private, "siblings": siblings})

    def _tree(self, repo_id: str, revision: str, folder: str) -> None:
        repo = self.hub._get_repo(repo_id, self._authorized())
        files = repo.commits[self.hub._resolve(repo, revision)]
        prefix = folder.rstrip("/") + "/" if folder else ""
        entries, folders = [], set()
        for path, sha in sorted(files.items()):
            if not path.startswith(prefix):
                continue
            parents = path.split("/")[:-1]
            folders.update("/".join(parents[: i + 1]) for i in range(len(parents)))
            size = (self.hub.root / sha).stat().st_size
            entries.append({"type": "file", "path": path, "size": size, "oid": sha})
        entries += [{"type": "directory", "path": f, "oid": "0" * 40} for f in sorted(folders) if f.startswith(prefix)]
        self._json(200, entries)

    def _resolve_file(self, repo_id: str, revision: str, path: str) -> None:
        repo = self.hub._get_repo(repo_id, self._authorized())
        sha = self.hub._resolve(repo, revision)
        blob = repo.commits[sha].get(path)
        if blob is None:
            raise HubError(404, "EntryNotFound", f"{path} does not exist at {revision} of {repo_id}")
        headers = {"ETag": f'"{blob}"', "X-Repo-Commit": sha, "Content-Type": "application/octet-stream"}
        self._send(200, self.hub._blob(blob), headers)
