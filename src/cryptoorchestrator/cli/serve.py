"""``cryptoorch serve``: the head node (migrations, the Ray cluster, the API under uvicorn).

``--demo`` also starts the exchange simulator on the bundled real candles, replayed as a live
feed, and a paper bot trading on it, so a fresh checkout shows the platform alive within a
minute: the bot's log, its trades through the API, and every component in
``/api/health/detailed``.
"""

from __future__ import annotations

import os
import secrets
import signal
from pathlib import Path
from typing import Annotated, Any

import typer

# Keeps the demo simulator's context manager alive: collecting it would stop the simulator.
_DEMO_RUNNERS: list[Any] = []


#: The API's ``ws_max_message_bytes`` default: the CLI may not import the API's options (uvicorn
#: loads the API by path), so both read the same variable with the same default.
WS_MAX_MESSAGE_BYTES = 65_536
WS_MAX_MESSAGE_BYTES_ENV = "CRYPTOORCH_API_WS_MAX_MESSAGE_BYTES"


def _exit_on_sigterm(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)


def _ws_max_message_bytes() -> int:
    """The largest WebSocket message uvicorn accepts: the app's own limit."""
    raw = os.environ.get(WS_MAX_MESSAGE_BYTES_ENV, str(WS_MAX_MESSAGE_BYTES))
    try:
        value = int(raw)
    except ValueError:
        raise typer.BadParameter(
            f"{WS_MAX_MESSAGE_BYTES_ENV}={raw!r} is not a number of bytes"
        ) from None
    if value < 1:
        raise typer.BadParameter(f"{WS_MAX_MESSAGE_BYTES_ENV} must be positive, not {value}")
    return value


def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (settings.api_host).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (settings.api_port, 8000).")] = None,
    demo: Annotated[
        bool,
        typer.Option("--demo", help="Also run the exchange simulator and a paper bot on it."),
    ] = False,
    demo_speed: Annotated[
        float, typer.Option(help="Simulated seconds per real second in the demo.")
    ] = 1800.0,
    workers: Annotated[int, typer.Option(min=1, help="uvicorn worker processes.")] = 1,
    backup_dir: Annotated[
        Path | None,
        typer.Option(help="Take scheduled backups (database and market data) into this folder."),
    ] = None,
    backup_every_hours: Annotated[
        float, typer.Option(min=0.001, help="Hours between scheduled backups.")
    ] = 24.0,
    backup_keep: Annotated[
        int, typer.Option(min=1, help="Scheduled backups kept; older ones are deleted.")
    ] = 7,
) -> None:
    """Apply database migrations, start the cluster and serve the API with uvicorn."""
    import uvicorn

    from cryptoorchestrator.cluster.runtime import configure_ray_environment
    from cryptoorchestrator.platform.settings import get_settings
    from cryptoorchestrator.platform.storage.db import upgrade

    configure_ray_environment()
    # The head node shows the platform in Ray's dashboard (actors, jobs, metrics) on 8265;
    # set before the settings are first read, here and in the API process.
    os.environ.setdefault("CRYPTOORCH_RAY_DASHBOARD", "true")
    get_settings.cache_clear()
    settings = get_settings()
    revision = upgrade(settings)
    typer.echo(f"database {settings.database_url.split('@')[-1]} at revision {revision}")
    # The API process is the Ray driver and runs the bot supervisor (see api.wiring).
    os.environ.setdefault("CRYPTOORCH_API_CLUSTER", "ray")
    ws_max_size = _ws_max_message_bytes()
    bind_host = host or settings.api_host
    bind_port = port or settings.api_port
    if demo:
        _start_demo(settings, demo_speed, f"http://{bind_host}:{bind_port}")
    # uvicorn shuts down gracefully on SIGTERM, then raises the signal again; with the default
    # action the process died there, before atexit stopped the local Ray (its agents outlived
    # it).  Exit through Python instead, as after Ctrl-C.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    schedule = None
    if backup_dir is not None:
        from cryptoorchestrator.platform.storage.backup import BackupSchedule

        schedule = BackupSchedule(
            settings, backup_dir, every_s=backup_every_hours * 3600, keep=backup_keep
        )
        schedule.start()
        typer.echo(
            f"backups every {backup_every_hours:g} h into {backup_dir} (keeping {backup_keep})"
        )
    try:
        uvicorn.run(
            "cryptoorchestrator.api.app:create_app",
            factory=True,
            host=bind_host,
            port=bind_port,
            workers=workers,
            log_level=settings.log_level.lower(),
            # The app itself decides whom to believe about the client's address (only the
            # proxies in CRYPTOORCH_API_TRUSTED_PROXIES): uvicorn must hand it the socket's
            # peer, not rewrite it from X-Forwarded-For (by default it believes 127.0.0.1).
            proxy_headers=False,
            forwarded_allow_ips="",
            # Our middleware writes the access log (logs/fastapi.log, JSON, with the user id,
            # never a query string); uvicorn's own would print a second line per request, and
            # a WebSocket's ?token= with it.
            access_log=False,
            # Refuse oversized WebSocket messages on the wire (the app checks again).
            ws_max_size=ws_max_size,
            server_header=False,
        )
    finally:
        if schedule is not None:
            schedule.stop()
        # Stop the demo's simulator while the interpreter is whole: left to the generator's
        # finalizer at exit, its stop ran during module teardown and printed a traceback.
        while _DEMO_RUNNERS:
            _DEMO_RUNNERS.pop().__exit__(None, None, None)


