"""The scaling policy: a pure function of (observation, history, policy) -> decision.

It follows the Kubernetes HPA algorithm on one external metric, backlog per replica:

1. recommendation = ceil(backlog / target_backlog_per_replica), unless backlog per replica is
   within `tolerance` of the target, where the current size is kept;
2. scale-down is stabilised: never below the highest recommendation made within the last
   `scale_down_window_seconds` (there is no window for scaling up);
3. scale-up is rate limited: within `scale_up_period_seconds` the size may grow to the larger of
   `(1 + scale_up_max_percent/100) x` and `+ scale_up_max_pods` over the size at the period's start;
4. bounds: `min_replicas`..`max_replicas`.

What differs from a lag-only scaler such as KEDA's redis-streams scaler in lag mode:

- backlog = lag + pending. Pending entries (delivered, not yet acknowledged) are jobs running;
  a scale-down never goes below what they need (`ceil(pending / jobs_per_worker)`), and nothing
  scales to zero while anything is pending. Pending held beyond what the current replicas can
  hold belongs to workers already stopping (or dead ones); it does not call for more replicas;
- to zero only after lag and pending have both been zero for `scale_to_zero_cooldown_seconds`;
  from zero as soon as the backlog exceeds `activation_backlog`;
- a lag the server cannot tell (None, after trimming or `XGROUP SETID`) is unknown, never zero:
  what is known (pending) may scale up, nothing scales down, and at zero one worker is started;
- reversal guard: within `reversal_guard_seconds` of a scale-up nothing scales down, and within
  it of a scale-down a scale-up needs backlog per replica above `1 + reversal_tolerance` times
  the target (a burst rather than noise). Starting from zero is never held back.

Every decision carries a `Reason` (a metric label) and a sentence for the log.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Literal

Direction = Literal["up", "down", "none"]
_EPSILON = 1e-9  # so that 11 / 10 = 1.1000000000000001 is still within a tolerance of 0.1


class Reason(StrEnum):
    """Why a decision came out as it did; the value is a metric label."""

    BACKLOG_ABOVE_TARGET = "backlog_above_target"
    BACKLOG_BELOW_TARGET = "backlog_below_target"
    WITHIN_TOLERANCE = "within_tolerance"
    RATE_LIMITED = "rate_limited"
    STABILISING = "stabilising"
    AT_MAX = "at_max"
    ABOVE_MAX = "above_max"
    BELOW_MIN = "below_min"
    PENDING_FLOOR = "pending_floor"
    ACTIVATION = "activation"
    BELOW_ACTIVATION = "below_activation"
    IDLE_COOLDOWN = "idle_cooldown"
    SCALE_TO_ZERO = "scale_to_zero"
    LAG_UNKNOWN = "lag_unknown"
    REVERSAL_GUARD = "reversal_guard"


@dataclass(frozen=True, slots=True)
class Observation:
    """What the queue and the backend say about one pool at `timestamp` (seconds)."""

    pool: str
    timestamp: float
    lag: int | None
    pending: int
    current_replicas: int
    consumers: int = 0
    lag_estimated: bool = False
    """True when `lag` is the caller's estimate, not the server's own figure."""

    @property
    def lag_known(self) -> bool:
        return self.lag is not None

    @property
    def known_backlog(self) -> int:
        """Lag + pending where lag is known; only pending (a lower bound) where it is not."""
        return (self.lag or 0) + self.pending


@dataclass(frozen=True, slots=True)
class ScalingPolicy:
    """The knobs of `decide`. Defaults are tuned on the simulator's traces (see the README)."""

    target_backlog_per_replica: float = 1.0
    jobs_per_worker: int = 1
    tolerance: float = 0.1
    min_replicas: int = 0
    max_replicas: int = 20
    scale_up_max_percent: float = 100.0
    scale_up_max_pods: int = 8
    scale_up_period_seconds: float = 15.0
    scale_down_window_seconds: float = 30.0
    scale_to_zero_cooldown_seconds: float = 300.0
    activation_backlog: int = 0
    reversal_guard_seconds: float = 60.0
    reversal_tolerance: float = 4.0

    def __post_init__(self) -> None:
        problems = []
        if self.target_backlog_per_replica <= 0:
            problems.append("target_backlog_per_replica must be above 0")
        if self.jobs_per_worker < 1:
            problems.append("jobs_per_worker must be at least 1")
        if not 0 <= self.tolerance < 1:
            problems.append("tolerance must be in [0, 1)")
        if self.min_replicas < 0 or self.max_replicas < 1:
            problems.append("min_replicas must be >= 0 and max_replicas >= 1")
        if self.min_replicas > self.max_replicas:
            problems.append(
                f"min_replicas {self.min_replicas} is above max_replicas {self.max_replicas}"
            )
        if self.scale_up_max_percent < 0 or self.scale_up_max_pods < 0:
            problems.append("scale-up limits must be >= 0")
        if self.scale_up_max_percent == 0 and self.scale_up_max_pods == 0:
            problems.append("scale-up limits of 0% and 0 pods would never scale up")
        if self.reversal_tolerance < 0:
            problems.append("reversal_tolerance must be >= 0")
        for name in (
            "reversal_guard_seconds",
            "scale_up_period_seconds",
            "scale_down_window_seconds",
            "scale_to_zero_cooldown_seconds",
        ):
            if getattr(self, name) < 0:
                problems.append(f"{name} must be >= 0")
        if self.activation_backlog < 0:
            problems.append("activation_backlog must be >= 0")
        if problems:
            raise ValueError("; ".join(problems))


