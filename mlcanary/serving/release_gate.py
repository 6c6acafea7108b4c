"""The release gate every backend has: a candidate's inputs against the champion's, before traffic.

:func:`signature_refusal` reads both versions' signatures from the registry (their MLmodel files
only) and says why the candidate is ruled out: no usable signature, or inputs that differ from the
champion's (names, types, order; columns against a tensor), with how to fix it. :class:`SignatureGate`
is that check as a :class:`~mlcanary.rollout.ports.ReleaseGate` (the KServe backend's whole gate);
the local stack's :class:`~mlcanary.serving.local.preflight.LocalReleaseGate` runs it first.
"""

from __future__ import annotations

import logging

from mlcanary.data.model_inputs import InputSchema
from mlcanary.registry.protocol import ModelRegistry
from mlcanary.rollout.versions import RegistryError, SignatureMissingError

logger = logging.getLogger(__name__)


def signature_refusal(registry: ModelRegistry, model: str, champion: str, candidate: str) -> str | None:
    """Why ``candidate``'s inputs rule it out (None when they match the champion's)."""
    read = getattr(registry, "input_schema", None)
    if read is None:
        return None
    try:
        theirs: InputSchema = read(model, candidate)
    except SignatureMissingError as exc:
        return str(exc)
    except RegistryError as exc:
        # The artifact store could not be read from here: not the version's fault, so not refused.
        logger.warning("signature check of %s v%s skipped: %s", model, candidate, exc)
        return None
    try:
        mine: InputSchema = read(model, champion)
    except RegistryError as exc:  # a champion without a (readable) signature cannot be compared
        logger.warning("signature check of %s v%s skipped: champion v%s: %s", model, candidate, champion, exc)
        return None
    found = mine.differences(theirs)
    if not found:
        return None
    return (
        f"its inputs differ from the champion's (v{champion}): {'; '.join(found)}. Log it with the "
        f"champion's inputs ({mine.describe()}), e.g. signature=mlflow.models.infer_signature(X, "
        "model.predict(X)) on the same columns, or register it as another model"
    )


class SignatureGate:
    """A :class:`~mlcanary.rollout.ports.ReleaseGate` that checks signatures only (any backend)."""

    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry

    def check(self, model: str, champion: str, candidate: str) -> str | None:
        return signature_refusal(self.registry, model, champion, candidate)
