"""``mmv serve``: a search page for a library, on 127.0.0.1, with the standard library's HTTP server.

Routes (all read-only: nothing a request sends is written to the library):

* ``GET /`` and ``GET /?q=TEXT``: the page (opening ``/?q=TEXT`` runs that search, so a search is a link);
* ``GET /api/search?q=TEXT&k=K&target=video|audio``: the same JSON as ``mmv search --json``;
* ``POST /api/search?kind=audio|image|video&k=K&target=...``: the body is a query file (a dropped sound or image),
  at most :data:`MAX_UPLOAD_BYTES`; it is written to a private temporary file, embedded and deleted;
* ``GET /api/thumbnail/<segment id>``: a JPEG of the frame at the segment's start;
* ``GET /media/<file id>``: the file itself, with HTTP range requests (the page's video player seeks in it);
* ``GET /api/library``: what the library holds.

Files are reached only by their id in the library: a URL never names a path, so nothing outside the library can be
served. The server binds to 127.0.0.1 unless told otherwise.
"""
from __future__ import annotations

import io
import json
import logging
import mimetypes
import os
import re
import tempfile
import threading
from functools import lru_cache
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any
from urllib.parse import parse_qs, urlparse

from mmv.search.query import Query, Searcher

__all__ = ["MAX_UPLOAD_BYTES", "make_server"]

log = logging.getLogger(__name__)

MAX_UPLOAD_BYTES = 50 * 2**20  # a query sound or image; larger bodies are refused before they are read
_RANGE = re.compile(r"bytes=(\d*)-(\d*)$")
_UPLOAD_SUFFIX = {"audio": ".wav", "image": ".png", "video": ".mp4"}


def _page() -> bytes:
    return resources.files("mmv.search").joinpath("static/index.html").read_bytes()


