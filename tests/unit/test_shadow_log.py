"""The shadow phase in the inference log: mirrored events filed apart, paired with the champion's
answers by request id, measured for the judge; an older database only gains a table."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect

from mlcanary.rollout.state import Phase, ReleaseState
from mlcanary.telemetry.aggregate import aggregate
from mlcanary.telemetry.cloudevents_ingest import parse_event, rows_from_event
from mlcanary.telemetry.events import CE_TYPE_REQUEST, CE_TYPE_RESPONSE, HEADER_SHADOW, InferenceEvent
from mlcanary.telemetry.metrics import StoreMetricsSource
from mlcanary.telemetry.shadow import fetch_pairs
from mlcanary.telemetry.store import InferenceLogStore, InferenceRow, inference_log, metadata

T0 = datetime(2026, 5, 1, 12, tzinfo=UTC)


def release(phase: Phase = Phase.SHADOWING) -> ReleaseState:
    return ReleaseState(
        model="fraud",
        candidate_version="2",
        champion_version="1",
        phase=phase,
        step_index=0,
        traffic=0,
        started_at=T0,
        step_started_at=T0,
    )


def event(
    arm: str, version: str, request_id: str, *, shadow: bool, probability: float, at: datetime
) -> list[InferenceEvent]:
    common = {
        "ce_id": request_id,
        "source": f"mlcanary/local/fraud/{arm}/v{version}",
        "model": "fraud",
        "arm": arm,
        "version": version,
        "shadow": shadow,
    }
    body = json.dumps({"predictions": [int(probability >= 0.5)], "probabilities": [probability]}).encode()
    return [
        InferenceEvent(ce_type=CE_TYPE_REQUEST, time=at, body=b'{"instances": [{"amount": 1.0}]}', **common),
        InferenceEvent(ce_type=CE_TYPE_RESPONSE, time=at, body=body, latency_ms=5.0, status=200, **common),
    ]


def ingest(store: InferenceLogStore, events: list[InferenceEvent], at: datetime) -> None:
    for item in events:
        parsed = parse_event(item.to_headers(), item.body, received_at=at)
        store.write_rows(rows_from_event(parsed, received_at=at))


@pytest.fixture
def store(tmp_path: Path) -> InferenceLogStore:
    return InferenceLogStore(f"sqlite:///{tmp_path / 'log.db'}")


def test_the_shadow_mark_survives_the_wire() -> None:
    mirrored = event("candidate", "2", "r1", shadow=True, probability=0.2, at=T0)[0]
    headers = mirrored.to_headers()
    assert headers[HEADER_SHADOW] == "true"
    assert parse_event(headers, mirrored.body, received_at=T0).shadow is True
    live = event("champion", "1", "r1", shadow=False, probability=0.2, at=T0)[0]
    assert HEADER_SHADOW not in live.to_headers()
    with pytest.raises(ValueError, match=HEADER_SHADOW):
        parse_event({**headers, HEADER_SHADOW: "maybe"}, mirrored.body, received_at=T0)


def test_mirrored_answers_pair_with_the_champion_and_never_count_as_live(store: InferenceLogStore) -> None:
    # 40 live requests, the even ones mirrored; the candidate flips the label of every 4th one.
    for i in range(40):
        at = T0 + timedelta(seconds=i)
        p = 0.1 + 0.02 * i
        ingest(store, event("champion", "1", f"r{i}", shadow=False, probability=p, at=at), at)
        if i % 2 == 0:
            q = 1 - p if i % 4 == 0 else p + 0.01
            ingest(store, event("candidate", "2", f"r{i}", shadow=True, probability=q, at=at), at)
    # The live log is untouched: 40 champion rows, no candidate.
    assert store.count("fraud") == 40
    assert set(aggregate(store, "fraud", T0, T0 + timedelta(minutes=5))) == {"champion"}

    m = StoreMetricsSource(store).measure(release(), window_start=T0, now=T0 + timedelta(minutes=1))
    assert (m.champion.requests, m.candidate.requests) == (40, 20)
    assert m.paired is not None
    assert (m.paired.live, m.paired.mirrored, m.paired.pairs) == (40, 20, 20)
    flipped = [i for i in range(0, 40, 4) if int(1 - (0.1 + 0.02 * i) >= 0.5) != int(0.1 + 0.02 * i >= 0.5)]
    assert m.paired.agree == 20 - len(flipped)
    assert m.agreement is not None
    assert m.agreement.n == 20
    diffs = [(1 - 2 * (0.1 + 0.02 * i)) if i % 4 == 0 else 0.01 for i in range(0, 40, 2)]
    assert m.paired.probability_diff is not None
    assert m.paired.probability_diff.mean == pytest.approx(sum(diffs) / 20)
    assert m.paired.mean_abs_dp == pytest.approx(sum(abs(d) for d in diffs) / 20)

    pairs = fetch_pairs(
        store, "fraud", T0, T0 + timedelta(minutes=1), champion_version="1", candidate_version="2"
    )
    assert len(pairs) == 20
    assert pairs["candidate_probability"].iloc[1] == pytest.approx(
        pairs["champion_probability"].iloc[1] + 0.01
    )

    # The same store in the canary phase: no mirrored arm, no pairs.
    canary = StoreMetricsSource(store).measure(
        release(Phase.PROGRESSING), window_start=T0, now=T0 + timedelta(minutes=1)
    )
    assert canary.candidate.requests == 0
    assert canary.paired is None


def test_pairs_keep_to_the_release_versions(store: InferenceLogStore) -> None:
    ingest(store, event("champion", "1", "a", shadow=False, probability=0.2, at=T0), T0)
    ingest(store, event("candidate", "3", "a", shadow=True, probability=0.2, at=T0), T0)  # another version
    m = StoreMetricsSource(store).measure(release(), window_start=T0, now=T0 + timedelta(minutes=1))
    assert m.paired is not None
    assert (m.paired.mirrored, m.paired.pairs) == (0, 0)
    assert m.paired.probability_diff is None


def test_a_database_from_before_the_shadow_phase_gains_a_table(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    engine = create_engine(url)
    old_tables = [metadata.tables["inference_log"], metadata.tables["feedback"]]
    metadata.create_all(engine, tables=old_tables)
    with engine.begin() as connection:
        connection.execute(
            inference_log.insert(),
            [
                {
                    "request_id": "old",
                    "instance_index": 0,
                    "received_at": T0,
                    "model": "fraud",
                    "arm": "champion",
                }
            ],
        )
    before = {c["name"] for c in inspect(engine).get_columns("inference_log")}
    engine.dispose()
    with InferenceLogStore(url) as store:
        inspector = inspect(store.engine)
        assert "shadow_log" in inspector.get_table_names()
        assert {c["name"] for c in inspector.get_columns("inference_log")} == before
        assert store.count("fraud") == 1
        store.write_rows(
            [
                InferenceRow(
                    request_id="old",
                    instance_index=0,
                    model="fraud",
                    received_at=T0,
                    arm="candidate",
                    shadow=True,
                )
            ]
        )
        assert store.count("fraud") == 1
