"""A local Kinesis event source mapping: the part of AWS Lambda that polls a stream and
invokes a function, for the local stack (kinesalite + `cargo lambda watch`).

Run it through scripts/local-esm (which picks the repo's venv python); see --help.

Semantics follow Lambda's Kinesis event source mapping with ReportBatchItemFailures
(no bisecting, no batching window, one batch in flight per shard):
- a batch is one GetRecords call (at most --batch-size records) of one shard;
- the whole batch is retried when the invocation fails (HTTP error, function error,
  unparseable response, or a batchItemFailures entry whose itemIdentifier is null,
  empty, not a string or not a sequence number of the batch);
- when batchItemFailures lists sequence numbers, polling restarts AT the lowest one
  (numeric comparison), so that record and every later one come again;
- after --max-retries failed retries from the same starting position, the records that
  would be retried are written to the --dlq file (one JSON line each, like an on-failure
  destination, but with the data) and polling moves past the batch.
Checkpoints live in memory only.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import signal
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import boto3
import botocore.config
import botocore.exceptions

REPO_ROOT = Path(__file__).resolve().parents[2]
ACCOUNT = "000000000000"
REGION = "us-east-1"
MAX_BATCH = 10000  # GetRecords' own limit, and Lambda's maximum batch size for Kinesis
SHARD_REFRESH_S = 10.0  # how often new shards (resharding) are looked for
MAX_BACKOFF_S = 10.0

USAGE_EPILOG = """\
Checkpoints are kept in memory only: after a restart the stream is read again from
TRIM_HORIZON (or only new records with --from-latest). That is harmless for
kinesis-consumer because the usage ledger is idempotent (a re-delivered event is stored
as a duplicate, not counted twice).

