"""The `conveyor` command: submit work, watch it, inspect and replay dead letters, run the demo."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from shared.catalogue import WATER_CLASSIFICATION
from shared.config import ConsumerSettings, QueueSettings
from shared.dead_letters import DeadLetters
from shared.errors import InvalidRequest
from shared.jobstate import JobStates
from shared.keys import DISPATCHER_GROUP, LEGACY_LISTS, POOLS, WORKER_GROUP, Keys
from shared.logging import configure_logging
from shared.messages import LANDSAT_SCENE, decode_fields, parse_request
from shared.redis_connection import open_queue
from shared.service import settings_or_exit
from shared.streams import ConsumerGroup, group_stats

app = typer.Typer(
    help="odc-conveyor: Earth-observation product generation on Redis Streams.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
dead_app = typer.Typer(help="Inspect and replay the dead-letter stream.", no_args_is_help=True)
app.add_typer(dead_app, name="dead")
console = Console()
SUBMIT_BATCH = 500


def _settings() -> ConsumerSettings:
    settings = settings_or_exit(ConsumerSettings)
    configure_logging("console", "WARNING")
    return settings


def _work_items(
    json_items: list[str], file: Path | None, fields: dict[str, str]
) -> Iterator[tuple[str, dict[str, Any]]]:
    """(label, body) of each item given on the command line or in a file (one JSON per line)."""
    for position, text in enumerate(json_items, start=1):
        yield f"argument {position}", _json_object(text, f"argument {position}")
    if file is not None:
        handle = sys.stdin if str(file) == "-" else file.open(encoding="utf-8")
        with handle:
            for number, line in enumerate(handle, start=1):
                if line.strip():
                    yield f"{file}:{number}", _json_object(line, f"{file}:{number}")
    if fields:
        yield "flags", dict(fields)


def _json_object(text: str, label: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise InvalidRequest(f"{label} is not JSON: {error}") from None
    if not isinstance(value, dict):
        raise InvalidRequest(f"{label} is a JSON {type(value).__name__}, expected an object")
    return value


def _parse_flags(pairs: Iterable[str]) -> dict[str, str]:
    fields: dict[str, str] = {}
    for pair in pairs:
        name, separator, value = pair.partition("=")
        if not separator or not name:
            raise typer.BadParameter(f"{pair!r} is not name=value")
        fields[name.strip()] = value
    return fields


@app.command()
def submit(
    items: Annotated[list[str] | None, typer.Argument(help="Work items as JSON objects.")] = None,
    file: Annotated[
        Path | None,
        typer.Option(
            "--file", "-f", help="A file of JSON work items, one per line ('-' for stdin)."
        ),
    ] = None,
    field: Annotated[
        list[str] | None, typer.Option("--field", "-F", help="One work item as name=value flags.")
    ] = None,
    check: Annotated[
        bool, typer.Option(help="Validate locally first and refuse invalid items with reasons.")
    ] = True,
    legacy: Annotated[
        bool,
        typer.Option(help="Push to the original Redis lists (jobProduct/jobS2/jobWater) instead."),
    ] = False,
) -> None:
    """Queue work items on the events stream (or the original lists with --legacy)."""
    settings = _settings()
    try:
        bodies = list(_work_items(items or [], file, _parse_flags(field or [])))
    except InvalidRequest as error:
        console.print(f"[red]refused:[/] {error}")
        raise typer.Exit(1) from None
    if not bodies:
        console.print("[yellow]nothing to submit[/]: give JSON items, --file or --field")
        raise typer.Exit(1)
    if check:
        problems = []
        for label, body in bodies:
            try:
                parse_request(body)
            except InvalidRequest as error:
                problems.append(f"{label}: {error}")
        if problems:
            for problem in problems:
                console.print(f"[red]refused[/] {problem}")
            console.print("nothing was submitted; fix these items or pass --no-check")
            raise typer.Exit(1)
    sent = asyncio.run(_submit(settings, [body for _label, body in bodies], legacy))
    console.print(f"submitted {sent} item{'s' if sent != 1 else ''}")


def legacy_list_for(body: dict[str, Any]) -> str:
    """The original list an item goes on: `jobLS` for a USGS Landsat scene, `jobS2` for any
    other scene, `jobWater` for a water classification, `jobProduct` for a product."""
    if "in_scene" in body:
        return "jobLS" if LANDSAT_SCENE.fullmatch(str(body["in_scene"]).strip()) else "jobS2"
    if str(body.get("job_code", "")).strip() == WATER_CLASSIFICATION:
        return "jobWater"
    return "jobProduct"


async def _submit(settings: QueueSettings, bodies: list[dict[str, Any]], legacy: bool) -> int:
    keys = Keys(settings.namespace)
    async with open_queue(settings) as redis:
        with _progress() as progress:
            task = progress.add_task("submitting", total=len(bodies))
            for start in range(0, len(bodies), SUBMIT_BATCH):
                pipe = redis.pipeline(transaction=False)
                for body in bodies[start : start + SUBMIT_BATCH]:
                    payload = json.dumps(body)
                    if legacy:
                        pipe.rpush(legacy_list_for(body), payload)
                    else:
                        pipe.xadd(keys.events, {"payload": payload, "_source": "cli"})
                await pipe.execute()
                progress.advance(task, min(SUBMIT_BATCH, len(bodies) - start))
    return len(bodies)


def _progress() -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    )


async def collect_status(settings: QueueSettings) -> dict[str, Any]:
    keys = Keys(settings.namespace)
    consumer_settings = (
        settings
        if isinstance(settings, ConsumerSettings)
        else ConsumerSettings.model_construct(namespace=settings.namespace)
    )
    # Workers renew every lease / 3 and dispatchers read every block_ms: a consumer not seen
    # for a whole lease is gone (killed, or stopped without leaving).
    live_within = consumer_settings.lease_seconds
    async with open_queue(settings) as redis:
        streams = []
        watched = [(keys.events, DISPATCHER_GROUP)] + [
            (keys.jobs(pool), WORKER_GROUP) for pool in POOLS
        ]
        for stream, group in watched:
            stats = await group_stats(redis, stream, group)
            consumers = await ConsumerGroup(
                redis, stream=stream, group=group, consumer="conveyor-cli", keys=keys,
                settings=consumer_settings,
            ).consumers()  # fmt: skip
            live = [c for c in consumers if c.idle_seconds < live_within]
            streams.append(
                {
                    "stream": stream,
                    "group": group,
                    "length": stats.length,
                    "lag": stats.lag,
                    "pending": stats.pending,
                    "consumers": len(live),
                    "live_consumers": [c.name for c in live],
                    "stale_consumers": len(consumers) - len(live),
                }
            )
        states = JobStates(redis, keys)
        legacy = {name: await redis.llen(name) for name in LEGACY_LISTS}  # type: ignore[misc]
        memory = await redis.info("memory")
        return {
            "namespace": settings.namespace,
            "streams": streams,
            "legacy_lists": legacy,
            "dead_letters": await redis.xlen(keys.dead),
            "results": await redis.xlen(keys.results),
            "jobs_by_state": await states.counts_by_state(),
            "recent_jobs": await states.recent(10),
            "server": {
                "used_memory": int(memory.get("used_memory", 0)),
                "used_memory_human": str(memory.get("used_memory_human", "")),
                "maxmemory": int(memory.get("maxmemory", 0)),
                "maxmemory_policy": str(memory.get("maxmemory_policy", "")),
            },
        }


@app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Streams (length, lag, pending, consumers), dead letters and job states."""
    report = asyncio.run(collect_status(_settings()))
    if as_json:
        typer.echo(json.dumps(report, indent=2, default=str))
        return
    table = Table(title=f"streams ({report['namespace']})")
    for column in ("stream", "group", "length", "lag", "pending", "consumers"):
        table.add_column(column, justify="left" if column in ("stream", "group") else "right")
    for row in report["streams"]:
        lag = "unknown" if row["lag"] is None else str(row["lag"])
        table.add_row(
            row["stream"], row["group"], str(row["length"]), lag, str(row["pending"]),
            str(row["consumers"]),
        )  # fmt: skip
    console.print(table)
    stale = sum(row["stale_consumers"] for row in report["streams"])
    if stale:
        console.print(
            f"consumers not seen for a lease and not counted above: {stale} "
            "(housekeeping removes them once they hold nothing)"
        )
    server = report["server"]
    limit = (
        f"of maxmemory {_bytes(server['maxmemory'])} ({server['maxmemory_policy']})"
        if server["maxmemory"]
        else "(no maxmemory set: set one, with noeviction)"
    )
    console.print(f"server memory: {_bytes(server['used_memory'])} {limit}")
    legacy = ", ".join(f"{name} {count}" for name, count in report["legacy_lists"].items())
    console.print(f"legacy lists: {legacy}")
    console.print(f"dead letters: {report['dead_letters']}   results: {report['results']}")
    states = ", ".join(
        f"{state} {count}" for state, count in sorted(report["jobs_by_state"].items())
    )
    console.print(f"jobs: {states or 'none'}")
    if report["recent_jobs"]:
        recent = Table(title="recent jobs")
        for column in ("job", "code", "tile", "period", "state", "attempts", "error"):
            recent.add_column(column)
        for job in report["recent_jobs"]:
            recent.add_row(
                job.get("job_id", "")[:12], job.get("job_code", ""),
                job.get("tile", job.get("scene", "")), job.get("period", ""),
                job.get("state", ""), job.get("attempts", ""), (job.get("error") or "")[:60],
            )  # fmt: skip
        console.print(recent)


