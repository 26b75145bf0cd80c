"""A local stand-in for Twilio Segment's HTTP Tracking API batch endpoint, for the local stack
(scripts/dev with SEGMENT_LOCAL=1) and the tests: it answers `POST /v1/batch` as Segment
does and records everything it receives, so that what the forwarder sent can be counted.

Python 3 standard library only. Run it through scripts/dev, or directly:

    python3 scripts/lib/segment_standin.py --port 9400 [--record FILE]

Segment's rules it applies (../shared/PROTOCOL.md, section 8): HTTP basic auth with the
write key as user name (recorded, like Segment it answers 200 whatever the key); a body of
at most --max-request-bytes (default 500 KiB) and calls of at most --max-call-bytes
(default 32 KiB, measured as compact JSON) and valid JSON, else 400; everything else 200.

Control and inspection (JSON; `prefix` keeps only calls whose messageId starts with it):
    GET  /health                      {"status": "ok"}
    GET  /__stats[?prefix=EZ..]       requests by status; calls received (in any request,
                                      whatever the answer) and accepted (in requests answered
                                      200), each as a total and as distinct messageIds
    GET  /__calls[?prefix=..&accepted=1]  the calls, each with "_status" (the answer to its
                                      request) and "_request" (the request's number)
    POST /__control {"fail_status": 500, "fail_requests": N, "pass_requests": P,
                     "fail_prefix": "EZ..", "fail_seconds": S, "max_call_bytes": B,
                     "max_request_bytes": B, "reset": true}
                                      after the next P batch requests (default 0), the N
                                      following ones, and every one for S seconds, get
                                      fail_status (default 500) instead; with fail_prefix
                                      only requests holding a call whose messageId starts
                                      with it count (another test's stragglers do not use
                                      up the failures); limits change; reset forgets what
                                      was received and every failure
"""

from __future__ import annotations

import argparse
import base64
import json
import signal
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

KIB = 1024