Exit status: 0 on SIGTERM/SIGINT, or with --once when every shard has no more records;
1 on a fatal error (with --once: Kinesis or the function endpoint unreachable).
"""


# Set by SIGTERM. The handler also raises SystemExit to interrupt a sleep or an
# invocation, but an exception raised while C code runs a Python callback (botocore
# signing through awscrt) is swallowed there; the loop then sees the flag instead.
STOPPING = False


def on_sigterm(_signum, _frame):
    global STOPPING
    STOPPING = True
    raise SystemExit(0)


def log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} [local-esm] {message}", file=sys.stderr, flush=True)


def seq_key(seq: str) -> int:
    return int(seq)


@dataclass
class Shard:
    shard_id: str
    parent: str | None
    # Where the next batch starts: (ShardIteratorType, StartingSequenceNumber or None).
    start: tuple[str, str | None]
    iterator: str | None = None
    failed_attempts: int = 0  # failed invocations from the current start position
    last_error: str = ""
    not_before: float = 0.0  # monotonic time before which the shard is not polled
    caught_up: bool = False  # last GetRecords returned nothing
    done: bool = False  # closed shard read to its end


@dataclass
class Outcome:
    kind: str  # "ok" | "partial" | "error" | "unreachable"
    detail: str = ""
    restart_at: str | None = None  # for "partial": lowest reported sequence number


@dataclass
class Esm:
    args: argparse.Namespace
    kinesis: object
    shards: dict[str, Shard] = field(default_factory=dict)
    next_refresh: float = 0.0
    stream_arn: str = ""

    # --- shards -----------------------------------------------------------------------

    def refresh_shards(self, first: bool) -> None:
        found = []
        kwargs = {"StreamName": self.args.stream}
        while True:
            page = self.kinesis.list_shards(**kwargs)
            found.extend(page.get("Shards", []))
            token = page.get("NextToken")
            if not token:
                break
            kwargs = {"NextToken": token}
        for s in found:
            sid = s["ShardId"]
            if sid in self.shards:
                continue
            # Shards that appear later (resharding) are new: read them from their start.
            kind = "LATEST" if first and self.args.from_latest else "TRIM_HORIZON"
            self.shards[sid] = Shard(sid, s.get("ParentShardId"), (kind, None))
            if not first:
                log(f"new shard {sid} (parent {s.get('ParentShardId')})")
        self.next_refresh = time.monotonic() + SHARD_REFRESH_S

    def parent_pending(self, shard: Shard) -> bool:
        parent = self.shards.get(shard.parent) if shard.parent else None
        return parent is not None and not parent.done

    def get_iterator(self, shard: Shard) -> None:
        kind, seq = shard.start
        kwargs = {"StreamName": self.args.stream, "ShardId": shard.shard_id, "ShardIteratorType": kind}
        if seq is not None:
            kwargs["StartingSequenceNumber"] = seq
        try:
            shard.iterator = self.kinesis.get_shard_iterator(**kwargs)["ShardIterator"]
        except botocore.exceptions.ClientError as e:
            if seq is None or e.response.get("Error", {}).get("Code") != "InvalidArgumentException":
                raise
            # The checkpoint is not from this stream: kinesalite restarted and the stream
            # was recreated under the same name. Start the new stream from its beginning.
            log(f"shard={shard.shard_id} checkpoint {fmt_pos(shard.start)} rejected ({e}); "
                "stream recreated? restarting the shard from TRIM_HORIZON")
            shard.start, shard.failed_attempts = ("TRIM_HORIZON", None), 0
            kwargs.pop("StartingSequenceNumber")
            kwargs["ShardIteratorType"] = "TRIM_HORIZON"
            shard.iterator = self.kinesis.get_shard_iterator(**kwargs)["ShardIterator"]

    # --- one batch ----------------------------------------------------------------------

    def poll(self, shard: Shard) -> bool:
        """Reads and delivers one batch of the shard; True if it held records."""
        if shard.iterator is None:
            self.get_iterator(shard)
        try:
            page = self.kinesis.get_records(ShardIterator=shard.iterator, Limit=self.args.batch_size)
        except botocore.exceptions.ClientError as e:
            code = e.response.get("Error", {}).get("Code", "")
            if code in ("ExpiredIteratorException", "InvalidArgumentException"):
                # Iterators expire (5 min); re-acquire one from the checkpoint.
                log(f"shard={shard.shard_id} {code}: getting a new iterator from {fmt_pos(shard.start)}")
                shard.iterator = None
                return False
            if code in ("ProvisionedThroughputExceededException", "LimitExceededException"):
                shard.not_before = time.monotonic() + 1.0
                return False
            raise
        records = page.get("Records", [])
        next_iterator = page.get("NextShardIterator")
        if not records:
            shard.iterator = next_iterator
            if next_iterator is None:
                shard.done = True
                log(f"shard={shard.shard_id} closed and fully processed")
            elif not page.get("MillisBehindLatest"):
                shard.caught_up = True
            return False
        shard.caught_up = False
        self.deliver(shard, records, next_iterator)
        return True

    def deliver(self, shard: Shard, records: list, next_iterator: str | None) -> None:
        first, last = records[0]["SequenceNumber"], records[-1]["SequenceNumber"]
        outcome = self.invoke(shard, records)
        prefix = f"shard={shard.shard_id} records={len(records)} seq={first}..{last}"

        if outcome.kind == "ok":
            shard.start = ("AFTER_SEQUENCE_NUMBER", last)
            shard.iterator = next_iterator
            shard.failed_attempts = 0
            if next_iterator is None:
                shard.done = True
            log(f"{prefix} failures=0 next={fmt_pos(shard.start)}")
            return

        if outcome.kind == "unreachable":
            # The emulator is not there (not started yet, restarting): not the function's
            # fault, so it does not count as an attempt. Re-read the same batch later.
            if self.args.once:
                raise SystemExit(f"local-esm: function endpoint unreachable: {outcome.detail}")
            log(f"{prefix} function endpoint unreachable ({outcome.detail}); retrying in 2s")
            shard.iterator = None
            shard.not_before = time.monotonic() + 2.0
            return

        # A failure: "partial" restarts at the lowest reported record, "error" at the
        # batch's own start. Only a restart further on resets the attempt count.
        if outcome.kind == "partial":
            assert outcome.restart_at is not None
            progressed = seq_key(outcome.restart_at) > seq_key(first)
            restart = ("AT_SEQUENCE_NUMBER", outcome.restart_at)
            failed = [r for r in records if seq_key(r["SequenceNumber"]) >= seq_key(outcome.restart_at)]
            what = f"failures=reported lowest={outcome.restart_at}"
        else:
            progressed = False
            restart = shard.start
            failed = records
            what = f"failures=whole-batch ({outcome.detail})"
        shard.failed_attempts = 1 if progressed else shard.failed_attempts + 1
        shard.last_error = outcome.detail or what
        shard.iterator = None

        if shard.failed_attempts > self.args.max_retries:
            self.dead_letter(shard, failed, shard.failed_attempts)
            shard.start = ("AFTER_SEQUENCE_NUMBER", last)
            shard.failed_attempts = 0
            log(f"{prefix} {what} attempts exhausted; next={fmt_pos(shard.start)}")
            return

        shard.start = restart
        delay = min(self.args.interval * (2 ** (shard.failed_attempts - 1)), MAX_BACKOFF_S)
        shard.not_before = time.monotonic() + delay
        log(
            f"{prefix} {what} retry={shard.failed_attempts}/{self.args.max_retries} "
            f"in {delay:.1f}s from {fmt_pos(restart)}"
        )

    def dead_letter(self, shard: Shard, records: list, attempts: int) -> None:
        path = Path(self.args.dlq)
        path.parent.mkdir(parents=True, exist_ok=True)
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        with path.open("a", encoding="utf-8") as out:
            for r in records:
                entry = {
                    "time": now,
                    "function": self.args.function,
                    "eventSourceARN": self.stream_arn,
                    "shardId": shard.shard_id,
                    "sequenceNumber": r["SequenceNumber"],
                    "partitionKey": r["PartitionKey"],
                    "approximateArrivalTimestamp": r["ApproximateArrivalTimestamp"].timestamp(),
                    "data": base64.b64encode(r["Data"]).decode("ascii"),
                    "attempts": attempts,
                    "reason": shard.last_error,
                }
                out.write(json.dumps(entry) + "\n")
        log(
            f"!!! GAVE UP on {len(records)} record(s) of shard={shard.shard_id} "
            f"seq={records[0]['SequenceNumber']}..{records[-1]['SequenceNumber']} after {attempts} "
            f"failed attempts ({shard.last_error}); written to {path} !!!"
        )

    # --- invocation ---------------------------------------------------------------------

    def event(self, shard: Shard, records: list) -> dict:
        return {
            "Records": [
                {
                    "kinesis": {
                        "kinesisSchemaVersion": "1.0",
                        "partitionKey": r["PartitionKey"],
                        "sequenceNumber": r["SequenceNumber"],
                        "data": base64.b64encode(r["Data"]).decode("ascii"),
                        "approximateArrivalTimestamp": r["ApproximateArrivalTimestamp"].timestamp(),
                    },
                    "eventSource": "aws:kinesis",
                    "eventVersion": "1.0",
                    "eventID": f"{shard.shard_id}:{r['SequenceNumber']}",
                    "eventName": "aws:kinesis:record",
                    "invokeIdentityArn": f"arn:aws:iam::{ACCOUNT}:role/local",
                    "awsRegion": REGION,
                    "eventSourceARN": self.stream_arn,
                }
                for r in records
            ]
        }

    def invoke(self, shard: Shard, records: list) -> Outcome:
        url = (
            f"{self.args.lambda_url.rstrip('/')}/2015-03-31/functions/"
            f"{urllib.parse.quote(self.args.function, safe='')}/invocations"
        )
        body = json.dumps(self.event(shard, records)).encode()
        request = urllib.request.Request(
            url, data=body, method="POST", headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=self.args.invoke_timeout) as resp:
                status, raw = resp.status, resp.read()
        except urllib.error.HTTPError as e:
            # cargo lambda watch answers a function error (the runtime's /error call)
            # with HTTP 500 and the runtime's {"errorType", "errorMessage"} body.
            return Outcome("error", f"HTTP {e.code}: {short(e.read())}")
        except urllib.error.URLError as e:
            if isinstance(e.reason, (ConnectionRefusedError, FileNotFoundError)):
                return Outcome("unreachable", str(e.reason))
            return Outcome("error", f"invoke failed: {e.reason}")
        except (TimeoutError, ConnectionError, OSError) as e:
            return Outcome("error", f"invoke failed: {e!r}")
        if not 200 <= status < 300:
            return Outcome("error", f"HTTP {status}: {short(raw)}")
        return classify(raw, {r["SequenceNumber"] for r in records})

    # --- main loop ----------------------------------------------------------------------

    def run(self) -> int:
        self.stream_arn = f"arn:aws:kinesis:{REGION}:{ACCOUNT}:stream/{self.args.stream}"
        log(
            f"stream={self.args.stream} at {self.args.kinesis_endpoint} -> function={self.args.function} "
            f"at {self.args.lambda_url}; batch-size={self.args.batch_size} interval={self.args.interval}s "
            f"max-retries={self.args.max_retries} from={'LATEST' if self.args.from_latest else 'TRIM_HORIZON'}"
            f"{' once' if self.args.once else ''}"
        )
        first = True
        waiting_logged = False
        while not STOPPING:
            try:
                if first or time.monotonic() >= self.next_refresh:
                    self.refresh_shards(first)
                    if first:
                        log(f"shards: {', '.join(sorted(self.shards)) or '(none)'}")
                    first = False
                    waiting_logged = False
                busy = False
                for shard in sorted(self.shards.values(), key=lambda s: s.shard_id):
                    if STOPPING:
                        break
                    if shard.done or self.parent_pending(shard) or time.monotonic() < shard.not_before:
                        continue
                    busy = self.poll(shard) or busy
            except botocore.exceptions.ClientError as e:
                code = e.response.get("Error", {}).get("Code", "")
                if self.args.once:
                    raise SystemExit(f"local-esm: Kinesis error: {e}")
                if code == "ResourceNotFoundException":
                    # Stream missing (not created yet, or kinesalite restarted): forget
                    # every checkpoint and start over once it exists.
                    if not waiting_logged:
                        log(f"stream {self.args.stream} not found; waiting for it")
                        waiting_logged = True
                    self.shards.clear()
                    first = True
                else:
                    log(f"Kinesis error: {e}; retrying")
                    for shard in self.shards.values():
                        shard.iterator = None
                time.sleep(max(self.args.interval, 1.0))
                continue
            except botocore.exceptions.BotoCoreError as e:  # endpoint unreachable, ...
                if self.args.once:
                    raise SystemExit(f"local-esm: Kinesis unreachable: {e}")
                log(f"Kinesis unreachable: {e}; retrying")
                for shard in self.shards.values():
                    shard.iterator = None
                time.sleep(max(self.args.interval, 1.0))
                continue
            if self.args.once and self.shards and all(
                s.done or (s.caught_up and s.failed_attempts == 0) for s in self.shards.values()
            ):
                log("--once: every shard has no more records; exiting")
                return 0
            if not busy:
                time.sleep(self.args.interval)
        return 0


def classify(raw: bytes, batch: set[str]) -> Outcome:
    """Interprets a 2xx invocation response as Lambda does with ReportBatchItemFailures."""
    if not raw.strip():
        return Outcome("ok")
    try:
        payload = json.loads(raw)
    except ValueError:
        return Outcome("error", f"unparseable response: {short(raw)}")
    if payload is None:
        return Outcome("ok")
    if not isinstance(payload, dict):
        return Outcome("error", f"unexpected response: {short(raw)}")
    if "errorType" in payload or "errorMessage" in payload:
        # A function error that reached us with a 2xx status (cargo lambda watch reports
        # an init error, e.g. a missing env var, with 200 and the error body).
        return Outcome("error", f"function error: {short(raw)}")
    failures = payload.get("batchItemFailures")
    if failures is None or failures == []:
        return Outcome("ok")
    if not isinstance(failures, list):
        return Outcome("error", f"batchItemFailures is not a list: {short(raw)}")
    reported = []
    for item in failures:
        ident = item.get("itemIdentifier") if isinstance(item, dict) else None
        if not isinstance(ident, str) or not ident:
            return Outcome("error", f"null/empty itemIdentifier in {short(raw)}")
        if not ident.isdigit() or ident not in batch:
            return Outcome("error", f"itemIdentifier {ident!r} is not a sequence number of the batch")
        reported.append(ident)
    lowest = min(reported, key=seq_key)
    return Outcome(
        "partial", f"function reported {len(reported)} failed record(s), lowest {lowest}", restart_at=lowest
    )


def fmt_pos(pos: tuple[str, str | None]) -> str:
    kind, seq = pos
    return kind if seq is None else f"{kind}:{seq}"


def short(raw: bytes, limit: int = 300) -> str:
    text = raw.decode("utf-8", "replace").strip().replace("\n", " ")
    return text if len(text) <= limit else text[:limit] + "..."


def batch_size(value: str) -> int:
    n = int(value)
    if not 1 <= n <= MAX_BATCH:
        raise argparse.ArgumentTypeError(f"must be 1 to {MAX_BATCH}")
    return n


def positive_float(value: str) -> float:
    f = float(value)
    if f <= 0:
        raise argparse.ArgumentTypeError("must be > 0")
    return f


def non_negative_int(value: str) -> int:
    n = int(value)
    if n < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return n


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="scripts/local-esm",
        description=(
            "Local Kinesis event source mapping: polls a kinesalite stream shard by shard and "
            "invokes a function served by `cargo lambda watch` with Lambda KinesisEvent batches, "
            "honouring ReportBatchItemFailures (restart at the lowest reported sequence number; "
            "whole-batch retry on function error), with bounded retries and a dead-letter file."
        ),
        epilog=USAGE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    env = os.environ.get
    p.add_argument("--stream", default=env("STREAM_NAME", "kore-events-local"),
                   help="stream name (default: $STREAM_NAME or kore-events-local)")
    p.add_argument("--function", default="kinesis-consumer",
                   help="function (binary) name to invoke (default: kinesis-consumer)")
    p.add_argument("--kinesis-endpoint", default=f"http://127.0.0.1:{env('KINESIS_PORT', '4567')}",
                   help="Kinesis endpoint (default: http://127.0.0.1:$KINESIS_PORT, port 4567)")
    p.add_argument("--lambda-url", default=f"http://127.0.0.1:{env('LAMBDA_PORT', '9000')}",
                   help="cargo lambda watch address (default: http://127.0.0.1:$LAMBDA_PORT, port 9000)")
    p.add_argument("--batch-size", type=batch_size, default=100,
                   help=f"records per invocation, 1 to {MAX_BATCH} (default: 100)")
    p.add_argument("--interval", type=positive_float, default=0.5,
                   help="seconds between polls of an idle shard; retries back off from it, "
                        f"doubling up to {MAX_BACKOFF_S:.0f}s (default: 0.5)")
    p.add_argument("--max-retries", type=non_negative_int, default=5,
                   help="retries from the same starting position after a failed invocation, "
                        "before the records go to the dead-letter file (default: 5)")
    p.add_argument("--from-latest", action="store_true",
                   help="start at LATEST (only new records) instead of TRIM_HORIZON")
    p.add_argument("--once", action="store_true",
                   help="exit 0 once every shard has no more records (for tests)")
    p.add_argument("--dlq", default=str(REPO_ROOT / ".local" / "local-esm-dlq.jsonl"),
                   help="dead-letter file, JSON lines (default: .local/local-esm-dlq.jsonl)")
    p.add_argument("--invoke-timeout", type=positive_float, default=900.0,
                   help="seconds to wait for one invocation; the first one compiles the "
                        "function (default: 900)")
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, on_sigterm)
    kinesis = boto3.client(
        "kinesis",
        endpoint_url=args.kinesis_endpoint,
        region_name=REGION,
        # kinesalite accepts any credentials; never pick up real ones.
        aws_access_key_id="local",
        aws_secret_access_key="local",
        config=botocore.config.Config(
            connect_timeout=5, read_timeout=30, retries={"max_attempts": 2, "mode": "standard"}
        ),
    )
    try:
        return Esm(args, kinesis).run()
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
