"""Operator and benchmark commands of the matcher, mounted on the `cdmo` Typer app.

Typer is a CLI library, not web code, so the matcher may own its commands; the service's CLI
calls ``register(app)`` so everything is under the one `cdmo` script.
"""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    from matcher import cli_gap, cli_market

    app.command("gap")(cli_gap.gap)
    app.command("generate")(cli_market.generate)
    app.command("solve")(cli_market.solve)
