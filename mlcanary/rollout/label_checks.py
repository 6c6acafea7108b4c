"""Business metrics from ground-truth labels: accuracy, precision, recall, F1, Brier score, log
loss and expected cost, each candidate vs champion through the anytime-valid CS.

Labels arrive late, so both arms are compared over the requests received before the same cut-off
(``Measurements.label_cutoff``, the policy's label delay before the tick); every reason says how
many labels each arm had. Rates (accuracy, precision, recall) are proportions; F1 is a ratio of
cell counts, tested on the normal approximation of its delta-method variance; Brier score, log loss
and expected cost are means of per-request values.
"""

from __future__ import annotations

from mlcanary.rollout import reasons
from mlcanary.rollout.comparison import Arms, CheckFunction, rate_arms, two_arm
from mlcanary.rollout.measurements import LabelOutcomes, Measurements
from mlcanary.rollout.policy import CheckPolicy, CostMatrix, RolloutPolicy
from mlcanary.rollout.state import CheckResult
from mlcanary.rollout.stats import MeanSummary


def _context(m: Measurements) -> str:
    cutoff = f"received before {m.label_cutoff:%Y-%m-%d %H:%M:%S} UTC" if m.label_cutoff else "so far"
    return (
        f" on labelled requests {cutoff} ({reasons.count(m.candidate.labeled)} labels on the candidate, "
        f"{reasons.count(m.champion.labeled)} on the champion)"
    )


def _rate(
    name: str, what: str, check: CheckPolicy, policy: RolloutPolicy, m: Measurements, part: str
) -> CheckResult:
    def cells(outcomes: LabelOutcomes) -> tuple[int, int]:
        n = {
            "labeled": outcomes.labeled,
            "predicted_positive": outcomes.predicted_positive,
            "actual_positive": outcomes.actual_positive,
        }[part]
        hits = outcomes.correct if part == "labeled" else outcomes.true_positives
        return n, hits

    arms = rate_arms(what, cells(m.champion.labels), cells(m.candidate.labels), context=_context(m))
    return two_arm(name, check, policy, arms)


def check_accuracy(check: CheckPolicy, policy: RolloutPolicy, m: Measurements) -> CheckResult:
    return _rate("accuracy", "correct", check, policy, m, "labeled")


def check_precision(check: CheckPolicy, policy: RolloutPolicy, m: Measurements) -> CheckResult:
    return _rate("precision", "of flagged truly positive", check, policy, m, "predicted_positive")


def check_recall(check: CheckPolicy, policy: RolloutPolicy, m: Measurements) -> CheckResult:
    return _rate("recall", "of positives flagged", check, policy, m, "actual_positive")


def f1_summary(outcomes: LabelOutcomes) -> MeanSummary | None:
    """F1 with its delta-method variance, as a :class:`MeanSummary` over the labelled requests.

    F = 2a / (2a + b + c) for the shares a, b, c of true positives, false positives and false
    negatives; F is homogeneous of degree 0, so Var(F̂) ≈ Σ gᵢ² pᵢ / n with g its gradient. Half a
    count is added to each cell for the variance only, so that an arm with no positives yet does not
    look certain. None without labels.
    """
    n = outcomes.labeled
    if n == 0:
        return None
    tp, fp, fn = (outcomes.true_positives, outcomes.false_positives, outcomes.false_negatives)
    f1 = outcomes.f1 or 0.0
    total = n + 2.0
    a, b, c = ((x + 0.5) / total for x in (tp, fp, fn))
    denominator = (2 * a + b + c) ** 2
    grad_a, grad_bc = 2 * (b + c) / denominator, -2 * a / denominator
    per_request = grad_a**2 * a + grad_bc**2 * (b + c)
    return MeanSummary(n=n, mean=f1, variance=per_request)


def check_f1(check: CheckPolicy, policy: RolloutPolicy, m: Measurements) -> CheckResult:
    b, c = m.champion.labels, m.candidate.labels
    arms = Arms(
        champion=f1_summary(b),
        candidate=f1_summary(c),
        scale="value",
        what="F1",
        champion_text=f"F1 {reasons.number(b.f1)}",
        candidate_text=f"F1 {reasons.number(c.f1)}",
        value=c.f1,
        baseline=b.f1,
        context=_context(m),
    )
    return two_arm("f1", check, policy, arms)


def _mean_check(
    name: str,
    check: CheckPolicy,
    policy: RolloutPolicy,
    m: Measurements,
    summaries: tuple[MeanSummary | None, ...],
) -> CheckResult:
    champion, candidate = summaries

    def shown(summary: MeanSummary | None) -> str:
        return f"{summary.mean:.4g} per request" if summary is not None and summary.n else "no labels"

    arms = Arms(
        champion=champion,
        candidate=candidate,
        scale="value",
        what=name,
        champion_text=shown(champion),
        candidate_text=shown(candidate),
        value=candidate.mean if candidate is not None and candidate.n else None,
        baseline=champion.mean if champion is not None and champion.n else None,
        context=_context(m),
    )
    return two_arm(name, check, policy, arms)


def _sums(n: int, total: float, total_sq: float) -> MeanSummary | None:
    return MeanSummary.from_sums(n, total, total_sq) if n > 1 else None


def check_brier(check: CheckPolicy, policy: RolloutPolicy, m: Measurements) -> CheckResult:
    b, c = m.champion.labels, m.candidate.labels
    summaries = tuple(_sums(x.scored, x.brier_sum, x.brier_sq_sum) for x in (b, c))
    return _mean_check("brier", check, policy, m, summaries)


def check_log_loss(check: CheckPolicy, policy: RolloutPolicy, m: Measurements) -> CheckResult:
    b, c = m.champion.labels, m.candidate.labels
    summaries = tuple(_sums(x.scored, x.log_loss_sum, x.log_loss_sq_sum) for x in (b, c))
    return _mean_check("log_loss", check, policy, m, summaries)


def cost_summary(outcomes: LabelOutcomes, costs: CostMatrix) -> MeanSummary | None:
    """The mean cost per labelled request and its variance, exact from the four cell counts."""
    cells = (
        (outcomes.true_positives, costs.true_positive),
        (outcomes.false_positives, costs.false_positive),
        (outcomes.false_negatives, costs.false_negative),
        (outcomes.true_negatives, costs.true_negative),
    )
    total = sum(k * cost for k, cost in cells)
    total_sq = sum(k * cost * cost for k, cost in cells)
    return _sums(outcomes.labeled, total, total_sq)


def check_expected_cost(check: CheckPolicy, policy: RolloutPolicy, m: Measurements) -> CheckResult:
    costs = policy.labels.costs
    summaries = tuple(cost_summary(x, costs) for x in (m.champion.labels, m.candidate.labels))
    return _mean_check("expected_cost", check, policy, m, summaries)


LABEL_CHECKS: dict[str, CheckFunction] = {
    "accuracy": check_accuracy,
    "precision": check_precision,
    "recall": check_recall,
    "f1": check_f1,
    "brier": check_brier,
    "log_loss": check_log_loss,
    "expected_cost": check_expected_cost,
}
