"""``decide()``: the pure judge. Measurements + policy + release state → hold, step up, promote or
roll back, with the reason and every check.

Rules, in order:
1. a critical check fails → roll back at once, even before the sample floor (critical two-arm
   checks are judged from ``critical_min_samples`` requests per arm, availability and error bursts
   from the first tick: the fast path for hard failures);
2. at ``max_duration`` a release that could promote does; otherwise it follows
   ``on_max_duration`` — but a release with a failing check or without enough samples is rolled
   back even when the default is to promote (missing data never promotes);
3. fewer than ``min_samples_per_arm`` requests in either arm → hold; when the request counts could
   not be measured at all (the source of ``error_rate`` and ``latency_p95`` failed, e.g. the
   inference log is unreachable) the hold says "no data" with the problem, never zero requests;
4. any other failing check (not advisory) → roll back: its anytime-valid test says the harm
   exceeds the tolerance, and waiting longer only exposes more users to it;
5. less than ``min_bake_per_step`` at this step → hold;
6. not at the last step → step up to the next;
7. less than ``min_duration`` since the start → hold;
8. any blocking check not yet passing (inconclusive, error, required data missing) → hold;
9. otherwise → promote.

Holding is for *inconclusive* evidence only; a failed test never waits for ``max_duration``.

With ``approval.required`` a promote becomes ``await_approval`` (the release waits at its last
step for a human); while it waits, the rules above still run each tick: a rollback stands, anything
else holds, and once ``approval.timeout`` has passed the release follows ``approval.on_timeout``
(promote only if the rules would promote at that tick, otherwise roll back). The human's answer
itself is not a tick: the engine's ``approve`` / ``reject`` carry it out.

In the **shadow phase** (``shadowing``: no user on the candidate, a share of requests mirrored to
it; :func:`decide_shadow`) the checks of :meth:`RolloutPolicy.for_shadow` judge the mirrored
answers against the champion's, in order:

1. a critical check fails → reject (roll back) at once;
2. at ``max_duration`` → reject (the release never got out of the shadow);
3. fewer than ``shadow.min_samples`` mirrored requests answered → hold;
4. any other failing check → reject;
5. less than ``shadow.duration`` since the start → hold;
6. a blocking check that could not be measured (``error``) → hold;
7. otherwise → step up to the first canary step. Inconclusive checks do not hold the release:
   the shadow screens out what is confidently wrong, the canary goes on judging the rest.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime

from mlcanary.rollout.checks import evaluate_checks
from mlcanary.rollout.durations import human_duration as _hours
from mlcanary.rollout.measurements import Measurements
from mlcanary.rollout.policy import RolloutPolicy
from mlcanary.rollout.state import Action, CheckResult, Decision, Phase, ReleaseState


def _describe(check: CheckResult) -> str:
    if check.reason:
        return check.reason
    parts = [check.name]
    if check.value is not None:
        parts.append(f"{check.value:.4g}")
    if check.baseline is not None:
        parts.append(f"vs {check.baseline:.4g}")
    text = " ".join(parts)
    if check.threshold:
        text += f" ({check.threshold})"
    return text


def _names(checks: list[CheckResult]) -> str:
    return "; ".join(_describe(c) for c in checks)


#: The checks that read the arms' request counts (one source feeds all of them).
_REQUEST_COUNT_CHECKS = ("error_rate", "latency_p95")


def _counts_unknown(m: Measurements) -> str | None:
    """The problem that kept the request counts from being measured, or None when they were."""
    if all(name in m.problems for name in _REQUEST_COUNT_CHECKS):
        return m.problems[_REQUEST_COUNT_CHECKS[0]]
    return None


def decide(policy: RolloutPolicy, state: ReleaseState, measurements: Measurements, now: datetime) -> Decision:
    """Judge one tick. Pure: the same inputs always give the same decision."""
    if state.phase == Phase.SHADOWING:
        return decide_shadow(policy, state, measurements, now)
    decision = _judge(policy, state, measurements, now)
    if state.phase == Phase.AWAITING_APPROVAL:
        return _while_awaiting_approval(policy, state, decision, now)
    if decision.action == "promote" and policy.approval.required:
        approval = policy.approval
        then = "roll back" if approval.on_timeout == "rollback" else "promote"
        return replace(
            decision,
            action="await_approval",
            traffic=state.traffic,
            reason=f"{decision.reason}; waiting for a human approval "
            f"(up to {_hours(approval.timeout)}, then {then})",
        )
    return decision


def _while_awaiting_approval(
    policy: RolloutPolicy, state: ReleaseState, decision: Decision, now: datetime
) -> Decision:
    if decision.action == "rollback":
        return decision
    approval = policy.approval
    waited = now - state.approval_since
    if waited >= approval.timeout:
        window = f"no approval within {_hours(approval.timeout)}"
        if approval.on_timeout == "promote" and decision.action == "promote":
            return replace(decision, reason=f"{window}: policy says promote ({decision.reason})")
        if approval.on_timeout == "promote":
            return replace(
                decision,
                action="rollback",
                traffic=0,
                reason=f"{window}; policy says promote but the checks do not pass now: {decision.reason}",
            )
        return replace(decision, action="rollback", traffic=0, reason=f"{window}: policy says roll back")
    return replace(
        decision,
        action="hold",
        traffic=state.traffic,
        reason=f"awaiting approval ({_hours(waited)} of {_hours(approval.timeout)}); "
        f"meanwhile: {decision.reason}",
    )


def _judge(policy: RolloutPolicy, state: ReleaseState, measurements: Measurements, now: datetime) -> Decision:
    """Rules 1-9 of the module docstring, without the approval gate."""
    checks = evaluate_checks(policy, measurements)
    elapsed = now - state.started_at
    baked = now - state.step_started_at
    last_step = state.step_index >= len(policy.steps) - 1
    m = measurements

    def verdict(action: Action, reason: str, traffic: int | None = None) -> Decision:
        if traffic is None:
            traffic = {"promote": 100, "rollback": 0}.get(action, state.traffic)
        return Decision(action=action, reason=reason, checks=checks, traffic=traffic, at=now)

    critical = [c for c in checks if c.verdict == "fail" and c.critical and not c.advisory]
    if critical:
        return verdict("rollback", f"critical check failed: {_names(critical)}")

    failing = [c for c in checks if c.verdict == "fail" and not c.advisory]
    waiting = [c for c in checks if c.blocking and c.verdict != "fail"]
    unknown = _counts_unknown(m)
    enough = unknown is None and min(m.champion.requests, m.candidate.requests) >= policy.min_samples_per_arm
    samples = (
        f"no data: request counts unknown ({unknown})"
        if unknown is not None
        else f"champion {m.champion.requests}, candidate {m.candidate.requests} requests "
        f"(need {policy.min_samples_per_arm} each)"
    )

    if elapsed >= policy.max_duration:
        window = f"maximum duration {_hours(policy.max_duration)} reached"
        if last_step and enough and not failing and not waiting:
            return verdict("promote", f"{window}: every check passed")
        if failing:
            return verdict("rollback", f"{window} with failing checks: {_names(failing)}")
        if not enough:
            return verdict("rollback", f"{window} without enough data: {samples}")
        if policy.on_max_duration == "promote":
            return verdict("promote", f"{window}, undecided ({_names(waiting)}): policy says promote")
        undecided = _names(waiting) or f"still at step {state.step_index + 1} of {len(policy.steps)}"
        return verdict("rollback", f"{window}, undecided ({undecided}): policy says roll back")

    if not enough:
        return verdict("hold", samples if unknown is not None else f"waiting for samples: {samples}")
    if failing:
        return verdict("rollback", f"check failed: {_names(failing)}")
    if baked < policy.min_bake_per_step:
        return verdict(
            "hold",
            f"baking step {state.step_index + 1} of {len(policy.steps)} at {state.traffic} %: "
            f"{_hours(baked)} of {_hours(policy.min_bake_per_step)}",
        )
    if not last_step:
        nxt = policy.steps[state.step_index + 1]
        return verdict("step_up", f"step {state.step_index + 1} healthy: {state.traffic} % → {nxt} %", nxt)
    if elapsed < policy.min_duration:
        return verdict(
            "hold", f"minimum duration: {_hours(elapsed)} of {_hours(policy.min_duration)} elapsed"
        )
    if waiting:
        return verdict("hold", f"waiting for checks to pass: {_names(waiting)}")
    return verdict("promote", "every check passed after the minimum duration and bake time")


def decide_shadow(
    policy: RolloutPolicy, state: ReleaseState, measurements: Measurements, now: datetime
) -> Decision:
    """Judge one tick of the shadow phase (rules 1-7 of the module docstring). Pure."""
    shadow = policy.shadow
    checks = evaluate_checks(policy.for_shadow(), measurements)
    elapsed = now - state.started_at
    first = policy.steps[0]

    def verdict(action: Action, reason: str) -> Decision:
        traffic = first if action == "step_up" else 0
        return Decision(action=action, reason=reason, checks=checks, traffic=traffic, at=now)

    critical = [c for c in checks if c.verdict == "fail" and c.critical and not c.advisory]
    if critical:
        return verdict(
            "rollback", f"rejected in shadow, no user served: critical check failed: {_names(critical)}"
        )
    failing = [c for c in checks if c.verdict == "fail" and not c.advisory]
    mirrored = measurements.candidate.requests
    samples = f"{mirrored} mirrored requests answered by the candidate (need {shadow.min_samples})"
    if elapsed >= policy.max_duration:
        why = _names(failing) if failing else samples
        return verdict("rollback", f"maximum duration {_hours(policy.max_duration)} reached in shadow: {why}")
    if mirrored < shadow.min_samples:
        return verdict("hold", f"shadowing: waiting for samples: {samples}")
    if failing:
        return verdict("rollback", f"rejected in shadow, no user served: check failed: {_names(failing)}")
    if elapsed < shadow.duration:
        return verdict("hold", f"shadowing: {_hours(elapsed)} of {_hours(shadow.duration)}")
    unmeasured = [c for c in checks if c.blocking and c.verdict == "error"]
    if unmeasured:
        return verdict(
            "hold", f"shadowing: waiting for checks that could not be measured: {_names(unmeasured)}"
        )
    return verdict(
        "step_up",
        f"shadow passed: no check failed on {mirrored} mirrored requests over {_hours(elapsed)} → "
        f"first canary step, {first} % of users",
    )
