"""A local DynamoDB Streams event source mapping: the part of AWS Lambda that reads a table's
stream and invokes a function with DynamoDB stream events, for the local stack (DynamoDB
Local, which serves DynamoDB Streams, + `cargo lambda watch`).

Run it through scripts/local-ddb-esm (which picks the repo's venv python); see --help.

Semantics follow Lambda's DynamoDB event source mapping with ReportBatchItemFailures (no
filter criteria: every record is delivered and the function filters; no bisecting; one batch
in flight per shard; a child shard only after its parent is read to its end):
- a batch is one GetRecords call (at most --batch-size records) of one shard;
- the whole batch is retried when the invocation fails (HTTP error, function error,
  unparseable response, or a batchItemFailures entry whose itemIdentifier is null, empty
  or not a sequence number of the batch);
- when batchItemFailures lists sequence numbers, reading restarts AT the lowest one, so that
  record and every later one come again;
- after --max-retries failed retries from the same position, the records that would be
  retried are written to the --dlq file (one JSON line each, like an on-failure
  destination, but with the record) and reading moves past the batch.
Checkpoints live in memory only: after a restart the stream is read again from
TRIM_HORIZON (the forwarder's calls carry the event's key as messageId, which Segment
de-duplicates on, so that is harmless).
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
from dataclasses import dataclass
from pathlib import Path

import boto3
import botocore.config
import botocore.exceptions

REPO_ROOT = Path(__file__).resolve().parents[2]
REGION = "us-east-1"
MAX_BATCH = 1000  # GetRecords' own limit on a DynamoDB stream
REFRESH_S = 10.0  # how often new shards (DynamoDB rolls them over) are looked for
MAX_BACKOFF_S = 10.0

STOPPING = False


def on_sigterm(_signum, _frame):
    global STOPPING
    STOPPING = True
    raise SystemExit(0)


def log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} [local-ddb-esm] {message}", file=sys.stderr, flush=True)


def lambda_value(value):
    """An attribute value as boto3 returns it, as Lambda writes it into an event (binary
    values base64-encoded)."""
    if isinstance(value, dict):
        out = {}
        for kind, inner in value.items():
            if kind == "B":
                out[kind] = base64.b64encode(bytes(inner)).decode("ascii")
            elif kind == "BS":
                out[kind] = [base64.b64encode(bytes(b)).decode("ascii") for b in inner]
            elif kind == "M":
                out[kind] = {k: lambda_value(v) for k, v in inner.items()}
            elif kind == "L":
                out[kind] = [lambda_value(v) for v in inner]
            else:
                out[kind] = inner
        return out
    return value


def lambda_record(record: dict, stream_arn: str) -> dict:
    change = dict(record["dynamodb"])
    created = change.get("ApproximateCreationDateTime")
    if hasattr(created, "timestamp"):
        change["ApproximateCreationDateTime"] = created.timestamp()
    for image in ("Keys", "NewImage", "OldImage"):
        if image in change:
            change[image] = {k: lambda_value(v) for k, v in change[image].items()}
    return {
        "eventID": record.get("eventID"),
        "eventName": record.get("eventName"),
        "eventVersion": record.get("eventVersion", "1.1"),
        "eventSource": "aws:dynamodb",
        "awsRegion": REGION,
        "dynamodb": change,
        "eventSourceARN": stream_arn,
    }


@dataclass
class Shard:
    shard_id: str
    parent: str | None
    start: tuple[str, str | None]  # (ShardIteratorType, SequenceNumber or None)
    iterator: str | None = None
    failed_attempts: int = 0
    last_error: str = ""
    not_before: float = 0.0
    caught_up: bool = False
    done: bool = False


class Esm:
    def __init__(self, args: argparse.Namespace, dynamodb, streams) -> None:
        self.args = args
        self.dynamodb = dynamodb
        self.streams = streams
        self.stream_arn = ""
        self.shards: dict[str, Shard] = {}
        self.next_refresh = 0.0

    def refresh(self) -> None:
        table = self.dynamodb.describe_table(TableName=self.args.table)["Table"]
        arn = table.get("LatestStreamArn") or ""
        if not table.get("StreamSpecification", {}).get("StreamEnabled") or not arn:
            raise LookupError(f"table {self.args.table} has no stream")
        if arn != self.stream_arn:
            if self.stream_arn:
                log(f"the table's stream is new ({arn}); reading it from the start")
            self.stream_arn, self.shards = arn, {}
            first = True
        else:
            first = False
        kwargs = {"StreamArn": arn}
        while True:
            page = self.streams.describe_stream(**kwargs)["StreamDescription"]
            for s in page.get("Shards", []):
                sid = s["ShardId"]
                if sid not in self.shards:
                    kind = "LATEST" if first and self.args.from_latest else "TRIM_HORIZON"
                    self.shards[sid] = Shard(sid, s.get("ParentShardId"), (kind, None))
            last = page.get("LastEvaluatedShardId")
            if not last:
                break
            kwargs["ExclusiveStartShardId"] = last
        self.next_refresh = time.monotonic() + REFRESH_S

    def parent_pending(self, shard: Shard) -> bool:
        parent = self.shards.get(shard.parent) if shard.parent else None
        return parent is not None and not parent.done

    def iterator(self, shard: Shard) -> None:
        kind, seq = shard.start
        kwargs = {"StreamArn": self.stream_arn, "ShardId": shard.shard_id, "ShardIteratorType": kind}
        if seq is not None:
            kwargs["SequenceNumber"] = seq
        shard.iterator = self.streams.get_shard_iterator(**kwargs)["ShardIterator"]

    def poll(self, shard: Shard) -> bool:
        if shard.iterator is None:
            self.iterator(shard)
        try:
            page = self.streams.get_records(ShardIterator=shard.iterator, Limit=self.args.batch_size)
        except botocore.exceptions.ClientError as e:
            code = e.response.get("Error", {}).get("Code", "")
            if code in ("ExpiredIteratorException", "TrimmedDataAccessException"):
                log(f"shard={shard.shard_id} {code}: a new iterator from {shard.start}")
                shard.iterator = None
                return False
            raise
        records = page.get("Records", [])
        next_iterator = page.get("NextShardIterator")
        if not records:
            shard.iterator = next_iterator
            if next_iterator is None:
                shard.done = True
            else:
                shard.caught_up = True
            return False
        shard.caught_up = False
        self.deliver(shard, records, next_iterator)
        return True

    def deliver(self, shard: Shard, records: list, next_iterator: str | None) -> None:
        seqs = [r["dynamodb"]["SequenceNumber"] for r in records]
        prefix = f"shard={shard.shard_id} records={len(records)} seq={seqs[0]}..{seqs[-1]}"
        kind, detail, restart_at = self.invoke(records, set(seqs))
        if kind == "ok":
            shard.start, shard.iterator, shard.failed_attempts = ("AFTER_SEQUENCE_NUMBER", seqs[-1]), next_iterator, 0
            shard.done = next_iterator is None
            log(f"{prefix} failures=0")
            return
        if kind == "unreachable":
            if self.args.once:
                raise SystemExit(f"local-ddb-esm: function endpoint unreachable: {detail}")
            log(f"{prefix} function endpoint unreachable ({detail}); retrying in 2s")
            shard.iterator, shard.not_before = None, time.monotonic() + 2.0
            return
        if kind == "partial":
            progressed = int(restart_at) > int(seqs[0])
            restart = ("AT_SEQUENCE_NUMBER", restart_at)
            failed = [r for r in records if int(r["dynamodb"]["SequenceNumber"]) >= int(restart_at)]
        else:
            progressed, restart, failed = False, shard.start, records
        shard.failed_attempts = 1 if progressed else shard.failed_attempts + 1
        shard.last_error, shard.iterator = detail, None
        if shard.failed_attempts > self.args.max_retries:
            self.dead_letter(shard, failed)
            shard.start, shard.failed_attempts = ("AFTER_SEQUENCE_NUMBER", seqs[-1]), 0
            return
        shard.start = restart
        delay = min(self.args.interval * (2 ** (shard.failed_attempts - 1)), MAX_BACKOFF_S)
        shard.not_before = time.monotonic() + delay
        log(f"{prefix} {detail}; retry {shard.failed_attempts}/{self.args.max_retries} in {delay:.1f}s "
            f"from {restart[0]}{':' + restart[1] if restart[1] else ''}")

    def dead_letter(self, shard: Shard, records: list) -> None:
        path = Path(self.args.dlq)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as out:
            for r in records:
                out.write(json.dumps({
                    "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "function": self.args.function, "eventSourceARN": self.stream_arn,
                    "shardId": shard.shard_id, "attempts": shard.failed_attempts,
                    "reason": shard.last_error, "record": lambda_record(r, self.stream_arn),
                }) + "\n")
        log(f"!!! GAVE UP on {len(records)} record(s) of shard={shard.shard_id} after "
            f"{shard.failed_attempts} failed attempts ({shard.last_error}); written to {path} !!!")

    def invoke(self, records: list, batch: set[str]) -> tuple[str, str, str | None]:
        url = (f"{self.args.lambda_url.rstrip('/')}/2015-03-31/functions/"
               f"{urllib.parse.quote(self.args.function, safe='')}/invocations")
        body = json.dumps({"Records": [lambda_record(r, self.stream_arn) for r in records]}).encode()
        request = urllib.request.Request(url, data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=self.args.invoke_timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as e:
            return "error", f"HTTP {e.code}: {short(e.read())}", None
        except urllib.error.URLError as e:
            if isinstance(e.reason, (ConnectionRefusedError, FileNotFoundError)):
                return "unreachable", str(e.reason), None
            return "error", f"invoke failed: {e.reason}", None
        except (TimeoutError, ConnectionError, OSError) as e:
            return "error", f"invoke failed: {e!r}", None
        try:
            payload = json.loads(raw) if raw.strip() else None
        except ValueError:
            return "error", f"unparseable response: {short(raw)}", None
        if payload is None:
            return "ok", "", None
        if not isinstance(payload, dict) or "errorType" in payload or "errorMessage" in payload:
            return "error", f"function error: {short(raw)}", None
        failures = payload.get("batchItemFailures") or []
        if not isinstance(failures, list):
            return "error", f"batchItemFailures is not a list: {short(raw)}", None
        if not failures:
            return "ok", "", None
        reported = []
        for item in failures:
            ident = item.get("itemIdentifier") if isinstance(item, dict) else None
            if not isinstance(ident, str) or not ident or ident not in batch:
                return "error", f"itemIdentifier {ident!r} is not a sequence number of the batch", None
            reported.append(ident)
        lowest = min(reported, key=int)
        return "partial", f"function reported {len(reported)} failed record(s), lowest {lowest}", lowest

    def run(self) -> int:
        log(f"table={self.args.table} at {self.args.dynamodb_endpoint} -> function={self.args.function} "
            f"at {self.args.lambda_url}; batch-size={self.args.batch_size} max-retries={self.args.max_retries}")
        waiting = False
        while not STOPPING:
            try:
                if time.monotonic() >= self.next_refresh:
                    self.refresh()
                    if waiting:
                        log(f"stream {self.stream_arn} found")
                    waiting = False
                busy = False
                for shard in sorted(self.shards.values(), key=lambda s: s.shard_id):
                    if STOPPING:
                        break
                    if shard.done or self.parent_pending(shard) or time.monotonic() < shard.not_before:
                        continue
                    busy = self.poll(shard) or busy
            except (LookupError, botocore.exceptions.ClientError, botocore.exceptions.BotoCoreError) as e:
                if self.args.once:
                    raise SystemExit(f"local-ddb-esm: {e}")
                if not waiting:
                    log(f"cannot read the stream ({e}); waiting for it")
                    waiting = True
                self.next_refresh = 0.0
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


def short(raw: bytes, limit: int = 300) -> str:
    text = raw.decode("utf-8", "replace").strip().replace("\n", " ")
    return text if len(text) <= limit else text[:limit] + "..."


def parse_args(argv: list[str]) -> argparse.Namespace:
    env = os.environ.get
    p = argparse.ArgumentParser(
        prog="scripts/local-ddb-esm", description=__doc__.split("\n\n")[0],
        epilog="Exit status: 0 on SIGTERM/SIGINT, or with --once when every shard has no more "
               "records; 1 on a fatal error (with --once: stream or function unreachable).")
    p.add_argument("--table", default=env("TABLE_NAME", "kore-usage-local"),
                   help="the table whose stream is read (default: $TABLE_NAME or kore-usage-local)")
    p.add_argument("--function", default="segment-forwarder",
                   help="function (binary) name to invoke (default: segment-forwarder)")
    p.add_argument("--dynamodb-endpoint", default=f"http://127.0.0.1:{env('DYNAMODB_PORT', '8000')}",
                   help="DynamoDB Local (default: http://127.0.0.1:$DYNAMODB_PORT, port 8000)")
    p.add_argument("--lambda-url", default=f"http://127.0.0.1:{env('LAMBDA_PORT', '9000')}",
                   help="cargo lambda watch (default: http://127.0.0.1:$LAMBDA_PORT, port 9000)")
    p.add_argument("--batch-size", type=int, default=100, choices=range(1, MAX_BATCH + 1),
                   metavar=f"1..{MAX_BATCH}", help="records per invocation (default: 100)")
    p.add_argument("--interval", type=float, default=0.5,
                   help="seconds between polls of an idle shard; retries back off from it (default: 0.5)")
    p.add_argument("--max-retries", type=int, default=5,
                   help="retries from the same position before the records go to --dlq (default: 5)")
    p.add_argument("--from-latest", action="store_true", help="start at LATEST instead of TRIM_HORIZON")
    p.add_argument("--once", action="store_true", help="exit 0 once every shard has no more records")
    p.add_argument("--dlq", default=str(REPO_ROOT / ".local" / "local-ddb-esm-dlq.jsonl"),
                   help="dead-letter file, JSON lines (default: .local/local-ddb-esm-dlq.jsonl)")
    p.add_argument("--invoke-timeout", type=float, default=900.0,
                   help="seconds to wait for one invocation; the first one compiles the function (default: 900)")
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, on_sigterm)
    config = botocore.config.Config(connect_timeout=5, read_timeout=30,
                                    retries={"max_attempts": 2, "mode": "standard"})
    # DynamoDB Local accepts any credentials; never pick up real ones.
    kwargs = {"endpoint_url": args.dynamodb_endpoint, "region_name": REGION,
              "aws_access_key_id": "local", "aws_secret_access_key": "local", "config": config}
    try:
        return Esm(args, boto3.client("dynamodb", **kwargs), boto3.client("dynamodbstreams", **kwargs)).run()
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
