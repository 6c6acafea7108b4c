"""What every command shares: the global options, the consoles and the handling of user errors.

Every command loads the configuration once (``--profile`` / ``--config`` / ``MLCANARY_*``), turns
known errors into one red line on stderr and a non-zero exit code (2 for configuration, 1 for the
rest), and never prints a traceback for a user mistake. A run that yielded to another holding the
model's lease prints ``yielded: ...`` and exits 1 (``step`` exits 0: a monitor tick that yields is
normal).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich.console import Console
from typer.core import TyperGroup

if TYPE_CHECKING:
    from mlcanary.config import Settings

# Nothing heavier than typer and rich is imported here: `--help` and the parsing of every command
# run on these alone (pydantic, the configuration and the services load in the command that needs them).

console = Console()
err_console = Console(stderr=True)


class CliState:
    """The global options of one invocation (``ctx.obj``)."""

    def __init__(self, profile: str | None = None, config_file: Path | None = None) -> None:
        self.profile = profile
        self.config_file = config_file

    def settings(
        self, overrides: dict[str, Any] | None = None, *, default_profile: str | None = None
    ) -> Settings:
        """Settings from the global options; ``default_profile`` applies when neither was given."""
        from mlcanary.config import load_settings

        profile = self.profile or (None if self.config_file else default_profile)
        return load_settings(profile, config_file=self.config_file, overrides=overrides)


class _PlainValue:
    """Converts an option's value as typer's pydantic adapter would for a plain ``kind`` (a string,
    a path, a whole number, a flag), without pydantic; the ``coerce`` of typer's runtime
    parameters."""

    def __init__(self, kind: type) -> None:
        self.kind = kind

    def coerce(self, value: Any, param: Any = None, ctx: Any = None) -> Any:
        if value is None or isinstance(value, self.kind):
            return value
        try:
            return self.kind(value)
        except (TypeError, ValueError):
            message = f"{value!r} is not a valid {self.kind.__name__}."
            raise typer.BadParameter(message, ctx=ctx, param=param) from None


_PLAIN_KINDS = (str, Path, int, bool)


class LightGroup(TyperGroup):
    """A command group whose own options (the global ones, ``--help``) are converted without
    pydantic. Before a sub-command runs or shows its ``--help``, typer converts the group's options
    through pydantic ``TypeAdapter``s it builds on first use: importing pydantic and building them
    is about a third of a sub-command's ``--help`` time, and a string, a path, a number or a flag
    needs neither. Options of other types keep typer's conversion; with a typer that no longer
    has ``_runtime_param`` typer's conversion applies to all (``tests/unit/test_cli_imports.py``
    then names pydantic)."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        for param in self.get_params(ctx):  # with --help, which click adds there
            descriptor = getattr(param, "type_descriptor", None)
            kind = getattr(descriptor, "annotation", None)
            if kind in _PLAIN_KINDS and getattr(param, "_runtime_param", False) is None:
                param._runtime_param = _PlainValue(kind)  # type: ignore[attr-defined]
        return super().parse_args(ctx, args)


_USER_ERRORS = (
    ("mlcanary.data.loader", "DataError"),
    ("mlcanary.rollout.versions", "RegistryError"),
    ("mlcanary.training", "TrainingError"),
    ("mlcanary.rollout.engine", "RolloutError"),
    ("mlcanary.rollout.serving", "ServingError"),
    ("mlcanary.serving.local.stack", "StackError"),
    ("mlcanary.runtime.processes", "ProcessError"),
    ("mlcanary.platform.errors", "PlatformError"),
    ("mlcanary.rollout.lease", "LeaseUnavailableError"),
)
"""Errors that are the user's to read, not tracebacks, by module and name."""


def _user_error_types() -> tuple[type[Exception], ...]:
    """The user errors of :data:`_USER_ERRORS` whose modules are loaded, with ``ValueError`` and
    ``NotImplementedError``: an error of a module never imported cannot have been raised, and
    importing one to find out would load scikit-learn or MLflow into ``status``."""
    found: list[type[Exception]] = [ValueError, NotImplementedError]
    for module, name in _USER_ERRORS:
        loaded = sys.modules.get(module)
        if loaded is not None:
            found.append(getattr(loaded, name))
    return tuple(found)


def fail(message: str, code: int = 1) -> typer.Exit:
    """Print ``error: message`` on stderr, unwrapped (paths and URLs stay whole for copying and
    for grep in logs); return the exit to raise."""
    err_console.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


@contextmanager
def user_errors() -> Iterator[None]:
    """Known errors inside the block end the command with one line on stderr, no traceback."""
    try:
        yield
    except Exception as exc:
        from mlcanary.config import ConfigError
        from mlcanary.rollout.lease import LeaseHeldError

        if isinstance(exc, LeaseHeldError):
            # Not an error of the user's: another run is acting on the release; this one did nothing.
            err_console.print(str(exc), highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None
        if isinstance(exc, ConfigError):
            raise fail(str(exc), 2) from None
        if isinstance(exc, _user_error_types()):
            raise fail(str(exc)) from None
        raise