class State:
    def __init__(self, args: argparse.Namespace) -> None:
        self.lock = threading.Lock()
        self.record = Path(args.record) if args.record else None
        self.max_call_bytes = args.max_call_bytes
        self.max_request_bytes = args.max_request_bytes
        self.reset()

    def reset(self) -> None:
        self.requests: list[dict] = []  # {"n", "status", "bytes", "write_key", "reason"}
        self.calls: list[dict] = []  # each call with "_status" and "_request"
        self.fail_status = 500
        self.fail_requests = 0
        self.pass_requests = 0
        self.fail_prefix: str | None = None
        self.fail_until = 0.0

    def control(self, order: dict) -> dict:
        if order.get("reset"):
            self.reset()
        if "fail_status" in order:
            self.fail_status = int(order["fail_status"])
        if "fail_requests" in order:
            self.fail_requests = int(order["fail_requests"])
        if "pass_requests" in order:
            self.pass_requests = int(order["pass_requests"])
        if "fail_prefix" in order:
            self.fail_prefix = order["fail_prefix"] or None
        if "fail_seconds" in order:
            self.fail_until = time.monotonic() + float(order["fail_seconds"])
        if "max_call_bytes" in order:
            self.max_call_bytes = int(order["max_call_bytes"])
        if "max_request_bytes" in order:
            self.max_request_bytes = int(order["max_request_bytes"])
        return {
            "fail_status": self.fail_status,
            "fail_requests": self.fail_requests,
            "pass_requests": self.pass_requests,
            "fail_seconds_left": max(0.0, self.fail_until - time.monotonic()),
            "max_call_bytes": self.max_call_bytes,
            "max_request_bytes": self.max_request_bytes,
        }

    def batch(self, body: bytes, authorization: str) -> tuple[int, dict]:
        """The answer to one batch request, recorded with its calls."""
        write_key = None
        if authorization.startswith("Basic "):
            try:
                write_key = base64.b64decode(authorization[6:]).decode().split(":", 1)[0]
            except (ValueError, UnicodeDecodeError):
                write_key = None
        calls: list = []
        reason = ""
        try:
            document = json.loads(body)
            calls = document.get("batch") if isinstance(document, dict) else None
            if not isinstance(calls, list):
                calls, reason = [], "the body has no batch array"
        except ValueError as e:
            reason = f"malformed JSON: {e}"
        n = len(self.requests) + 1
        injected = time.monotonic() < self.fail_until
        counted = self.fail_prefix is None or any(
            isinstance(call, dict) and str(call.get("messageId", "")).startswith(self.fail_prefix)
            for call in calls
        )
        if self.fail_requests > 0 and counted:
            if self.pass_requests > 0:
                self.pass_requests -= 1
            else:
                self.fail_requests -= 1
                injected = True
        if injected:
            status, reason = self.fail_status, "failure injected by the stand-in"
        elif reason:
            status = 400
        elif len(body) > self.max_request_bytes:
            status, reason = 400, f"request of {len(body)} bytes is over {self.max_request_bytes}"
        else:
            status = 200
            for call in calls:
                size = len(json.dumps(call, separators=(",", ":"), ensure_ascii=False).encode())
                if size > self.max_call_bytes:
                    status, reason = 400, f"a call of {size} bytes is over {self.max_call_bytes}"
                    break
        request = {"n": n, "status": status, "bytes": len(body), "calls": len(calls),
                   "write_key": write_key, "reason": reason, "time": time.time()}
        self.requests.append(request)
        for call in calls:
            if isinstance(call, dict):
                self.calls.append(dict(call, _status=status, _request=n))
        if self.record:
            with self.record.open("a", encoding="utf-8") as out:
                out.write(json.dumps(dict(request, batch=calls)) + "\n")
        if status == 200:
            return status, {"success": True}
        return status, {"success": False, "message": reason}

    def selected(self, prefix: str, accepted: bool) -> list[dict]:
        return [c for c in self.calls
                if str(c.get("messageId", "")).startswith(prefix) and (not accepted or c["_status"] == 200)]

    def stats(self, prefix: str) -> dict:
        received = self.selected(prefix, False)
        accepted = [c for c in received if c["_status"] == 200]
        by_status: dict[str, int] = {}
        for r in self.requests:
            by_status[str(r["status"])] = by_status.get(str(r["status"]), 0) + 1
        return {
            "requests": len(self.requests),
            "requests_by_status": by_status,
            "calls_received": len(received),
            "distinct_received": len({c.get("messageId") for c in received}),
            "calls_accepted": len(accepted),
            "distinct_accepted": len({c.get("messageId") for c in accepted}),
            "write_keys": sorted({str(r["write_key"]) for r in self.requests}),
        }


class Handler(BaseHTTPRequestHandler):
    state: State  # set on the class before serving
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (BaseHTTPRequestHandler's name)
        sys.stderr.write(f"{time.strftime('%H:%M:%S')} [segment-standin] {format % args}\n")

    def answer(self, status: int, document) -> None:
        body = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        prefix = query.get("prefix", [""])[0]
        with self.state.lock:
            if url.path == "/health":
                self.answer(200, {"status": "ok"})
            elif url.path == "/__stats":
                self.answer(200, self.state.stats(prefix))
            elif url.path == "/__calls":
                accepted = query.get("accepted", ["0"])[0] not in ("0", "", "false")
                self.answer(200, self.state.selected(prefix, accepted))
            else:
                self.answer(404, {"message": "not found"})

    def do_POST(self) -> None:  # noqa: N802
        body = self.body()
        path = urllib.parse.urlsplit(self.path).path
        with self.state.lock:
            if path == "/v1/batch":
                status, document = self.state.batch(body, self.headers.get("Authorization", ""))
                self.answer(status, document)
            elif path == "/__control":
                try:
                    order = json.loads(body or b"{}")
                    self.answer(200, self.state.control(order))
                except (ValueError, TypeError) as e:
                    self.answer(400, {"message": str(e)})
            else:
                self.answer(404, {"message": "not found"})


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="segment_standin.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=9400)
    p.add_argument("--record", help="append every request (status and calls) as a JSON line here")
    p.add_argument("--max-call-bytes", type=int, default=32 * KIB)
    p.add_argument("--max-request-bytes", type=int, default=500 * KIB)
    args = p.parse_args(argv)
    Handler.state = State(args)
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True
    port = server.server_address[1]

    def stop(_signum, _frame):
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    sys.stderr.write(f"{time.strftime('%H:%M:%S')} [segment-standin] listening on {args.host}:{port}\n")
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
