"""A local HTTP server for download tests: serves files from memory on 127.0.0.1, honours ``Range`` requests, and can
cut responses off mid-file, announce more bytes than it has, stall, or answer with an error status.

>>> with ReleaseServer({"/mmv_s3d.pkl": data}) as server:
...     server.cuts = [1000]          # the next response ends after byte 1000 of the file, then the connection closes
...     os.environ["MMV_RELEASE_URL"] = server.url
"""
from __future__ import annotations

import hashlib
import http.server
import socket
import threading
from dataclasses import dataclass


@dataclass
class Request:
    path: str
    range: str | None  # the Range header, if any
    if_range: str | None


class _Handler(http.server.BaseHTTPRequestHandler):
    server: "_Server"

    def log_message(self, format: str, *args: object) -> None:  # keep test output clean
        pass

    def do_GET(self) -> None:
        owner = self.server.owner
        owner.requests.append(Request(self.path, self.headers.get("Range"), self.headers.get("If-Range")))
        if owner.status:
            self.send_error(owner.status)
            return
        data = owner.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        start, requested = 0, self.headers.get("Range")
        if requested:
            start = int(requested.removeprefix("bytes=").split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.send_header("ETag", '"' + hashlib.sha256(data).hexdigest()[:16] + '"')
        self.end_headers()
        end = len(data)
        for limit in (owner.truncate_at, owner.stall_at):  # the file ends early, whatever the header said
            if limit is not None:
                end = min(end, limit)
        with owner.lock:
            while owner.cuts and owner.cuts[0] <= start:
                owner.cuts.pop(0)
            if owner.cuts:
                end = min(end, owner.cuts.pop(0))
        try:
            self.wfile.write(data[start:end] if end > start else b"")
            self.wfile.flush()
            if owner.stall_at is not None and end < len(data):
                owner.stalled.set()
                owner.release.wait(60)  # hold the connection open, sending nothing, until released
        except (BrokenPipeError, ConnectionResetError):
            pass
        if end < len(data):
            # Close without sending the rest: the client sees fewer bytes than Content-Length announced.
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    owner: "ReleaseServer"


class ReleaseServer:
    """Serves ``files`` (``{url path: bytes}``) at :attr:`url` until :meth:`stop`.

    Attributes:
        requests: Every request received, in order.
        cuts: File offsets: each response that would go past the first one still ahead of it stops there instead.
        truncate_at: Every response stops at this offset (a file shorter than announced).
        stall_at: Like ``truncate_at``, but the connection then stays open, silent, until :attr:`release` is set.
        status: Answer every request with this HTTP status (e.g. 500).
    """

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = dict(files)
        self.requests: list[Request] = []
        self.cuts: list[int] = []
        self.truncate_at: int | None = None
        self.stall_at: int | None = None
        self.status: int | None = None
        self.lock = threading.Lock()
        self.stalled = threading.Event()
        self.release = threading.Event()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.owner = self
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def stop(self) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> "ReleaseServer":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def closed_port_url() -> str:
    """The URL of a port on 127.0.0.1 where nothing listens (a machine without network, as far as a client sees)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"
