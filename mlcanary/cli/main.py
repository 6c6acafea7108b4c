"""The ``mlcanary`` command line: a stable contract (the commands, their options, ``status --json``)
that users and scripts rely on.

This module holds the global options and the list of commands; each command lives with its
neighbours: :mod:`~mlcanary.cli.registry_commands` (``train``, ``status``, ``config``),
:mod:`~mlcanary.cli.stack_commands` (``up``, ``down``, ``collector``, ``traffic``),
:mod:`~mlcanary.cli.rollout_commands` (``release``, ``step``, ``promote``, ``rollback``,
``approve``, ``reject``), :mod:`~mlcanary.cli.demo_command` (``demo``) and
:mod:`~mlcanary.cli.webhook_commands` (``webhook [register]``). What they share (settings, consoles,
errors) is :mod:`~mlcanary.cli.common`. Heavy libraries are imported inside the commands, so
``--help`` is quick.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated

import typer

from mlcanary.cli import demo_command, registry_commands, rollout_commands, stack_commands
from mlcanary.cli.common import CliState, LightGroup, console, err_console
from mlcanary.cli.webhook_commands import webhook_app
from mlcanary.runtime.env import QUIET_ENV, quiet_defaults
from mlcanary.views.console import fit_captured_output

app = typer.Typer(
    cls=LightGroup,
    name="mlcanary",
    help="Canary releases for ML models: train, split traffic, judge both arms, promote or roll back.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


@app.callback()
def main(
    ctx: typer.Context,
    profile: Annotated[
        str | None,
        typer.Option(
            "--profile",
            "-p",
            help="Configuration profile: local (default), demo or kserve. Env: MLCANARY_PROFILE.",
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", "-c", help="A config YAML file instead of a profile. Env: MLCANARY_CONFIG."),
    ] = None,
) -> None:
    """Canary releases for ML models."""
    quiet_defaults()
    # MLflow sets its loggers' level when it is first imported; if that already happened, follow.
    logging.getLogger("mlflow").setLevel(
        os.environ.get("MLFLOW_LOGGING_LEVEL", QUIET_ENV["MLFLOW_LOGGING_LEVEL"])
    )
    fit_captured_output(console)
    fit_captured_output(err_console)
    ctx.obj = CliState(profile, config)


COMMANDS = {
    "train": registry_commands.train_command,
    "status": registry_commands.status_command,
    "config": registry_commands.config_command,
    "demo": demo_command.demo_command,
    "collector": stack_commands.collector_command,
    "traffic": stack_commands.traffic_command,
    "release": rollout_commands.release_command,
    "step": rollout_commands.step_command,
    "promote": rollout_commands.promote_command,
    "rollback": rollout_commands.rollback_command,
    "approve": rollout_commands.approve_command,
    "reject": rollout_commands.reject_command,
    "up": stack_commands.up_command,
    "down": stack_commands.down_command,
}
"""Every command but ``webhook`` (a group), in the order ``--help`` lists them."""

for _name, _command in COMMANDS.items():
    app.command(_name)(_command)
app.add_typer(webhook_app, name="webhook")


if __name__ == "__main__":
    app()
