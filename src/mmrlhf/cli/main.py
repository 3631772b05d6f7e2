"""The ``mmrlhf`` command: one typer app with a sub-app per area (data, world, model, train)."""

import typer

from mmrlhf.cli import data, world

app = typer.Typer(
    help="mmrlhf: align vision-language models with human and AI preference feedback.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(data.app, name="data", help="Validate, convert, pair and describe preference data.")
app.add_typer(world.app, name="world", help="The embedded shapes world (procedural scenes).")
