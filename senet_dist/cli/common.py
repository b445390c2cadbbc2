"""The pieces every ``senet-dist`` command module shares: the Typer app, its sub-Typers, the console, ``fail``."""

from __future__ import annotations

from typing import NoReturn

import typer
from rich.console import Console

app = typer.Typer(
    help="Train Squeeze-and-Excitation classifiers: shard -> Ray Train DDP -> evaluate -> Arrow tables.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
datasets_app = typer.Typer(help="Offline real datasets, materialised as ImageFolder trees.", no_args_is_help=True)
app.add_typer(datasets_app, name="datasets")
console = Console(soft_wrap=True)  # a message line stays one line in a log or pipe (tables still fit the width)


def fail(exc: Exception) -> NoReturn:
    """Bad input is the user's to fix: one clear line on stderr (never wrapped), exit code 2, no traceback."""
    message = " ".join(str(exc).split())
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)
