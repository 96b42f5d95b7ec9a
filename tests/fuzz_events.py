"""Generated hostile events, and a harness that sends them through a live dispatcher process.

`hostile_events()` draws events each invalid in one way by construction: wrong types, non-finite
and huge numbers, bad dates, traversal and control characters in every path-like field, unknown
fields, huge and deeply nested JSON, bytes that are not UTF-8, requests over a limit, places the
operator has not allowed, and names that do not match. Each is built from a valid item with a
unique prefix, so nothing is refused for being a duplicate, and sent as bytes (JSON payload,
flat fields, or `RPUSH` onto a legacy list).

`FuzzRun` starts a dispatcher process on a real server, sends batches of hostile events mixed
with valid ones, waits until the dispatcher has settled, and checks after every batch:

- the dispatcher is alive and logged no unexpected error (a crash);
- every hostile event has exactly one dead letter, on its first delivery, with a reason;
- every valid event's job is in its stream, and no valid event was refused;
- the dispatcher's resident memory (sampled every 20 ms) stayed under the ceiling.

Used by `tests/test_dispatcher_fuzz.py` (a short run in `make test`) and `scripts/fuzz.py`
(`make fuzz`, the full count, with the figures printed).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
from hypothesis import strategies as st

from shared.keys import Keys
from tests.processes import ServiceProcess, service_env

SCENE_NAME = "S2A_MSIL2A_20190812T235741_N0213_R030_T56LRR_20190813T014708"
REFUSAL_REASONS = frozenset({"invalid_request", "over_limit", "not_allowed"})
PRODUCT_FIELDS = (
    "job_code", "product", "query_x_from", "query_y_from", "query_x_to", "query_y_to",
    "query_crs", "time_from", "time_to", "output_crs", "prefix",
)  # fmt: skip
KNOWN_FIELDS = frozenset(
    {
        *PRODUCT_FIELDS, "latitude_from", "latitude_to", "longitude_from", "longitude_to",
        "resolution", "bucket", "naming", "epsg4326_naming", "cogeo_output", "dask_chunk_size",
        "dask_time_chunk_size", "dask_x_chunk_size", "dask_y_chunk_size", "time_step",
        "tide_range_from", "tide_range_to", "options", "in_scene", "inter_dir", "s3_bucket",
        "s3_dir", "prodlevel", "source",
    }
)  # fmt: skip
NUMERIC_FIELDS = (
    "query_x_from", "query_y_from", "query_x_to", "query_y_to", "resolution",
    "dask_chunk_size", "dask_x_chunk_size", "dask_time_chunk_size",
)  # fmt: skip
STRING_FIELDS = ("job_code", "product", "query_crs", "time_from", "output_crs", "prefix")
SCENE_STRING_FIELDS = ("in_scene", "inter_dir", "s3_dir", "s3_bucket", "prodlevel")
UNSAFE_CHARACTERS = (
    "\x00", "\n", "\r", "\t", "\x1b", "\x7f", "\x85", "\u200b", "\u202e", "\ufeff", "\ue000",
    "\udcff",
)  # fmt: skip
# 11 x 6 whole 96 km tiles of EPSG:3460.
SIXTY_SIX_TILES = {
    "query_x_from": "2112000", "query_x_to": "3168000",
    "query_y_from": "3456000", "query_y_to": "4032000",
}  # fmt: skip


def product_item(number: int, run: str) -> dict[str, Any]:
    """A valid one-cell request (a 3 km square inside one 19.2 km cell of the seed box), unique
    by its prefix."""
    x = 2131200 + (number % 30) // 6 * 19200 + (number % 6) * 3000
    return {
        "job_code": "geomedian",
        "product": "ls8_usgs_sr_scene",
        "query_x_from": str(float(x)),
        "query_y_from": "3499700.0",
        "query_x_to": str(float(x + 3000)),
        "query_y_to": "3502700.0",
        "query_crs": "EPSG:3460",
        "time_from": "2019-01-01",
        "time_to": "2019-12-31",
        "output_crs": "EPSG:3460",
        # Fixed width: the strategies' bounds (e.g. where to cut) must not vary with `number`.
        "prefix": f"fuzz/{run}/{number:09d}",
    }


def scene_item(number: int, run: str) -> dict[str, Any]:
    return {
        "in_scene": SCENE_NAME,
        "inter_dir": "/data/intermediate/",
        "s3_dir": f"{run}/{number:09d}",
    }


@dataclass(frozen=True)
class Event:
    """One event as sent: fields of an `XADD`, or one item `RPUSH`ed onto a legacy list."""

    fields: dict[bytes, bytes] | None = None
    legacy_list: str | None = None
    item: bytes | None = None
    kind: str = "valid"

    @property
    def size(self) -> int:
        if self.fields is not None:
            return sum(len(name) + len(value) for name, value in self.fields.items())
        return len(self.item or b"")


def _encode(body: dict[str, Any], form: str) -> Event:
    if form == "flat":
        return Event(
            fields={
                str(k).encode(): _flat(v).encode("utf-8", "surrogatepass") for k, v in body.items()
            }
        )
    payload = json.dumps(body).encode()
    if form == "legacy":
        return Event(legacy_list="jobS2" if "in_scene" in body else "jobProduct", item=payload)
    return Event(fields={form.encode(): payload})


def _flat(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


@st.composite
def valid_events(draw: st.DrawFn, number: int, run: str) -> Event:
    body = scene_item(number, run) if draw(st.integers(0, 4)) == 0 else product_item(number, run)
    return _encode(body, draw(st.sampled_from(["payload", "json", "flat", "legacy"])))


def _not_a_date(text: str) -> bool:
    from datetime import date

    try:
        day = date.fromisoformat(text)
    except ValueError:
        return True
    return not (len(text) == 10 and date(1970, 1, 1) <= day <= date(2099, 12, 31))


HOSTILE_NUMBERS = st.one_of(
    st.sampled_from(["nan", "NaN", "-nan", "inf", "-inf", "Infinity", "1e400", "-1e400", ""]),
    st.floats(min_value=1e9, max_value=1e308).map(repr),
    st.floats(min_value=1e9, max_value=1e308).map(lambda value: repr(-value)),
    st.integers(min_value=10**9, max_value=10**300),
    st.integers(min_value=10**9, max_value=10**300).map(str),
    st.text(st.characters(codec="utf-8"), min_size=1, max_size=12).filter(
        lambda text: not _parses_as_float(text)
    ),
)
BROKEN_PATHS = st.one_of(
    st.tuples(st.sampled_from(["a", "fiji", "x/y"]), st.sampled_from(["..", "."])).map(
        lambda pair: f"{pair[0]}/{pair[1]}/z"
    ),
    st.sampled_from(["../etc", "./x", "a//b", "a\\b", "..", "x/../../y", "a/./b", "\\\\srv\\x"]),
    st.tuples(st.sampled_from(["fiji/x", "a"]), st.sampled_from(UNSAFE_CHARACTERS)).map(
        lambda pair: pair[0] + pair[1] + "/z"
    ),
    st.integers(1100, 5000).map(lambda length: "a/" * (length // 2)),
)


def _parses_as_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


@st.composite
def hostile_events(draw: st.DrawFn, number: int, run: str) -> Event:
    """One event, invalid in exactly one way, drawn from every kind of hostile input."""
    product = product_item(number, run)
    scene = scene_item(number, run)
    form = draw(st.sampled_from(["payload", "payload", "data", "flat", "legacy"]))
    kind = draw(
        st.sampled_from(
            [
                "wrong_type", "number", "date", "path", "control", "unknown_field", "huge",
                "nested", "not_utf8", "over_limit", "not_allowed", "bad_name", "not_an_object",
                "missing", "bad_json",
            ]
        )
    )  # fmt: skip
    body: dict[str, Any] = dict(product)
    if kind == "wrong_type":
        form = "payload" if form == "flat" else form
        name = draw(st.sampled_from(sorted(PRODUCT_FIELDS)))
        body[name] = draw(st.lists(st.integers(), max_size=3) | st.just({"nested": [1]}))
    elif kind == "number":
        body[draw(st.sampled_from(NUMERIC_FIELDS))] = draw(HOSTILE_NUMBERS)
    elif kind == "date":
        body[draw(st.sampled_from(["time_from", "time_to"]))] = draw(
            st.one_of(
                st.sampled_from(
                    [
                        "1969-12-31",
                        "2100-01-01",
                        "9999-12-31",
                        "2019-02-30",
                        "20190101",
                        "2019-W01-1",
                        "2019-1-1",
                        "0000-00-00",
                    ]
                ),
                st.text(max_size=12).filter(_not_a_date),
            )
        )
    elif kind == "path":
        target = draw(st.sampled_from(["prefix", "s3_dir", "inter_dir", "source"]))
        broken = draw(BROKEN_PATHS)
        if target == "prefix":
            body["prefix"] = broken
        else:
            body = dict(scene)
            body[target] = ("/" + broken) if target in ("inter_dir", "source") else broken
    elif kind == "control":
        if draw(st.booleans()):
            name = draw(st.sampled_from(STRING_FIELDS))
        else:
            body = dict(scene)
            name = draw(st.sampled_from(SCENE_STRING_FIELDS))
        text = str(body.get(name) or "x")
        at = draw(st.integers(0, len(text)))
        body[name] = text[:at] + draw(st.sampled_from(UNSAFE_CHARACTERS)) + text[at:]
    elif kind == "unknown_field":
        names = st.text(
            st.characters(codec="utf-8", exclude_characters="\x00"), min_size=1, max_size=20
        )
        name = draw(names.filter(lambda n: n not in KNOWN_FIELDS and not n.startswith("_")))
        body[name] = draw(st.text(max_size=10))
    elif kind == "huge":
        size = draw(st.sampled_from([70_000, 300_000, 1_000_000, 4_000_000]))
        body["prefix"] = "fuzz/" + "x" * size
    elif kind == "nested":
        form = "payload"
        depth = draw(st.integers(5, 20_000))
        return Event(fields={b"payload": ("[" * depth + "]" * depth).encode()}, kind=kind)
    elif kind == "not_utf8":
        return _not_utf8(draw, _encode(body, form), kind)
    elif kind == "over_limit":
        body.update(
            draw(
                st.sampled_from(
                    [
                        SIXTY_SIX_TILES | {"time_step": "1D", "job_code": "shoreline",
                                           "time_from": "2015-01-01"},
                        {"naming": "legacy", "query_x_from": "-10000000",
                         "query_x_to": "10000000", "query_y_from": "3000000"},
                        {"dask_x_chunk_size": "1"},
                        {"dask_chunk_size": "63"},
                        {"resolution": "0.001"},
                        {"time_step": "1D", "time_from": "1990-01-01"},
                    ]
                )
            )
        )  # fmt: skip
    elif kind == "not_allowed":
        bucket = draw(st.from_regex(r"[a-z][a-z0-9-]{2,20}", fullmatch=True))
        choice = draw(st.integers(0, 2))
        if choice == 0:
            body["bucket"] = "x" + bucket if bucket == "public-eo-data" else bucket
        else:
            body = dict(scene)
            if choice == 1:
                body["s3_bucket"] = "x" + bucket if bucket == "public-eo-data" else bucket
            else:
                body["source"] = draw(st.sampled_from(["/etc", "/data/archive", "s3://other/s2"]))
    elif kind == "bad_name":
        choice = draw(st.integers(0, 3))
        if choice == 0:
            body = dict(scene)
            at = draw(st.integers(0, len(SCENE_NAME) - 1))
            body["in_scene"] = SCENE_NAME[:at] + draw(st.sampled_from(["x", "_", "-", ""]))
        elif choice == 1:
            body["job_code"] = draw(
                st.sampled_from(["mosaic", "Geomedian", "geo median", "x" * 65])
            )
        elif choice == 2:
            body["product"] = draw(st.sampled_from(["ls9_sr", "LS8_USGS_SR_SCENE", "s2"]))
        else:
            body[draw(st.sampled_from(["output_crs", "query_crs"]))] = draw(
                st.sampled_from(["EPSG:0", "EPSG:99999999", "+proj=longlat", "WGS84", "epsg"])
            )
    elif kind == "not_an_object":
        form = draw(st.sampled_from(["payload", "legacy"]))
        value = draw(st.one_of(st.lists(st.integers(), max_size=3), st.integers(), st.text()))
        encoded = json.dumps(value).encode()
        if form == "legacy":
            return Event(legacy_list="jobProduct", item=encoded, kind=kind)
        return Event(fields={b"payload": encoded}, kind=kind)
    elif kind == "missing":
        del body[draw(st.sampled_from(PRODUCT_FIELDS))]
    else:  # bad_json
        text = json.dumps(body)
        cut = draw(st.integers(1, len(text) - 1))
        broken = draw(
            st.sampled_from(
                [text[:cut], text.replace('"prefix"', "prefix"), text + "}", "{" + text]
            )
        )
        if draw(st.booleans()):
            broken = text.replace(
                '"3499700.0"', draw(st.sampled_from(["NaN", "Infinity", "1e400"]))
            )
        return Event(fields={b"payload": broken.encode()}, kind=kind)
    event = _encode(body, form)
    return Event(event.fields, event.legacy_list, event.item, kind)


def _not_utf8(draw: st.DrawFn, event: Event, kind: str) -> Event:
    """`event` with bytes that are not UTF-8 put into a field name or value."""
    bad = draw(st.sampled_from([b"\xff", b"\xfe\xff", b"\xc3", b"\xc3\x28", b"\xe2\x82", b"\x80"]))
    if event.fields is None:
        assert event.item is not None
        at = draw(st.integers(0, len(event.item)))
        return Event(
            legacy_list=event.legacy_list, item=event.item[:at] + bad + event.item[at:], kind=kind
        )
    names = sorted(event.fields)
    name = draw(st.sampled_from(names))
    fields = dict(event.fields)
    if draw(st.booleans()):
        value = fields[name]
        at = draw(st.integers(0, len(value)))
        fields[name] = value[:at] + bad + value[at:]
    else:
        fields[name + bad] = fields.pop(name)
    return Event(fields=fields, kind=kind)


# -- the harness -------------------------------------------------------------------------------


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


class MemorySampler:
    """The peak resident memory of one process, sampled every `interval` seconds."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.pid = pid
        self.interval = interval
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.peak = max(self.peak, rss_bytes(self.pid))
            except (FileNotFoundError, ProcessLookupError):
                return
            self._stop.wait(self.interval)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class Tally:
    hostile: int = 0
    valid: int = 0
    refused_first_delivery: int = 0
    refused_later: int = 0
    valid_dispatched: int = 0
    valid_refused: int = 0
    crashes: int = 0
    batches: int = 0
    bytes_sent: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)
    by_reason: dict[str, int] = field(default_factory=dict)
    peak_rss: int = 0
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)

    def lines(self) -> Iterator[str]:
        rejected = 100.0 * self.refused_first_delivery / self.hostile if self.hostile else 0.0
        yield f"malformed events sent               {self.hostile:,}"
        yield f"valid events sent                   {self.valid:,}"
        yield f"crashes                             {self.crashes}"
        yield (
            f"dead-lettered on first delivery     {self.refused_first_delivery:,} "
            f"({rejected:.1f} %)"
        )
        yield f"dead-lettered after a retry         {self.refused_later}"
        yield f"valid events dispatched             {self.valid_dispatched:,} of {self.valid:,}"
        yield f"valid events refused                {self.valid_refused}"
        yield f"dispatcher peak RSS                 {self.peak_rss / 2**20:.0f} MiB"
        yield f"bytes sent                          {self.bytes_sent / 2**20:.1f} MiB"
        yield f"batches, seconds                    {self.batches}, {self.seconds:.0f} s"
        yield "by kind: " + ", ".join(f"{k} {v}" for k, v in sorted(self.by_kind.items()))
        yield "by reason: " + ", ".join(f"{k} {v}" for k, v in sorted(self.by_reason.items()))


