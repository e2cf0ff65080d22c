"""``cryptoorch users``: the operator's user administration (list, create, roles, deactivate).

Runs against the database of the settings (``CRYPTOORCH_DATABASE_URL``), as the machine's
operator: whoever can run this already holds the database.  Changing a role or deactivating
a user ends their sessions (their access tokens' epoch is bumped, refresh tokens revoked).
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

app = typer.Typer(help="Users and their roles (admin, trader, viewer).", no_args_is_help=True)

RoleOption = Annotated[
    str, typer.Option("--role", help="admin, trader or viewer.", case_sensitive=False)
]


@app.command("list")
def list_users() -> None:
    """List every user with their role and whether they are active."""
    from sqlalchemy import select

    from cryptoorchestrator.platform.settings import get_settings
    from cryptoorchestrator.platform.storage.db import session_scope
    from cryptoorchestrator.platform.storage.models import User

    with session_scope(get_settings()) as session:
        rows = session.execute(
            select(User.id, User.email, User.role, User.is_active).order_by(User.id)
        ).all()
    typer.echo(f"{'id':>5}  {'role':<7}  {'active':<6}  email")
    for uid, email, role, active in rows:
        typer.echo(f"{uid:>5}  {role:<7}  {'yes' if active else 'no':<6}  {email}")


@app.command("set-role")
def set_role(
    email: Annotated[str, typer.Argument(help="The user's email.")],
    role: Annotated[str, typer.Argument(help="admin, trader or viewer.")],
) -> None:
    """Give EMAIL the ROLE; their current tokens stop working."""
    from cryptoorchestrator.platform.services import roles
    from cryptoorchestrator.platform.settings import get_settings
    from cryptoorchestrator.platform.storage.db import session_scope

    with session_scope(get_settings()) as session:
        user = roles.set_role(session, email, role.lower())
        typer.echo(f"{user.email}: role {user.role}")


def _first_line_of_stdin() -> str:
    """Return one line of piped standard input, read a byte at a time from the descriptor, so
    that the next command of a script reading the same pipe gets the following lines."""
    stream = sys.stdin.buffer
    raw = getattr(stream, "raw", None)
    if raw is None:  # not a file descriptor (an in-memory stream): nobody shares it
        return stream.readline().decode().rstrip("\r\n")
    line = bytearray()
    while chunk := raw.read(1):
        if chunk == b"\n":
            break
        line += chunk
    return line.decode().rstrip("\r")


@app.command()
def create(
    email: Annotated[str, typer.Argument(help="The new user's email.")],
    role: RoleOption = "trader",
    password: Annotated[
        str,
        typer.Option(
            help="Asked for when omitted, or read from the first line of piped standard input "
            "(never put it on a shared command line).",
        ),
    ] = "",
) -> None:
    """Create a user with ROLE (the password follows the API's rules)."""
    if not password:
        password = (
            typer.prompt("Password", hide_input=True, confirmation_prompt=True)
            if sys.stdin.isatty()
            else _first_line_of_stdin()
        )
    from sqlalchemy import select

    from cryptoorchestrator.platform.errors import ConflictError
    from cryptoorchestrator.platform.services.auth import (
        check_password_rules,
        hash_password,
        normalize_email,
    )
    from cryptoorchestrator.platform.services.roles import check_role
    from cryptoorchestrator.platform.settings import get_settings
    from cryptoorchestrator.platform.storage.db import session_scope
    from cryptoorchestrator.platform.storage.models import User

    role = check_role(role.lower())
    address = normalize_email(email)
    check_password_rules(password, user_inputs=[address])

    with session_scope(get_settings()) as session:
        if session.scalar(select(User.id).where(User.email == address)) is not None:
            raise ConflictError(f"a user {address!r} already exists")
        session.add(User(email=address, password_hash=hash_password(password), role=role))
    typer.echo(f"{address}: created, role {role}")


@app.command()
def deactivate(email: Annotated[str, typer.Argument(help="The user's email.")]) -> None:
    """Deactivate EMAIL: no more logins, and their current tokens stop working."""
    from cryptoorchestrator.platform.services import roles
    from cryptoorchestrator.platform.settings import get_settings
    from cryptoorchestrator.platform.storage.db import session_scope

    with session_scope(get_settings()) as session:
        user = roles.deactivate(session, email)
        typer.echo(f"{user.email}: deactivated")


@app.command()
def unlock(email: Annotated[str, typer.Argument(help="The user's email.")]) -> None:
    """Lift the lock of EMAIL's account after failed logins (the owner's own lock only).

    Locks of the addresses that guessed stay: they hold only what those addresses did.
    """
    from cryptoorchestrator.platform.services.auth import normalize_email
    from cryptoorchestrator.platform.services.login_throttle import unlock_account
    from cryptoorchestrator.platform.settings import get_settings
    from cryptoorchestrator.platform.storage.db import session_scope

    settings = get_settings()
    address = normalize_email(email)
    with session_scope(settings) as session:
        found = unlock_account(session, settings.resolved_secret_key(), address)
    typer.echo(f"{address}: " + ("unlocked" if found else "had no failed logins"))