def _allow_demo_simulator(settings: Any, base_url: str) -> None:
    """Allow the demo's simulator (on loopback) as an account host and the binance endpoint.

    The API refuses account URLs on the head's own network unless the operator allows them;
    the demo is the operator here.  Set in the environment before uvicorn and Ray start, so the
    API process (its settings are read again) and the bot workers see the same rule.
    """
    import json
    from urllib.parse import urlsplit

    from cryptoorchestrator.platform.settings import get_settings

    hosts = [*settings.allowed_api_hosts, urlsplit(base_url).netloc]
    endpoints = {**settings.exchange_endpoints, "binance": base_url}
    os.environ["CRYPTOORCH_ALLOWED_API_HOSTS"] = json.dumps(hosts)
    os.environ["CRYPTOORCH_EXCHANGE_ENDPOINTS"] = json.dumps(endpoints)
    get_settings.cache_clear()


def _start_demo(settings: Any, speed: float, api_base: str) -> None:
    """Start the simulator (a thread of this process) and create the demo user, account, bot."""
    from decimal import Decimal

    from sqlalchemy import select

    from cryptoorchestrator.platform.exchange.sim import run_simulator_in_thread
    from cryptoorchestrator.platform.services.auth import hash_password
    from cryptoorchestrator.platform.services.demo import (
        DEMO_BOT,
        DEMO_EMAIL,
        archive_demo_bot,
        plan_demo,
    )
    from cryptoorchestrator.platform.services.login_throttle import unlock_account
    from cryptoorchestrator.platform.storage.db import session_scope
    from cryptoorchestrator.platform.storage.models import Bot, ExchangeAccount, User

    with session_scope(settings) as session:
        plan = plan_demo(session)
        if plan.start_over:
            archive_demo_bot(session)
    runner = run_simulator_in_thread(
        {"BTC/USDT": plan.candles}, speed=speed, start_ms=plan.start_ms
    )
    sim = runner.__enter__()  # lives as long as this process; uvicorn.run blocks until exit
    _DEMO_RUNNERS.append(runner)
    _allow_demo_simulator(settings, sim.base_url)
    password = secrets.token_urlsafe(12)
    with session_scope(settings) as session:
        user = session.scalar(select(User).where(User.email == DEMO_EMAIL))
        if user is None:
            # The demo's operator: it may try the global kill switch and portfolio limits.
            user = User(email=DEMO_EMAIL, password_hash=hash_password(password), role="admin")
            session.add(user)
            session.flush()
        else:
            user.password_hash = hash_password(password)
            user.role = "admin"
            # A new password: a lock earned by guesses at the old one is lifted.
            unlock_account(session, settings.resolved_secret_key(), DEMO_EMAIL)
        account = session.scalar(
            select(ExchangeAccount).where(
                ExchangeAccount.user_id == user.id, ExchangeAccount.name == "demo-simulator"
            )
        )
        if account is None:
            account = ExchangeAccount(
                user_id=user.id, name="demo-simulator", exchange="binance", mode="paper"
            )
            session.add(account)
        account.api_url = sim.base_url  # a new simulator port on every start
        session.flush()
        bot = session.scalar(select(Bot).where(Bot.user_id == user.id, Bot.name == DEMO_BOT))
        if bot is None:
            bot = Bot(
                user_id=user.id,
                name=DEMO_BOT,
                trading_pair="BTC/USDT",
                strategy="sma_cross",
                params={"fast": 10, "slow": 30},
                timeframe="1h",
                exchange_account_id=account.id,
                mode="paper",
                risk_per_trade=Decimal(1),
                max_position_size=Decimal(50),
                starting_balance=Decimal(10_000),
            )
            session.add(bot)
            session.flush()
        bot.desired_state = "running"  # the supervisor starts it as soon as the API is up
        bot_id = bot.id
    typer.echo(
        "\n".join(
            [
                "demo: exchange simulator replaying the bundled Binance BTC/USDT 1h candles "
                f"(2021-2022) at {speed:g}x on {sim.base_url}, "
                + (
                    "resuming where the demo bot stopped"
                    if plan.resumed
                    else "from the start of the slice"
                ),
                f"demo: paper bot {bot_id} ({DEMO_BOT}) trades on it; watch "
                f"`tail -f {settings.log_dir}/bot_{bot_id}.log`",
                f"demo: log in at {api_base}/docs as {DEMO_EMAIL} / {password}",
                f"demo: health at {api_base}/api/health/detailed",
            ]
        )
    )
