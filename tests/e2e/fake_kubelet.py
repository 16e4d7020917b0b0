"""A fake kubelet for the end-to-end tests: HTTPS (a certificate the test's CA signed),
`GET /stats/summary` answered with a stats summary JSON file, `Authorization: Bearer <token>`
checked (401 without it), every request recorded.

    kubelet = FakeKubelet(cert, key, summary_path, token="t").start()
    kubelet.endpoint      # "127.0.0.1:<port>"
    kubelet.requests      # [(path, authorization header)]
    kubelet.stop()
"""

from __future__ import annotations

import http.server
import ssl
import threading
from pathlib import Path


class FakeKubelet:
    def __init__(self, cert: Path, key: Path, summary: Path, token: str):
        self.summary = Path(summary).read_bytes()
        self.token = token
        self.requests: list[tuple[str, str | None]] = []
        self._lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's naming)
                auth = self.headers.get("Authorization")
                with outer._lock:
                    outer.requests.append((self.path, auth))
                    token = outer.token
                if self.path != "/stats/summary":
                    return self._answer(404, b"404 page not found", "text/plain")
                if auth != f"Bearer {token}":
                    return self._answer(401, b"Unauthorized", "text/plain")
                self._answer(200, outer.summary, "application/json")

            def _answer(self, code: int, body: bytes, ctype: str):
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):  # keep the test output clean
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(cert), str(key))
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)
        self.endpoint = f"127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def start(self) -> "FakeKubelet":
        self._thread.start()
        return self

    def set_token(self, token: str) -> None:
        with self._lock:
            self.token = token

    def seen(self) -> list[tuple[str, str | None]]:
        with self._lock:
            return list(self.requests)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
