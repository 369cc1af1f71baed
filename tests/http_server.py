"""A loopback HTTP server for remote-reading tests: Range requests (or a server
that ignores them, as ``python -m http.server`` does), byte counts, and failures
on purpose (404, a response cut off mid-body, a file that changes).

Serves in-memory files only, on 127.0.0.1, from daemon threads; every request is
answered or refused at once, so no test can hang on it.
"""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_RANGE = re.compile(r"bytes=(\d+)-(\d*)$")


@dataclass
class Request:
    """One request as the server saw it."""

    method: str
    path: str
    range: tuple[int, int] | None  # [start, stop) asked for
    headers: dict[str, str]
    sent: int = 0  # body bytes sent


@dataclass
class Files:
    """What the server serves, how it fails, and what it was asked."""

    content: dict[str, bytes] = field(default_factory=dict)
    #: path -> "404" (not found), "drop" (headers, then half the body, then
    #: the connection is closed) or "long" (a range answered from its start to
    #: the end of the file).
    failures: dict[str, str] = field(default_factory=dict)
    #: False: Range headers are ignored, every GET answered with the whole file
    #: (status 200, no Accept-Ranges), as by ``python -m http.server``.
    honour_range: bool = True
    requests: list[Request] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def bytes_sent(self) -> int:
        """Body bytes sent since the last ``reset()``."""
        with self.lock:
            return sum(r.sent for r in self.requests)

    def gets(self) -> list[Request]:
        """GET requests since the last ``reset()``."""
        with self.lock:
            return [r for r in self.requests if r.method == "GET"]

    def reset(self) -> None:
        with self.lock:
            self.requests.clear()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass

    def do_HEAD(self) -> None:
        self._serve(body=False)

    def do_GET(self) -> None:
        self._serve(body=True)

    def _serve(self, body: bool) -> None:
        files = self.server.files
        path = self.path.split("?", 1)[0]
        with files.lock:
            data = files.content.get(path)
            failure = files.failures.get(path)
        header = self.headers.get("Range")
        request = Request(self.command, path, None, dict(self.headers.items()))
        with files.lock:
            files.requests.append(request)
        if data is None or failure == "404":
            self._reply(404, b"not found", {}, body)
            return
        status, start, stop = 200, 0, len(data)
        if header and files.honour_range:
            m = _RANGE.match(header.strip())
            if m is None:
                self._reply(400, b"bad range", {}, body)
                return
            start = int(m.group(1))
            stop = int(m.group(2)) + 1 if m.group(2) else len(data)
            if start >= len(data):
                extra = {"Content-Range": f"bytes */{len(data)}"}
                self._reply(416, b"", extra, body)
                return
            stop = min(stop, len(data))
            status = 206
            request.range = (start, stop)
            if failure == "long":
                stop = len(data)
        extra = {"Accept-Ranges": "bytes"} if files.honour_range else {}
        if status == 206:
            extra["Content-Range"] = f"bytes {start}-{stop - 1}/{len(data)}"
        payload = data[start:stop]
        if body and failure == "drop":
            self.send_response(status)
            for k, v in extra.items():
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            half = payload[: len(payload) // 2]
            self.wfile.write(half)
            self.wfile.flush()
            request.sent = len(half)
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        request.sent = len(payload) if body else 0
        self._reply(status, payload, extra, body)

    def _reply(
        self, status: int, payload: bytes, extra: dict[str, str], body: bool
    ) -> None:
        self.send_response(status)
        for k, v in extra.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        if body:
            self.wfile.write(payload)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, files: Files) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files = files


@contextmanager
def serving(files: Files | None = None) -> Iterator[tuple[str, Files]]:
    """Serve ``files`` on loopback; yields ``(base URL, files)``."""
    files = files if files is not None else Files()
    server = _Server(files)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", files
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def closed_port() -> int:
    """A loopback port nothing listens on (connections to it are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
