"""Every answer checked against a direct ``predict_proba`` of the same row by the same model."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from benchmarks.model_server.http_client import Samples


@dataclass(frozen=True)
class Truth:
    """The direct answers: ``proba[i]`` is ``predict_proba`` of row ``i`` alone (a one-row
    DataFrame), ``labels[i]`` the label our server gives at the 0.5 threshold."""

    proba: list[list[float]]
    labels: list[Any]


def direct_truth(model: Any, rows: Sequence[dict[str, Any]]) -> Truth:
    import pandas as pd

    proba = [np.asarray(model.predict_proba(pd.DataFrame([row])))[0].tolist() for row in rows]
    classes = list(np.asarray(model.classes_).tolist())
    labels = [classes[1] if p[1] >= 0.5 else classes[0] for p in proba]
    return Truth(proba, labels)


@dataclass
class Verdict:
    """How many answers were checked and how many differed (with the first difference)."""

    checked: int = 0
    wrong: int = 0
    first_problem: str | None = None

    def add(self, other: Verdict) -> None:
        self.checked += other.checked
        self.wrong += other.wrong
        self.first_problem = self.first_problem or other.first_problem


def check(kind: str, samples: Samples, truth: Truth) -> Verdict:
    """``kind`` ``ours`` (V1 ``predictions`` = labels, ``probabilities`` = P(positive)) or
    ``kserve`` (``predictions`` = the ``predict_proba`` row); equality is exact."""
    verdict = Verdict()
    for (row, body), status in zip(samples.answers, samples.statuses, strict=True):
        verdict.checked += 1
        problem = None
        try:
            answer = json.loads(body)
            if status != 200:
                problem = f"status {status}: {body[:200]!r}"
            elif kind == "ours":
                if answer["probabilities"] != [truth.proba[row][1]]:
                    problem = f"row {row}: P {answer['probabilities']} != {truth.proba[row][1]}"
                elif answer["predictions"] != [truth.labels[row]]:
                    problem = f"row {row}: label {answer['predictions']} != {truth.labels[row]}"
            elif answer["predictions"] != [truth.proba[row]]:
                problem = f"row {row}: {answer['predictions']} != {truth.proba[row]}"
        except (ValueError, KeyError, TypeError) as exc:
            problem = f"row {row}: unreadable answer ({exc}): {body[:200]!r}"
        if problem is not None:
            verdict.wrong += 1
            verdict.first_problem = verdict.first_problem or problem
    return verdict
