"""`conveyor acl`: the Redis ACL users of each role, for servers the project does not start."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from shared.acl import DEFAULT_LEGACY_LISTS, acl_template, roles

acl_app = typer.Typer(
    help="Redis ACL users, one per role (producer, dispatcher, worker, autoscaler, keda, "
    "operator, exporter).",
    no_args_is_help=True,
)

NamespaceOption = Annotated[
    str, typer.Option(help="Key namespace (CONVEYOR_NAMESPACE); users are named after it.")
]
ListsOption = Annotated[
    list[str] | None,
    typer.Option(
        "--legacy-list", help="Legacy list names (default jobProduct, jobS2, jobLS, jobWater)."
    ),
]


@acl_app.command("template")
def template(namespace: NamespaceOption = "conveyor", legacy_list: ListsOption = None) -> None:
    """Print the ACL file with `<role-password-sha256>` where each password's SHA-256 goes.

    The Redis StatefulSet and Compose ship this text (for namespace `conveyor`) and fill in the
    digests from their secrets at start-up; render it again after changing the namespace.
    """
    typer.echo(acl_template(namespace, legacy_list or DEFAULT_LEGACY_LISTS), nl=False)


@acl_app.command("users")
def users(namespace: NamespaceOption = "conveyor", legacy_list: ListsOption = None) -> None:
    """Each role's user, what it is for, and its rules."""
    table = Table(title=f"Redis ACL users (namespace {namespace})")
    for column in ("user", "what it may do", "rules"):
        table.add_column(column, overflow="fold")
    for role in roles(namespace, legacy_list or DEFAULT_LEGACY_LISTS).values():
        table.add_row(role.username(namespace), role.purpose, role.rules())
    Console().print(table)
