"""Event-driven integration of the effective flow, segment by segment.

Each segment integrates with the discrete state (counts, active layers, directions) held
fixed until the first switching surface is hit; the events are applied
(`_events.apply_events`) and the next segment starts. Two propagators share this loop:
diffrax with an `Event` and a Newton root find (any mode), and the closed-form
piecewise-exponential solution (weights frozen), which is the exact reference.
"""

import equinox as eqx
import equinox.internal as eqxi
import jax
import jax.numpy as jnp

from .._results import RESULTS
from .events import EVENT, Discrete, apply_events, initial_discrete
from .statistics import count_below, frame_cost


class EffectiveSolution(eqx.Module):
    """The effective flow sampled at `ts`, with its events.

    Arrays: `ts` `(T,)`; `thresholds` and cumulative `scales` `(T, L, M)`; `cost` `(T,)`;
    `n_truncated` and `active_layer` `(T, M)`. Events, in time order and padded to
    `max_events` (times `inf`, other fields -1): `event_times`, `event_coords`,
    `event_kinds` (`EVENT` codes: 0 truncation, 1 release, 2 layer switch, 3 kink), `event_points`
    (data index, or -1), `event_layers` (active layer after the event); `num_events`
    counts all events, also any beyond the buffer. `crossing_times` `(N, M)`: when point
    j is truncated or released in coordinate k (each crosses at most once; `inf` if
    never). `num_segments`: integration segments (event loop) or orbit segments (orbit
    solver); `num_steps`: ODE solver steps taken, in total. `result` is a `RESULTS`
    code; values after a failure are NaN. A point exactly at θ* counts as truncated, as
    in gradient descent (ReLU' = 0 at 0).
    """

    ts: jax.Array
    thresholds: jax.Array
    scales: jax.Array
    cost: jax.Array
    n_truncated: jax.Array
    active_layer: jax.Array
    event_times: jax.Array
    event_coords: jax.Array
    event_kinds: jax.Array
    event_points: jax.Array
    event_layers: jax.Array
    num_events: jax.Array
    crossing_times: jax.Array
    num_segments: jax.Array
    num_steps: jax.Array
    result: jax.Array


class _Carry(eqx.Module):
    t: jax.Array
    theta: jax.Array
    scales: jax.Array
    disc: Discrete
    out_theta: jax.Array
    out_scales: jax.Array
    events: tuple
    num_events: jax.Array
    num_segments: jax.Array
    num_steps: jax.Array
    result: jax.Array
    done: jax.Array


def _record(events, num_events, t, fired, max_events):
    """Appends the fired events (up to one of each `EVENT` per coordinate: the columns of
    `fired.kinds`, in code order) to the padded buffers."""
    width, per = fired.kinds.shape
    mask = fired.kinds.reshape(-1)
    coords = jnp.repeat(jnp.arange(width, dtype=jnp.int32), per)
    kinds = jnp.tile(jnp.arange(per, dtype=jnp.int32), width)
    crossing = (kinds == EVENT.truncation) | (kinds == EVENT.release)
    points = jnp.where(crossing, jnp.repeat(fired.points, per), -1)
    layers = jnp.repeat(fired.layers, per)
    slot = jnp.where(mask, num_events + jnp.cumsum(mask) - 1, max_events)
    values = (jnp.full(mask.shape, t), coords, kinds, points, layers)
    events = tuple(buf.at[slot].set(val.astype(buf.dtype), mode="drop") for buf, val in zip(events, values))
    return events, num_events + jnp.sum(mask, dtype=jnp.int32)


def _event_tolerance(stats):
    """Distance under which a surface counts as reached along with the nearest one."""
    eps = jnp.finfo(stats.u_sorted.dtype).eps
    return 1000 * eps * (1 + jnp.max(jnp.abs(stats.u_sorted)))


