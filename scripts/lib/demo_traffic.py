"""The traffic and the checks of scripts/demo: one realistic day of Super SIM Connection Events
for a small fleet (2024-10-28 UTC, a day of the migration: Twilio's events ended on 1 November
2024), delivered to the running local stack the way KORE and Twilio delivered them then, then
the ledger read back with `kore-usage`.

Run it through scripts/demo, which starts the stack and builds kore-usage first. Python 3
standard library plus boto3 (from the repo venv, for the Kinesis puts). Webhook requests are
signed and sent by `kore-usage send`, with the signing code the webhook verifies against;
what the stack stored is read back with `kore-usage` too.

Everything is deterministic (a fixed seed; SIDs derived from names), so a second run sends
the very same events: the stack stores them as duplicates and no total moves. The expected
totals are computed here, from the generated events, without asking the stack: that is the
point of the generator, so it stays independent of the Rust code it checks.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import gzip
import hashlib
import json
import os
import random
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

DAY = dt.date(2024, 10, 28)
MONTH = DAY.strftime("%Y-%m")
RANGE_FROM = f"{DAY}T00:00:00Z"
RANGE_TO = f"{DAY + dt.timedelta(days=1)}T00:00:00Z"
NAMESPACE = f"kore-ingest-demo/{DAY}/v1"
SEED = int(DAY.strftime("%Y%m%d"))

KORE_SCHEMA = "https://events-schemas.korewireless.com/SuperSim.ConnectionEvent/2"
TWILIO_SCHEMA = "https://events-schemas.twilio.com/SuperSim.ConnectionEvent/2"
WINDOW = dt.timedelta(minutes=15)
BATCH_MAX = 50  # Event Streams webhook batches: at most 50 events

# The migration story that decides who delivers what (see plan_deliveries).
KORE_SINK_ADDED_FOR_TRACKERS = dt.datetime(DAY.year, DAY.month, DAY.day, 3, 0, tzinfo=dt.timezone.utc)
TWILIO_SINK_REMOVED_FOR_METERS = dt.datetime(DAY.year, DAY.month, DAY.day, 20, 0, tzinfo=dt.timezone.utc)


def out(text: str = "") -> None:
    print(text, flush=True)


def sid(prefix: str, *parts: str) -> str:
    """A deterministic Twilio/KORE style SID: two letters and 32 lowercase hex digits."""
    digest = hashlib.sha256("/".join((NAMESPACE, prefix) + parts).encode()).hexdigest()
    return prefix + digest[:32]


def digits(n: int, *parts: str) -> str:
    value = int(hashlib.sha256("/".join((NAMESPACE, "digits") + parts).encode()).hexdigest(), 16)
    return str(value)[:n].rjust(n, "0")


def iso(t: dt.datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def at(hour: int, minute: int = 0, second: int = 0) -> dt.datetime:
    return dt.datetime(DAY.year, DAY.month, DAY.day, hour, minute, second, tzinfo=dt.timezone.utc)


def human(n: int) -> str:
    """Binary units with one decimal, like kore-usage's tables."""
    if n < 1024:
        return f"{n} B"
    value, unit = float(n), 0
    units = ["B", "KiB", "MiB", "GiB", "TiB"]
    while value >= 1024 and unit < len(units) - 1:
        value /= 1024
        unit += 1
    return f"{value:.1f} {units[unit]}"


def table(headers: list[str], rows: list[list[str]], right: set[int] = frozenset()) -> str:
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(c)) for w, c in zip(widths, row)]

    def line(cells: list[str]) -> str:
        return "  ".join(
            c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))
        ).rstrip()

    return "\n".join([line(headers)] + [line(r) for r in rows])


# --- the fleet ------------------------------------------------------------------------------

NETWORKS = {
    "att": {"mcc": "310", "mnc": "410", "friendly_name": "AT&T", "iso_country": "US"},
    "tmo": {"mcc": "310", "mnc": "260", "friendly_name": "T-Mobile", "iso_country": "US"},
    "rogers": {"mcc": "302", "mnc": "720", "friendly_name": "Rogers", "iso_country": "CA"},
}
for _key, _net in NETWORKS.items():
    _net["sid"] = sid("HW", _key)

ACCOUNT = sid("AC", "acme-utilities")
FLEETS = {
    "meters": sid("HF", "water-meters"),
    "trackers": sid("HF", "asset-trackers"),
}


@dataclass
class Sim:
    name: str
    fleet: str  # "meters" | "trackers"
    index: int
    home: str  # network key

    @property
    def sim_sid(self) -> str:
        return sid("HS", self.name)

    @property
    def fleet_sid(self) -> str:
        return FLEETS[self.fleet]


SIMS = [Sim(f"meter-{i:02d}", "meters", i, "att" if i % 2 else "tmo") for i in range(1, 7)] + [
    Sim(f"tracker-{i:02d}", "trackers", i, "tmo" if i % 3 else "att") for i in range(1, 7)
]


def by_name(name: str) -> Sim:
    return next(s for s in SIMS if s.name == name)


# --- the events -----------------------------------------------------------------------------


@dataclass
class Event:
    sim: Sim
    suffix: str  # attachment.accepted, data-session.updated, ...
    timestamp: dt.datetime
    data: dict
    usage: tuple[int, int] | None = None  # (upload, download) of the window
    kore_delay: float = 0.0  # seconds between the event and its publication
    twilio_delay: float = 0.0
    kore: str | None = None  # "kinesis" | "webhook" | None: how KORE delivers it
    twilio: str | None = None
    lost: bool = False  # never delivered by anyone (the gap)

    @property
    def event_sid(self) -> str:
        return self.data["event_sid"]

    @property
    def total(self) -> int:
        return sum(self.usage) if self.usage else 0

    def kore_envelope(self, data: dict | None = None) -> dict:
        """As KORE sends it: `data` an object, seven-digit fractions and an offset in `time`."""
        t = self.timestamp + dt.timedelta(seconds=self.kore_delay)
        return {
            "specversion": "1.0",
            "type": f"com.kore.iot.supersim.connection.{self.suffix}",
            "source": "kore-events",
            "id": self.event_sid,
            "time": f"{t:%Y-%m-%dT%H:%M:%S}.{t.microsecond * 10:07d}+00:00",
            "dataschema": KORE_SCHEMA,
            "datacontenttype": "application/json",
            "data": data if data is not None else self.data,
        }

    def twilio_envelope(self) -> dict:
        """As Twilio's sinks send it: another envelope, `data` a string holding the same JSON."""
        t = self.timestamp + dt.timedelta(seconds=self.twilio_delay)
        return {
            "specversion": "1.0",
            "type": f"com.twilio.iot.supersim.connection.{self.suffix}",
            "source": f"/v1/SuperSim/ConnectionEvents/{self.event_sid}",
            "id": self.event_sid,
            "dataschema": TWILIO_SCHEMA,
            "datacontenttype": "application/json",
            "time": f"{t:%Y-%m-%dT%H:%M:%S}.{t.microsecond // 1000:03d}Z",
            "data": json.dumps(self.data),
        }


def base_data(sim: Sim, suffix: str, t: dt.datetime, network: str, serial: str, rng: random.Random) -> dict:
    event_sid = sid("EZ", sim.name, suffix, serial)
    located = sim.fleet == "trackers"
    return {
        "event_sid": event_sid,
        "event_type": f"com.kore.iot.supersim.connection.{suffix}",
        "account_sid": ACCOUNT,
        "sim_sid": sim.sim_sid,
        "fleet_sid": sim.fleet_sid,
        "sim_iccid": "8988307" + digits(13, "iccid", sim.name),
        "sim_unique_name": sim.name,
        "timestamp": iso(t),
        "network": dict(NETWORKS[network]),
        "location": (
            {
                "lat": round(41.80 + rng.random() * 0.2, 6),
                "lon": round(-87.75 + rng.random() * 0.2, 6),
                "cell_id": digits(8, "cell", sim.name, serial),
                "lac": digits(4, "lac", sim.name),
            }
            if located
            else None
        ),
        "rat_type": "LTE Cat-M1" if sim.fleet == "meters" else "4G LTE",
        "imei": "35" + digits(13, "imei", sim.name),
        "imsi": "732123" + digits(9, "imsi", sim.name),
    }


