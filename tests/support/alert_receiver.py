"""A webhook receiver on 127.0.0.1 that keeps what it is sent, for the alerts of the rollout role.

    python -m tests.support.alert_receiver --out posts.jsonl --port-file port [--status 500] [--count 1]
        [--max-seconds 600]

Each POST is appended to ``--out`` as one JSON line {path, headers, body}; it answers ``--status``.
It listens on a free port of 127.0.0.1 only (written to ``--port-file``) and exits after ``--count``
posts, or after ``--max-seconds`` in any case, so a run that dies leaves nothing behind for long.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def serve(out: Path, status: int, count: int | None = None) -> ThreadingHTTPServer:
    """The server, not started; with ``count``, it shuts down once it has kept that many posts."""
    lock = threading.Lock()
    kept = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw.decode(errors="replace")
            entry = {"path": self.path, "headers": dict(self.headers), "body": body}
            with lock, out.open("a") as handle:
                handle.write(json.dumps(entry, sort_keys=True) + "\n")
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()
            kept.append(entry)
            if count is not None and len(kept) >= count:
                threading.Thread(target=self.server.shutdown, daemon=True).start()

        def log_message(self, *args) -> None:
            pass

    return ThreadingHTTPServer(("127.0.0.1", 0), Handler)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--port-file", required=True, type=Path)
    parser.add_argument("--status", type=int, default=200)
    parser.add_argument("--count", type=int)
    parser.add_argument("--max-seconds", type=float, default=600)
    args = parser.parse_args(argv)
    server = serve(args.out, args.status, args.count)
    args.port_file.write_text(f"{server.server_address[1]}\n")
    timer = threading.Timer(args.max_seconds, server.shutdown)
    timer.daemon = True
    timer.start()
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
