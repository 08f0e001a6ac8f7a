"""A local OTLP/HTTP sink: answers 200 to every export and counts the bytes it received.

Runs in its own process (so it shares no GIL with the runner) and prints its URL on the first
line of stdout. `GET /` returns the counts since the last `GET /` as JSON and resets them.
"""

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Lock()
COUNTS = {"bytes": 0, "posts": 0}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        received = len(self.rfile.read(int(self.headers.get("content-length", 0))))
        with LOCK:
            COUNTS["bytes"] += received
            COUNTS["posts"] += 1
        self.answer(b"")

    def do_GET(self) -> None:
        with LOCK:
            body = json.dumps(COUNTS).encode()
            COUNTS.update(bytes=0, posts=0)
        self.answer(body)

    def answer(self, body: bytes) -> None:
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # quiet: one line per export
        pass


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(f"http://127.0.0.1:{server.server_port}", flush=True)
    server.serve_forever()