@dataclass
class Session:
    sim: Sim
    sid: str
    start: dt.datetime
    end: dt.datetime | None = None
    windows: int = 0
    total: int = 0  # cumulative total the provider reports (includes a lost window)
    lost_window: int = 0  # bytes of the window that never arrives


def data_session(
    sim: Sim,
    serial: str,
    start: dt.datetime,
    full_windows: int,
    last_minutes: int,
    volume: tuple[int, int, int, int],
    rng: random.Random,
    lose_window: int | None = None,
) -> tuple[list[Event], Session]:
    """started, `full_windows` updated events of 15 minutes, ended: windows and cumulative
    totals consistent. `lose_window` (index of an updated event) is generated but never
    delivered: the session shows a gap."""
    session_sid = sid("PI", sim.name, serial)
    session = Session(sim, session_sid, start)
    network = sim.home
    ip = f"100.64.{10 + sim.index}.{rng.randint(2, 250)}"
    common = {
        "ip_address": ip,
        "apn": "super",
        "data_session_sid": session_sid,
        "data_session_start_time": iso(start),
    }
    events = []
    d = base_data(sim, "data-session.started", start, network, serial + "/started", rng)
    d.update(common)
    events.append(Event(sim, "data-session.started", start, d))
    cum_up = cum_down = 0
    w_start = start
    up_lo, up_hi, down_lo, down_hi = volume
    for k in range(full_windows + 1):
        ended = k == full_windows
        w_end = w_start + (dt.timedelta(minutes=last_minutes, seconds=rng.randint(0, 59)) if ended else WINDOW)
        up, down = rng.randint(up_lo, up_hi), rng.randint(down_lo, down_hi)
        cum_up, cum_down = cum_up + up, cum_down + down
        suffix = "data-session.ended" if ended else "data-session.updated"
        d = base_data(sim, suffix, w_end, network, f"{serial}/w{k}", rng)
        d.update(common)
        if ended:
            d["data_session_end_time"] = iso(w_end)
        d.update(
            {
                "data_session_update_start_time": iso(w_start),
                "data_session_update_end_time": iso(w_end),
                "data_upload": up,
                "data_download": down,
                "data_total": up + down,
                "data_session_data_upload": cum_up,
                "data_session_data_download": cum_down,
                "data_session_data_total": cum_up + cum_down,
            }
        )
        event = Event(sim, suffix, w_end, d, usage=(up, down))
        if k == lose_window:
            event.lost = True
            session.lost_window = up + down
        events.append(event)
        w_start = w_end
    session.end = w_start
    session.windows = full_windows + 1
    session.total = cum_up + cum_down
    return events, session


def attachment(sim: Sim, suffix: str, t: dt.datetime, network: str, serial: str, rng: random.Random,
               error: tuple[int, str] | None = None) -> Event:
    d = base_data(sim, suffix, t, network, serial, rng)
    if error:
        d["error"] = {"code": error[0], "message": error[1]}
    return Event(sim, suffix, t, d)


@dataclass
class Day:
    events: list[Event] = field(default_factory=list)
    sessions: list[Session] = field(default_factory=list)
    gap_session: Session | None = None
    conflict_of: Event | None = None


def generate() -> Day:
    rng = random.Random(SEED)
    day = Day()

    def add(events_and_session: tuple[list[Event], Session]) -> Session:
        events, session = events_and_session
        day.events.extend(events)
        day.sessions.append(session)
        return session

    for sim in SIMS:
        if sim.fleet == "meters":
            # Water meters: Cat-M1, a few short sessions of small readings a day.
            if sim.name == "meter-03":
                # The seventh kind: a failed attachment before the accepted one.
                day.events.append(attachment(sim, "attachment.failed", at(0, 5 + sim.index, 12), sim.home,
                                             "attach-failed", rng, (17, "Network failure")))
            day.events.append(attachment(sim, "attachment.accepted", at(0, 7 + sim.index, 40), sim.home,
                                         "attach", rng))
            for n, (hour, minute) in enumerate([(2, 10), (11, 30), (21, 5)]):
                start = at(hour, minute + sim.index * 3, rng.randint(0, 59))
                add(data_session(sim, f"s{n}", start, rng.randint(1, 3), rng.randint(2, 12),
                                 (2_000, 24_000, 500, 6_000), rng))
        else:
            # Asset trackers: 4G, longer sessions with more data, one early in the night.
            if sim.name == "tracker-02":
                # Roaming into Canada: Rogers is not in the fleet's Network Access Profile.
                day.events.append(attachment(sim, "attachment.rejected", at(0, 40, 3), "rogers",
                                             "attach-rejected", rng,
                                             (11, "PLMN not allowed")))
            day.events.append(attachment(sim, "attachment.accepted", at(0, 42 + sim.index, 30), sim.home,
                                         "attach", rng))
            early = at(1, 30 + sim.index * 4, rng.randint(0, 59))
            add(data_session(sim, "night", early, rng.randint(3, 6), rng.randint(3, 13),
                             (40_000, 400_000, 20_000, 250_000), rng))
            if sim.name == "tracker-05":
                # A failed session: the device asked for an APN the fleet does not allow.
                d = base_data(sim, "data-session.failed", at(12, 48, 7), sim.home, "failed", rng)
                d.update({"apn": "internet", "error": {"code": 33, "message": "Requested service option not subscribed"}})
                day.events.append(Event(sim, "data-session.failed", at(12, 48, 7), d))
            afternoon = at(13, 5 + sim.index * 6, rng.randint(0, 59))
            lose = 2 if sim.name == "tracker-04" else None
            session = add(data_session(sim, "afternoon", afternoon, rng.randint(4, 8), rng.randint(1, 14),
                                       (60_000, 900_000, 30_000, 600_000), rng, lose_window=lose))
            if lose is not None:
                day.gap_session = session

    for e in day.events:
        e.kore_delay = round(rng.uniform(0.2, 1.8), 6)
        e.twilio_delay = round(rng.uniform(0.5, 3.0), 3)
    plan_deliveries(day)
    # The conflicting copy: a tracker-01 window KORE re-sends at the end of the day with a
    # different byte count. The first copy (delivered earlier by KORE's webhook) is kept.
    day.conflict_of = next(
        e for e in day.events
        if e.sim.name == "tracker-01" and e.suffix == "data-session.updated" and e.kore == "webhook"
        and e.twilio and e.timestamp.hour >= 13
    )
    return day


def plan_deliveries(day: Day) -> None:
    """Who delivers what, the way a migration looks:
    - meters: KORE through the Kinesis stream, Twilio through the webhook; the Twilio sink
      for the meters was removed at 20:00 UTC, so later meter events come from KORE only;
    - trackers: KORE through the webhook, Twilio through its Kinesis sink; KORE's webhook
      for the trackers was configured at 03:00 UTC, so earlier tracker events come from
      Twilio only;
    - everything else arrives from both."""
    for e in day.events:
        if e.lost:
            continue
        if e.sim.fleet == "meters":
            e.kore = "kinesis"
            e.twilio = "webhook" if e.timestamp < TWILIO_SINK_REMOVED_FOR_METERS else None
        else:
            e.kore = "webhook" if e.timestamp >= KORE_SINK_ADDED_FOR_TRACKERS else None
            e.twilio = "kinesis"


def late_event() -> Event:
    """A usage window of meter-01 that ends at 23:58 on the demo day and reaches the stack only
    after the day was closed (KORE's webhook, a retry after an outage): booked into the closed
    day, so it is an adjustment of it. Its own short session, so no session shows a gap."""
    sim = by_name("meter-01")
    rng = random.Random(SEED + 7)
    start, end = at(23, 45), at(23, 58)
    d = base_data(sim, "data-session.ended", end, sim.home, "late/w0", rng)
    up, down = 3_210, 1_234
    session_sid = sid("PI", sim.name, "late")
    d.update({
        "data_session_sid": session_sid,
        "data_session_start_time": iso(start),
        "data_session_end_time": iso(end),
        "data_session_update_start_time": iso(start),
        "data_session_update_end_time": iso(end),
        "data_upload": up, "data_download": down, "data_total": up + down,
        "data_session_data_upload": up, "data_session_data_download": down,
        "data_session_data_total": up + down,
    })
    return Event(sim, "data-session.ended", end, d, usage=(up, down), kore="webhook")


