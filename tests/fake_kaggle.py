"""A local fake of Kaggle's HTTP API: enough for the real kaggle 2.2 client to download and submit.

The kaggle client, with ``KAGGLE_API_ENVIRONMENT=LOCALHOST``, sends its API calls to
``http://localhost/api/v1/<service>/<method>``, on port 80 with no way to choose another. The fake
listens on a free port of 127.0.0.1 instead, and tests route the client's requests to it by setting
``HTTP_PROXY``. So the fake accepts both proxy-form request lines (``POST http://localhost/api/v1/...``)
and plain ones (``POST /api/v1/...``), and serves only the hosts localhost and 127.0.0.1.

What it serves:
- ``security.OAuthService/IntrospectToken``: an access token is active when it equals ``token``.
- ``competitions.CompetitionApiService/DownloadDataFiles``: a redirect to ``/storage/<slug>.zip``,
  which honours ``Range``/``If-Range`` (answering 206) and can drop the connection part-way.
- ``StartSubmissionUpload``, a ``PUT`` to the returned upload URL, ``CreateSubmission``, and
  ``ListSubmissions``, where a new submission turns ``COMPLETE`` (or ``ERROR``) after a set number of lists.
API calls need the fake's credentials (HTTP basic auth with ``username``/``key``, or the bearer token)
and answer Kaggle's JSON errors: 401, 403 (rules not accepted), 404 (unknown competition).
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

API_PREFIX = "/api/v1/"
SERVED_HOSTS = {"localhost", "127.0.0.1"}
LAST_MODIFIED = formatdate(1_600_000_000, usegmt=True)


@dataclass
class FakeCompetition:
    """A competition on the fake: its files as one zip, and whether the user accepted its rules."""

    archive: bytes
    rules_accepted: bool = True
    title: str = "Fake competition"


@dataclass
class RecordedRequest:
    """One request the fake received: method, path (without host), headers and body."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class FakeKaggle:
    """The fake's state; start it with :meth:`start` (or ``with``) and read ``url`` for ``HTTP_PROXY``."""

    username: str = "fake-user"
    key: str = "fake-key"
    token: str | None = None
    competitions: dict[str, FakeCompetition] = field(default_factory=dict)
    cut_next_download_after: int | None = None
    """Bytes of the next full download to send before dropping the connection; None sends all."""
    reject_uploads: bool = False
    lists_until_scored: int = 2
    """ListSubmissions calls that still show a new submission as PENDING."""
    public_score: str = "0.21543"
    private_score: str | None = "0.22010"
    scoring_error: str | None = None
    """When set, a submission ends in ERROR with this description instead of being scored."""
    requests: list[RecordedRequest] = field(default_factory=list)
    uploads: dict[str, bytes] = field(default_factory=dict)
    submissions: list[dict] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._list_calls: dict[int, int] = {}

    # --- Life cycle ----------------------------------------------------------------------------

    def start(self) -> FakeKaggle:
        fake = self

        class Handler(_Handler):
            state = fake

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fake-kaggle", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)
            self._server = None

    def __enter__(self) -> FakeKaggle:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()

    @property
    def url(self) -> str:
        """The fake's own address, for ``HTTP_PROXY``."""
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # --- Inspection ----------------------------------------------------------------------------

    def calls(self, method_name: str) -> list[RecordedRequest]:
        """Return the recorded API calls of one method, e.g. ``"ListSubmissions"``."""
        return [r for r in self.requests if r.path.startswith(API_PREFIX) and r.path.endswith("/" + method_name)]

    def storage_requests(self) -> list[RecordedRequest]:
        """Return the recorded downloads of competition archives."""
        return [r for r in self.requests if r.path.startswith("/storage/")]

    # --- Behaviour -----------------------------------------------------------------------------

    def authorised(self, headers) -> bool:
        authorization = headers.get("Authorization", "")
        basic = base64.b64encode(f"{self.username}:{self.key}".encode()).decode()
        return authorization == f"Basic {basic}" or (self.token is not None and authorization == f"Bearer {self.token}")

    def competition_error(self, slug: str | None) -> tuple[int, str] | None:
        competition = self.competitions.get(slug or "")
        if competition is None:
            return 404, "Not found"
        if not competition.rules_accepted:
            return 403, "You must accept this competition's rules before you'll be able to download files"
        return None

    def create_submission(self, slug: str, token: str, description: str) -> int:
        with self._lock:
            ref = 1001 + len(self.submissions)
            self.submissions.insert(0, {"ref": ref, "competition": slug, "fileName": token.split("/")[-1],
                                        "description": description, "status": "PENDING"})
            self._list_calls[ref] = 0
        return ref

    def list_submissions(self, slug: str) -> list[dict]:
        listed = []
        with self._lock:
            for entry in self.submissions:
                if entry["competition"] != slug:
                    continue
                self._list_calls[entry["ref"]] += 1
                if entry["status"] == "PENDING" and self._list_calls[entry["ref"]] > self.lists_until_scored:
                    self._score(entry)
                listed.append({key: value for key, value in entry.items() if key != "competition"})
        return listed

    def _score(self, entry: dict) -> None:
        if self.scoring_error is not None:
            entry.update(status="ERROR", errorDescription=self.scoring_error)
            return
        entry.update(status="COMPLETE", publicScore=self.public_score)
        if self.private_score is not None:
            entry["privateScore"] = self.private_score


