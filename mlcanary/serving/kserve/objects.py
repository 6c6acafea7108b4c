"""Names, annotations and deployment modes of the Kubernetes objects mlcanary reads and writes (pure).

KServe facts this module encodes (see ``shared/reference/kserve.md``):

* the deployment mode is the annotation ``serving.kserve.io/deploymentMode``: ``Knative`` (older name
  ``Serverless``) or ``Standard`` (older name ``RawDeployment``); without it the cluster default
  applies, which KServe reports in ``status.deploymentMode``;
* in Knative mode each change of the predictor's template creates a revision
  ``{isvc}-predictor-000NN`` (Knative numbers them by the configuration's generation), and the
  InferenceService's *annotations are part of that template*: KServe copies them onto the Knative
  revision. So mlcanary writes its annotations only in the same patch as a model change — a
  bookkeeping-only annotation write would start a new revision and roll every pod.

mlcanary's annotations describe the last model change, written together with it:

``mlcanary.io/model``            the registered model (MLflow) name
``mlcanary.io/version``          the version the spec's model is
``mlcanary.io/champion-version`` the champion when that change was made (a canary when it differs)
``mlcanary.io/release``          ``{model}/{version}`` while that change is a canary release
``mlcanary.io/champion-storage-uri`` where the champion's model is (a rollback restores it from here)
``mlcanary.io/revisions``        JSON ``[[first revision number, version], ...]``: which version each
                                 revision serves (a revision serves the last entry at or below its number)
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from enum import StrEnum
from typing import Any, Final

KSERVE_GROUP: Final = "serving.kserve.io"
KSERVE_VERSION: Final = "v1beta1"
ISVC_PLURAL: Final = "inferenceservices"
ISVC_KIND: Final = "InferenceService"
ISTIO_GROUP: Final = "networking.istio.io"
ISTIO_VERSION: Final = "v1"
VS_PLURAL: Final = "virtualservices"
VS_KIND: Final = "VirtualService"

MODE_ANNOTATION: Final = "serving.kserve.io/deploymentMode"
TAG_ROUTING_ANNOTATION: Final = "serving.kserve.io/enable-tag-routing"

PREFIX: Final = "mlcanary.io/"
ANN_MODEL: Final = PREFIX + "model"
ANN_VERSION: Final = PREFIX + "version"
ANN_CHAMPION: Final = PREFIX + "champion-version"
ANN_RELEASE: Final = PREFIX + "release"
ANN_CHAMPION_URI: Final = PREFIX + "champion-storage-uri"
ANN_REVISIONS: Final = PREFIX + "revisions"
LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
LABEL_ARM: Final = PREFIX + "arm"
MANAGER: Final = "mlcanary"
#: How many model changes the revision history keeps (older revisions are long gone from traffic).
HISTORY_LIMIT: Final = 20

_REVISION_NUMBER = re.compile(r"-(\d+)$")


class DeploymentMode(StrEnum):
    """KServe's two ways of running a predictor (the current names)."""

    KNATIVE = "Knative"
    STANDARD = "Standard"


_MODE_SPELLINGS: Final[dict[str, DeploymentMode]] = {
    "knative": DeploymentMode.KNATIVE,
    "serverless": DeploymentMode.KNATIVE,
    "standard": DeploymentMode.STANDARD,
    "rawdeployment": DeploymentMode.STANDARD,
}


def parse_mode(value: str) -> DeploymentMode:
    """``Knative``/``Serverless`` or ``Standard``/``RawDeployment`` (any case) → the mode; else ValueError."""
    try:
        return _MODE_SPELLINGS[value.strip().lower()]
    except KeyError:
        raise ValueError(
            f"unknown KServe deployment mode {value!r}: expected Knative (Serverless) or Standard "
            "(RawDeployment)"
        ) from None


def mode_of(isvc: Mapping[str, Any], default: DeploymentMode) -> DeploymentMode:
    """The mode an existing InferenceService runs in: its annotation (either spelling), else
    ``status.deploymentMode`` (the cluster default KServe applied), else ``default``."""
    annotations = (isvc.get("metadata") or {}).get("annotations") or {}
    raw = annotations.get(MODE_ANNOTATION) or (isvc.get("status") or {}).get("deploymentMode")
    # ModelMesh and other modes are not ours to drive: parse_mode refuses them with a clear message.
    return parse_mode(raw) if raw else default


def revision_number(revision: str | None) -> int | None:
    """The trailing number of a Knative revision name (``fraud-predictor-00003`` → 3), or None."""
    if not revision:
        return None
    match = _REVISION_NUMBER.search(revision)
    return int(match.group(1)) if match else None


History = list[tuple[int, str]]


def read_history(annotations: Mapping[str, str]) -> History:
    """The ``mlcanary.io/revisions`` history (empty when absent or unreadable), sorted."""
    raw = annotations.get(ANN_REVISIONS)
    if not raw:
        return []
    try:
        data = json.loads(raw)
        history = [(int(first), str(version)) for first, version in data]
    except (ValueError, TypeError):
        return []
    return sorted(history)


def write_history(history: History) -> str:
    """Encode a history for the annotation (the last :data:`HISTORY_LIMIT` entries)."""
    return json.dumps([[first, version] for first, version in sorted(history)[-HISTORY_LIMIT:]])


def version_of_revision(history: History, revision: str | None) -> str | None:
    """Which version ``revision`` serves according to ``history`` (None when unknown)."""
    number = revision_number(revision)
    if number is None:
        return None
    found = None
    for first, version in history:
        if first <= number:
            found = version
    return found


def extend_history(history: History, latest_created: str | None, version: str) -> History:
    """The history after a model change to ``version`` made when ``latest_created`` was the newest
    revision: the next revision and all after it serve ``version``."""
    number = revision_number(latest_created) or 0
    kept = [(first, v) for first, v in history if first <= number]
    return [*kept, (number + 1, version)]
