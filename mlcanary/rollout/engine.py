"""The rollout engine: start a canary, run one monitor tick, promote, roll back.

A tick is: measure → ``decide()`` (pure) → act → persist. The release state lives on the candidate's
model version as ``mlcanary.*`` tags (and in the aliases), so any process can resume. Before an
action with several steps (promote, roll back) the engine writes the *intended* phase
(``promoting`` / ``rolling_back``); a run that finds a release in such a phase completes it. Every
step is idempotent, so re-running after a crash at any point converges.

Transitions are one small function per phase (:data:`PHASE_HANDLERS`). Every public action
(start, tick, promote, roll back, approve, reject) runs under the model's lease
(:mod:`mlcanary.rollout.lease`): a run that finds another holding it raises ``LeaseHeldError`` and
changes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from mlcanary.rollout import tags
from mlcanary.rollout.arms import CANDIDATE, CHAMPION
from mlcanary.rollout.decide import decide
from mlcanary.rollout.lease import LeaseHeldError, LeaseUnavailableError, NoLease, ReleaseLease
from mlcanary.rollout.measurements import Measurements
from mlcanary.rollout.policy import RolloutPolicy
from mlcanary.rollout.ports import (
    Clock,
    EvidenceRecorder,
    MetricsSource,
    Notifier,
    NullNotifier,
    NullRecorder,
    ReleaseEvent,
    ReleaseGate,
)
from mlcanary.rollout.serving import ServingBackend
from mlcanary.rollout.state import Decision, Phase, ReleaseState
from mlcanary.rollout.versions import ModelVersionInfo, VersionRegistry

logger = logging.getLogger(__name__)


class RolloutError(Exception):
    """A rollout request that cannot be carried out; nothing was changed. The message says why."""


class NothingToDoError(RolloutError):
    """There is no release in a state the request applies to (e.g. promote with no candidate)."""


class CandidateRefusedError(RolloutError):
    """The release gate refused the candidate before any traffic moved: the version is tagged
    rejected with the reason, ``@candidate`` is removed, the champion is untouched."""


@dataclass(frozen=True)
class TickResult:
    """What one tick did: the release after it and the decision (None when it only resumed an
    interrupted promote or roll back, or when the release had already ended)."""

    release: ReleaseState
    decision: Decision | None
    note: str = ""


class RolloutEngine:
    """Carries releases of registered models through their phases (see the module docstring)."""

    def __init__(
        self,
        *,
        registry: VersionRegistry,
        backend: ServingBackend,
        metrics: MetricsSource,
        policy: RolloutPolicy,
        clock: Clock,
        recorder: EvidenceRecorder | None = None,
        notifier: Notifier | None = None,
        gate: ReleaseGate | None = None,
        lease: ReleaseLease | None = None,
    ) -> None:
        self.registry = registry
        self.backend = backend
        self.metrics = metrics
        self.policy = policy
        self.clock = clock
        self.recorder = recorder or NullRecorder()
        self.notifier = notifier or NullNotifier()
        self.gate = gate
        self.lease = lease or NoLease()

    # -- reading state ---------------------------------------------------------------------------

    def _state_of(self, info: ModelVersionInfo) -> ReleaseState | None:
        return tags.release_from_tags(info.name, info.version, info.tags)

    def active_release(self, model: str) -> ReleaseState | None:
        """The release of ``model`` still in progress (or interrupted mid-action), if any."""
        if not self.registry.model_exists(model):
            raise RolloutError(f"model {model!r} is not registered")
        candidate = self.registry.version_for_alias(model, CANDIDATE)
        if candidate is not None:
            state = self._state_of(candidate)
            if state is not None and state.phase.active:
                return state
        # An interrupted promote may already have moved the aliases: look at every version.
        for info in reversed(self.registry.list_versions(model)):
            state = self._state_of(info)
            if state is not None and state.phase.active:
                return state
        return None

    def unstarted_candidate(self, model: str) -> str | None:
        """The version holding ``@candidate`` that no release was ever started for (no release tags,
        not rejected), or None: its start never came (the webhook's run was lost) or crashed after
        setting the alias and before writing the release's first tag."""
        candidate = self.registry.version_for_alias(model, CANDIDATE)
        if candidate is None or candidate.tag(tags.PHASE) or candidate.tag(tags.REJECTED):
            return None
        return candidate.version

    def _persist(self, state: ReleaseState, decision: Decision | None = None) -> ReleaseState:
        values = tags.release_tags(state)
        if decision is not None:
            values |= tags.decision_tag(decision)
        self.registry.set_tags(state.model, state.candidate_version, values)
        return state

    # -- start -------------------------------------------------------------------------------------

    def start_canary(self, model: str, version: str) -> ReleaseState:
        """Deploy ``version`` beside ``@champion`` at the first traffic step.

        Refuses (``RolloutError``, nothing changed) an unknown model or version, a model without a
        champion, the champion itself, and a second release while one is in progress. Starting the
        release that is already running is a no-op that returns its state. With a release gate, a
        candidate the gate refuses raises ``CandidateRefusedError`` before any traffic moves.
        Another run holding the model's lease: ``LeaseHeldError``, nothing changed.
        """
        with self.lease.hold(model):
            return self._start_canary(model, version)

    def _start_canary(self, model: str, version: str) -> ReleaseState:
        if not self.registry.model_exists(model):
            raise RolloutError(f"model {model!r} is not registered")
        info = self.registry.get_version(model, version)
        champion = self.registry.version_for_alias(model, CHAMPION)
        if champion is None:
            raise RolloutError(f"{model} has no @champion: train a first version before a canary")
        if champion.version == info.version:
            raise RolloutError(f"{model} version {info.version} is already @champion")
        rejected = info.tag(tags.REJECTED)
        if rejected:
            raise RolloutError(f"{model} version {info.version} was rejected: {rejected}")
        active = self.active_release(model)
        if active is not None:
            if active.candidate_version == info.version:
                return active
            raise RolloutError(
                f"{model}: a release of version {active.candidate_version} is {active.phase.value}; "
                "promote or roll it back first"
            )
        if self.gate is not None:
            refusal = self.gate.check(model, champion.version, info.version)
            if refusal is not None:
                self._refuse(model, champion.version, info.version, refusal)
        now = self.clock.now()
        state = ReleaseState(
            model=model,
            candidate_version=info.version,
            champion_version=champion.version,
            phase=Phase.PENDING,
            step_index=0,
            # A release starting with a shadow phase serves no user from the candidate (0 %).
            traffic=0 if self.policy.shadow.enabled else self.policy.steps[0],
            started_at=now,
            step_started_at=now,
            reason="starting the canary",
        )
        # Setting an alias fires MLflow's webhook again (and so another start-canary): only if needed.
        if self.registry.aliases(model).get(CANDIDATE) != info.version:
            self.registry.set_alias(model, CANDIDATE, info.version)
        self._persist(state)
        with self._failure_notified(state, "start"):
            return self._handle_pending(state).release

    def _refuse(self, model: str, champion: str, version: str, refusal: str) -> None:
        """Reject ``version`` before any traffic: tag it, take @candidate off it, notify, raise."""
        reason = f"refused before any traffic: {refusal}"
        self.registry.set_tags(
            model,
            version,
            tags.tagged({tags.REJECTED: reason[: tags.MAX_TEXT], tags.PREFLIGHT: refusal[: tags.MAX_TEXT]}),
        )
        if self.registry.aliases(model).get(CANDIDATE) == version:
            self.registry.delete_alias(model, CANDIDATE)
        now = self.clock.now()
        refused = ReleaseState(
            model=model,
            candidate_version=version,
            champion_version=champion,
            phase=Phase.ROLLED_BACK,
            step_index=0,
            traffic=0,
            started_at=now,
            step_started_at=now,
            reason=reason,
        )
        self.notifier.notify(
            refused, ReleaseEvent.FAILED, f"{model} v{version} {reason}; @champion v{champion} untouched"
        )
        raise CandidateRefusedError(f"{model} v{version} {reason}")

    # -- one tick ----------------------------------------------------------------------------------

    def tick(self, model: str) -> TickResult:
        """One monitor tick for ``model``: resume an interrupted action or judge the release
        (``LeaseHeldError`` when another run holds the model's lease: this one yields). With no
        release in progress but an :meth:`unstarted_candidate`, the tick starts its release."""
        with self.lease.hold(model):
            return self._tick(model)

    def _tick(self, model: str) -> TickResult:
        state = self.active_release(model)
        self._flush_evidence(model)
        if state is None:
            return self._start_unstarted(model)
        # On failure the release keeps its phase (the next tick retries); a human hears about it now.
        with self._failure_notified(state, "tick"):
            return PHASE_HANDLERS[state.phase](self, state)

    def _start_unstarted(self, model: str) -> TickResult:
        """Start the release of ``@candidate`` whose start never came or crashed before writing
        anything but the alias; ``NothingToDoError`` when there is none."""
        version = self.unstarted_candidate(model)
        if version is None:
            raise NothingToDoError(f"{model}: no release in progress")
        logger.warning("%s v%s is @candidate but no release was started for it: starting it", model, version)
        state = self._start_canary(model, version)
        return TickResult(state, None, note=f"started the release of @candidate v{version}")

    def _flush_evidence(self, model: str) -> int:
        """Write the evidence of ``model`` the recorder kept while its store was away (a release
        that ended meanwhile gets no other call that would); still away: kept, and logged."""
        try:
            return self.recorder.flush(model)
        except Exception as exc:  # MLflow or the outbox still away: kept for the next call
            logger.warning("kept evidence of %s not written yet: %s", model, exc)
            return 0

    def write_pending_evidence(self) -> dict[str, int]:
        """Write the evidence kept for every model while the evidence store was away, each under
        its model's lease; returns how many writes per model. A model whose lease another run
        holds is left to that run; one still unwritten stays kept for the next call."""
        written: dict[str, int] = {}
        for model in self.recorder.pending_models():
            try:
                with self.lease.hold(model):
                    written[model] = self._flush_evidence(model)
            except (LeaseHeldError, LeaseUnavailableError) as exc:
                logger.info("kept evidence of %s left for later: %s", model, exc)
        return written

    @contextmanager
    def _failure_notified(self, state: ReleaseState, what: str) -> Iterator[None]:
        """Send "failed" (with the error) when the action in the block raises, then re-raise.
        Refused requests (``RolloutError``: nothing was changed) are the caller's to report."""
        try:
            yield
        except RolloutError:
            raise
        except Exception as exc:
            detail = f"{what} of {state.model} v{state.candidate_version} failed: {type(exc).__name__}: {exc}"
            self.notifier.notify(state, ReleaseEvent.FAILED, detail)
            raise

    def _handle_pending(self, state: ReleaseState) -> TickResult:
        self.backend.deploy(state.model, state.champion_version, state.candidate_version, state.traffic)
        run_id = state.release_run_id or self.recorder.begin(state)
        if _starts_in_shadow(state):
            share = self.policy.shadow.share
            self.backend.set_shadow(state.model, share)
            state = replace(
                state,
                phase=Phase.SHADOWING,
                release_run_id=run_id,
                reason=f"shadow started: {share:.0%} of requests mirrored, no user served by the candidate",
            )
            detail = f"{state.model} v{state.candidate_version} in shadow ({share:.0%} of requests mirrored)"
        else:
            state = replace(state, phase=Phase.PROGRESSING, release_run_id=run_id, reason="canary started")
            detail = f"{state.model} v{state.candidate_version} at {state.traffic} %"
        self._persist(state)
        self.notifier.notify(state, ReleaseEvent.CANARY_STARTED, detail)
        return TickResult(state, None, note="deployed")

    def _handle_progressing(self, state: ReleaseState) -> TickResult:
        withdrawn = self._withdrawn(state)
        if withdrawn is not None:
            # A rollback moves the traffic before it writes its intent: one that crashed in between
            # left a ready candidate at 0 % in serving. Finish it rather than judge (or step back up).
            rolled_back = self._roll_back(state, withdrawn)
            return TickResult(rolled_back, None, note="completed an interrupted rollback")
        now = self.clock.now()
        window_start = _window_start(state, now, self.policy.tick_interval)
        measurements = self.metrics.measure(state, window_start=window_start, now=now)
        measurements = self._with_serving(state, measurements)
        decision = decide(self.policy, state, measurements, now)
        moved = self._moved_on(state)
        if moved is not None:
            return TickResult(moved, None, note=f"another run acted during this tick: {moved.phase.value}")
        state = replace(state, ticks=state.ticks + 1, reason=decision.reason)
        actions = _SHADOW_ACTIONS if state.phase == Phase.SHADOWING else _ACTIONS
        state = actions[decision.action](self, state, decision)
        self.recorder.record_tick(state, measurements, decision)
        return TickResult(state, decision)

    def _withdrawn(self, state: ReleaseState) -> str | None:
        """Why the release must be finished as a rollback when serving shows the candidate at 0 %
        while the release has it at a canary step (None otherwise, or when serving cannot say)."""
        if state.phase not in (Phase.PROGRESSING, Phase.AWAITING_APPROVAL) or state.traffic <= 0:
            return None
        try:
            observed = self.backend.status(state.model)
        except Exception:  # unreachable serving: the tick reports it through the availability check
            return None
        arm = observed.arms.get(CANDIDATE)
        # A candidate that is not ready gets no traffic either: that is the availability check's.
        if observed.traffic is None or observed.traffic.get(CANDIDATE, 0) > 0 or arm is None or not arm.ready:
            return None
        return (
            f"serving sends the candidate 0 % while the release had it at {state.traffic} %: a rollback "
            f"was interrupted after moving the traffic ({state.reason or 'no reason recorded'})"
        )

    def _moved_on(self, judged: ReleaseState) -> ReleaseState | None:
        """The release as it is now if another run changed it while this tick measured (a manual
        promote or roll back, an approval, a concurrent tick), else None. Acting on a stale
        judgement would overwrite that run's outcome and reason, so the tick then does nothing."""
        info = self.registry.get_version(judged.model, judged.candidate_version)
        current = self._state_of(info)
        if current is None:
            return judged
        same = (current.phase, current.ticks, current.step_index) == (
            judged.phase,
            judged.ticks,
            judged.step_index,
        )
        return None if same else current

    def _with_serving(self, state: ReleaseState, measurements: Measurements) -> Measurements:
        """Add what the serving layer observes of the candidate arm (its readiness)."""
        try:
            observed = self.backend.status(state.model)
        except Exception as exc:  # an unreachable serving layer is reported, not fatal to the tick
            return replace(measurements, problems={**measurements.problems, "availability": str(exc)[:300]})
        arm = observed.arms.get("candidate")
        if arm is None:
            return measurements
        detail = arm.detail or ("ready" if arm.ready else "not ready")
        return replace(
            measurements, candidate_ready=arm.ready, serving_detail=f"v{arm.version or '?'}: {detail}"
        )

    def _handle_promoting(self, state: ReleaseState) -> TickResult:
        return TickResult(self._complete_promote(state), None, note="completed an interrupted promote")

    def _handle_rolling_back(self, state: ReleaseState) -> TickResult:
        return TickResult(self._complete_rollback(state), None, note="completed an interrupted rollback")

    def _handle_ended(self, state: ReleaseState) -> TickResult:
        return TickResult(state, None, note=f"release already {state.phase.value}")

    # -- actions -----------------------------------------------------------------------------------

    def _act_hold(self, state: ReleaseState, decision: Decision) -> ReleaseState:
        return self._persist(state, decision)

    def _act_step_up(self, state: ReleaseState, decision: Decision) -> ReleaseState:
        self.backend.set_traffic(state.model, decision.traffic)
        state = replace(
            state, step_index=state.step_index + 1, traffic=decision.traffic, step_started_at=decision.at
        )
        return self._persist(state, decision)

    def _act_end_shadow(self, state: ReleaseState, decision: Decision) -> ReleaseState:
        """Shadow passed: the first canary step (setting traffic ends the mirroring)."""
        self.backend.set_traffic(state.model, decision.traffic)
        state = replace(
            state,
            phase=Phase.PROGRESSING,
            step_index=0,
            traffic=decision.traffic,
            step_started_at=decision.at,
        )
        return self._persist(state, decision)

    def _act_await_approval(self, state: ReleaseState, decision: Decision) -> ReleaseState:
        state = replace(state, phase=Phase.AWAITING_APPROVAL, approval_requested_at=decision.at)
        self._persist(state, decision)
        self.notifier.notify(
            state,
            ReleaseEvent.APPROVAL_REQUESTED,
            f"{state.model} v{state.candidate_version} is ready to promote and waits for a human "
            f"approve / reject: {decision.reason}",
        )
        return state

    def _act_promote(self, state: ReleaseState, decision: Decision) -> ReleaseState:
        return self._promote(state, decision.reason, decision)

    def _act_rollback(self, state: ReleaseState, decision: Decision) -> ReleaseState:
        return self._roll_back(state, decision.reason, decision)

    def _promote(self, state: ReleaseState, reason: str, decision: Decision | None = None) -> ReleaseState:
        """Record the intent (``promoting``), then carry the promotion out."""
        state = self._persist(state.with_phase(Phase.PROMOTING, reason), decision)
        return self._complete_promote(state)

    def _roll_back(self, state: ReleaseState, reason: str, decision: Decision | None = None) -> ReleaseState:
        """Move the traffic first (a rollback must reach the serving layer before any bookkeeping),
        record the intent (``rolling_back``), then finish."""
        self.backend.rollback(state.model)
        state = self._persist(state.with_phase(Phase.ROLLING_BACK, reason), decision)
        return self._complete_rollback(state, traffic_moved=True)

    def _complete_promote(self, state: ReleaseState) -> ReleaseState:
        model, version = state.model, state.candidate_version
        self.backend.promote(model)
        previous = self.registry.version_for_alias(model, CHAMPION)
        self.registry.set_alias(model, CHAMPION, version)
        if previous is not None and previous.version != version:
            self.registry.set_tags(
                model,
                previous.version,
                tags.tagged({tags.PREVIOUS_CHAMPION: "true", tags.REPLACED_BY: version}),
            )
        if (self.registry.aliases(model)).get(CANDIDATE) == version:
            self.registry.delete_alias(model, CANDIDATE)
        state = replace(state, phase=Phase.PROMOTED, traffic=100)
        self._persist(state)
        self.recorder.finish(state)
        self.notifier.notify(state, ReleaseEvent.PROMOTED, f"{model} v{version} is @champion: {state.reason}")
        return state

    def _complete_rollback(self, state: ReleaseState, *, traffic_moved: bool = False) -> ReleaseState:
        """Finish a rollback; ``traffic_moved`` when this run already told the backend to roll back
        (a run resuming an interrupted rollback has not, so it does it again: it is idempotent)."""
        model, version = state.model, state.candidate_version
        if not traffic_moved:
            self.backend.rollback(model)
        if (self.registry.aliases(model)).get(CANDIDATE) == version:
            self.registry.delete_alias(model, CANDIDATE)
        self.registry.set_tags(
            model, version, tags.tagged({tags.REJECTED: (state.reason or "rolled back")[: tags.MAX_TEXT]})
        )
        state = replace(state, phase=Phase.ROLLED_BACK, traffic=0)
        self._persist(state)
        self.recorder.finish(state)
        self.notifier.notify(state, ReleaseEvent.ROLLED_BACK, f"{model} v{version}: {state.reason}")
        return state

    # -- manual actions ----------------------------------------------------------------------------

    def promote(self, model: str, reason: str = "promoted by hand") -> ReleaseState:
        """Promote the release in progress now, whatever the checks say."""
        with self.lease.hold(model):
            return self._promote_now(model, reason)

    def _promote_now(self, model: str, reason: str) -> ReleaseState:
        state = self.active_release(model)
        if state is None:
            raise NothingToDoError(f"{model}: nothing to promote (no release in progress)")
        if state.phase == Phase.ROLLING_BACK:
            raise RolloutError(f"{model}: version {state.candidate_version} is being rolled back")
        with self._failure_notified(state, "promote"):
            if state.phase == Phase.PENDING:
                state = self._handle_pending(state).release
            return self._promote(state, reason)

    def awaiting_approval(self, model: str) -> ReleaseState:
        """The release of ``model`` that waits for a human answer; ``NothingToDoError`` when there is
        none (no release, or it has moved on: promoted, rolled back, or not judged ready yet)."""
        state = self.active_release(model)
        if state is None or state.phase != Phase.AWAITING_APPROVAL:
            where = "no release in progress" if state is None else f"the release is {state.phase.value}"
            raise NothingToDoError(f"{model}: nothing waits for approval ({where})")
        return state

    def approve(self, model: str, comment: str = "", approver: str = "") -> ReleaseState:
        """A human approved the release waiting for approval: promote it now."""
        with self.lease.hold(model):
            return self._approve_now(model, comment, approver)

    def _approve_now(self, model: str, comment: str, approver: str) -> ReleaseState:
        state = self.awaiting_approval(model)
        with self._failure_notified(state, "approved promote"):
            return self._promote(state, _answer("approved", comment, approver))

    def reject(self, model: str, comment: str = "", approver: str = "") -> ReleaseState:
        """A human rejected the release waiting for approval: roll it back now."""
        with self.lease.hold(model):
            return self._reject_now(model, comment, approver)

    def _reject_now(self, model: str, comment: str, approver: str) -> ReleaseState:
        state = self.awaiting_approval(model)
        with self._failure_notified(state, "rejected rollback"):
            return self._roll_back(state, _answer("rejected", comment, approver))

    def rollback(self, model: str, reason: str = "rolled back by hand") -> ReleaseState:
        """Roll the release in progress back now (without the lease if its store is unreachable:
        moving traffic off a bad candidate must not wait for a database)."""
        try:
            with self.lease.hold(model):
                return self._rollback_now(model, reason)
        except LeaseUnavailableError as exc:
            logger.warning("%s; rolling back without it", exc)
            return self._rollback_now(model, reason)

    def _rollback_now(self, model: str, reason: str) -> ReleaseState:
        state = self.active_release(model)
        if state is None:
            raise NothingToDoError(f"{model}: nothing to roll back (no release in progress)")
        if state.phase == Phase.PROMOTING:
            raise RolloutError(f"{model}: version {state.candidate_version} is being promoted")
        with self._failure_notified(state, "rollback"):
            return self._roll_back(state, reason)


def _answer(verb: str, comment: str, approver: str) -> str:
    who = f" by {approver.strip()}" if approver.strip() else ""
    text = f"{verb}{who} at the approval gate"
    return f"{text}: {comment.strip()}" if comment.strip() else text


def _starts_in_shadow(state: ReleaseState) -> bool:
    """A pending release at 0 % was started with the policy's shadow phase (no step is 0 %)."""
    return state.phase == Phase.PENDING and state.traffic == 0


def _window_start(state: ReleaseState, now: datetime, interval: timedelta) -> datetime:
    """The burst window: one tick interval back, but never before the release or the step began."""
    return max(now - interval, state.step_started_at, state.started_at)


PHASE_HANDLERS: dict[Phase, Callable[[RolloutEngine, ReleaseState], TickResult]] = {
    Phase.PENDING: RolloutEngine._handle_pending,
    Phase.SHADOWING: RolloutEngine._handle_progressing,
    Phase.PROGRESSING: RolloutEngine._handle_progressing,
    Phase.AWAITING_APPROVAL: RolloutEngine._handle_progressing,
    Phase.PROMOTING: RolloutEngine._handle_promoting,
    Phase.ROLLING_BACK: RolloutEngine._handle_rolling_back,
    Phase.PROMOTED: RolloutEngine._handle_ended,
    Phase.ROLLED_BACK: RolloutEngine._handle_ended,
    Phase.FAILED: RolloutEngine._handle_ended,
}
_ACTIONS: dict[str, Callable[[RolloutEngine, ReleaseState, Decision], ReleaseState]] = {
    "hold": RolloutEngine._act_hold,
    "step_up": RolloutEngine._act_step_up,
    "await_approval": RolloutEngine._act_await_approval,
    "promote": RolloutEngine._act_promote,
    "rollback": RolloutEngine._act_rollback,
}
_SHADOW_ACTIONS: dict[str, Callable[[RolloutEngine, ReleaseState, Decision], ReleaseState]] = {
    **_ACTIONS,
    "step_up": RolloutEngine._act_end_shadow,
}