class _Handler(BaseHTTPRequestHandler):
    state: FakeKaggle

    def log_message(self, format, *args) -> None:  # noqa: A002 - the base class names it so
        pass

    # --- Plumbing --------------------------------------------------------------------------------

    def _target(self) -> tuple[str | None, str]:
        parts = urlsplit(self.path)
        return parts.hostname, parts.path

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            body = b""
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return body
                body += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if "Content-Length" not in (headers or {}):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _send_json(self, status: int, payload: dict) -> None:
        self._send(status, json.dumps(payload).encode(), {"Content-Type": "application/json"})

    def _send_error_json(self, status: int, message: str) -> None:
        self._send_json(status, {"code": status, "message": message})

    def _accept(self) -> tuple[str, bytes] | None:
        host, path = self._target()
        body = self._read_body()
        self.state.requests.append(RecordedRequest(self.command, path, dict(self.headers.items()), body))
        if host is not None and host not in SERVED_HOSTS:
            self._send(502, b"the fake Kaggle serves localhost only")
            return None
        return path, body

    # --- Methods ---------------------------------------------------------------------------------

    def do_CONNECT(self) -> None:  # noqa: N802 - http.server's naming
        # HTTPS through the proxy: nothing here speaks TLS, so refuse at once.
        self._send(405, b"the fake Kaggle serves plain HTTP only")

    def do_POST(self) -> None:  # noqa: N802
        accepted = self._accept()
        if accepted is None:
            return
        path, body = accepted
        if not path.startswith(API_PREFIX):
            self._send_error_json(404, f"no such endpoint {path}")
            return
        method = path.rsplit("/", 1)[-1]
        request = json.loads(body or b"{}")

        if method == "IntrospectToken":
            active = self.state.token is not None and request.get("token") == self.state.token
            self._send_json(200, {"active": active, "username": self.state.username if active else ""})
            return
        if not self.state.authorised(self.headers):
            self._send_error_json(401, "Unauthenticated")
            return

        handler = getattr(self, f"_api_{method}", None)
        if handler is None:
            self._send_error_json(404, f"the fake Kaggle does not implement {method}")
            return
        handler(request)

    def do_GET(self) -> None:  # noqa: N802
        accepted = self._accept()
        if accepted is None:
            return
        path, _ = accepted
        slug = path.removeprefix("/storage/").removesuffix(".zip")
        competition = self.state.competitions.get(slug)
        if not path.startswith("/storage/") or competition is None:
            self._send(404, b"no such file")
            return
        self._send_archive(competition.archive)

    def do_PUT(self) -> None:  # noqa: N802
        accepted = self._accept()
        if accepted is None:
            return
        path, body = accepted
        token = path.removeprefix("/upload/")
        if not path.startswith("/upload/") or self.state.reject_uploads:
            self._send(400, b"upload rejected")
            return
        self.state.uploads[token] = body
        self._send(200)

    # --- API methods -----------------------------------------------------------------------------

    def _competition_or_error(self, request: dict) -> str | None:
        slug = request.get("competitionName")
        error = self.state.competition_error(slug)
        if error is not None:
            self._send_error_json(*error)
            return None
        return slug

    def _api_DownloadDataFiles(self, request: dict) -> None:  # noqa: N802 - Kaggle's method name
        slug = self._competition_or_error(request)
        if slug is not None:
            self._send(302, headers={"Location": f"http://localhost/storage/{slug}.zip"})

    def _api_StartSubmissionUpload(self, request: dict) -> None:  # noqa: N802
        slug = self._competition_or_error(request)
        if slug is not None:
            token = f"{slug}/{len(self.state.uploads) + 1}/{request.get('fileName', 'submission')}"
            self._send_json(200, {"token": token, "createUrl": f"http://localhost/upload/{token}"})

    def _api_CreateSubmission(self, request: dict) -> None:  # noqa: N802
        slug = self._competition_or_error(request)
        if slug is None:
            return
        token = request.get("blobFileTokens", "")
        if token not in self.state.uploads:
            self._send_error_json(400, f"no uploaded file for token {token}")
            return
        ref = self.state.create_submission(slug, token, request.get("submissionDescription", ""))
        title = self.state.competitions[slug].title
        self._send_json(200, {"message": f"Successfully submitted to {title}", "ref": ref})

    def _api_ListSubmissions(self, request: dict) -> None:  # noqa: N802
        slug = self._competition_or_error(request)
        if slug is not None:
            self._send_json(200, {"submissions": self.state.list_submissions(slug), "nextPageToken": ""})

    # --- Archive download ------------------------------------------------------------------------

    def _send_archive(self, archive: bytes) -> None:
        etag = '"' + hashlib.sha1(archive).hexdigest() + '"'
        headers = {"Content-Type": "application/zip", "Accept-Ranges": "bytes", "ETag": etag,
                   "Last-Modified": LAST_MODIFIED}
        requested = self.headers.get("Range", "")
        if_range = self.headers.get("If-Range")
        if requested.startswith("bytes=") and (if_range is None or if_range == etag):
            start = int(requested.removeprefix("bytes=").split("-")[0])
            if start >= len(archive):
                self._send(416, headers={"Content-Range": f"bytes */{len(archive)}"})
                return
            headers["Content-Range"] = f"bytes {start}-{len(archive) - 1}/{len(archive)}"
            self._send(206, archive[start:], headers)
            return

        cut = self.state.cut_next_download_after
        if cut is None:
            self._send(200, archive, headers)
            return
        # Announce the whole archive, send part of it, then drop the connection.
        self.state.cut_next_download_after = None
        headers["Content-Length"] = str(len(archive))
        self._send(200, archive[:cut], headers)
        self.wfile.flush()
        self.close_connection = True
        self.connection.shutdown(2)

    def handle(self) -> None:
        try:
            super().handle()
        except (BrokenPipeError, ConnectionResetError):
            # The client closed a streamed download it no longer needs.
            pass