@dataclass(frozen=True, slots=True)
class History:
    """What `decide` remembers between calls; pure data, returned anew in each Decision."""

    recommendations: tuple[tuple[float, int], ...] = ()
    """(time, recommendation) within the scale-down window, oldest first."""
    replicas_seen: tuple[tuple[float, int], ...] = ()
    """(time, current replicas) within the scale-up period, for the rate limit."""
    idle_since: float | None = None
    """Since when lag and pending have both been known to be zero."""
    last_change: tuple[float, Direction] | None = None
    """When the size was last changed by a decision, and which way."""

    @classmethod
    def taking_over(cls, current_replicas: int, now: float) -> History:
        """A history for a new leader: as if the current size had just been recommended,
        so that nobody scales down before a full window has been seen."""
        return cls(recommendations=((now, current_replicas),))


@dataclass(frozen=True, slots=True)
class Decision:
    pool: str
    timestamp: float
    current_replicas: int
    desired_replicas: int
    reason: Reason
    message: str
    recommendation: int
    """The metric's recommendation before stabilisation, rate limits and bounds."""
    backlog: int
    """Lag + pending (only pending when lag is unknown)."""
    lag_known: bool
    lag_estimated: bool
    history: History = field(repr=False)
    """The history to pass to the next call for this pool."""

    @property
    def direction(self) -> Direction:
        if self.desired_replicas > self.current_replicas:
            return "up"
        if self.desired_replicas < self.current_replicas:
            return "down"
        return "none"

    @property
    def changes(self) -> bool:
        return self.desired_replicas != self.current_replicas


def replicas_for(amount: float, per_replica: float) -> int:
    """ceil(amount / per_replica), immune to float noise such as 3 / 0.1 = 30.000000000000004."""
    return max(0, math.ceil(amount / per_replica - _EPSILON))


def pending_need(pending: int, policy: ScalingPolicy) -> int:
    """Workers needed to hold the entries already delivered and not yet acknowledged."""
    return replicas_for(pending, policy.jobs_per_worker)


def sizing_backlog(observation: Observation, policy: ScalingPolicy) -> int:
    """The backlog the replicas are sized for: lag plus the pending entries they hold.

    Pending entries beyond `current x jobs_per_worker` are held by workers already stopping
    (finishing their last job) or by consumers that died (reclaimed after their lease); they
    keep a scale-down from going below them but are no reason to add replicas. At zero
    replicas every pending entry counts.
    """
    lag = observation.lag or 0
    current = observation.current_replicas
    if current == 0:
        return lag + observation.pending
    return lag + min(observation.pending, current * policy.jobs_per_worker)


def _recommend(observation: Observation, backlog: int, policy: ScalingPolicy) -> int:
    """The metric's recommendation: the HPA rule on backlog per replica, with activation."""
    current = observation.current_replicas
    if current == 0:
        if not observation.lag_known and backlog == 0:
            # Nothing known to do, but an unknown lag may hide work: one worker finds out.
            return 1
        if backlog > policy.activation_backlog or observation.pending > 0:
            return max(1, replicas_for(backlog, policy.target_backlog_per_replica))
        return 0
    ratio = backlog / (current * policy.target_backlog_per_replica)
    if abs(1.0 - ratio) <= policy.tolerance + _EPSILON:
        return current
    return replicas_for(backlog, policy.target_backlog_per_replica)


def _scale_up_limit(history: History, current: int, policy: ScalingPolicy) -> int:
    period_start = min((replicas for _t, replicas in history.replicas_seen), default=current)
    period_start = min(period_start, current)
    by_percent = math.ceil(period_start * (1 + policy.scale_up_max_percent / 100.0))
    by_pods = period_start + policy.scale_up_max_pods
    # From zero one worker may always start, whatever the limits say.
    return max(by_percent, by_pods, current, 1)


