"""Local stand-ins for the two billing APIs `kore-usage push` calls: Stripe Billing meter
events and Lago events. Each answers as the real service does for those calls and keeps the
events it took, so a test can check that every invoice line arrived once.

Python 3 standard library only:

    python3 scripts/lib/billing_standin.py --service stripe|lago [--host H] [--port 0]

It prints `listening on HOST:PORT` on standard output once it serves.

Stripe (../shared/PROTOCOL.md, section 9): `POST /v1/billing/meter_events`, form-encoded, the
secret key as basic-auth user (none: 401). `event_name`, `payload[stripe_customer_id]` and
`payload[value]` (a whole number) are required, `identifier` at most 100 characters,
`timestamp` (Unix seconds) within the past 35 days and at most 5 minutes ahead, else 400
`invalid_request_error`. An identifier seen within the last 24 hours is refused with 400
"An event already exists with identifier ..." and `Stripe-Should-Retry: false`.

Lago: `POST /api/v1/events` (`{"event": {...}}`) and `POST /api/v1/events/batch`
(`{"events": [...]}`, at most 100), bearer key (none: 401). `transaction_id`,
`external_subscription_id` and `code` are required, else 422. An event whose
`transaction_id` was taken before is answered as taken and not kept again.

Control and inspection (JSON):
    GET  /health            {"status": "ok"}
    GET  /__events          the events kept, each once, in arrival order
    GET  /__stats           {"requests": N, "events": N, "distinct": N, "by_status": {...}}
    POST /__control {"hang_after": N, "hang_seconds": S, "reset": true}
                            once N events are kept, the answer to each later event request
                            waits S seconds (default 3600) after the event is kept: a
                            client killed meanwhile never learns it was delivered
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
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

DAY = 24 * 3600
STRIPE_MAX_AGE = 35 * DAY
STRIPE_MAX_AHEAD = 5 * 60
STRIPE_IDENTIFIER_WINDOW = DAY
LAGO_BATCH = 100


def stripe_error(message: str, param: str | None = None) -> dict:
    error = {"type": "invalid_request_error", "message": message}
    if param:
        error["param"] = param
    return {"error": error}


class State:
    def __init__(self, service: str) -> None:
        self.service = service
        self.lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        self.events: list[dict] = []
        self.seen: dict[str, float] = {}  # identifier / transaction_id -> when it was kept
        self.requests: list[int] = []  # statuses
        self.hang_after: int | None = None
        self.hang_seconds = 3600.0

    def control(self, order: dict) -> dict:
        if order.get("reset"):
            self.reset()
        if "hang_after" in order:
            self.hang_after = None if order["hang_after"] is None else int(order["hang_after"])
        if "hang_seconds" in order:
            self.hang_seconds = float(order["hang_seconds"])
        return {"hang_after": self.hang_after, "hang_seconds": self.hang_seconds}

    def hang(self) -> float:
        """How long the answer to the request that just kept an event waits."""
        if self.hang_after is not None and len(self.events) > self.hang_after:
            return self.hang_seconds
        return 0.0

    def stats(self) -> dict:
        by_status: dict[str, int] = {}
        for status in self.requests:
            by_status[str(status)] = by_status.get(str(status), 0) + 1
        keys = [e.get("identifier") or e.get("transaction_id") for e in self.events]
        return {"requests": len(self.requests), "events": len(self.events),
                "distinct": len(set(keys)), "by_status": by_status}

    # ---- Stripe -------------------------------------------------------------------------

    def stripe_meter_event(self, form: dict[str, str], key: str | None) -> tuple[int, dict, dict]:
        if not key:
            return 401, stripe_error("You did not provide an API key."), {}
        for name in ("event_name", "payload[stripe_customer_id]", "payload[value]"):
            if not form.get(name):
                return 400, stripe_error(f"Missing required param: {name}.", name), {}
        value = form["payload[value]"]
        if not value.isdigit():
            return 400, stripe_error("payload[value] must be a whole number.", "payload[value]"), {}
        now = time.time()
        try:
            stamp = int(form.get("timestamp") or now)
        except ValueError:
            return 400, stripe_error("Invalid integer: timestamp", "timestamp"), {}
        if stamp < now - STRIPE_MAX_AGE:
            return 400, stripe_error(
                "Timestamp must be within the past 35 calendar days.", "timestamp"), {}
        if stamp > now + STRIPE_MAX_AHEAD:
            return 400, stripe_error(
                "Timestamp must be no more than 5 minutes in the future.", "timestamp"), {}
        identifier = form.get("identifier") or f"auto_{uuid.uuid4().hex}"
        if len(identifier) > 100:
            return 400, stripe_error("identifier is longer than 100 characters.", "identifier"), {}
        if now - self.seen.get(identifier, -STRIPE_IDENTIFIER_WINDOW * 2) < STRIPE_IDENTIFIER_WINDOW:
            return 400, stripe_error(
                f"An event already exists with identifier {identifier}.", "identifier"), \
                {"Stripe-Should-Retry": "false"}
        self.seen[identifier] = now
        event = {
            "object": "billing.meter_event",
            "created": int(now),
            "event_name": form["event_name"],
            "identifier": identifier,
            "livemode": False,
            "payload": {"stripe_customer_id": form["payload[stripe_customer_id]"], "value": value},
            "timestamp": stamp,
        }
        self.events.append(event)
        return 200, event, {}

    # ---- Lago ---------------------------------------------------------------------------

    def lago_event(self, event) -> tuple[int, dict]:
        if not isinstance(event, dict):
            return 422, {"status": 422, "error": "Unprocessable Entity", "code": "validation_errors",
                         "error_details": {"event": ["invalid_format"]}}
        missing = [f for f in ("transaction_id", "external_subscription_id", "code")
                   if not event.get(f)]
        if missing:
            return 422, {"status": 422, "error": "Unprocessable Entity", "code": "validation_errors",
                         "error_details": {f: ["value_is_mandatory"] for f in missing}}
        kept = dict(event, lago_id=str(uuid.uuid4()), created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ"))
        if event["transaction_id"] not in self.seen:
            self.seen[event["transaction_id"]] = time.time()
            self.events.append(kept)
        return 200, {"event": kept}

    def lago(self, path: str, body: bytes, key: str | None) -> tuple[int, dict]:
        if not key:
            return 401, {"status": 401, "error": "Unauthorized"}
        try:
            document = json.loads(body or b"null")
        except ValueError:
            return 400, {"status": 400, "error": "BadRequest: malformed JSON"}
        if path == "/api/v1/events":
            return self.lago_event(document.get("event") if isinstance(document, dict) else None)
        events = document.get("events") if isinstance(document, dict) else None
        if not isinstance(events, list) or not 0 < len(events) <= LAGO_BATCH:
            return 422, {"status": 422, "error": "Unprocessable Entity", "code": "validation_errors",
                         "error_details": {"events": [f"between 1 and {LAGO_BATCH}"]}}
        answers = [self.lago_event(e) for e in events]
        failed = [a for s, a in answers if s != 200]
        if failed:
            return 422, failed[0]
        return 200, {"events": [a["event"] for _, a in answers]}


class Handler(BaseHTTPRequestHandler):
    state: State  # set on the class before serving
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (BaseHTTPRequestHandler's name)
        sys.stderr.write(f"{time.strftime('%H:%M:%S')} [{self.state.service}-standin] {format % args}\n")

    def answer(self, status: int, document, headers: dict | None = None) -> None:
        body = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def key(self) -> str | None:
        authorization = self.headers.get("Authorization", "")
        if authorization.startswith("Bearer "):
            return authorization[7:].strip() or None
        if authorization.startswith("Basic "):
            try:
                return base64.b64decode(authorization[6:]).decode().split(":", 1)[0] or None
            except (ValueError, UnicodeDecodeError):
                return None
        return None

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        path = urllib.parse.urlsplit(self.path).path
        with self.state.lock:
            if path == "/health":
                self.answer(200, {"status": "ok"})
            elif path == "/__events":
                self.answer(200, self.state.events)
            elif path == "/__stats":
                self.answer(200, self.state.stats())
            else:
                self.answer(404, {"error": "not found"})

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        path = urllib.parse.urlsplit(self.path).path
        state = self.state
        headers: dict = {}
        with state.lock:
            if path == "/__control":
                try:
                    status, document = 200, state.control(json.loads(body or b"{}"))
                except (ValueError, TypeError) as e:
                    status, document = 400, {"error": str(e)}
                self.answer(status, document)
                return
            if state.service == "stripe" and path == "/v1/billing/meter_events":
                form = dict(urllib.parse.parse_qsl(body.decode("utf-8", "replace")))
                status, document, headers = state.stripe_meter_event(form, self.key())
            elif state.service == "lago" and path in ("/api/v1/events", "/api/v1/events/batch"):
                status, document = state.lago(path, body, self.key())
            else:
                status, document = 404, {"error": "not found"}
            state.requests.append(status)
            wait = state.hang() if status == 200 else 0.0
        if wait:
            time.sleep(wait)
        self.answer(status, document, headers)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="billing_standin.py", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--service", choices=("stripe", "lago"), required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0)
    args = p.parse_args(argv)
    Handler.state = State(args.service)
    server = ThreadingHTTPServer((args.host, args.port), Handler)
    server.daemon_threads = True

    def stop(_signum, _frame):
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"listening on {args.host}:{server.server_address[1]}", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