# --- expected results (from the generator only) -----------------------------------------------


def poison_record(day: Day) -> bytes:
    """A producer that gzipped its payload by mistake: not JSON, not even UTF-8."""
    return gzip.compress(json.dumps(day.events[0].kore_envelope()).encode(), mtime=0)


@dataclass
class Expected:
    per_sim: dict[str, dict[str, int]]
    both: set[str]
    only_kore: set[str]
    only_twilio: set[str]
    gap_session: str
    gap_missing: int


def expected_of(day: Day) -> Expected:
    per_sim = {
        s.sim_sid: {"data_upload": 0, "data_download": 0, "data_total": 0, "usage_events": 0} for s in SIMS
    }
    both, only_kore, only_twilio = set(), set(), set()
    for e in day.events:
        if e.lost:
            continue
        if e.usage:
            row = per_sim[e.sim.sim_sid]
            row["data_upload"] += e.usage[0]
            row["data_download"] += e.usage[1]
            row["data_total"] += e.total
            row["usage_events"] += 1
        if e.kore and e.twilio:
            both.add(e.event_sid)
        elif e.kore:
            only_kore.add(e.event_sid)
        elif e.twilio:
            only_twilio.add(e.event_sid)
    per_sim = {k: v for k, v in per_sim.items() if v["usage_events"]}
    assert day.gap_session is not None
    return Expected(per_sim, both, only_kore, only_twilio, day.gap_session.sid, day.gap_session.lost_window)


# --- sending ----------------------------------------------------------------------------------


