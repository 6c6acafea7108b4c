"""What a traffic run sends: :class:`TrafficPlan`, validated and immutable, and the constants of the
replayer's determinism contract (see :mod:`mlcanary.demo.traffic.run`)."""

from __future__ import annotations

from typing import Final
from urllib.parse import quote

import httpx
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from mlcanary.data.synthetic import DriftKnobs
from mlcanary.demo.traffic.wire import Protocol
from mlcanary.rollout.arms import Arm

#: Rows per generated chunk. Part of the determinism contract: changing it changes the rows sent.
CHUNK_ROWS: Final = 1000
#: How often due feedback labels are posted (one JSON list per tick, split into batches).
FEEDBACK_INTERVAL_S: Final = 0.5
#: Most labels in one ``/feedback`` POST.
FEEDBACK_BATCH_MAX: Final = 500
#: Most requests one plan may send (bounds memory for latencies and pending labels).
MAX_REQUESTS: Final = 2_000_000
#: How often the progress callback is called while requests flow.
PROGRESS_INTERVAL_S: Final = 0.1
#: A send leaving more than this after its due time counts as late.
LATE_TOLERANCE_S: Final = 0.010


def chunk_seed(seed: int, chunk_index: int) -> int:
    """The ``generate_transactions`` seed of chunk ``chunk_index`` for a plan seeded with ``seed``.

    Derived with NumPy's ``SeedSequence``, so chunks of neighbouring seeds do not overlap.
    """
    return int(np.random.SeedSequence([seed, chunk_index]).generate_state(1, dtype=np.uint64)[0])


def _check_url(value: str, name: str) -> str:
    try:
        url = httpx.URL(value)
    except (httpx.InvalidURL, TypeError) as exc:
        raise ValueError(f"{name} is not a valid URL: {value!r} ({exc})") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError(
            f"{name} must be an http(s) URL with a host, e.g. http://127.0.0.1:8080; got {value!r}"
        )
    return value.rstrip("/")


class TrafficPlan(BaseModel):
    """What to send, how fast, and which labels to post back. Immutable and validated on creation.

    Give exactly one of ``duration_s`` (requests = ``round(rps * duration_s)``, at least 1) or
    ``total_requests``. ``front_door_url`` and ``collector_url`` come from the configuration
    (``serving.front_door_url`` / ``serving.collector_url``); ``collector_url=None`` posts no
    feedback. ``covariate_shift``, ``fraud_rate`` and ``noise`` go to
    :class:`~mlcanary.data.synthetic.DriftKnobs` unchanged (same bounds). ``force_arm`` sends
    ``x-mlcanary-arm`` on every request; ``protocol`` picks the KServe V1 or the Open Inference (V2)
    body and path; ``host_header`` is the ``Host`` sent (an Istio ingress routes by it).
    ``timeout_s`` applies to each request and each feedback POST. Invalid values raise
    ``pydantic.ValidationError`` (a ``ValueError``) naming the field.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    front_door_url: str
    model: str = Field(default="fraud-detector", min_length=1, max_length=256)
    rps: float = Field(default=50.0, gt=0, le=5000)
    duration_s: float | None = Field(default=None, gt=0, le=7 * 24 * 3600)
    total_requests: int | None = Field(default=None, ge=1, le=MAX_REQUESTS)
    seed: int = Field(default=0, ge=0, le=2**63 - 1)
    covariate_shift: float = Field(default=0.0, ge=0.0, le=5.0)
    fraud_rate: float = Field(default=0.04, gt=0.0, lt=1.0)
    noise: float = Field(default=0.0, ge=0.0, le=0.5)
    collector_url: str | None = None
    feedback_delay_s: float = Field(default=3.0, ge=0.0, le=600.0)
    feedback_share: float = Field(default=0.5, ge=0.0, le=1.0)
    concurrency: int = Field(default=32, ge=1, le=1024)
    timeout_s: float = Field(default=5.0, gt=0.0, le=120.0)
    force_arm: Arm | None = None
    protocol: Protocol = "v1"
    host_header: str | None = Field(
        default=None, description="Host header to send (an Istio ingress routes InferenceServices by host)"
    )
    data_path: str | None = Field(
        default=None, description="replay the rows of this CSV or Parquet file (in order, cycling)"
    )
    target: str | None = Field(
        default=None, description="with data_path: the label column, posted as delayed feedback"
    )

    @field_validator("front_door_url")
    @classmethod
    def _front_door(cls, value: str) -> str:
        return _check_url(value, "front_door_url")

    @field_validator("collector_url")
    @classmethod
    def _collector(cls, value: str | None) -> str | None:
        return None if value is None else _check_url(value, "collector_url")

    @field_validator("model")
    @classmethod
    def _model_name(cls, value: str) -> str:
        if "/" in value or value.strip() != value:
            raise ValueError(
                f"model must be a bare model name without '/' or surrounding spaces, got {value!r}"
            )
        return value

    @model_validator(mode="after")
    def _size(self) -> TrafficPlan:
        if (self.duration_s is None) == (self.total_requests is None):
            raise ValueError("give exactly one of duration_s or total_requests")
        if self.duration_s is not None and self.rps * self.duration_s > MAX_REQUESTS:
            raise ValueError(
                f"rps * duration_s = {self.rps * self.duration_s:.0f} requests; the limit is {MAX_REQUESTS}"
            )
        DriftKnobs(self.covariate_shift, self.fraud_rate, self.noise)
        return self

    @property
    def knobs(self) -> DriftKnobs:
        """The drift knobs handed to the generator."""
        return DriftKnobs(self.covariate_shift, self.fraud_rate, self.noise)

    @property
    def planned_requests(self) -> int:
        """How many requests the schedule holds (sent + shed at the end of a run)."""
        if self.total_requests is not None:
            return self.total_requests
        assert self.duration_s is not None
        return max(1, round(self.rps * self.duration_s))

    @property
    def predict_url(self) -> str:
        """The KServe V1 predict (or V2 infer) endpoint at the front door."""
        if self.protocol == "v2":
            return f"{self.front_door_url}/v2/models/{quote(self.model, safe='')}/infer"
        return f"{self.front_door_url}/v1/models/{quote(self.model, safe='')}:predict"