class _Handler(BaseHTTPRequestHandler):
    server: "_SearchServer"
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base class's name)
        log.debug("%s " + format, self.address_string(), *args)

    # ------------------------------------------------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802 (the base class's naming)
        url = urlparse(self.path)
        try:
            if url.path in ("/", "/index.html"):
                self._send(HTTPStatus.OK, _page(), "text/html; charset=utf-8")
            elif url.path == "/api/search":
                params = parse_qs(url.query)
                text = params.get("q", [""])[0].strip()
                if not text:
                    return self._error(HTTPStatus.BAD_REQUEST, "give a query: /api/search?q=TEXT")
                self._search(Query("text", text=text), params)
            elif url.path == "/api/library":
                self._json(HTTPStatus.OK, self.server.library_info())
            elif url.path.startswith("/api/thumbnail/"):
                self._thumbnail(url.path.rsplit("/", 1)[1])
            elif url.path.startswith("/media/"):
                self._media(url.path.rsplit("/", 1)[1])
            else:
                self._error(HTTPStatus.NOT_FOUND, "no such page")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the browser went away (a video element often cancels ranges it no longer needs)

    def do_POST(self) -> None:  # noqa: N802
        url = urlparse(self.path)
        if url.path != "/api/search":
            return self._error(HTTPStatus.NOT_FOUND, "no such endpoint (this server has no write endpoint)")
        params = parse_qs(url.query)
        kind = params.get("kind", [""])[0]
        if kind not in _UPLOAD_SUFFIX:
            return self._error(HTTPStatus.BAD_REQUEST, "kind must be audio, image or video")
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            return self._error(HTTPStatus.LENGTH_REQUIRED, "a query file needs a Content-Length")
        if length > MAX_UPLOAD_BYTES:
            self.close_connection = True  # the body is not read
            return self._error(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                               f"a query file may have at most {MAX_UPLOAD_BYTES // 2**20} MB")
        body = self.rfile.read(length)
        with tempfile.TemporaryDirectory(prefix="mmv-query-") as folder:
            path = os.path.join(folder, "query" + _UPLOAD_SUFFIX[kind])
            with open(path, "wb") as handle:
                handle.write(body)
            self._search(Query(kind, path=path), params)

    # ------------------------------------------------------------------------------------------------------
    def _search(self, query: Query, params: dict[str, list[str]]) -> None:
        from mmv.data.media import MediaError

        try:
            k = int(params.get("k", ["12"])[0])
            target = params.get("target", ["video"])[0]
            moments = self.server.search(query, target, k)
        except (ValueError, MediaError) as err:  # a pair the model lacks, an unreadable upload, a bad k
            return self._error(HTTPStatus.BAD_REQUEST, str(err))
        self._json(HTTPStatus.OK, [m.as_dict() for m in moments])

    def _thumbnail(self, token: str) -> None:
        if not token.isdigit():
            return self._error(HTTPStatus.NOT_FOUND, "no such segment")
        image = self.server.thumbnail(int(token))
        if image is None:
            return self._error(HTTPStatus.NOT_FOUND, "no such segment, or no picture in it")
        self._send(HTTPStatus.OK, image, "image/jpeg", cache=True)

    def _media(self, token: str) -> None:
        record = self.server.file(int(token)) if token.isdigit() else None
        if record is None or not os.path.isfile(record.path):
            return self._error(HTTPStatus.NOT_FOUND, "no such file in this library")
        size = os.path.getsize(record.path)
        kind = mimetypes.guess_type(record.path)[0] or "application/octet-stream"
        first, last, status = 0, size - 1, HTTPStatus.OK
        match = _RANGE.match(self.headers.get("Range", "").strip())
        if match and (match.group(1) or match.group(2)):
            if match.group(1):
                first = int(match.group(1))
                last = min(int(match.group(2)), size - 1) if match.group(2) else size - 1
            else:  # a suffix range: the last N bytes
                first = max(0, size - int(match.group(2)))
            if first > last or first >= size:
                self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            status = HTTPStatus.PARTIAL_CONTENT
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(last - first + 1))
        if status == HTTPStatus.PARTIAL_CONTENT:
            self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
        self.end_headers()
        with open(record.path, "rb") as handle:
            handle.seek(first)
            remaining = last - first + 1
            while remaining > 0:
                block = handle.read(min(remaining, 1 << 16))
                if not block:
                    break
                self.wfile.write(block)
                remaining -= len(block)

    # ------------------------------------------------------------------------------------------------------
    def _json(self, status: HTTPStatus, payload: Any) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json")

    def _error(self, status: HTTPStatus, message: str) -> None:
        self._json(status, {"error": message})

    def _send(self, status: HTTPStatus, body: bytes, kind: str, cache: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "max-age=3600" if cache else "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        self.wfile.write(body)


class _SearchServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], searcher: Searcher) -> None:
        super().__init__(address, _Handler)
        self.searcher = searcher
        self._lock = threading.Lock()  # one model forward pass at a time; SQLite reads are serialised with it

    def search(self, query: Query, target: str, k: int) -> list[Any]:
        with self._lock:
            return self.searcher.search(query, target, max(1, min(k, 100)))

    def file(self, file_id: int) -> Any:
        with self._lock:
            return self.searcher.library.file(file_id)

    def library_info(self) -> dict[str, Any]:
        with self._lock:
            description = self.searcher.library.description
            return {"counts": self.searcher.library.counts(), "model": description["model"],
                    "segment_seconds": description["segment_seconds"], "spaces": description["spaces"]}

    def thumbnail(self, segment_id: int) -> bytes | None:
        with self._lock:
            segment = self.searcher.library.segments([segment_id]).get(segment_id)
            record = self.searcher.library.file(segment.file_id) if segment is not None else None
        if segment is None or record is None or not record.has_video:
            return None
        return _thumbnail(segment.path, segment.start)


@lru_cache(maxsize=512)
def _thumbnail(path: str, start: float, width: int = 320) -> bytes | None:
    from PIL import Image

    from mmv.data.media import MediaError, decode_clip

    try:
        frame = decode_clip(path, start, 1, 1.0, with_audio=False, max_short_side=width).frames[0]
    except MediaError:
        return None
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def make_server(searcher: Searcher, host: str = "127.0.0.1", port: int = 8000) -> _SearchServer:
    """The HTTP server (not yet serving: call ``serve_forever``); port 0 picks a free port."""
    return _SearchServer((host, port), searcher)
