"""The scaling policy's promises, as properties over generated queues, histories and policies."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from services.autoscaler.policy import (
    Decision,
    History,
    Observation,
    Reason,
    ScalingPolicy,
    decide,
    pending_need,
)

NOW = 10_000.0


@st.composite
def policies(draw: st.DrawFn) -> ScalingPolicy:
    minimum = draw(st.integers(0, 3))
    percent = draw(st.sampled_from([0.0, 50.0, 100.0, 200.0]))
    return ScalingPolicy(
        target_backlog_per_replica=draw(st.sampled_from([0.5, 1.0, 2.0, 5.0, 10.0])),
        jobs_per_worker=draw(st.integers(1, 4)),
        tolerance=draw(st.sampled_from([0.0, 0.1, 0.2])),
        min_replicas=minimum,
        max_replicas=draw(st.integers(max(minimum, 1), 30)),
        scale_up_max_percent=percent,
        scale_up_max_pods=draw(st.integers(1 if percent == 0 else 0, 10)),
        scale_up_period_seconds=draw(st.sampled_from([0.0, 15.0, 60.0])),
        scale_down_window_seconds=draw(st.sampled_from([0.0, 30.0, 300.0])),
        scale_to_zero_cooldown_seconds=draw(st.sampled_from([0.0, 30.0, 300.0])),
        activation_backlog=draw(st.integers(0, 5)),
        reversal_guard_seconds=draw(st.sampled_from([0.0, 60.0])),
        reversal_tolerance=draw(st.sampled_from([0.0, 1.0, 4.0])),
    )


@st.composite
def histories(draw: st.DrawFn) -> History:
    """Arbitrary (not necessarily reachable) histories: the policy must hold whatever it is fed."""
    times = st.floats(NOW - 600, NOW, allow_nan=False)
    recommendations = sorted(draw(st.lists(st.tuples(times, st.integers(0, 40)), max_size=8)))
    replicas_seen = sorted(draw(st.lists(st.tuples(times, st.integers(0, 40)), max_size=8)))
    idle_since = draw(st.none() | times)
    last_change = draw(st.none() | st.tuples(times, st.sampled_from(["up", "down"])))
    return History(
        recommendations=tuple(recommendations),
        replicas_seen=tuple(replicas_seen),
        idle_since=idle_since,
        last_change=last_change,
    )


def observations(
    lag: st.SearchStrategy[int | None] | None = None, current: st.SearchStrategy[int] | None = None
) -> st.SearchStrategy[Observation]:
    return st.builds(
        Observation,
        pool=st.just("product"),
        timestamp=st.just(NOW),
        lag=lag if lag is not None else st.none() | st.integers(0, 200),
        pending=st.integers(0, 60),
        current_replicas=current if current is not None else st.integers(0, 40),
        consumers=st.integers(0, 40),
        lag_estimated=st.booleans(),
    )


def run_sequence(
    policy: ScalingPolicy, backlogs: list[tuple[int | None, int]], step: float = 2.0
) -> list[tuple[Observation, Decision]]:
    """Feed (lag, pending) every `step` seconds, applying each decision as a backend would."""
    history, current, steps = History(), 0, []
    for index, (lag, pending) in enumerate(backlogs):
        observation = Observation("product", index * step, lag, pending, current)
        decision = decide(observation, history, policy)
        steps.append((observation, decision))
        history, current = decision.history, decision.desired_replicas
    return steps


@settings(max_examples=200)
@given(observations(), histories(), policies())
def test_desired_replicas_stay_within_min_and_max(
    observation: Observation, history: History, policy: ScalingPolicy
) -> None:
    decision = decide(observation, history, policy)
    assert policy.min_replicas <= decision.desired_replicas <= policy.max_replicas
    assert decision.reason in Reason and decision.message


@settings(max_examples=200)
@given(observations(lag=st.integers(0, 200)), st.integers(0, 200), histories(), policies())
def test_more_lag_never_means_fewer_replicas(
    observation: Observation, more: int, history: History, policy: ScalingPolicy
) -> None:
    assert observation.lag is not None
    larger = replace(observation, lag=observation.lag + more)
    smaller_decision = decide(observation, history, policy)
    larger_decision = decide(larger, history, policy)
    assert larger_decision.desired_replicas >= smaller_decision.desired_replicas


@settings(max_examples=200)
@given(observations(), st.integers(0, 60), histories(), policies())
def test_more_pending_never_means_fewer_replicas(
    observation: Observation, more: int, history: History, policy: ScalingPolicy
) -> None:
    larger = replace(observation, pending=observation.pending + more)
    assert (
        decide(larger, history, policy).desired_replicas
        >= decide(observation, history, policy).desired_replicas
    )


@settings(max_examples=200)
@given(observations(current=st.integers(1, 30)), histories(), policies(), st.data())
def test_no_scale_down_while_a_recommendation_as_high_is_inside_the_window(
    observation: Observation, history: History, policy: ScalingPolicy, data: st.DataObject
) -> None:
    assume(observation.current_replicas <= policy.max_replicas)
    window = policy.scale_down_window_seconds
    when = data.draw(st.floats(NOW - window, NOW, allow_nan=False))
    high = data.draw(st.integers(observation.current_replicas, 40))
    history = replace(
        history, recommendations=tuple(sorted((*history.recommendations, (when, high))))
    )
    assert decide(observation, history, policy).desired_replicas >= observation.current_replicas


POLL_SECONDS = 10.0


@st.composite
def busy_and_idle_spells(draw: st.DrawFn, policy: ScalingPolicy) -> list[tuple[int | None, int]]:
    """(lag, pending) per poll: busy spells, each opening with a backlog above the activation
    threshold, between idle spells of any length (shorter and longer than the cooldown), then an
    idle spell longer than what holds a scale-down back: the scale-down window, the reversal
    guard after the last scale-up, and the cooldown."""
    holding_back = (
        policy.scale_down_window_seconds
        + policy.reversal_guard_seconds
        + policy.scale_to_zero_cooldown_seconds
    )
    settled = math.ceil(holding_back / POLL_SECONDS) + 2
    backlog = st.tuples(st.none() | st.integers(0, 20), st.integers(0, 6))
    backlogs: list[tuple[int | None, int]] = []
    for _spell in range(draw(st.integers(1, 3))):
        backlogs.append((policy.activation_backlog + draw(st.integers(1, 10)), 0))
        backlogs.extend(draw(st.lists(backlog, max_size=8)))
        backlogs.extend([(0, 0)] * draw(st.integers(0, settled + 3)))
    return backlogs + [(0, 0)] * settled


@settings(max_examples=200)
@given(policies(), st.data())
def test_scale_to_zero_only_after_lag_and_pending_stayed_zero_for_the_cooldown(
    policy: ScalingPolicy, data: st.DataObject
) -> None:
    policy = replace(policy, min_replicas=0)
    steps = run_sequence(policy, data.draw(busy_and_idle_spells(policy)), step=POLL_SECONDS)
    scaled_to_zero = 0
    for index, (observation, decision) in enumerate(steps):
        if observation.current_replicas > 0 and decision.desired_replicas == 0:
            scaled_to_zero += 1
            assert decision.reason is Reason.SCALE_TO_ZERO
            cooldown_start = observation.timestamp - policy.scale_to_zero_cooldown_seconds
            for earlier, _ in steps[: index + 1]:
                if earlier.timestamp >= cooldown_start:
                    assert earlier.lag == 0 and earlier.pending == 0
            assert observation.timestamp >= policy.scale_to_zero_cooldown_seconds
    # Every example reaches the branch above: it went to zero once idle long enough.
    assert scaled_to_zero >= 1
    assert steps[-1][1].desired_replicas == 0


@settings(max_examples=200)
@given(policies(), st.integers(1, 30), st.lists(st.floats(-1, 1), min_size=1, max_size=200))
def test_constant_load_with_noise_inside_the_tolerance_never_changes_replicas(
    policy: ScalingPolicy, replicas: int, noise: list[float]
) -> None:
    assume(policy.min_replicas <= replicas <= policy.max_replicas)
    capacity = replicas * policy.target_backlog_per_replica
    lowest = math.ceil(capacity * (1 - policy.tolerance) - 1e-9)
    highest = math.floor(capacity * (1 + policy.tolerance) + 1e-9)
    assume(1 <= lowest <= highest)
    history = History.taking_over(replicas, 0.0)
    for index, wobble in enumerate(noise):
        backlog = round(lowest + (highest - lowest) * (wobble + 1) / 2)
        running = min(backlog, replicas * policy.jobs_per_worker, replicas)
        observation = Observation("product", index * 2.0, backlog - running, running, replicas)
        decision = decide(observation, history, policy)
        assert decision.desired_replicas == replicas, decision.message
        history = decision.history


@settings(max_examples=200)
@given(observations(), histories(), policies())
def test_never_scales_down_below_what_pending_entries_need_nor_to_zero_with_any_pending(
    observation: Observation, history: History, policy: ScalingPolicy
) -> None:
    decision = decide(observation, history, policy)
    needed = min(pending_need(observation.pending, policy), policy.max_replicas)
    if decision.desired_replicas < observation.current_replicas:
        assert decision.desired_replicas >= needed
    if observation.pending > 0:
        assert decision.desired_replicas >= 1


@settings(max_examples=200)
@given(observations(lag=st.none()), histories(), policies())
def test_an_unknown_lag_never_reads_as_zero(
    observation: Observation, history: History, policy: ScalingPolicy
) -> None:
    decision = decide(observation, history, policy)
    assert not decision.lag_known
    assert decision.desired_replicas >= min(observation.current_replicas, policy.max_replicas)
    assert decision.desired_replicas >= 1, "an unknown lag may hide work: never zero on it"
    assert decision.reason is not Reason.SCALE_TO_ZERO
    assert "lag unknown" in decision.message


def test_a_burst_from_zero_scales_up_at_the_first_poll_and_the_reason_says_why() -> None:
    policy = ScalingPolicy(max_replicas=20, scale_up_max_pods=8)
    decision = decide(Observation("product", 0.0, 50, 0, 0), History(), policy)
    assert decision.direction == "up" and decision.desired_replicas == 8
    assert decision.reason is Reason.RATE_LIMITED
    assert "limited by the scale-up rate" in decision.message


def test_long_jobs_in_flight_with_zero_lag_keep_their_workers() -> None:
    """KEDA's lag mode reads this as idle and goes to zero; the pending entries are jobs."""
    policy = ScalingPolicy(scale_down_window_seconds=0, scale_to_zero_cooldown_seconds=0)
    history = History()
    for second in range(0, 3600, 15):
        decision = decide(Observation("product", float(second), 0, 6, 6), history, policy)
        assert decision.desired_replicas == 6
        history = decision.history