def _reversal_guarded(
    wanted: int, backlog: int, observation: Observation, history: History, policy: ScalingPolicy
) -> bool:
    """Whether a change would reverse the last one too soon to be worth its start-up.

    Within `reversal_guard_seconds` of a scale-up nothing scales down; within it of a scale-down,
    a scale-up needs backlog per replica beyond `1 + reversal_tolerance` times the target (a
    burst, not noise). Starting from zero is never held back.
    """
    current = observation.current_replicas
    if history.last_change is None or wanted == current or current == 0:
        return False
    changed_at, direction = history.last_change
    if observation.timestamp - changed_at >= policy.reversal_guard_seconds:
        return False
    if wanted < current:
        return direction == "up" and current <= policy.max_replicas
    if direction != "down" or current < policy.min_replicas:
        return False
    ratio = backlog / (current * policy.target_backlog_per_replica)
    return ratio <= 1.0 + policy.reversal_tolerance + _EPSILON


@dataclass(frozen=True, slots=True)
class _Steps:
    """The intermediate numbers of one decision, for its reason."""

    guarded: bool
    recommendation: int
    stabilised: int
    floor: int
    needed_for_pending: int
    wanted: int
    limited: int
    desired: int


def decide(observation: Observation, history: History, policy: ScalingPolicy) -> Decision:
    """The desired replicas of one pool, with the reason, and the history for next time."""
    now = observation.timestamp
    current = observation.current_replicas
    pending = observation.pending
    lag_known = observation.lag_known
    idle = lag_known and not observation.lag_estimated and observation.lag == 0 and pending == 0
    idle_since = (history.idle_since if history.idle_since is not None else now) if idle else None
    cooldown = policy.scale_to_zero_cooldown_seconds
    cooled_down = idle_since is not None and now - idle_since >= cooldown

    backlog = sizing_backlog(observation, policy)
    recommendation = _recommend(observation, backlog, policy)
    if not lag_known:
        # Unknown is not zero: what is known may raise the size, nothing may lower it.
        recommendation = max(recommendation, current)

    window_start = now - policy.scale_down_window_seconds
    recommendations = (
        *((t, r) for t, r in history.recommendations if window_start <= t <= now),
        (now, recommendation),
    )
    period_start = now - policy.scale_up_period_seconds
    replicas_seen = (
        *((t, r) for t, r in history.replicas_seen if period_start < t <= now),
        (now, current),
    )

    # Stabilise: up at once; down only to the highest recommendation within the window.
    if recommendation > current:
        stabilised = recommendation
    elif recommendation < current:
        stabilised = min(current, max(r for _t, r in recommendations))
    else:
        stabilised = current

    # A scale-down stops at what pending entries need, and at one worker until the cooldown.
    needed_for_pending = min(pending_need(pending, policy), policy.max_replicas)
    floor = max(policy.min_replicas, needed_for_pending)
    if floor == 0 and current > 0 and not cooled_down:
        floor = 1
    wanted = max(stabilised, policy.min_replicas)
    if wanted < current:
        wanted = max(wanted, min(floor, current))
    guarded = _reversal_guarded(wanted, backlog, observation, history, policy)
    if guarded:
        wanted = current

    limit = _scale_up_limit(history, current, policy)
    limited = min(wanted, limit) if wanted > current else wanted
    # min_replicas is a bound, not a step: it is reached at once, whatever the rate limit.
    desired = min(max(limited, policy.min_replicas), policy.max_replicas)

    steps = _Steps(
        guarded=guarded,
        recommendation=recommendation,
        stabilised=stabilised,
        floor=floor,
        needed_for_pending=needed_for_pending,
        wanted=wanted,
        limited=limited,
        desired=desired,
    )
    direction: Direction = "up" if desired > current else "down" if desired < current else "none"
    new_history = replace(
        history,
        recommendations=recommendations,
        replicas_seen=replicas_seen,
        idle_since=idle_since,
        last_change=(now, direction) if direction != "none" else history.last_change,
    )
    decision = Decision(
        pool=observation.pool,
        timestamp=now,
        current_replicas=current,
        desired_replicas=desired,
        reason=_reason(observation, policy, steps),
        message="",
        recommendation=recommendation,
        backlog=observation.known_backlog,
        lag_known=lag_known,
        lag_estimated=observation.lag_estimated,
        history=new_history,
    )
    return replace(decision, message=explain(decision, observation, policy, idle_since))


