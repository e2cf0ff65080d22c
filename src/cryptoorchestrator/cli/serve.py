"""``cryptoorch serve``: run migrations, then the API under uvicorn (loaded by path).

``--demo`` currently starts only the API on the embedded defaults (SQLite, local data, bundled
candles); the exchange simulator and a paper bot trading on it are wired with issue 8.
"""

from __future__ import annotations

from typing import Annotated

import typer


def serve(
    host: Annotated[str | None, typer.Option(help="Bind address (settings.api_host).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (settings.api_port, 8000).")] = None,
    demo: Annotated[
        bool, typer.Option("--demo", help="Start on the embedded defaults (API only for now).")
    ] = False,
    workers: Annotated[int, typer.Option(min=1, help="uvicorn worker processes.")] = 1,
) -> None:
    """Apply database migrations, then serve the API with uvicorn."""
    import uvicorn

    from cryptoorchestrator.platform.settings import get_settings
    from cryptoorchestrator.platform.storage.db import upgrade

    settings = get_settings()
    revision = upgrade(settings)
    typer.echo(f"database at revision {revision}")
    if demo:
        typer.echo(
            "demo: API on the embedded defaults; the simulator and a paper bot arrive with "
            "issue 8 (bots as Ray actors)"
        )
    uvicorn.run(
        "cryptoorchestrator.api.app:create_app",
        factory=True,
        host=host or settings.api_host,
        port=port or settings.api_port,
        workers=workers,
        log_level=settings.log_level.lower(),
        proxy_headers=False,
    )