def test_a_drained_queue_goes_to_zero_after_the_window_and_the_cooldown() -> None:
    policy = ScalingPolicy(scale_down_window_seconds=30, scale_to_zero_cooldown_seconds=120)
    steps = run_sequence(policy, [(10, 0)] * 5 + [(0, 0)] * 100)
    changes = [(obs.timestamp, d.desired_replicas, d.reason) for obs, d in steps if d.changes]
    assert changes[0][1:] == (8, Reason.RATE_LIMITED)
    assert changes[-1][1:] == (0, Reason.SCALE_TO_ZERO)
    assert changes[-1][0] - 10.0 >= 120


def test_a_scale_up_right_after_a_scale_down_needs_a_real_burst() -> None:
    policy = ScalingPolicy(
        reversal_guard_seconds=60, reversal_tolerance=4.0, max_replicas=50, scale_up_max_pods=50
    )
    history = History(last_change=(100.0, "down"))
    small = decide(Observation("product", 120.0, 2, 4, 4), history, policy)
    assert small.desired_replicas == 4 and small.reason is Reason.REVERSAL_GUARD
    burst = decide(Observation("product", 120.0, 20, 4, 4), history, policy)
    assert burst.desired_replicas > 4 and burst.reason is Reason.BACKLOG_ABOVE_TARGET
    later = decide(Observation("product", 161.0, 2, 4, 4), history, policy)
    assert later.desired_replicas == 6


