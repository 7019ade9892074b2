"""A fault-injecting HTTP proxy on 127.0.0.1, put in front of moto's S3 server in tests.

Each request is forwarded to the target unless a rule matches it. A matching
rule responds instead with an S3 error (``503 SlowDown``, ``500``, ``403
InvalidAccessKeyId``), resets the connection, delays the request, or forwards
it but cuts the response body short. Every request is recorded with the fault
applied to it, so tests can count attempts.
"""

from __future__ import annotations

import http.client
import re
import socket
import struct
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlparse

_HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers", "transfer-encoding", "upgrade"}
_ERRORS = {
    "503": (503, "SlowDown", "Please reduce your request rate."),
    "500": (500, "InternalError", "We encountered an internal error. Please try again."),
    "403": (403, "InvalidAccessKeyId", "The AWS Access Key Id you provided does not exist in our records."),
}
ACTIONS = (*_ERRORS, "reset", "delay", "truncate")


@dataclass
class Rule:
    """Inject ``action`` into the next ``times`` requests whose method and path match."""

    action: str
    method: str | None = None
    path: str = ".*"
    times: int = 1
    delay: float = 0.0

    def matches(self, method: str, path: str) -> bool:
        return self.times > 0 and (self.method is None or self.method == method) and re.search(self.path, path) is not None


@dataclass
class Request:
    method: str
    path: str
    action: str | None


@dataclass
class FaultProxy:
    """Forward HTTP requests from ``url`` to ``target``, applying the rules in order."""

    target: str
    rules: list[Rule] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)

    def __post_init__(self):
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "FaultProxy":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def add(self, action: str, *, method: str | None = None, path: str = ".*", times: int = 1, delay: float = 0.0) -> Rule:
        if action not in ACTIONS:
            raise ValueError(f"Unknown fault {action!r}; expected one of {ACTIONS}.")
        rule = Rule(action, method, path, times, delay)
        with self._lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        with self._lock:
            self.rules.clear()
            self.requests.clear()

    def faults(self, action: str | None = None) -> list[Request]:
        """Requests that got a fault (of ``action`` when given)."""
        return [r for r in self.requests if r.action is not None and (action is None or r.action == action)]

    def _choose(self, method: str, path: str) -> Rule | None:
        with self._lock:
            for rule in self.rules:
                if rule.matches(method, path):
                    rule.times -= 1
                    self.requests.append(Request(method, path, rule.action))
                    return rule
            self.requests.append(Request(method, path, None))
        return None

    def __enter__(self) -> "FaultProxy":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def _handler(proxy: FaultProxy):
    target = urlparse(proxy.target)

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format, *args):  # keep test output quiet
            pass

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                    if size == 0:
                        while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                            pass
                        return b"".join(chunks)
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def _handle(self) -> None:
            body = self._body()
            rule = proxy._choose(self.command, self.path)
            if rule is not None and rule.action == "reset":
                # SO_LINGER with a zero timeout makes close() send a TCP reset.
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                self.close_connection = True
                self.connection.close()
                return
            if rule is not None and rule.action in _ERRORS:
                status, code, message = _ERRORS[rule.action]
                payload = (
                    f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
                    f"<RequestId>fault-proxy</RequestId></Error>"
                ).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)
                return
            if rule is not None and rule.action == "delay":
                time.sleep(rule.delay)
            connection = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
            if body or self.command in ("PUT", "POST"):
                headers["Content-Length"] = str(len(body))
            try:
                connection.request(self.command, self.path, body=body or None, headers=headers)
                response = connection.getresponse()
                payload = response.read()
            finally:
                connection.close()
            self.send_response(response.status, response.reason)
            for name, value in response.getheaders():
                if name.lower() not in _HOP_BY_HOP and name.lower() != "content-length":
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command == "HEAD":
                return
            if rule is not None and rule.action == "truncate":
                self.wfile.write(payload[: len(payload) // 2])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            self.wfile.write(payload)

        do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

    return Handler
