"""The platform's private files (mode 0600 in a 0700 folder): :func:`ensure_secret_file`, the MLflow
Fernet key (:func:`fernet_key`) and the webhook secret (:func:`webhook_secret`).

(Named ``private_files`` rather than ``secrets`` so it never reads as the standard library's
``secrets``, which it uses.)"""

from __future__ import annotations

import base64
import os
import secrets
from collections.abc import Callable, Mapping
from pathlib import Path

from mlcanary.platform.errors import PlatformError
from mlcanary.platform.paths import PlatformPaths

__all__ = ["ensure_secret_file", "fernet_key", "webhook_secret"]

_SECRET_BYTES = 32


def ensure_secret_file(path: Path, make: Callable[[], str]) -> str:
    """The content of ``path``, created once with ``make()`` and mode 0600 (its folder 0700).

    An existing file is reused (so a restart keeps the same secret) and tightened to 0600 if it is
    more open; an empty one is an error rather than a silently weak secret.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        if path.stat().st_mode & 0o077:
            os.chmod(path, 0o600)
        value = path.read_text(encoding="utf-8").strip()
        if not value:
            raise PlatformError(f"{path} is empty: delete it and run `up --platform` again") from None
        return value
    value = make()
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(value + "\n")
    return value


def fernet_key() -> str:
    """A new Fernet key (32 random bytes, url-safe base64), as MLflow's encryption key expects."""
    return base64.urlsafe_b64encode(os.urandom(32)).decode("ascii")


def _new_secret() -> str:
    return secrets.token_urlsafe(_SECRET_BYTES)


def webhook_secret(paths: PlatformPaths, environ: Mapping[str, str]) -> str:
    """The receiver's secret: ``MLCANARY_WEBHOOK_SECRET`` from ``environ`` if set, else the one kept
    in ``<state>/platform/webhook-secret`` (generated on first use)."""
    from mlcanary.triggers.server import DEFAULT_SECRET_ENV

    given = environ.get(DEFAULT_SECRET_ENV, "")
    return given if given.strip() else ensure_secret_file(paths.secret_file, _new_secret)