def solve_segments(propagate, stats, theta0, scales0, ts, t1, *, max_segments, max_events):
    """Shared segment loop, returning the `EffectiveSolution`.

    `propagate(t, theta, scales, disc)` integrates to the first event or `t1` and returns
    `(t_end, theta_end, scales_end, theta_ts, scales_ts, hit, ok, steps)`, with the state
    at the (clipped) `ts` of this segment.
    """
    dtype = theta0.dtype
    num_ts = ts.shape[0]
    nan_out = jnp.full((num_ts,) + theta0.shape, jnp.nan, dtype)
    events = (
        jnp.full(max_events, jnp.inf, dtype),
        *(jnp.full(max_events, -1, jnp.int32) for _ in range(4)),
    )
    finite = jnp.all(jnp.isfinite(theta0)) & jnp.all(jnp.isfinite(scales0))
    init = _Carry(
        t=jnp.zeros((), dtype),
        theta=theta0,
        scales=scales0,
        disc=initial_discrete(stats, theta0),
        out_theta=nan_out,
        out_scales=nan_out,
        events=events,
        num_events=jnp.zeros((), jnp.int32),
        num_segments=jnp.zeros((), jnp.int32),
        num_steps=jnp.zeros((), jnp.int32),
        result=jnp.where(finite, RESULTS.successful, RESULTS.nonfinite_state).astype(jnp.int32),
        done=~finite,
    )

    def cond(carry):
        return ~carry.done

    def body(carry):
        t_end, theta, scales, theta_ts, scales_ts, hit, ok, steps = propagate(
            carry.t, carry.theta, carry.scales, carry.disc
        )
        ok = ok & jnp.all(jnp.isfinite(theta)) & jnp.all(jnp.isfinite(scales))
        keep = ((ts >= carry.t) & (ts <= t_end) & ok)[:, None, None]
        out_theta = jnp.where(keep, theta_ts, carry.out_theta)
        out_scales = jnp.where(keep, scales_ts, carry.out_scales)
        new_theta, disc, fired = apply_events(stats, theta, carry.disc, _event_tolerance(stats))
        hit = hit & ok
        events, num_events = _record(carry.events, carry.num_events, t_end, fired, max_events)
        num_segments = carry.num_segments + 1
        capped = hit & (num_segments >= max_segments)
        result = jnp.where(ok, carry.result, RESULTS.solver_failed)
        result = jnp.where(capped, RESULTS.max_segments_reached, result).astype(jnp.int32)
        pick = lambda new, old: jnp.where(hit, new, old)  # noqa: E731
        # A finished seed moves to t1: under vmap its (discarded) later iterations are then
        # zero-length solves instead of re-integrating its last segment each time.
        return _Carry(
            t=jnp.where(hit | ok, t_end, t1),
            theta=pick(new_theta, theta),
            scales=scales,
            disc=jax.tree.map(pick, disc, carry.disc),
            out_theta=out_theta,
            out_scales=out_scales,
            events=jax.tree.map(pick, events, carry.events),
            num_events=pick(num_events, carry.num_events),
            num_segments=num_segments,
            num_steps=carry.num_steps + steps,
            result=result,
            done=~hit | capped,
        )

    final = eqxi.while_loop(cond, body, init, max_steps=max_segments, kind="checkpointed")
    return assemble(final, stats, ts)


def derived_outputs(stats, theta):
    """Cost, truncated counts (points at or below θ*) and active layers from sampled
    thresholds `(T, L, M)`."""
    theta_star = jnp.max(theta, axis=1)
    cost = jax.vmap(lambda level: frame_cost(stats, level))(theta_star)
    counts = jax.vmap(lambda level: count_below(stats, level, side="right"))(theta_star)
    return cost, counts, jnp.argmax(theta, axis=1).astype(jnp.int32)


def crossings_from_events(stats, times, coords, kinds, points):
    """`(N, M)` crossing times scattered from the event list (inf where none)."""
    crossing = (kinds == EVENT.truncation) | (kinds == EVENT.release)
    rows = jnp.where(crossing, points, stats.num_points)  # out of range: dropped
    out = jnp.full(stats.u_sorted.shape, jnp.inf, times.dtype)
    return out.at[rows, jnp.clip(coords, 0)].set(times, mode="drop")


def solution(
    stats, ts, thresholds, scales, events, num_events, crossing_times, num_segments, num_steps, result
):
    """The `EffectiveSolution` from sampled thresholds and scales `(T, L, M)` and the padded
    event list `events = (times, coords, kinds, points, layers)`."""
    cost, counts, active = derived_outputs(stats, thresholds)
    times, coords, kinds, points, layers = events
    return EffectiveSolution(
        ts=ts,
        thresholds=thresholds,
        scales=scales,
        cost=cost,
        n_truncated=counts,
        active_layer=active,
        event_times=times,
        event_coords=coords,
        event_kinds=kinds,
        event_points=points,
        event_layers=layers,
        num_events=num_events,
        crossing_times=crossing_times,
        num_segments=jnp.asarray(num_segments, jnp.int32),
        num_steps=jnp.asarray(num_steps, jnp.int32),
        result=result,
    )


def assemble(final: _Carry, stats, ts) -> EffectiveSolution:
    times, coords, kinds, points, _ = final.events
    crossing = crossings_from_events(stats, times, coords, kinds, points)
    return solution(
        stats,
        ts,
        final.out_theta,
        final.out_scales,
        final.events,
        final.num_events,
        crossing,
        final.num_segments,
        final.num_steps,
        final.result,
    )