class FuzzRun:
    """A live dispatcher, the events sent to it so far, and what became of them."""

    def __init__(
        self, service: ServiceProcess, client: redis.Redis, keys: Keys, run: str,
        rss_ceiling: int = 400 * 2**20,
    ) -> None:  # fmt: skip
        self.service = service
        self.client = client
        self.keys = keys
        self.run = run
        self.rss_ceiling = rss_ceiling
        self.tally = Tally()
        self.numbers = iter(range(10**9))
        self.sampler = MemorySampler(service.process.pid)
        self.started = time.monotonic()

    def next_number(self) -> int:
        return next(self.numbers)

    def send_batch(self, events: list[Event]) -> None:
        """Send `events`, wait until the dispatcher has handled them, and check each outcome."""
        dead_before = self.client.xlen(self.keys.dead)
        jobs_before = sum(self.client.xlen(self.keys.jobs(pool)) for pool in ("product", "ard"))
        last_dead = self._last_id(self.keys.dead)
        pipe = self.client.pipeline(transaction=False)
        for event in events:
            if event.fields is not None:
                pipe.xadd(self.keys.events, event.fields)  # type: ignore[arg-type]
            else:
                pipe.rpush(event.legacy_list or "jobProduct", event.item or b"")
        replies = pipe.execute()
        stream_ids = {
            reply.decode(): event
            for reply, event in zip(replies, events, strict=True)
            if event.fields is not None
        }
        self._wait_for_settled()
        self.tally.batches += 1
        self.tally.bytes_sent += sum(event.size for event in events)
        hostile = [event for event in events if event.kind != "valid"]
        valid = [event for event in events if event.kind == "valid"]
        self.tally.hostile += len(hostile)
        self.tally.valid += len(valid)
        for event in hostile:
            self.tally.by_kind[event.kind] = self.tally.by_kind.get(event.kind, 0) + 1

        if self.service.process.poll() is not None:
            self.tally.crashes += 1
            self.tally.problems.append(f"the dispatcher exited ({self.service.process.returncode})")
        letters = self.client.xrange(self.keys.dead, min=f"({last_dead}" if last_dead else "-")
        refused_entries = set()
        for _id, fields in letters:
            text = {k.decode(): v.decode("utf-8", "replace") for k, v in fields.items()}
            entry = text.get("entry_id", "")
            refused_entries.add(entry)
            reason = text.get("reason", "")
            self.tally.by_reason[reason] = self.tally.by_reason.get(reason, 0) + 1
            if stream_ids.get(entry, Event(kind="hostile")).kind == "valid":
                self.tally.valid_refused += 1
                self.tally.problems.append(f"a valid event was refused: {text.get('error')}")
                continue
            if text.get("attempts") == "1" and reason in REFUSAL_REASONS and text.get("error"):
                self.tally.refused_first_delivery += 1
            else:
                self.tally.refused_later += 1
                self.tally.problems.append(
                    f"refused late or without a reason: {reason} attempt {text.get('attempts')}: "
                    f"{text.get('error', '')[:200]}"
                )
        for entry, event in stream_ids.items():
            if event.kind != "valid" and entry not in refused_entries:
                self.tally.problems.append(f"a {event.kind} event was not dead-lettered: {entry}")
        new_letters = self.client.xlen(self.keys.dead) - dead_before
        if new_letters != len(hostile):
            self.tally.problems.append(
                f"{new_letters} dead letters for {len(hostile)} malformed events in a batch"
            )
        jobs_after = sum(self.client.xlen(self.keys.jobs(pool)) for pool in ("product", "ard"))
        self.tally.valid_dispatched += jobs_after - jobs_before
        if jobs_after - jobs_before != len(valid):
            self.tally.problems.append(
                f"{jobs_after - jobs_before} jobs for {len(valid)} valid events in a batch"
            )
        unexpected = self._unexpected_errors()
        if unexpected:
            self.tally.crashes += unexpected
            self.tally.problems.append(f"{unexpected} unexpected errors in the dispatcher's log")
        self.tally.peak_rss = self.sampler.peak
        self.tally.seconds = time.monotonic() - self.started

    def _last_id(self, stream: str) -> str | None:
        last = self.client.xrevrange(stream, count=1)
        return last[0][0].decode() if last else None

    def _wait_for_settled(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.service.process.poll() is not None:
                return
            lists_empty = all(self.client.llen(name) == 0 for name in ("jobProduct", "jobS2"))
            groups = self.client.xinfo_groups(self.keys.events)
            if lists_empty and groups and groups[0]["lag"] == 0 and groups[0]["pending"] == 0:
                return
            time.sleep(0.01)
        raise AssertionError("the dispatcher did not settle within the deadline")

    _log_offset = 0

    def _unexpected_errors(self) -> int:
        output = self.service.output
        fresh, self._log_offset = output[self._log_offset :], len(output)
        markers = ("Traceback", "event failed; will retry", "should have refused it")
        return sum(fresh.count(marker) for marker in markers)


@contextmanager
def live_dispatcher(
    redis_url: str, namespace: str, log_path: Path, **extra_env: str
) -> Iterator[tuple[ServiceProcess, redis.Redis, Keys]]:
    """A dispatcher process on `redis_url` (its defaults: limits, allow-lists, strict fields)."""
    from tests.processes import running_service

    env = service_env(
        redis_url, namespace, CONVEYOR_BLOCK_MS="50", CONVEYOR_BATCH_SIZE="200",
        CONVEYOR_LEASE_SECONDS="30", **extra_env,
    )  # fmt: skip
    client = redis.Redis.from_url(redis_url)
    client.delete("jobProduct", "jobS2")
    with running_service("services.dispatcher", env, log_path) as service:
        deadline = time.monotonic() + 60
        while not client.exists(Keys(namespace).events):
            if time.monotonic() > deadline or service.process.poll() is not None:
                raise AssertionError(f"the dispatcher did not start:\n{service.output[-2000:]}")
            time.sleep(0.05)
        yield service, client, Keys(namespace)
    client.close()


def fuzz_batches(
    run: FuzzRun, batches: int, batch_size: int, valid_per_batch: int = 2
) -> Callable[[], None]:
    """A hypothesis test sending `batches` batches of `batch_size` hostile events (plus valid
    ones); call it to run them. Each batch's checks land in `run.tally`."""
    from hypothesis import HealthCheck, given, settings

    @settings(
        max_examples=batches, deadline=None, database=None,
        suppress_health_check=list(HealthCheck),
    )  # fmt: skip
    @given(data=st.data())
    def send(data: st.DataObject) -> None:
        events = [data.draw(hostile_events(run.next_number(), run.run)) for _ in range(batch_size)]
        for _ in range(valid_per_batch):
            position = data.draw(st.integers(0, len(events)))
            events.insert(position, data.draw(valid_events(run.next_number(), run.run)))
        run.send_batch(events)

    return send
