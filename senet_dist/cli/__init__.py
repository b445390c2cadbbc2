"""``senet-dist`` command line: thin wrappers over the library (heavy imports are lazy so ``--help`` is quick).

``common`` holds the app, console and ``fail``; the commands live in ``data``, ``train``, ``flow`` and ``release``
and are registered here, explicitly, in the order ``senet-dist --help`` lists them."""

from __future__ import annotations

from senet_dist.cli import data, flow, release, train
from senet_dist.cli.common import app, console, datasets_app

app.command()(train.models)
app.command()(data.shard)
app.command()(train.train)
app.command()(train.evaluate)
app.command("config")(train.show_config)
app.command()(flow.report)
app.command()(flow.run)
app.command()(release.export)
app.command()(release.registry)
app.command()(release.promote)
app.command()(release.rollback)
app.command()(release.predict)
datasets_app.command("list")(data.datasets_list)
datasets_app.command("fetch")(data.datasets_fetch)

__all__ = ["app", "console", "main"]


def main() -> None:  # pragma: no cover - console script entry
    app()