def test_a_new_leader_does_not_scale_down_before_seeing_a_full_window() -> None:
    policy = ScalingPolicy(scale_down_window_seconds=30)
    history = History.taking_over(10, 0.0)
    assert decide(Observation("product", 20.0, 0, 2, 10), history, policy).desired_replicas == 10
    assert decide(Observation("product", 31.0, 0, 2, 10), history, policy).desired_replicas == 2


def test_an_estimated_lag_scales_but_never_to_zero() -> None:
    policy = ScalingPolicy(scale_down_window_seconds=0, scale_to_zero_cooldown_seconds=0)
    up = decide(Observation("product", 0.0, 12, 0, 0, lag_estimated=True), History(), policy)
    assert up.desired_replicas == 8 and up.lag_estimated and "(estimated)" in up.message
    idle = decide(Observation("product", 0.0, 0, 0, 3, lag_estimated=True), History(), policy)
    assert idle.desired_replicas == 1


@pytest.mark.parametrize(
    ("field", "value", "complaint"),
    [
        ("target_backlog_per_replica", 0.0, "target_backlog_per_replica"),
        ("min_replicas", 30, "min_replicas 30 is above max_replicas 20"),
        ("tolerance", 1.5, "tolerance"),
        ("scale_down_window_seconds", -1.0, "scale_down_window_seconds"),
    ],
)
def test_an_impossible_policy_is_refused_with_what_is_wrong(
    field: str, value: float, complaint: str
) -> None:
    with pytest.raises(ValueError, match=complaint):
        replace(ScalingPolicy(), **{field: value})
