"""A local stand-in for the Hugging Face Hub's file endpoint, enough for ``hf_hub_download``.

What huggingface_hub (1.27 to 2.x) asks and what we answer:

* ``HEAD {endpoint}/{repo_id}/resolve/{revision}/{filename}`` (with ``Accept-Encoding:
  identity``): needs ``X-Repo-Commit`` and an ``ETag`` / ``X-Linked-Etag`` (the cache blob is
  named after it) and a size (``X-Linked-Size``, or ``Content-Length`` when not redirected).
  Like the real Hub for LFS files, we can answer with a 302 to a second "CDN" server on
  another host (``localhost`` beside the Hub's ``127.0.0.1``, both the loopback: huggingface_hub
  2.0 follows a redirect to the same host on another port): the client does not follow
  redirects to another host, takes the metadata from the 302 itself and later GETs the
  ``Location``.
* ``GET`` of the resolve URL or the CDN URL: the bytes, honouring ``Range: bytes=N-`` (206)
  when the client resumes.
* Errors: 404 with ``X-Error-Code`` RepoNotFound / RevisionNotFound / EntryNotFound, 403
  GatedRepo for a repo in ``gated``, or any
  status forced by a test (``fail_head`` / ``fail_get``).

Every request is recorded in ``requests`` so tests can assert that none was made.
"""

from __future__ import annotations

import hashlib
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit

_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$")
_CDN = re.compile(r"^/cdn/(?P<sha>[0-9a-f]{64})$")


@dataclass
class HubRepo:
    commit: str
    files: dict[str, bytes] = field(default_factory=dict)
    #: filename -> etag to announce instead of the served bytes' sha256 (a lying mirror).
    etag_override: dict[str, str] = field(default_factory=dict)


class FakeHub:
    """Hub and CDN on the loopback, free ports, background threads."""

    def __init__(self, *, lfs_redirect: bool = True) -> None:
        self.repos: dict[str, HubRepo] = {}
        self.lfs_redirect = lfs_redirect
        self.fail_head: int | None = None
        self.fail_get: int | None = None
        self.gated: set[str] = set()  # repos whose terms this client has not accepted: 403
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Range)
        self._lock = threading.Lock()
        self.stopped = False
        self._hub = self._serve(self._handle_hub)
        self._cdn = self._serve(self._handle_cdn)
        self.url = f"http://127.0.0.1:{self._hub.server_address[1]}"
        self.cdn_url = f"http://localhost:{self._cdn.server_address[1]}"  # another host name

    # -- set-up -----------------------------------------------------------------------------
    def publish(self, repo_id: str, commit: str, filename: str, data: bytes) -> None:
        self.repos.setdefault(repo_id, HubRepo(commit)).files[filename] = data

    def stop(self) -> None:
        """Take both servers down: later connections are refused."""
        if self.stopped:
            return
        self.stopped = True
        for server in (self._hub, self._cdn):
            server.shutdown()
            server.server_close()

    # -- serving ----------------------------------------------------------------------------
    def _serve(self, handle) -> ThreadingHTTPServer:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            # HTTP/1.0: one request per connection, so a stopped server really is gone.
            def do_HEAD(self) -> None:
                hub._record(self)
                handle(self, head=True)

            def do_GET(self) -> None:
                hub._record(self)
                handle(self, head=False)

            def log_message(self, *args) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        ).start()
        return server

    def _record(self, req: BaseHTTPRequestHandler) -> None:
        with self._lock:
            self.requests.append((req.command, req.path, req.headers.get("Range")))

    def _find(self, sha: str) -> bytes | None:
        for repo in self.repos.values():
            for data in repo.files.values():
                if hashlib.sha256(data).hexdigest() == sha:
                    return data
        return None

    def _handle_hub(self, req: BaseHTTPRequestHandler, *, head: bool) -> None:
        failing = self.fail_head if head else self.fail_get
        if failing:
            return _send(req, failing, b"server error", head=head)
        m = _RESOLVE.match(urlsplit(req.path).path)
        if m is None:
            return _send(req, 404, b"not found", head=head)
        repo_id, rev, filename = unquote(m["repo"]), unquote(m["rev"]), unquote(m["file"])
        repo = self.repos.get(repo_id)
        if repo is None:
            return _send(req, 404, b"", head=head, headers={"X-Error-Code": "RepoNotFound"})
        if repo_id in self.gated:
            return _send(req, 403, b"", head=head, headers={"X-Error-Code": "GatedRepo"})
        if rev not in (repo.commit, "main"):
            return _send(req, 404, b"", head=head, headers={"X-Error-Code": "RevisionNotFound"})
        commit = {"X-Repo-Commit": repo.commit}
        data = repo.files.get(filename)
        if data is None:
            return _send(
                req, 404, b"", head=head, headers={"X-Error-Code": "EntryNotFound", **commit}
            )
        sha = hashlib.sha256(data).hexdigest()
        etag = repo.etag_override.get(filename, sha)
        if self.lfs_redirect:
            headers = {
                **commit,
                "Location": f"{self.cdn_url}/cdn/{sha}",
                "X-Linked-Etag": f'"{etag}"',
                "X-Linked-Size": str(len(data)),
                "ETag": '"git-pointer-sha1"',
            }
            return _send(req, 302, b"", head=head, headers=headers)
        return _send_file(req, data, head=head, headers={**commit, "ETag": f'"{etag}"'})

    def _handle_cdn(self, req: BaseHTTPRequestHandler, *, head: bool) -> None:
        if not head and self.fail_get:
            return _send(req, self.fail_get, b"server error", head=head)
        m = _CDN.match(urlsplit(req.path).path)
        data = self._find(m["sha"]) if m else None
        if data is None:
            return _send(req, 404, b"no such blob", head=head)
        _send_file(req, data, head=head, headers={"ETag": f'"{m["sha"]}"'})


def _send(
    req: BaseHTTPRequestHandler,
    status: int,
    body: bytes,
    *,
    head: bool,
    headers: dict[str, str] | None = None,
) -> None:
    req.send_response(status)
    for key, value in (headers or {}).items():
        req.send_header(key, value)
    req.send_header("Content-Length", str(len(body)))
    req.end_headers()
    if not head:
        req.wfile.write(body)


def _send_file(
    req: BaseHTTPRequestHandler, data: bytes, *, head: bool, headers: dict[str, str]
) -> None:
    start, status = 0, 200
    m = re.fullmatch(r"bytes=(\d+)-(\d*)", req.headers.get("Range") or "")
    if m:
        start = int(m[1])
        end = int(m[2]) + 1 if m[2] else len(data)
        headers = {**headers, "Content-Range": f"bytes {start}-{end - 1}/{len(data)}"}
        data, status = data[start:end], 206
    _send(req, status, data, head=head, headers={**headers, "Accept-Ranges": "bytes"})
