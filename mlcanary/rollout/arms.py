"""The two roles of a release, named once: the arm type, the arms, and the aliases that hold them.

``champion`` serves production and is the version holding MLflow's ``@champion`` alias;
``candidate`` is the version under canary, holding ``@candidate``. The same two words name the
serving arms, the registry aliases and the ``arm`` column of the inference log.
"""

from __future__ import annotations

from typing import Final, Literal

Arm = Literal["champion", "candidate"]
"""One of the two arms of a release."""

CHAMPION: Final = "champion"
"""The arm (and MLflow alias) serving production."""

CANDIDATE: Final = "candidate"
"""The arm (and MLflow alias) under canary."""

ARMS: Final[tuple[Arm, Arm]] = (CHAMPION, CANDIDATE)
"""Both arms, champion first (the order of every side-by-side table)."""
