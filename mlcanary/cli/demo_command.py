"""``mlcanary demo``: the whole story on the local stack (see :mod:`mlcanary.demo.story`)."""

from __future__ import annotations

from typing import Annotated

import typer

from mlcanary.cli.common import console, user_errors


def demo_command(
    ctx: typer.Context,
    rps: Annotated[float, typer.Option(help="Requests per second of live traffic during the demo.")] = 40.0,
    keep_up: Annotated[bool, typer.Option(help="Leave the local stack running at the end.")] = False,
) -> None:
    """The whole story on the local stack, in a few minutes (profile 'demo', state in .mlcanary/demo).

    A champion serves behind Envoy; a better candidate is canaried under traffic and promoted; a bad
    candidate (flaky, slow feature service) is canaried and rolled back within seconds of the
    evidence. A live view shows phase, traffic per arm and every check; it ends with a side-by-side
    summary and a self-contained HTML report.
    """
    from mlcanary.demo.story import run_demo

    state = ctx.obj
    with user_errors():
        run_demo(
            console,
            profile=state.profile or ("demo" if state.config_file is None else None),
            config_file=state.config_file,
            rps=rps,
            keep_up=keep_up,
        )
