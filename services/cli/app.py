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
from shared.config import QueueSettings
from shared.errors import InvalidRequest
from shared.jobstate import JobStates
from shared.keys import DISPATCHER_GROUP, LEGACY_LISTS, POOLS, WORKER_GROUP, Keys
from shared.logging import configure_logging
from shared.messages import decode_fields, parse_request
from shared.redis_connection import open_queue
from shared.streams import decode_payload, group_stats

app = typer.Typer(
    help="odc-conveyor: Earth-observation product generation on Redis Streams.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
dead_app = typer.Typer(help="Inspect and replay the dead-letter stream.", no_args_is_help=True)
app.add_typer(dead_app, name="dead")
console = Console()
SUBMIT_BATCH = 500


def _settings() -> QueueSettings:
    settings = QueueSettings()
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
    """The original list an item goes on: `jobS2` for a scene, `jobWater` for a water
    classification, `jobProduct` for a product."""
    if "in_scene" in body:
        return "jobS2"
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
    async with open_queue(settings) as redis:
        streams = []
        watched = [(keys.events, DISPATCHER_GROUP)] + [
            (keys.jobs(pool), WORKER_GROUP) for pool in POOLS
        ]
        for stream, group in watched:
            stats = await group_stats(redis, stream, group)
            streams.append(
                {
                    "stream": stream,
                    "group": group,
                    "length": stats.length,
                    "lag": stats.lag,
                    "pending": stats.pending,
                    "consumers": stats.consumers,
                }
            )
        states = JobStates(redis, keys)
        legacy = {name: await redis.llen(name) for name in LEGACY_LISTS}  # type: ignore[misc]
        return {
            "namespace": settings.namespace,
            "streams": streams,
            "legacy_lists": legacy,
            "dead_letters": await redis.xlen(keys.dead),
            "results": await redis.xlen(keys.results),
            "jobs_by_state": await states.counts_by_state(),
            "recent_jobs": await states.recent(10),
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
        console.print(f"[red]no job or request {job_id!r}[/] in this namespace")
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
    """Dead letters with their reason and original payload."""
    entries = asyncio.run(_dead_entries(_settings(), limit))
    if as_json:
        typer.echo(json.dumps(entries, indent=2))
        return
    table = Table(title="dead letters")
    for column in ("id", "reason", "stream", "attempts", "error", "payload"):
        table.add_column(column, overflow="fold")
    for entry in entries:
        table.add_row(
            entry["id"], entry["reason"], entry["stream"], entry["attempts"], entry["error"],
            entry.get("payload", ""),
        )  # fmt: skip
    console.print(table)


async def _dead_entries(settings: QueueSettings, limit: int) -> list[dict[str, str]]:
    async with open_queue(settings) as redis:
        raw = await redis.xrevrange(Keys(settings.namespace).dead, count=limit)
    return [{"id": entry_id, **fields} for entry_id, fields in raw]


@dead_app.command("replay")
def dead_replay(
    entry_ids: Annotated[
        list[str] | None, typer.Argument(help="Dead-letter ids to replay.")
    ] = None,
    replay_all: Annotated[bool, typer.Option("--all", help="Replay every dead letter.")] = False,
) -> None:
    """Put dead letters back on the stream they came from (after fixing their cause)."""
    if not entry_ids and not replay_all:
        console.print("give dead-letter ids or --all")
        raise typer.Exit(1)
    replayed = asyncio.run(_replay(_settings(), entry_ids or [], replay_all))
    console.print(f"replayed {replayed}")


async def _replay(settings: QueueSettings, entry_ids: list[str], replay_all: bool) -> int:
    keys = Keys(settings.namespace)
    async with open_queue(settings) as redis:
        if replay_all:
            entries = await redis.xrange(keys.dead)
        else:
            entries = []
            for entry_id in entry_ids:
                entries.extend(await redis.xrange(keys.dead, entry_id, entry_id))
        for entry_id, fields in entries:
            pipe = redis.pipeline(transaction=True)
            pipe.xadd(fields["stream"], decode_payload(fields))  # type: ignore[arg-type]
            pipe.xdel(keys.dead, entry_id)
            await pipe.execute()
        return len(entries)


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
    state_dir: Annotated[Path, typer.Option(help="Where the demo keeps its servers' data.")] = Path(
        ".conveyor/demo"
    ),
    output: Annotated[Path, typer.Option(help="Where products are written.")] = Path("demo-output"),
) -> None:
    """Start the embedded servers, push the original work items, and run them to products."""
    from services.cli.demo import run_demo

    raise typer.Exit(run_demo(state_dir=state_dir, output=output, console=console))


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
