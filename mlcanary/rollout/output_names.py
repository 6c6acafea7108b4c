"""``model.outputs``: which of a model's outputs hold the label and the probability.

Apart from :mod:`mlcanary.rollout.model_outputs` (which reads answers with numpy) so the
configuration, and every command that loads it, does not import numpy.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_LABEL_NAMES: tuple[str, ...] = (
    "label",
    "labels",
    "prediction",
    "predictions",
    "predict",
    "predicted_label",
    "output_label",
    "class",
)
DEFAULT_PROBABILITY_NAMES: tuple[str, ...] = (
    "probability",
    "probabilities",
    "predict_proba",
    "proba",
    "positive_probability",
    "score_positive",
)


class OutputNames(BaseModel):
    """Which of a model's outputs hold the label and the probability (``model.outputs``).

    Names are matched case-insensitively, in order; the defaults cover scikit-learn, MLServer and
    the usual pyfunc column names.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    label: tuple[str, ...] = Field(
        DEFAULT_LABEL_NAMES, description="output (column or key) names holding the predicted class"
    )
    probability: tuple[str, ...] = Field(
        DEFAULT_PROBABILITY_NAMES,
        description="output names holding P(positive class): one column, or two (negative, positive)",
    )
    positive_class: int | str = Field(
        1, description="the class counted as positive (e.g. 1, or 'fraud' for string labels)"
    )
    single: Literal["auto", "label", "probability", "score"] = Field(
        "auto",
        description="how to read one unnamed output: 'auto' (integers are labels, numbers in [0, 1] "
        "probabilities, others scores), or always as a label, a probability or a score",
    )