class Demo:
    def __init__(self, args: argparse.Namespace, tool: "KoreUsage") -> None:
        self.args = args
        self.tool = tool
        env = os.environ
        self.lambda_url = env["LAMBDA_URL"].rstrip("/")
        self.public_url = env["WEBHOOK_PUBLIC_URL"].rstrip("/")
        self.kore_secret = env["KORE_WEBHOOK_SECRETS"].split(",")[0].strip()
        self.twilio_token = env["TWILIO_AUTH_TOKENS"].split(",")[0].strip()
        self.stream = env["STREAM_NAME"]
        self.kinesis_endpoint = env["AWS_ENDPOINT_URL_KINESIS"]
        # What the webhook answered in this run: events and callbacks.
        self.counts = {"accepted": 0, "duplicates": 0, "conflicts": 0, "quarantined": 0}
        self.callback_counts = {"accepted": 0, "duplicates": 0}
        # Each callback's id on the event bus (provider#token), and whether this run stored it.
        self.callback_ids: dict[str, bool] = {}
        self.retried_5xx = 0  # requests answered 5xx first, then retried
        self.last_seq: dict[str, str] = {}  # shard -> highest sequence number we put
        self.partition_keys: dict[str, str] = {}  # shard -> a partition key that lands there
        self.sentinels: set[str] = set()  # ids of this run's closing test events

    # --- HTTP, through `kore-usage send` ---

    def request(self, what: str, path: str, body: bytes, *, twilio: bool = False, callback: bool = False,
                get: bool = False, headers: tuple[str, ...] = ()) -> tuple[dict, str]:
        """Sends like KORE and Twilio do, signed by `kore-usage send`: a 5xx is retried with
        back-off; a 401 means the running stack does not have the demo's secrets. Returns
        the JSON answer and the statuses seen, e.g. "503 -> 200"."""
        args = ["--sign-url", f"{self.public_url}{path}"]
        if twilio:
            args += ["--provider", "twilio"]
        if callback:
            args.append("--callback")
        if get:
            args.append("--get")
        for header in headers:
            args += ["-H", header]
        args.append(f"{self.lambda_url}/lambda-url/webhook{path}")
        secret = self.twilio_token if twilio else self.kore_secret
        statuses = []
        for attempt in range(1, 7):
            status, text = self.tool.send(args, body, secret, what)
            if status == 401:
                raise SystemExit(
                    f"demo: {what}: the webhook answered 401 to a correctly signed request: "
                    "a dev stack with other settings (secrets or WEBHOOK_PUBLIC_URL) is running: "
                    "scripts/dev down first"
                )
            statuses.append(str(status))
            if status >= 500 and attempt < 6:
                if attempt == 1:
                    self.retried_5xx += 1
                time.sleep(min(2 ** attempt, 20))
                continue
            if status != 200:
                raise SystemExit(f"demo: {what}: HTTP {status}: {text.strip()[:300]}")
            try:
                return json.loads(text), " -> ".join(statuses)
            except ValueError:
                raise SystemExit(f"demo: {what}: unexpected answer: {text[:300]}")
        raise AssertionError("unreachable")

    def post_events(self, what: str, events: list[dict], twilio: bool = False) -> tuple[dict, str]:
        return self.request(what, "/events", json.dumps(events, separators=(",", ":")).encode(), twilio=twilio)

    def tally(self, answer: tuple[dict, str], callback: bool = False) -> str:
        reply, statuses = answer
        counts = self.callback_counts if callback else self.counts
        for k in counts:
            counts[k] += int(reply.get(k, 0))
        text = statuses + " " + " ".join(
            f"{k}={reply[k]}" for k in ("accepted", "duplicates", "conflicts", "quarantined") if k in reply)
        if statuses.startswith("5"):
            text += ("\n      (503: the 4 s time budget ran out while DynamoDB Local was busy with the stream, so the"
                     "\n      webhook asked the sender to retry; the retry finds what is already stored as duplicates)")
        return text

    # --- the traffic ---

    def preflight(self) -> None:
        """An empty signed batch from each provider: stores nothing, proves the secrets."""
        self.post_events("signature check (KORE)", [])
        self.post_events("signature check (Twilio)", [], twilio=True)

    def send_kinesis(self, day: Day, poison: bytes, rng: random.Random) -> None:
        import boto3
        import botocore.config

        records: list[tuple[float, str, bytes, str]] = []  # (order, partition key, data, label)
        for e in day.events:
            if e.kore == "kinesis":
                t = (e.timestamp - at(0)).total_seconds() + e.kore_delay + rng.uniform(0, 240)
                records.append((t, e.sim.sim_sid, json.dumps(e.kore_envelope()).encode(), "kore"))
            if e.twilio == "kinesis":
                t = (e.timestamp - at(0)).total_seconds() + e.twilio_delay + rng.uniform(0, 240)
                records.append((t, e.sim.sim_sid, json.dumps(e.twilio_envelope()).encode(), "twilio"))
        # Publication order plus jitter: events arrive somewhat out of order.
        records.sort(key=lambda r: r[0])
        stream = [(pk, data, label) for _, pk, data, label in records]
        # Producer retries: every 9th record is put a second time a little later.
        retries = 0
        for i in range(len(stream) - 1, -1, -1):
            if i % 9 == 4:
                pk, data, label = stream[i]
                stream.insert(min(i + rng.randint(2, 12), len(stream)), (pk, data, label + "-retry"))
                retries += 1
        stream.insert(len(stream) * 2 // 5, ("poison", poison, "poison"))

        kinesis = boto3.client(
            "kinesis",
            endpoint_url=self.kinesis_endpoint,
            region_name=os.environ.get("AWS_REGION", "us-east-1"),
            aws_access_key_id="local",
            aws_secret_access_key="local",
            config=botocore.config.Config(retries={"max_attempts": 5, "mode": "standard"}),
        )
        for start in range(0, len(stream), 100):
            chunk = stream[start:start + 100]
            entries = [{"Data": data, "PartitionKey": pk} for pk, data, _ in chunk]
            for attempt in range(5):
                result = kinesis.put_records(StreamName=self.stream, Records=entries)
                failed = [i for i, r in enumerate(result["Records"]) if "ErrorCode" in r]
                for entry, r in zip(entries, result["Records"]):
                    if "SequenceNumber" in r:
                        shard, seq = r["ShardId"], r["SequenceNumber"]
                        if int(seq) > int(self.last_seq.get(shard, "0")):
                            self.last_seq[shard] = seq
                        self.partition_keys.setdefault(shard, entry["PartitionKey"])
                if not failed:
                    break
                # Only the failed entries again, in order (what the producers do).
                entries = [entries[i] for i in failed]
                time.sleep(0.5 * (attempt + 1))
            else:
                raise SystemExit(f"demo: put_records kept failing on {self.stream}")
        kore = sum(1 for _, _, label in stream if label == "kore")
        twilio = sum(1 for _, _, label in stream if label == "twilio")
        out(f"  Kinesis stream {self.stream}: {len(stream)} records put "
            f"({kore} KORE, {twilio} Twilio, {retries} producer retries of the same records, "
            "1 poison record: a gzipped payload)")
        self.close_stream(kinesis)

    def close_stream(self, kinesis) -> None:
        """Last on every shard we wrote to, a KORE test event of this run (as KORE sends when a
        destination is set up): once the ledger holds it, the poller has read the shard to its
        end. A new id each run, so a second run waits on the stream too."""
        now = dt.datetime.now(dt.timezone.utc)
        for shard, key in sorted(self.partition_keys.items()):
            test_id = str(uuid.uuid4())
            event = {
                "specversion": "1.0",
                "type": "com.kore.eventstreams.test.event",
                "source": "kore-events",
                "id": test_id,
                "time": now.strftime("%Y-%m-%dT%H:%M:%S.%f") + "0+00:00",
                "datacontenttype": "application/json",
                "dataschema": "/schemas/test/1",
                "data": {"test_id": test_id, "note": f"kore-ingest demo: the end of {shard}"},
            }
            result = kinesis.put_record(StreamName=self.stream, Data=json.dumps(event).encode(), PartitionKey=key)
            if result["ShardId"] != shard:
                raise SystemExit(f"demo: the closing test event for {shard} landed on {result['ShardId']}")
            self.sentinels.add(test_id)
        out(f"  and a KORE test event closing each of the {len(self.sentinels)} shard(s) written to")

    def send_webhook(self, day: Day, provider: str) -> None:
        """One provider's webhook deliveries in publication order, in batches of at most 50.
        KORE delivers its first batch twice: it did not see our 200 in time."""
        kore = provider == "kore"
        label = "KORE  " if kore else "Twilio"
        events = sorted((e for e in day.events if getattr(e, provider) == "webhook"),
                        key=lambda e: e.timestamp + dt.timedelta(seconds=e.kore_delay if kore else e.twilio_delay))
        batches = [events[i:i + BATCH_MAX] for i in range(0, len(events), BATCH_MAX)]
        for n, batch in enumerate(batches, 1):
            envelopes = [e.kore_envelope() if kore else e.twilio_envelope() for e in batch]
            what = f"{label.strip()} webhook batch {n}/{len(batches)}"
            out(f"  {label} webhook batch {n}/{len(batches)} ({len(batch):2d} events) -> "
                f"{self.tally(self.post_events(what, envelopes, twilio=not kore))}")
            if kore and n == 1:
                reply = self.post_events(f"{what} (retry)", envelopes)
                out(f"  {label} webhook batch {n}/{len(batches)} again, a sender retry -> {self.tally(reply)}")

    def send_conflict(self, day: Day) -> None:
        original = day.conflict_of
        assert original is not None and original.usage
        data = dict(original.data)
        data["data_download"] += 2048
        data["data_total"] += 2048
        reply = self.post_events("KORE conflicting copy", [original.kore_envelope(data)])
        out(f"  KORE   webhook, a late copy of {original.event_sid} ({original.sim.name}) whose data_total says "
            f"{data['data_total']}, not {original.total} -> {self.tally(reply)}")

    def send_late(self, event: Event) -> None:
        reply = self.post_events("KORE late event", [event.kore_envelope()])
        out(f"  KORE   webhook, a window of {event.sim.name} that ended {event.timestamp:%H:%M} on {DAY} "
            f"({event.total} bytes), arriving after the close -> {self.tally(reply)}")

    def send_callbacks(self) -> None:
        tracker = by_name("tracker-06")
        form = urllib.parse.urlencode([
            ("ApiVersion", "v1"), ("SimUniqueName", tracker.name), ("SimSid", tracker.sim_sid),
            ("SimStatus", "inactive"), ("AccountSid", ACCOUNT),
        ]).encode()
        token = str(uuid.UUID(hex=hashlib.sha256(f"{NAMESPACE}/kore-sim-status".encode()).hexdigest()[:32]))
        for attempt in ("", " again (retry)"):
            reply = self.request("KORE SIM status callback", "/callbacks/sims", form, callback=True,
                                 headers=(f"Kore-Idempotency-Token: {token}", "Date: 2024-10-28T23:30:00Z"))
            self.callback_ids.setdefault(f"kore#{token}", int(reply[0].get("accepted", 0)) == 1)
            out(f"  KORE   callback POST /callbacks/sims ({tracker.name} -> inactive){attempt} -> {self.tally(reply, True)}")

        meter = by_name("meter-02")
        query = urllib.parse.urlencode([
            ("Status", "received"), ("ApiVersion", "v1"), ("Command", "leak-alarm;valve=closed"),
            ("SimUniqueName", meter.name), ("SimSid", meter.sim_sid), ("Direction", "from_sim"),
            ("CommandSid", sid("HC", meter.name, "leak-alarm")), ("AccountSid", ACCOUNT),
            ("PayloadType", "text"),
        ], quote_via=urllib.parse.quote)
        token = f"{ACCOUNT}-{sid('', 'twilio-sms-command')[:32]}"
        for attempt in ("", " again (retry)"):
            reply = self.request("Twilio SMS Command callback", "/callbacks/sms-commands", query.encode(),
                                 twilio=True, callback=True, get=True,
                                 headers=(f"I-Twilio-Idempotency-Token: {token}",))
            self.callback_ids.setdefault(f"twilio#{token}", int(reply[0].get("accepted", 0)) == 1)
            out(f"  Twilio callback GET /callbacks/sms-commands ({meter.name}, from_sim){attempt} "
                f"-> {self.tally(reply, True)}")


# --- reading back -----------------------------------------------------------------------------


class KoreUsage:
    def __init__(self, binary: str) -> None:
        self.binary = binary
        env = dict(os.environ)
        # The local stack only: never a profile or session of the caller's.
        for name in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
            env.pop(name, None)
        env["AWS_EC2_METADATA_DISABLED"] = "true"
        self.env = env

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run([self.binary, *args], env=self.env, capture_output=True, text=True,
                              timeout=timeout)

    def json(self, *args: str):
        result = self.run(*args, "--format", "json")
        if result.returncode != 0:
            raise RuntimeError(result.stderr.strip() or f"exit {result.returncode}")
        return json.loads(result.stdout)

    def send(self, args: list[str], body: bytes, secret: str, what: str) -> tuple[int, str]:
        """`kore-usage send`: signs and sends one request; the webhook's status and body."""
        env = dict(self.env, KORE_USAGE_SIGNING_SECRET=secret)
        result = subprocess.run([self.binary, "send", "--format", "json", "--timeout", "60", *args],
                                input=body, env=env, capture_output=True, timeout=120)
        try:
            answer = json.loads(result.stdout)
            return int(answer["status"]), str(answer["body"])
        except (ValueError, KeyError, TypeError):
            raise SystemExit(f"demo: {what}: kore-usage send failed: "
                             f"{result.stderr.decode(errors='replace').strip() or f'exit {result.returncode}'}")

    def quarantined_payload(self, entry_id: str) -> bytes:
        """A quarantined payload, byte for byte."""
        entry = self.json("quarantine", "show", entry_id)
        if entry["payload_encoding"] == "base64":
            return base64.b64decode(entry["payload"])
        return entry["payload"].encode()

    def show(self, *args: str) -> subprocess.CompletedProcess:
        """Runs a command as the reader would and prints it with its output; the result."""
        out(f"$ kore-usage {' '.join(args)}")
        result = self.run(*args)
        text = result.stdout.rstrip("\n")
        out(text if text else "(no output)")
        if result.returncode != 0:
            out(f"(exit {result.returncode}: {result.stderr.strip()})")
        out()
        return result


def rows_of(report: list[dict], ours: set[str]) -> dict[str, dict[str, int]]:
    keys = ("data_upload", "data_download", "data_total", "usage_events")
    return {r["sim_sid"]: {k: int(r[k]) for k in keys} for r in report if r["sim_sid"] in ours}


class Ledger:
    """What the ledger says about this run's Kinesis records, asked through kore-usage: which
    quarantine entry holds the poison record (found by its bytes), and whether the test
    events that close the stream are stored."""

    def __init__(self, tool: KoreUsage, poison: bytes) -> None:
        self.tool = tool
        self.poison = poison
        self.poison_id: str | None = None
        self.looked_at: set[str] = set()

    def poison_quarantined(self) -> bool:
        if self.poison_id is None:
            for entry in self.tool.json("quarantine", "list", "--limit", "1000"):
                if entry["path"] != "kinesis" or entry["id"] in self.looked_at:
                    continue
                self.looked_at.add(entry["id"])
                if self.tool.quarantined_payload(entry["id"]) == self.poison:
                    self.poison_id = entry["id"]
        return self.poison_id is not None

    def stream_read(self, sentinels: set[str]) -> bool:
        now = dt.datetime.now(dt.timezone.utc)
        rec = self.tool.json("reconcile", "--from", iso(now - dt.timedelta(days=1)),
                             "--to", iso(now + dt.timedelta(days=1)))
        return sentinels <= set(rec["only_kore"])


def with_late(per_sim: dict[str, dict[str, int]], late: Event) -> dict[str, dict[str, int]]:
    """The generator's day with the late window added: what the live ledger holds once the late
    event is stored (a second run on the same stack)."""
    rows = {k: dict(v) for k, v in per_sim.items()}
    row = rows.setdefault(late.sim.sim_sid, {"data_upload": 0, "data_download": 0, "data_total": 0,
                                             "usage_events": 0})
    row["data_upload"] += late.usage[0]
    row["data_download"] += late.usage[1]
    row["data_total"] += late.total
    row["usage_events"] += 1
    return rows


def late_stored(tool: KoreUsage, late: Event) -> bool:
    """Whether the ledger holds the late event (a closed day's adjustment, from an earlier run)."""
    rows = tool.json("adjustments", "--start", RANGE_FROM, "--end", RANGE_TO)
    return any(r["event_sid"] == late.event_sid for r in rows)


def wait_for_ledger(tool: KoreUsage, expected: Expected, late: Event, ledger: Ledger,
                    sentinels: set[str], dlq: Path, dlq_size: int, timeout: float) -> bool:
    ours = set(expected.per_sim)
    our_sids = expected.both | expected.only_kore | expected.only_twilio
    want_usage = sum(r["usage_events"] for r in expected.per_sim.values())
    started = time.monotonic()
    next_note = started + 15
    state = ""
    while True:
        ok = []
        try:
            day = rows_of(tool.json("report", "--period", DAY.isoformat(), "--account", ACCOUNT), ours)
            ok.append(day in (expected.per_sim, with_late(expected.per_sim, late)))
            got_usage = sum(r["usage_events"] for r in day.values())
            rec = tool.json("reconcile", "--from", RANGE_FROM, "--to", RANGE_TO)
            only_kore = set(rec["only_kore"]) & our_sids
            only_twilio = set(rec["only_twilio"]) & our_sids
            ok.append(only_kore == expected.only_kore and only_twilio == expected.only_twilio
                      and int(rec["both"]) >= len(expected.both))
            poisoned = ledger.poison_quarantined()
            ok.append(poisoned)
            stream_done = ledger.stream_read(sentinels)
            ok.append(stream_done)
            state = (f"usage events {got_usage}/{want_usage}, events both/only KORE/only Twilio "
                     f"{rec['both']}/{len(only_kore)}/{len(only_twilio)} of "
                     f"{len(expected.both)}/{len(expected.only_kore)}/{len(expected.only_twilio)}, "
                     f"poison record {f'quarantined as {ledger.poison_id}' if poisoned else 'not yet quarantined'}, "
                     f"stream {'read to its end (its closing test events are stored)' if stream_done else 'still being read'}")
        except (RuntimeError, ValueError, KeyError, subprocess.TimeoutExpired) as e:
            ok = [False]
            state = f"kore-usage failed: {e}"
        if all(ok):
            out(f"  done after {time.monotonic() - started:.0f}s: {state}")
            return True
        if dlq.exists() and dlq.stat().st_size > dlq_size:
            out(f"  local-esm gave up on records (written to {dlq}); see its log")
            out(f"  last state: {state}")
            return False
        now = time.monotonic()
        if now - started > timeout:
            out(f"  timed out after {timeout:.0f}s: {state}")
            return False
        if now >= next_note:
            out(f"  ... {now - started:.0f}s: {state}")
            next_note = now + 15
        time.sleep(2)


# --- Segment (SEGMENT_LOCAL=1) ---------------------------------------------------------------


class SegmentStandIn:
    """The local stack's stand-in for Segment (scripts/lib/segment_standin.py): what
    segment-forwarder sent it."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")

    def calls(self) -> list[dict]:
        with urllib.request.urlopen(f"{self.url}/__calls?prefix=EZ", timeout=30) as resp:
            return json.loads(resp.read())


def event_times(e: Event) -> set[str]:
    """The event's time as the forwarder sends it (milliseconds, UTC), for either provider's
    copy: the ledger keeps the time of the copy it stored first."""
    times = set()
    for delay in (e.kore_delay, e.twilio_delay):
        t = e.timestamp + dt.timedelta(seconds=delay)
        times.add(f"{t:%Y-%m-%dT%H:%M:%S}.{t.microsecond // 1000:03d}Z")
    return times


def check_segment(stand_in: SegmentStandIn, day: Day, expected: Expected, before: set[str],
                  timeout: float, late: Event | None) -> bool:
    """Waits until every unique event the demo delivered is at the stand-in (the late window
    too, when it was sent), then checks each arrived once with the fields Segment needs."""
    late_events = [late] if late else []
    ours = {e.event_sid: e for e in day.events + late_events if not e.lost}
    want = expected.both | expected.only_kore | expected.only_twilio | {e.event_sid for e in late_events}
    started = time.monotonic()
    calls: list[dict] = []
    last_count, quiet_since = -1, time.monotonic()
    while True:
        try:
            calls = [c for c in stand_in.calls() if c.get("messageId") in ours]
        except (OSError, ValueError) as e:
            out(f"  the stand-in does not answer: {e}")
            return False
        accepted = {c["messageId"] for c in calls if c.get("_status") == 200}
        if len(calls) != last_count:
            last_count, quiet_since = len(calls), time.monotonic()
        # Everything in, and nothing more for three seconds (late deliveries, hand-backs).
        if accepted >= want and time.monotonic() - quiet_since >= 3:
            break
        if time.monotonic() - started > timeout:
            out(f"  timed out after {timeout:.0f}s: {len(accepted & want)} of {len(want)} events at the stand-in")
            break
        time.sleep(1)
    accepted_calls = [c for c in calls if c.get("_status") == 200]
    distinct = {c["messageId"] for c in accepted_calls}
    mismatched = []
    for c in accepted_calls:
        e = ours[c["messageId"]]
        if (c.get("type") != "track" or c.get("event") != e.suffix
                or c.get("anonymousId") != e.sim.sim_sid or c.get("properties") != e.data
                or c.get("timestamp") not in event_times(e)):
            mismatched.append(c["messageId"])
    new_now = distinct - before
    out(f"  events forwarded: {len(distinct)} distinct messageIds; unique events delivered by KORE, Twilio "
        f"or both: {len(want)}; the same set: {'yes' if distinct == want else 'no'}")
    out(f"  calls the stand-in accepted for them: {len(accepted_calls)} (each event once: "
        f"{'yes' if len(accepted_calls) == len(distinct) else 'no'}); calls received in all, 5xx answers "
        f"included: {len(calls)}; first forwarded in this run: {len(new_now)}"
        + (" (a re-run forwards nothing again)" if before else ""))
    out(f"  fields (messageId = event_sid, event = type suffix, anonymousId = SIM, timestamp = event time, "
        f"properties = data): {len(accepted_calls) - len(mismatched)} of {len(accepted_calls)} calls match"
        + (f"; not: {', '.join(sorted(mismatched)[:5])}" if mismatched else ""))
    return distinct == want and not mismatched and len(accepted_calls) == len(distinct)


# --- the callbacks' event bus ----------------------------------------------------------------


def check_bus(queue_url: str, ids: dict[str, bool], timeout: float) -> bool:
    """Reads the queue the local bus is copied into (moto's SQS, through boto3) until every
    callback this run stored is there, then three quiet seconds more; each must be there
    once, and a callback an earlier run stored not at all (it is not stored again)."""
    import boto3  # the venv's, from aws-sam-cli

    sqs = boto3.client("sqs", endpoint_url=os.environ["AWS_ENDPOINT_URL_SQS"], region_name="us-east-1",
                       aws_access_key_id="local", aws_secret_access_key="local")
    seen: dict[str, int] = {}
    want = {i for i, new in ids.items() if new}
    started = quiet_since = time.monotonic()
    while True:
        messages = sqs.receive_message(QueueUrl=queue_url, MaxNumberOfMessages=10,
                                       WaitTimeSeconds=1).get("Messages", [])
        for m in messages:
            event = json.loads(m["Body"])
            callback_id = event.get("detail", {}).get("id")
            if callback_id in ids:
                seen[callback_id] = seen.get(callback_id, 0) + 1
            sqs.delete_message(QueueUrl=queue_url, ReceiptHandle=m["ReceiptHandle"])
            quiet_since = time.monotonic()
        if set(seen) >= want and time.monotonic() - quiet_since >= 3:
            break
        if time.monotonic() - started > timeout:
            out(f"  timed out after {timeout:.0f}s: {len(set(seen) & want)} of {len(want)} callbacks on the bus")
            break
    for callback_id, new in ids.items():
        out(f"  {callback_id}: stored {'in this run' if new else 'by an earlier run'}, "
            f"on the bus {seen.get(callback_id, 0)} time(s) in this run")
    return all(seen.get(i, 0) == (1 if new else 0) for i, new in ids.items())


# --- main -------------------------------------------------------------------------------------


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="demo_traffic.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--kore-usage", required=True, help="the kore-usage binary")
    p.add_argument("--dlq", required=True, type=Path, help="local-esm's dead-letter file of this stack")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for the ledger")
    p.add_argument("--report", required=True, type=Path, help="where to write the day's HTML report")
    p.add_argument("--segment-url", help="the stack's Segment stand-in (SEGMENT_LOCAL=1): check what "
                   "segment-forwarder sent it")
    p.add_argument("--events-queue-url", help="the queue the stack's event bus is copied into: check the "
                   "callbacks callback-forwarder put on the bus")
    args = p.parse_args(argv)

    day = generate()
    expected = expected_of(day)
    tool = KoreUsage(args.kore_usage)
    demo = Demo(args, tool)

    usage = [e for e in day.events if e.usage]
    kinds: dict[str, int] = {}
    for e in day.events:
        kinds[e.suffix] = kinds.get(e.suffix, 0) + 1
    sessions = len(day.sessions)
    out(f"The day: {DAY} (UTC), account {ACCOUNT}, {len(SIMS)} Super SIMs in two fleets")
    out(f"  water meters   {FLEETS['meters']}: meter-01..06, KORE via Kinesis, Twilio via webhook")
    out(f"  asset trackers {FLEETS['trackers']}: tracker-01..06, KORE via webhook, Twilio via Kinesis")
    out(f"  {len(day.events)} distinct events: " + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())))
    out(f"  {sessions} data sessions, {len(usage)} usage windows of up to 15 minutes "
        "(updated/ended, windows adding up to the cumulative totals)")
    out("  migration: the meters' Twilio sink was removed at 20:00 (later meter events: KORE only); "
        "the trackers' KORE webhook was set up at 03:00 (earlier tracker events: Twilio only)")
    out(f"  one window of {by_name('tracker-04').name}'s afternoon session ({human(expected.gap_missing)}) "
        "is never delivered by anyone: a gap")
    out()

    poison = poison_record(day)
    out("== Expected, computed by the generator from the events it sends (not from the stack)")
    rows = []
    for sim in SIMS:
        r = expected.per_sim.get(sim.sim_sid)
        if r:
            rows.append([sim.sim_sid, sim.name, human(r["data_upload"]), human(r["data_download"]),
                         human(r["data_total"]), str(r["data_total"]), str(r["usage_events"])])
    tot = {k: sum(r[k] for r in expected.per_sim.values())
           for k in ("data_upload", "data_download", "data_total", "usage_events")}
    rows.append([f"TOTAL ({len(expected.per_sim)} SIMs)", "", human(tot["data_upload"]),
                 human(tot["data_download"]), human(tot["data_total"]), str(tot["data_total"]),
                 str(tot["usage_events"])])
    out(table(["SIM", "NAME", "UPLOAD", "DOWNLOAD", "TOTAL", "BYTES", "EVENTS"], rows, {2, 3, 4, 5, 6}))
    out(f"  reconciliation: {len(expected.both)} events from both, {len(expected.only_kore)} only from KORE, "
        f"{len(expected.only_twilio)} only from Twilio")
    out(f"  quarantine: the poison record (a gzipped payload, found by its bytes) and the conflicting copy of "
        f"{day.conflict_of.event_sid}")
    out(f"  gap: session {expected.gap_session} of {by_name('tracker-04').sim_sid} misses "
        f"{human(expected.gap_missing)} ({expected.gap_missing} bytes)")
    out()

    # An empty signed batch from each provider first: a stack with other secrets fails here,
    # before anything is sent.
    demo.preflight()
    ours = set(expected.per_sim)
    try:
        before = rows_of(tool.json("report", "--period", DAY.isoformat(), "--account", ACCOUNT), ours)
    except (RuntimeError, ValueError, KeyError, subprocess.TimeoutExpired) as e:
        raise SystemExit(f"demo: kore-usage cannot read the ledger: {e}")
    late = late_event()
    rerun = before in (expected.per_sim, with_late(expected.per_sim, late))
    if rerun:
        out("The ledger already holds this day with exactly the generator's totals (an earlier run of the")
        out("demo on this stack). The event SIDs are deterministic, so this run re-sends the very same")
        out("events: every one must be stored as a duplicate, and no total may move.")
        out()
    elif before:
        out(f"The ledger already holds part of this day ({len(before)} of the demo's SIMs; an interrupted earlier")
        out("run?): what is missing is added now, nothing is counted twice.")
        out()

    stand_in = SegmentStandIn(args.segment_url) if args.segment_url else None
    segment_before: set[str] = set()
    if stand_in:
        try:
            ours_sids = {e.event_sid for e in day.events}
            segment_before = {c["messageId"] for c in stand_in.calls()
                              if c.get("messageId") in ours_sids and c.get("_status") == 200}
        except (OSError, ValueError) as e:
            raise SystemExit(f"demo: the Segment stand-in at {args.segment_url} does not answer: {e}")

    out("== Alert rules, applied before the traffic (the alerts function evaluates what the ledger stores)")
    rules = alert_rules(expected)
    rules_file = args.dlq.parent / "demo-alert-rules.json"
    rules_file.write_text(json.dumps(rules, indent=2) + "\n")
    applied = tool.show("alerts", "apply", str(rules_file))
    if applied.returncode != 0:
        raise SystemExit("demo: kore-usage alerts apply failed")
    tool.show("alerts", "rules")

    out("== Sending (sequentially; webhook batches of at most 50 events)")
    dlq_size = args.dlq.stat().st_size if args.dlq.exists() else 0
    out("  signed empty batches from KORE and Twilio -> 200 (the stack has the demo's secrets)")
    t0 = time.monotonic()
    demo.send_kinesis(day, poison, random.Random(SEED + 1))
    demo.send_webhook(day, "kore")
    demo.send_webhook(day, "twilio")
    demo.send_conflict(day)
    demo.send_callbacks()
    c, cb = demo.counts, demo.callback_counts
    out(f"  sent in {time.monotonic() - t0:.1f}s; the webhook answered for events: {c['accepted']} new, "
        f"{c['duplicates']} duplicates, {c['conflicts']} conflicts; callbacks: {cb['accepted']} new, "
        f"{cb['duplicates']} duplicates")
    out()

    out(f"== Waiting for the stack to store everything (the Kinesis poller is asynchronous; up to {args.timeout:.0f}s)")
    settled = wait_for_ledger(tool, expected, late, Ledger(tool, poison), demo.sentinels, args.dlq,
                              dlq_size, args.timeout)
    out()

    out("== What the ledger says: usage as billing asks for it, by network and by country")
    out()
    tool.show("usage", "--start", RANGE_FROM, "--end", RANGE_TO, "--group", "network")
    tool.show("usage", "--start", RANGE_FROM, "--end", RANGE_TO, "--group", "iso-country")
    checks = ledger_checks(tool, expected, late)
    out()

    customers_applied = apply_customers(tool, args.report.parent)
    out("== Invoicing the day: close it, take a late event as an adjustment, prove it")
    out()
    closed = close_day(tool)
    if closed:
        demo.send_late(late)
        out()
        tool.show("adjustments", "--start", RANGE_FROM, "--end", RANGE_TO)
        tool.show("evidence", "--sim", late.sim.sim_sid, "--start", RANGE_FROM, "--end", RANGE_TO,
                  "--format", "csv")
        verified = tool.show("verify-close", "--start", RANGE_FROM, "--end", RANGE_TO).returncode == 0
        checks.update(invoice_checks(tool, expected, late, verified))
        checks["the invoice's data lines per customer are the generator's per fleet"] = (
            customers_applied and check_invoice(tool, expected.per_sim))
    else:
        checks["the day is closed"] = False

    out("== Alerts: each crossing of the demo's rules, raised once")
    per_sim = with_late(expected.per_sim, late) if late_stored(tool, late) else expected.per_sim
    checks["the alerts are the generator's crossings, each once"] = check_alerts(
        tool, expected_alerts(rules, per_sim), args.timeout)

    checks["usage per customer is the generator's per fleet"] = (
        customers_applied and check_customers(tool, per_sim))
    checks["the HTML report's totals are the generator's"] = check_report(tool, args.report, per_sim)

    checks["the archive holds the day, verified; DuckDB's month per SIM is kore-usage usage's"] = (
        check_archive(tool))

    if args.events_queue_url:
        out("== The event bus: each callback the stack stored, put once on its bus by callback-forwarder")
        checks["every stored callback on the event bus once"] = check_bus(
            args.events_queue_url, demo.callback_ids, args.timeout)
        out()

    out("== Checks")
    for name, ok in checks.items():
        out(f"{name}: {'yes' if ok else 'no'}")
    all_ok = all(checks.values()) and settled
    if not settled:
        out("(the stack did not settle in time)")
    segment_ok = True
    if stand_in:
        out()
        out(f"== Segment: what segment-forwarder sent the local stand-in ({args.segment_url}), through the "
            "table's stream")
        segment_ok = check_segment(stand_in, day, expected, segment_before, args.timeout,
                                   late if closed else None)
        out(f"every unique event at Segment exactly once: {'yes' if segment_ok else 'no'}")
    return 0 if all_ok and segment_ok else 1


CUSTOMERS = {"meters": "city-water", "trackers": "logistics-co"}


PLAN = {"id": "iot-mb", "currency": "USD", "unit": "MB",
        "rounding": {"increment": "1", "scope": "sim"},
        "prices": {"US": "0.05", "Canada": "0.08", "ROW": "0.50"}, "sim_fee": "2.00"}


def apply_customers(tool: KoreUsage, folder: Path) -> bool:
    """Maps the two fleets to two customers on one plan and the countries to zones, before
    the close, which bills each line to them."""
    out("== Customers, zones and a plan: each fleet is one customer's; the countries are zones")
    customers = folder / "demo-customers.csv"
    customers.write_text(
        "customer_id,sim_sid,fleet_sid,account_sid,plan_id,valid_from,valid_to\n"
        + "".join(f"{name},,{FLEETS[fleet]},,{PLAN['id']},2024-10-01T00:00:00Z,\n"
                  for fleet, name in CUSTOMERS.items()),
        encoding="utf-8")
    zones = folder / "demo-zones.json"
    zones.write_text(json.dumps({"zones": [
        {"name": "US", "countries": ["US"]},
        {"name": "Canada", "countries": ["CA"]},
        {"name": "ROW", "default": True},
    ]}), encoding="utf-8")
    plans = folder / "demo-plans.json"
    plans.write_text(json.dumps({"plans": [PLAN]}), encoding="utf-8")
    applied = all(tool.show(*command).returncode == 0 for command in (
        ("customers", "apply", str(customers)), ("zones", "apply", str(zones)),
        ("plans", "apply", str(plans))))
    out()
    return applied


def per_customer(per_sim: dict[str, dict[str, int]]) -> dict[str, int]:
    """The generator's bytes per customer: its SIMs' fleets' customers."""
    want: dict[str, int] = {}
    for sim in SIMS:
        name = CUSTOMERS[sim.fleet]
        want[name] = want.get(name, 0) + per_sim[sim.sim_sid]["data_total"]
    return want


def check_customers(tool: KoreUsage, per_sim: dict[str, dict[str, int]]) -> bool:
    """The day's live usage per customer and zone, checked per customer against the
    generator's per fleet."""
    out("== Usage per zone and per customer, live (the late window included)")
    tool.show("usage", "--start", RANGE_FROM, "--end", RANGE_TO, "--group", "zone")
    tool.show("usage", "--start", RANGE_FROM, "--end", RANGE_TO, "--group", "customer")
    got: dict[str, int] = {}
    for record in tool.json("usage", "--start", RANGE_FROM, "--end", RANGE_TO, "--group", "customer"):
        got[record["customer_id"]] = got.get(record["customer_id"], 0) + record["data_total"]
    want = per_customer(per_sim)
    if got != want:
        out(f"(usage per customer {got} is not the generator's {want})")
    return got == want


def check_invoice(tool: KoreUsage, per_sim: dict[str, dict[str, int]]) -> bool:
    """The closed day's invoice lines; their data bytes per customer against the
    generator's day (the late window is the next period's adjustment)."""
    out("== The closed day's invoice lines: kore-usage invoice (kore-usage push sends them)")
    tool.show("invoice", "--start", RANGE_FROM, "--end", RANGE_TO)
    got: dict[str, int] = {}
    for line in tool.json("invoice", "--start", RANGE_FROM, "--end", RANGE_TO):
        if line["kind"] == "data":
            got[line["customer_id"]] = got.get(line["customer_id"], 0) + line["bytes"]
    want = per_customer(per_sim)
    if got != want:
        out(f"(the invoice's bytes per customer {got} are not the generator's {want})")
    return got == want


def check_report(tool: KoreUsage, path: Path, per_sim: dict[str, dict[str, int]]) -> bool:
    """Writes the day's report as a page and checks the totals it embeds against the
    generator's (the late window included once stored)."""
    out("== The day as a page to open in a browser: kore-usage report-html")
    written = tool.show("report-html", "--start", RANGE_FROM, "--end", RANGE_TO, "--group", "fleet",
                        "--title", "Super SIM demo: 28 October 2024", "--out", str(path))
    if written.returncode != 0:
        return False
    page = path.read_text(encoding="utf-8")
    marker = '<script type="application/json" id="kore-usage-report">'
    if marker not in page:
        out(f"(no figures block in {path})")
        return False
    figures = json.loads(page.split(marker, 1)[1].split("</script>", 1)[0])
    keys = ("data_upload", "data_download", "data_total", "usage_events")
    want = {k: sum(row[k] for row in per_sim.values()) for k in keys}
    got = {k: figures["total"][k] for k in keys}
    out(f"report written to {path} (open it in a browser; it runs no script and loads nothing)")
    if got != want:
        out(f"(the report's totals {got} are not the generator's {want})")
    out()
    return got == want


def check_archive(tool: KoreUsage) -> bool:
    """Seals the day into the local archive (a folder, ARCHIVE_URL), verifies the seal against
    the ledger, and runs the Athena query of usage by SIM for the month with DuckDB: per SIM
    it must equal `kore-usage usage` over the same month. (A final seal would also archive
    the day; it waits for every function to learn of it, too long for the demo.)"""
    out("== The archive: the day sealed as Parquet, verified, queried with DuckDB as Athena would")
    sealed = tool.show("archive", "seal", "--day", str(DAY), "--force").returncode == 0
    verified = tool.show("archive", "verify", "--start", RANGE_FROM, "--end", RANGE_TO).returncode == 0
    query = [str(Path(__file__).resolve().parents[1] / "archive-query"), "usage_by_sim", "--month", MONTH]
    out(f"$ scripts/archive-query usage_by_sim --month {MONTH}")
    month_end = dt.date(DAY.year + DAY.month // 12, DAY.month % 12 + 1, 1)

    def per_sim(rows) -> dict[str, tuple[int, int]]:
        """(bytes, events) per SIM: a SIM's rows of several accounts add up."""
        sums: dict[str, tuple[int, int]] = {}
        for row in rows:
            total, events = sums.get(row["sim_sid"], (0, 0))
            sums[row["sim_sid"]] = (total + int(row["data_total"]), events + int(row["usage_events"]))
        return sums

    try:
        result = subprocess.run(query, env=tool.env, capture_output=True, text=True, timeout=600)
        out(result.stdout.rstrip("\n") or f"(exit {result.returncode}: {result.stderr.strip()})")
        out()
        if not (sealed and verified and result.returncode == 0):
            return False
        lines = result.stdout.splitlines()
        header = lines[0].split(",") if lines else []
        archived = per_sim(dict(zip(header, line.split(","))) for line in lines[1:])
        ledger = per_sim(tool.json("usage", "--start", f"{MONTH}-01T00:00:00Z",
                                   "--end", f"{month_end}T00:00:00Z", "--group", "sim"))
    except (RuntimeError, ValueError, KeyError, subprocess.TimeoutExpired) as e:
        out(f"(the archive's check failed: {e})")
        return False
    if archived != ledger:
        out(f"(DuckDB's month per SIM {archived} is not kore-usage usage's {ledger})")
    return archived == ledger


def ledger_checks(tool: KoreUsage, expected: Expected, late: Event) -> dict[str, bool]:
    """The ledger against the generator: the day's totals per SIM (the generator's day, plus
    the late window once an earlier run stored it), the reconciliation, the session gap."""
    ours = set(expected.per_sim)
    try:
        got_day = rows_of(tool.json("report", "--period", DAY.isoformat()), ours)
        got_month = rows_of(tool.json("report", "--period", MONTH), ours)
        want = with_late(expected.per_sim, late) if late_stored(tool, late) else expected.per_sim
        totals_equal = got_day == want and got_month == want
        gaps = tool.json("sessions", "--sim", by_name("tracker-04").sim_sid, "--gaps")
        gap_ok = [(g["session_sid"], g["missing_bytes"]) for g in gaps] == [
            (expected.gap_session, expected.gap_missing)]
        rec = tool.json("reconcile", "--from", RANGE_FROM, "--to", RANGE_TO)
        our_sids = expected.both | expected.only_kore | expected.only_twilio
        rec_ok = (set(rec["only_kore"]) & our_sids == expected.only_kore
                  and set(rec["only_twilio"]) & our_sids == expected.only_twilio
                  and int(rec["both"]) >= len(expected.both))
    except (RuntimeError, ValueError, KeyError, subprocess.TimeoutExpired) as e:
        out(f"kore-usage failed: {e}")
        return {"the ledger answers": False}
    if not totals_equal:
        for label, got in (("day", got_day), ("month", got_month)):
            for sim_sid, row in want.items():
                if got.get(sim_sid) != row:
                    out(f"  {label} {sim_sid}: ledger {got.get(sim_sid)} != generator {row}")
    return {
        "usage totals per SIM equal the generator's": totals_equal,
        "reconciliation (KORE, Twilio, both) matches the generator": rec_ok,
        "the session gap is where the generator left it": gap_ok,
    }


def alert_rules(expected: Expected) -> dict:
    """Two rules whose thresholds the day crosses, from the generator's totals: each water
    meter's day reaching the median meter's, and the trackers' day reaching half, then all,
    of what the trackers use together."""
    meters = sorted(r["data_total"] for sid_, r in expected.per_sim.items()
                    if by_sim(sid_).fleet == "meters")
    trackers = sum(r["data_total"] for sid_, r in expected.per_sim.items()
                   if by_sim(sid_).fleet == "trackers")
    return {"rules": [
        {"id": "meters-daily", "kind": "usage", "fleet": FLEETS["meters"], "per": "sim",
         "period": "day", "thresholds": [meters[len(meters) // 2]]},
        {"id": "trackers-daily", "kind": "usage", "fleet": FLEETS["trackers"], "per": "total",
         "period": "day", "thresholds": [trackers // 2, trackers]},
    ]}


def by_sim(sim_sid: str) -> Sim:
    return next(s for s in SIMS if s.sim_sid == sim_sid)


def expected_alerts(rules: dict, per_sim: dict[str, dict[str, int]]) -> set[tuple[str, str, int]]:
    """(rule, subject, threshold) of every crossing, from the generator's totals."""
    crossings = set()
    for rule in rules["rules"]:
        in_fleet = {sid_: r["data_total"] for sid_, r in per_sim.items()
                    if by_sim(sid_).fleet_sid == rule["fleet"]}
        sums = in_fleet if rule["per"] == "sim" else {rule["fleet"]: sum(in_fleet.values())}
        for subject, total in sums.items():
            crossings |= {(rule["id"], subject, t) for t in rule["thresholds"] if total >= t}
    return crossings


def check_alerts(tool: KoreUsage, want: set[tuple[str, str, int]], timeout: float) -> bool:
    """Waits until the alerts of the demo's rules are the crossings the generator computed,
    each once, then lists them."""
    ids = {rule for rule, _, _ in want} | {"meters-daily", "trackers-daily"}
    deadline = time.monotonic() + timeout
    got: list = []
    while True:
        try:
            listed = tool.json("alerts", "list", "--start", RANGE_FROM, "--end", RANGE_TO)
        except (RuntimeError, ValueError, subprocess.TimeoutExpired) as e:
            out(f"kore-usage failed: {e}")
            return False
        got = [(a["rule_id"], a["subject"], int(a["threshold"])) for a in listed if a["rule_id"] in ids]
        if sorted(got) == sorted(want) or time.monotonic() > deadline:
            break
        time.sleep(1)
    tool.show("alerts", "list", "--start", RANGE_FROM, "--end", RANGE_TO)
    ok = sorted(got) == sorted(want)
    if not ok:
        out(f"  alerts {sorted(got)} != the generator's crossings {sorted(want)}")
    return ok


def close_day(tool: KoreUsage) -> bool:
    """`close --force` of the demo day (it waits for every function to learn of the close
    before it reads the snapshot); a second run finds the day closed already."""
    args = ("close", "--start", RANGE_FROM, "--end", RANGE_TO, "--force")
    out(f"$ kore-usage {' '.join(args)}")
    result = tool.run(*args, timeout=300)
    text = (result.stdout or result.stderr).strip()
    out(text)
    closed_before = result.returncode != 0 and "already closed" in result.stderr
    if closed_before:
        out("(an earlier run of the demo closed it: a period is closed once, and stays as it was)")
    out()
    return result.returncode == 0 or closed_before


def invoice_checks(tool: KoreUsage, expected: Expected, late: Event, verified: bool) -> dict[str, bool]:
    """The closed day against the generator: its snapshot holds the generator's day, the late
    window is its one adjustment, and verify-close (as the demo ran it) held."""
    ours = set(expected.per_sim)
    try:
        snapshot = tool.json("usage", "--start", RANGE_FROM, "--end", RANGE_TO, "--closed", "--group", "sim")
        snap = {r["sim_sid"]: {k: int(r[k]) for k in ("data_upload", "data_download", "data_total",
                                                       "usage_events")}
                for r in snapshot if r["sim_sid"] in ours}
        adjustments = tool.json("adjustments", "--start", RANGE_FROM, "--end", RANGE_TO)
    except (RuntimeError, ValueError, KeyError, subprocess.TimeoutExpired) as e:
        out(f"kore-usage failed: {e}")
        return {"the closed day reads back": False}
    return {
        "the closed day's snapshot equals the generator's day": snap == expected.per_sim,
        "the late window is the day's one adjustment, with its bytes": [
            (a["event_sid"], int(a["data_total"])) for a in adjustments] == [(late.event_sid, late.total)],
        "verify-close: snapshot + adjustments = the live ledger": verified,
    }


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
