"""``LocalBackend``: the :class:`~mlcanary.rollout.serving.ServingBackend` of the local stack.

A real Envoy (the front door, :mod:`mlcanary.serving.local.front_door`) splits traffic between two
model-server processes (:mod:`mlcanary.serving.local.arm_servers`): the champion arm on
``serving.champion_port`` and the candidate arm on ``serving.candidate_port``.

Where the truth lives, so that separate processes (CLI commands, flow runs) see the same state:

* weights: Envoy's admin endpoint (what it serves), never the files we wrote;
* which version an arm serves: the server itself (``GET /v1/models/<name>`` reports its version);
* which processes are ours: pidfiles ``<state>/run/model-champion.pid`` and ``model-candidate.pid``
  (plus Envoy's ``envoy.pid``); anything else listening on our ports is someone else's and is
  refused, never killed;
* what was asked for: the intent file (:mod:`mlcanary.serving.local.intent`).

Envoy found dead under a running stack (a model server of ours still runs) is started again, with
the persisted weights, by the next call that acts or reports status — so by the next monitor tick
(which asks for the status) even when no one runs ``mlcanary up``. A stack stopped by ``down`` has
no server left and is not revived.

Changing the version an arm serves means stopping its server and starting another on the same
port. Traffic is moved off that arm first whenever the other arm is ready; if no other arm is
ready there is a short gap (requests to that arm fail with 503 until the new server is ready).
Mutating calls are serialised across processes by the backend lock; ``rollback`` moves the
weights *before* taking that lock, so a long ``deploy`` elsewhere cannot delay it.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from mlcanary.rollout.arms import ARMS, Arm
from mlcanary.rollout.serving import ServingError, ServingStatus
from mlcanary.runtime.processes import ManagedProcess
from mlcanary.serving.local.arm_servers import STOP_GRACE_S, ArmProbe, ArmServers
from mlcanary.serving.local.envoy import EnvoyError, EnvoyLayout, EnvoyProxy, Weights
from mlcanary.serving.local.front_door import ALL_TO_CHAMPION, FrontDoor, TrafficChange, percent
from mlcanary.serving.local.intent import BackendLock, Intent, IntentFile

if TYPE_CHECKING:
    from mlcanary.config import Settings

__all__ = ["LocalBackend"]

logger = logging.getLogger(__name__)

_SERVING_DIRNAME = "serving"


def _check_percent(candidate_percent: int) -> None:
    if (
        not isinstance(candidate_percent, int)
        or isinstance(candidate_percent, bool)
        or not 0 <= candidate_percent <= 100
    ):
        raise ServingError(f"candidate_percent must be an integer 0..100, got {candidate_percent!r}")


class LocalBackend:
    """``ServingBackend`` over the local stack: Envoy + a champion and a candidate model server.

    Contract (beyond the protocol's):

    * ``deploy`` starts Envoy if it is not running (booting with the persisted weights, or 100/0
      when those would route to a candidate that is not ready), makes each arm's server serve the
      requested version (replacing a server that serves another one), stops the candidate server
      when no candidate is requested, and returns after Envoy confirms the new weights.
    * ``set_traffic`` refuses (``ServingError``) to give weight to an arm that is not ready; it
      and every other weight change end any mirroring (``set_shadow``), in the same routes swap.
    * ``promote`` sends all traffic to the candidate, restarts the champion server on the
      candidate's version, sends all traffic to it and stops the candidate server; re-running it
      after a crash at any step finishes the job, and re-running it afterwards is a no-op.
    * ``rollback`` confirms 100/0 from Envoy first (``last_change.elapsed_ms``, also in the returned
      ``detail`` and logged), then stops the candidate server. With Envoy down, 100/0 is persisted
      for its next start. If the champion is not ready the candidate is left running and
      ``ServingError`` says so (the weights have moved anyway: the candidate was judged bad).
    * ``status``, ``set_traffic``, ``set_shadow``, ``promote`` and ``rollback`` start Envoy again
      when it died while a model server of ours still runs, with the persisted weights (100/0
      when those would route to a candidate that is not ready), and say so in ``detail``.
    * Processes this object starts keep running after it is gone; ``mlcanary down``
      (:func:`mlcanary.serving.local.stack.down`) stops them.
    * Does not start the collector; model servers post events to ``serving.collector_url/events``
      and count (and log) what they could not deliver.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        python: str = sys.executable,
        ready_timeout_s: float = 90.0,
        stop_grace_s: float = STOP_GRACE_S,
        probe_timeout_s: float = 2.0,
        lock_timeout_s: float = 300.0,
        envoy_concurrency: int | None = None,
        child_log_level: str = "warning",
    ) -> None:
        self.settings = settings
        self.front_door = FrontDoor(settings, envoy_concurrency=envoy_concurrency)
        self.servers = ArmServers(
            settings,
            self.state_dir,
            python=python,
            ready_timeout_s=ready_timeout_s,
            stop_grace_s=stop_grace_s,
            probe_timeout_s=probe_timeout_s,
            child_log_level=child_log_level,
        )
        serving_dir = self.state_dir / _SERVING_DIRNAME
        self.intent = IntentFile(serving_dir / "intent.json")
        self.lock = BackendLock(serving_dir / "backend.lock", lock_timeout_s)

    # -- addresses -------------------------------------------------------------------------------

    @property
    def layout(self) -> EnvoyLayout:
        return self.front_door.layout

    @property
    def envoy(self) -> EnvoyProxy:
        return self.front_door.envoy

    @property
    def last_change(self) -> TrafficChange | None:
        """The latest weight change Envoy confirmed for a call of this backend."""
        return self.front_door.last_change

    @property
    def state_dir(self) -> Path:
        """The absolute state directory (pidfiles in ``run/``, logs in ``logs/``)."""
        return self.layout.state_dir

    def arm_url(self, arm: Arm) -> str:
        """Base URL of ``arm``'s model server (bypassing Envoy)."""
        return self.servers.url(arm)

    @property
    def front_door_url(self) -> str:
        """Base URL of Envoy's listener: the one URL clients call."""
        return self.front_door.url

    def close(self) -> None:
        """Release the probe client (the backend stays usable: the next probe opens a new one)."""
        self.servers.close()

    # -- the protocol ----------------------------------------------------------------------------

    def deploy(
        self, model: str, champion: str, candidate: str | None = None, candidate_percent: int = 0
    ) -> ServingStatus:
        """Serve ``champion`` (and ``candidate`` at ``candidate_percent`` %) for ``model``."""
        _check_percent(candidate_percent)
        if candidate is None and candidate_percent:
            raise ServingError(f"candidate_percent={candidate_percent} needs a candidate version")
        champion, candidate = str(champion), None if candidate is None else str(candidate)
        servers, door = self.servers, self.front_door
        with self.lock.hold():
            # A new deployment supersedes any promotion left unfinished.
            self.intent.write(Intent(model, champion=champion, candidate=candidate))
            door.ensure(lambda: servers.probe("candidate", model).ready)
            champ = servers.probe("champion", model)
            cand = servers.probe("candidate", model)
            need_champion = not champ.serves(model, champion)
            need_candidate = candidate is not None and not cand.serves(model, candidate)
            starting: dict[Arm, tuple[ManagedProcess, str]] = {}
            drained_to_candidate = False
            if need_champion:
                if cand.ready:
                    # Keep answering while the champion's port changes hands.
                    door.set_weights(Weights(champion=0, candidate=100), "deploy: drain champion")
                    drained_to_candidate = True
                starting["champion"] = (servers.start("champion", model, champion), champion)
            if candidate is not None and need_candidate and not drained_to_candidate:
                if not need_champion:
                    door.set_weights(ALL_TO_CHAMPION, "deploy: drain candidate")
                starting["candidate"] = (servers.start("candidate", model, candidate), candidate)
            # Both arms load in parallel when neither has to carry traffic for the other.
            if "champion" in starting:
                servers.await_ready("champion", model, *starting["champion"])
            if candidate is not None and need_candidate and drained_to_candidate:
                door.set_weights(ALL_TO_CHAMPION, "deploy: drain candidate")
                starting["candidate"] = (servers.start("candidate", model, candidate), candidate)
            if "candidate" in starting:
                servers.await_ready("candidate", model, *starting["candidate"])
            if candidate is None and cand.process is not None:
                door.set_weights(ALL_TO_CHAMPION, "deploy: no candidate")
                servers.retire("candidate")
            change = door.set_weights(Weights.canary(candidate_percent), "deploy")
            detail = (
                f"deploy: champion v{champion}"
                + (f", candidate v{candidate} at {candidate_percent}%" if candidate is not None else "")
                + f"; weights confirmed by Envoy ({change.weights.champion}/{change.weights.candidate})"
            )
            return self._status(model, detail)

    def set_traffic(self, model: str, candidate_percent: int) -> ServingStatus:
        """Send ``candidate_percent`` % to the candidate; refuse weight for an arm that is not ready."""
        _check_percent(candidate_percent)
        with self.lock.hold():
            revived = self._revive_front_door(model)
            self.front_door.require()
            if candidate_percent > 0:
                cand = self.servers.probe("candidate", model)
                if not cand.ready:
                    raise ServingError(
                        f"cannot send {candidate_percent}% of {model!r} to the candidate: no ready "
                        f"candidate at {cand.url} ({cand.detail}); deploy a candidate first"
                    )
            if candidate_percent < 100:
                champ = self.servers.probe("champion", model)
                if not champ.ready:
                    raise ServingError(
                        f"cannot send {100 - candidate_percent}% of {model!r} to the champion: it is not "
                        f"ready at {champ.url} ({champ.detail})"
                    )
            change = self.front_door.set_weights(Weights.canary(candidate_percent), "set_traffic")
            return self._status(
                model,
                _with_note(
                    revived,
                    f"set_traffic: {change.weights.champion}/{change.weights.candidate} confirmed by Envoy "
                    f"in {change.elapsed_ms:.1f} ms",
                ),
            )

    def set_shadow(self, model: str, share: float) -> ServingStatus:
        """Every user to the champion and ``share`` of requests mirrored to the candidate (Envoy
        discards the mirror's responses); refuses a candidate or a champion that is not ready."""
        if isinstance(share, bool) or not isinstance(share, int | float) or not 0.0 < share <= 1.0:
            raise ServingError(f"shadow share must be within (0, 1], got {share!r}")
        with self.lock.hold():
            revived = self._revive_front_door(model)
            self.front_door.require()
            for arm in ARMS:
                probe = self.servers.probe(arm, model)
                if not probe.ready:
                    raise ServingError(
                        f"cannot mirror {model!r} to the candidate: the {arm} is not ready at {probe.url} "
                        f"({probe.detail})"
                    )
            change = self.front_door.set_weights(Weights.mirrored(float(share)), "set_shadow")
            return self._status(
                model,
                _with_note(
                    revived,
                    f"set_shadow: 100/0 with {change.weights.shadow:.0%} of requests mirrored to the "
                    f"candidate, confirmed by Envoy in {change.elapsed_ms:.1f} ms",
                ),
            )

    def promote(self, model: str) -> ServingStatus:
        """All traffic to the candidate's version, which then runs as the only (champion) arm."""
        servers, door = self.servers, self.front_door
        with self.lock.hold():
            self._revive_front_door(model)
            door.require()
            champ = servers.probe("champion", model)
            cand = servers.probe("candidate", model)
            intent = self.intent.read(model)
            if cand.ready and cand.version is not None:
                target = cand.version
                self.intent.write(Intent(model, champion=champ.version, candidate=target, promoting=target))
            elif intent.promoting is not None:
                target = intent.promoting  # interrupted after the candidate server was stopped
            elif intent.candidate is not None or cand.process is not None:
                raise ServingError(
                    f"refusing to promote {model!r}: candidate v{intent.candidate or '?'} is not ready "
                    f"({cand.detail})"
                )
            elif champ.ready:
                door.set_weights(ALL_TO_CHAMPION, "promote: nothing to do")
                return self._status(
                    model, f"promote: no candidate arm; champion already serves v{champ.version} (no-op)"
                )
            else:
                raise ServingError(f"nothing to promote for {model!r}: no candidate and no ready champion")
            if not champ.serves(model, target):
                if cand.ready:
                    door.set_weights(Weights(champion=0, candidate=100), "promote: all to candidate")
                process = servers.start("champion", model, target)
                servers.await_ready("champion", model, process, target)
            door.set_weights(ALL_TO_CHAMPION, "promote")
            servers.retire("candidate")
            self.intent.write(Intent(model, champion=target))
            return self._status(model, f"promote: champion serves v{target} with 100% of traffic")

    def rollback(self, model: str) -> ServingStatus:
        """100/0 at once, confirmed by Envoy (elapsed ms in ``detail``); then stop the candidate."""
        started = time.perf_counter()
        note: str
        if self.front_door.running():
            change = self.front_door.set_weights(ALL_TO_CHAMPION, "rollback", started=started)
            note = (
                f"rollback: 100/0 confirmed by Envoy {change.elapsed_ms:.1f} ms after the call "
                f"(routes applied {change.apply_ms:.1f} ms after the swap)"
            )
        else:
            # Nothing serves now; make sure the next start does not route to the candidate.
            self.front_door.persist(ALL_TO_CHAMPION)
            note = "rollback: Envoy is not running; 100/0 persisted for its next start"
        logger.info("%s", note)
        with self.lock.hold():
            # Envoy died: it comes back at 100/0, the weights just persisted.
            note = _with_note(self._revive_front_door(model), note)
            champ = self.servers.probe("champion", model)
            if self.front_door.running() and not champ.ready:
                raise ServingError(
                    f"{note}, but the champion of {model!r} is not ready ({champ.detail}); the candidate "
                    "server was left running"
                )
            self.servers.retire("candidate")
            intent = self.intent.read(model)
            self.intent.write(Intent(model, champion=intent.champion or champ.version))
            return self._status(model, note + "; candidate server stopped")

    def status(self, model: str) -> ServingStatus:
        """Observed weights (Envoy admin), each arm's readiness and reported version, the endpoint
        (after starting Envoy again if it died under a running stack)."""
        try:
            revived = self._revive_front_door(model)
        except ServingError as exc:
            revived = f"Envoy is not running and could not be started again: {exc}"
        return self._status(model, revived)

    def _revive_front_door(self, model: str) -> str | None:
        """Start Envoy if it died while a model server of ours still runs (the stack is meant to be
        up); a note saying so, or None when nothing was done."""
        if self.front_door.running():
            return None
        if not any(self.servers.live_process(arm) is not None for arm in ARMS):
            return None  # stopped by `down`, or never up: nothing to put a front door before
        logger.warning("Envoy for %s is not running under a running stack: starting it again", self.state_dir)
        self.front_door.ensure(lambda: self.servers.probe("candidate", model).ready)
        weights = self.front_door.observed_weights()
        served = percent(weights)
        return (
            f"Envoy was not running: started again with the persisted weights "
            f"({served['champion']}/{served['candidate']})"
        )

    # -- observation -----------------------------------------------------------------------------

    def _status(self, model: str, detail: str | None) -> ServingStatus:
        notes = [detail] if detail else []
        traffic: dict[Arm, int] | None = None
        shadow: float | None = None
        endpoint: str | None = None
        if self.front_door.running():
            try:
                weights = self.front_door.observed_weights()
                traffic, shadow = percent(weights), weights.shadow
                endpoint = self.front_door_url
            except EnvoyError as exc:
                notes.append(f"Envoy is running but its admin endpoint does not answer: {exc}")
        else:
            notes.append("Envoy is not running (nothing serves traffic)")
        arms: dict[Arm, ArmProbe] = {arm: self.servers.probe(arm, model) for arm in ARMS}
        intent = self.intent.read(model)
        for arm, probe in arms.items():
            expected = intent.champion if arm == "champion" else intent.candidate
            if expected is not None and not probe.serves(model, expected):
                notes.append(
                    f"{arm} should serve v{expected} but {probe.detail or f'reports v{probe.version}'}"
                )
        if traffic is not None:
            for arm, probe in arms.items():
                if traffic[arm] > 0 and not probe.ready:
                    notes.append(f"{arm} gets {traffic[arm]}% of traffic but is not ready: that share fails")
        return ServingStatus(
            model=model,
            arms={arm: probe.to_status() for arm, probe in arms.items()},
            traffic=traffic,
            endpoint=endpoint,
            detail="; ".join(notes) or None,
            shadow=shadow,
        )


def _with_note(note: str | None, detail: str) -> str:
    return detail if note is None else f"{note}; {detail}"