@app.command()
def job(job_id: Annotated[str, typer.Argument(help="Job id (or a request id).")]) -> None:
    """Everything recorded about one job (state, attempts, stage timings, outputs, error)."""
    record = asyncio.run(_job(_settings(), job_id))
    if record is None:
        console.print(
            f"[red]no job or request {job_id!r}[/] in this namespace (finished records expire "
            "after CONVEYOR_RECORD_RETENTION_SECONDS)"
        )
        raise typer.Exit(1)
    typer.echo(json.dumps(record, indent=2, default=str))


async def _job(settings: QueueSettings, job_id: str) -> dict[str, Any] | None:
    async with open_queue(settings) as redis:
        states = JobStates(redis, Keys(settings.namespace))
        return await states.get(job_id) or await states.request(job_id)


@dead_app.command("list")
def dead_list(
    limit: Annotated[int, typer.Option(help="How many, newest first.")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Dead letters with their reason, job and original payload."""
    entries = asyncio.run(_dead_entries(_settings(), limit))
    if as_json:
        typer.echo(json.dumps(entries, indent=2))
        return
    table = Table(title="dead letters")
    for column in ("id", "reason", "stream", "job", "attempts", "error", "payload"):
        table.add_column(column, overflow="fold")
    for entry in entries:
        table.add_row(
            entry["id"], entry["reason"], entry["stream"], entry.get("job_id", "")[:12],
            entry["attempts"], entry["error"], entry.get("payload", ""),
        )  # fmt: skip
    console.print(table)


async def _dead_entries(settings: QueueSettings, limit: int) -> list[dict[str, str]]:
    async with open_queue(settings) as redis:
        letters = await DeadLetters(redis, Keys(settings.namespace)).newest(limit)
    return [{"id": letter.id, **letter.fields} for letter in letters]


@dead_app.command("replay")
def dead_replay(
    entry_ids: Annotated[
        list[str] | None, typer.Argument(help="Dead-letter ids to replay.")
    ] = None,
    replay_all: Annotated[bool, typer.Option("--all", help="Replay every dead letter.")] = False,
) -> None:
    """Put dead letters back on the stream they came from (after fixing their cause).

    A job recorded dead is reopened (queued again, no longer counted by its request).
    """
    if not entry_ids and not replay_all:
        console.print("give dead-letter ids or --all")
        raise typer.Exit(1)
    replayed = asyncio.run(_replay(_settings(), entry_ids or [], replay_all))
    console.print(f"replayed {replayed}")


async def _replay(settings: QueueSettings, entry_ids: list[str], replay_all: bool) -> int:
    async with open_queue(settings) as redis:
        dead = DeadLetters(redis, Keys(settings.namespace))
        replayed = 0
        for letter in await dead.select(entry_ids, every=replay_all):
            if letter.fields.get("reason") == "entry_deleted":
                console.print(
                    f"[yellow]not replayed[/] {letter.id}: its entry was deleted while pending "
                    "and its payload is gone; submit the request again"
                )
                continue
            if await dead.replay(letter) is not None:
                replayed += 1
        return replayed


@dead_app.command("purge")
def dead_purge(
    entry_ids: Annotated[list[str] | None, typer.Argument(help="Dead-letter ids to purge.")] = None,
    purge_all: Annotated[bool, typer.Option("--all", help="Purge every dead letter.")] = False,
    older_than_days: Annotated[
        float | None, typer.Option(help="Purge dead letters older than this many days.")
    ] = None,
) -> None:
    """Delete dead letters for good (their jobs stay recorded as dead)."""
    if not entry_ids and not purge_all and older_than_days is None:
        console.print("give dead-letter ids, --all or --older-than-days")
        raise typer.Exit(1)
    purged = asyncio.run(_purge(_settings(), entry_ids or [], purge_all, older_than_days))
    console.print(f"purged {purged}")


async def _purge(
    settings: QueueSettings, entry_ids: list[str], purge_all: bool, older_than_days: float | None
) -> int:
    async with open_queue(settings) as redis:
        dead = DeadLetters(redis, Keys(settings.namespace))
        letters = await dead.select(entry_ids, every=purge_all or older_than_days is not None)
        if older_than_days is not None:
            letters = [letter for letter in letters if letter.age_seconds > older_than_days * 86400]
        return await dead.purge(letters)


@app.command()
def validate(
    file: Annotated[Path, typer.Argument(help="A file of JSON work items, one per line.")],
) -> None:
    """Check work items without submitting them; prints the reason for each invalid one."""
    invalid = 0
    with file.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                parse_request(decode_fields({"payload": line}))
            except InvalidRequest as error:
                invalid += 1
                console.print(f"{file}:{number}: [red]{error}[/]")
    console.print(f"{invalid} invalid")
    raise typer.Exit(1 if invalid else 0)


@app.command()
def demo(
    state_dir: Annotated[
        Path | None,
        typer.Option(
            help="Where the demo keeps its servers' data (default CONVEYOR_STATE_DIR, "
            "`.conveyor`: the one every `conveyor` command uses, so `conveyor status` "
            "afterwards shows the demo's jobs)."
        ),
    ] = None,
    output: Annotated[Path, typer.Option(help="Where products are written.")] = Path("demo-output"),
) -> None:
    """Start the embedded servers, push the original work items, and run them to products."""
    from services.cli.demo import run_demo

    raise typer.Exit(run_demo(state_dir=demo_state_dir(state_dir), output=output, console=console))


def demo_state_dir(given: Path | None) -> Path:
    """The demo's state directory: the one given, else the one every command uses."""
    return given if given is not None else QueueSettings().state_dir


@app.command()
def stop(
    state_dir: Annotated[
        Path, typer.Option(help="State directory of the embedded servers.")
    ] = Path(".conveyor"),
) -> None:
    """Stop embedded servers left running under the state directory."""
    from shared.embedded import stop_embedded_servers

    for line in stop_embedded_servers(state_dir):
        console.print(line)


def _mount_sub_apps() -> None:
    # Imported here, after `app` exists: the sub-apps are plain typer apps of their own modules.
    from services.cli.acl import acl_app
    from services.cli.archive import archive_app
    from services.cli.autoscaler import autoscaler_app

    app.add_typer(acl_app, name="acl")
    app.add_typer(archive_app, name="archive")
    app.add_typer(autoscaler_app, name="autoscaler")


_mount_sub_apps()


def _bytes(count: int) -> str:
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{int(size)} B"
        size /= 1024
    return f"{size:.1f} GiB"
