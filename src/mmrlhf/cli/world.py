"""`mmrlhf world ...` commands."""

import typer

app = typer.Typer(help="world commands", no_args_is_help=True)
