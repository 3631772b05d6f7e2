"""The ``mmrlhf`` command: one typer app with a sub-app per area."""

import typer

from mmrlhf.cli import data, demo, model, reward, train, world
from mmrlhf.cli import eval as eval_cli

app = typer.Typer(
    help="mmrlhf: align vision-language models with human and AI preference feedback.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(data.app, name="data", help="Validate, convert, pair and describe preference data.")
app.add_typer(world.app, name="world", help="The embedded shapes world (procedural scenes).")
app.add_typer(model.app, name="model", help="Build tiny models, inspect checkpoints.")
app.add_typer(train.app, name="train", help="Training recipes (sft; reward, dpo, ppo to come).")
app.add_typer(eval_cli.app, name="eval", help="Evaluate models: suites, judges, reports.")
app.add_typer(reward.app, name="reward", help="Score preference data with a reward model.")
app.command("demo")(demo.demo)
