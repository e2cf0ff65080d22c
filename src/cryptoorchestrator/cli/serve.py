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
from typing import Annotated, Any

import typer

DEMO_EMAIL = "demo@cryptoorchestrator.local"
DEMO_BOT = "demo-sma-cross"
# Keeps the demo simulator's context manager alive: collecting it would stop the simulator.
_DEMO_RUNNERS: list[Any] = []


def _exit_on_sigterm(signum: int, _frame: Any) -> None:
    raise SystemExit(128 + signum)


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
) -> None:
    """Apply database migrations, start the cluster and serve the API with uvicorn."""
    import uvicorn

    from cryptoorchestrator.cluster.runtime import configure_ray_environment
    from cryptoorchestrator.platform.settings import get_settings
    from cryptoorchestrator.platform.storage.db import upgrade

    configure_ray_environment()
    settings = get_settings()
    revision = upgrade(settings)
    typer.echo(f"database {settings.database_url.split('@')[-1]} at revision {revision}")
    # The API process is the Ray driver and runs the bot supervisor (see api.wiring).
    os.environ.setdefault("CRYPTOORCH_API_CLUSTER", "ray")
    bind_host = host or settings.api_host
    bind_port = port or settings.api_port
    if demo:
        _start_demo(settings, demo_speed, f"http://{bind_host}:{bind_port}")
    # uvicorn shuts down gracefully on SIGTERM, then raises the signal again; with the default
    # action the process died there, before atexit stopped the local Ray (its agents outlived
    # it).  Exit through Python instead, as after Ctrl-C.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        uvicorn.run(
            "cryptoorchestrator.api.app:create_app",
            factory=True,
            host=bind_host,
            port=bind_port,
            workers=workers,
            log_level=settings.log_level.lower(),
            proxy_headers=False,
            # Our middleware writes the access log (logs/fastapi.log, JSON, with the user id);
            # uvicorn's own would format a second line per request to stdout.
            access_log=False,
        )
    finally:
        # Stop the demo's simulator while the interpreter is whole: left to the generator's
        # finalizer at exit, its stop ran during module teardown and printed a traceback.
        while _DEMO_RUNNERS:
            _DEMO_RUNNERS.pop().__exit__(None, None, None)


def _start_demo(settings: Any, speed: float, api_base: str) -> None:
    """Start the simulator (a thread of this process) and create the demo user, account, bot."""
    from decimal import Decimal

    from sqlalchemy import select

    from cryptoorchestrator.platform.data.store import load_ohlcv
    from cryptoorchestrator.platform.exchange.simulator import run_simulator_in_thread
    from cryptoorchestrator.platform.services.auth import hash_password
    from cryptoorchestrator.platform.storage.db import session_scope
    from cryptoorchestrator.platform.storage.models import Bot, ExchangeAccount, User

    candles = load_ohlcv("binance", "BTC/USDT", "1h", data_dir=settings.data_dir)
    runner = run_simulator_in_thread({"BTC/USDT": candles}, speed=speed)
    sim = runner.__enter__()  # lives as long as this process; uvicorn.run blocks until exit
    _DEMO_RUNNERS.append(runner)
    password = secrets.token_urlsafe(12)
    with session_scope(settings) as session:
        user = session.scalar(select(User).where(User.email == DEMO_EMAIL))
        if user is None:
            user = User(email=DEMO_EMAIL, password_hash=hash_password(password))
            session.add(user)
            session.flush()
        else:
            user.password_hash = hash_password(password)
            user.failed_logins, user.locked_until = 0, None
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
                "demo: exchange simulator replaying real Binance BTC/USDT 1h candles at "
                f"{speed:g}x on {sim.base_url}",
                f"demo: paper bot {bot_id} ({DEMO_BOT}) trades on it; watch "
                f"`tail -f {settings.log_dir}/bot_{bot_id}.log`",
                f"demo: log in at {api_base}/docs as {DEMO_EMAIL} / {password}",
                f"demo: health at {api_base}/api/health/detailed",
            ]
        )
    )