def _reason(observation: Observation, policy: ScalingPolicy, steps: _Steps) -> Reason:
    current = observation.current_replicas
    desired = steps.desired
    if desired > current:
        if desired > steps.limited:
            return Reason.BELOW_MIN
        if desired < steps.limited:
            return Reason.AT_MAX
        if steps.limited < steps.wanted:
            return Reason.RATE_LIMITED
        if steps.stabilised < policy.min_replicas:
            return Reason.BELOW_MIN
        if current == 0:
            return Reason.ACTIVATION if observation.lag_known else Reason.LAG_UNKNOWN
        return Reason.BACKLOG_ABOVE_TARGET
    if desired < current:
        if current > policy.max_replicas and desired == policy.max_replicas:
            return Reason.ABOVE_MAX
        return Reason.SCALE_TO_ZERO if desired == 0 else Reason.BACKLOG_BELOW_TARGET
    # Held where it is.
    if current == 0:
        return Reason.BELOW_ACTIVATION
    if steps.guarded:
        return Reason.REVERSAL_GUARD
    if steps.wanted > current:
        return Reason.AT_MAX if current >= policy.max_replicas else Reason.RATE_LIMITED
    if not observation.lag_known:
        return Reason.LAG_UNKNOWN
    if steps.recommendation < current:
        if steps.stabilised >= current:
            return Reason.STABILISING
        if steps.needed_for_pending >= current:
            return Reason.PENDING_FLOOR
        if policy.min_replicas >= current:
            return Reason.BELOW_MIN
        return Reason.IDLE_COOLDOWN
    return Reason.WITHIN_TOLERANCE


def _describe_backlog(observation: Observation) -> str:
    if observation.lag is None:
        return f"lag unknown, {observation.pending} pending"
    lag = f"lag {observation.lag}{' (estimated)' if observation.lag_estimated else ''}"
    return f"backlog {observation.known_backlog} ({lag}, {observation.pending} pending)"


def explain(
    decision: Decision,
    observation: Observation,
    policy: ScalingPolicy,
    idle_since: float | None,
) -> str:
    """One sentence a person can read in a log line."""
    current, desired = decision.current_replicas, decision.desired_replicas
    backlog = _describe_backlog(observation)
    target = f"{policy.target_backlog_per_replica:g}"
    change = (
        f"{current} -> {desired} replicas" if desired != current else f"keeping {current} replicas"
    )
    per_replica = (
        f"{observation.known_backlog / current:.3g} per replica against a target of {target}"
        if current
        else f"target {target} per replica"
    )
    reason = decision.reason
    if reason is Reason.BACKLOG_ABOVE_TARGET:
        detail = f"{per_replica}"
    elif reason is Reason.BACKLOG_BELOW_TARGET:
        detail = (
            f"{per_replica}; highest recommendation in the last "
            f"{policy.scale_down_window_seconds:g}s allows it"
        )
    elif reason is Reason.WITHIN_TOLERANCE:
        detail = f"{per_replica}, within the tolerance of {policy.tolerance:g}"
    elif reason is Reason.RATE_LIMITED:
        detail = (
            f"{per_replica}; recommendation {decision.recommendation} limited by the scale-up "
            f"rate ({policy.scale_up_max_percent:g}% or {policy.scale_up_max_pods} pods "
            f"per {policy.scale_up_period_seconds:g}s)"
        )
    elif reason is Reason.STABILISING:
        detail = (
            f"recommendation {decision.recommendation} is lower, but a higher one was made within "
            f"the {policy.scale_down_window_seconds:g}s scale-down window"
        )
    elif reason is Reason.AT_MAX:
        detail = f"recommendation {decision.recommendation} is capped at max_replicas"
    elif reason is Reason.ABOVE_MAX:
        detail = f"above max_replicas {policy.max_replicas}"
    elif reason is Reason.BELOW_MIN:
        detail = f"min_replicas is {policy.min_replicas}"
    elif reason is Reason.PENDING_FLOOR:
        detail = (
            f"{observation.pending} pending entries need "
            f"{pending_need(observation.pending, policy)} workers at "
            f"{policy.jobs_per_worker} jobs each"
        )
    elif reason is Reason.ACTIVATION:
        detail = f"above the activation threshold of {policy.activation_backlog}"
    elif reason is Reason.BELOW_ACTIVATION:
        detail = f"not above the activation threshold of {policy.activation_backlog}"
    elif reason is Reason.IDLE_COOLDOWN:
        idle_for = 0.0 if idle_since is None else decision.timestamp - idle_since
        detail = (
            f"idle for {idle_for:.0f}s of the {policy.scale_to_zero_cooldown_seconds:g}s "
            "cooldown before scaling to zero"
            if idle_since is not None
            else "waiting for lag and pending to be known zero before scaling to zero"
        )
    elif reason is Reason.SCALE_TO_ZERO:
        detail = f"lag and pending zero for the {policy.scale_to_zero_cooldown_seconds:g}s cooldown"
    elif reason is Reason.REVERSAL_GUARD:
        detail = (
            f"recommendation {decision.recommendation} would reverse the last change within "
            f"{policy.reversal_guard_seconds:g}s (a scale-up then needs more than "
            f"{1 + policy.reversal_tolerance:g}x the target per replica)"
        )
    else:  # LAG_UNKNOWN
        detail = (
            "the server cannot tell the lag (trimmed or reset group); deciding from pending only "
            "and never scaling down on it"
        )
    return f"{observation.pool}: {change}: {backlog}; {detail}"
