"""Event-driven integration of the usual cost's effective flow, one coordinate at a time
(docs/theory.md §9).

The coordinates are independent problems, so each runs its own segment loop (and `vmap`
batches them). A segment integrates with the discrete state held fixed until the first
switching surface: θ* reaches the next data coordinate above or below it, another layer's
threshold reaches θ*, or a sliding motion ends. On a surface the two one-sided fields
decide: if both carry the state across, it crosses; if both push into the surface, the
Filippov solution slides along it (θ* held on a data coordinate with that point partly
truncated, or two tied layers sharing the truncation gradient) until one side lets go.
Unlike the input cost's flow, θ* can turn back inside a segment, so both data neighbours
are watched at all times.
"""

from typing import NamedTuple

import diffrax
import equinox as eqx
import equinox.internal as eqxi
import jax
import jax.numpy as jnp

from ..._codes import Codes
from ..._results import RESULTS
from ..events import crossing_root_finder
from .field import State, gradient, velocity
from .statistics import Column, coordinate_cost, group_bounds, sums_at


class MODE(Codes):
    """How a coordinate moves in a segment."""

    free = 0, "off every switching surface"
    data_slide = 1, "θ* held on a data coordinate, that point (or group of equal ones) partly truncated"
    tie_slide = 2, "two tied layers hold θ* together, sharing its truncation gradient"


class USUAL_EVENT(Codes):
    """What happens on a switching surface of the usual cost's flow."""

    truncation = 0, "θ* (moving up) crosses a data coordinate, which joins the truncated set"
    release = 1, "θ* (moving down) crosses a truncated point, which leaves the truncated set"
    layer_switch = 2, "another layer's threshold crosses θ* and becomes the active layer"
    data_slide = 3, "both sides push θ* onto a data coordinate: it slides there, the point partly truncated"
    tie_slide = 4, "both sides push two layers' thresholds together: they slide tied"
    slide_end = 5, "a sliding motion ends: one side's field no longer pushes into the surface"


USUAL_EVENT_KINDS = USUAL_EVENT.names()
_FAR = 1e30  # distance reported for a surface that cannot be hit


class Discrete(NamedTuple):
    """One coordinate's discrete state: points below `low` truncated, from `high` on not
    (equal off a data slide), the active layer, the tied `partner` (tie slide) and the mode."""

    low: jax.Array
    high: jax.Array
    active: jax.Array
    partner: jax.Array
    mode: jax.Array


def _field_pair(state: State, disc: Discrete, column: Column, motion):
    """The fields at the two ends of the current sliding combination, `(F0, F1)`, with the
    sliding condition `σ(F)` of each (zero for a free segment)."""
    theta_star = state.thresholds[disc.active]
    num_points = column.u.shape[0]
    data_slide = disc.mode == MODE.data_slide
    tie_slide = disc.mode == MODE.tie_slide
    sums0 = sums_at(column, disc.low, disc.high, 0.0)
    sums1 = sums_at(column, disc.low, disc.high, 1.0)
    f0 = velocity(
        state, gradient(state, sums0, theta_star, num_points), disc.active, disc.partner, 0.0, motion
    )
    grad1 = gradient(state, sums1, theta_star, num_points)
    f1 = velocity(state, grad1, disc.active, disc.partner, jnp.where(tie_slide, 1.0, 0.0), motion)

    def condition(field):
        on_level = field.thresholds[disc.active]
        on_tie = field.thresholds[disc.partner] - field.thresholds[disc.active]
        return jnp.where(data_slide, on_level, jnp.where(tie_slide, on_tie, 0.0))

    return f0, f1, condition(f0), condition(f1)


def combined_field(state: State, disc: Discrete, column: Column, motion):
    """`(field, μ)`: the Filippov combination `F0 + μ (F1 − F0)` whose sliding condition
    vanishes (μ = 0 off a surface)."""
    f0, f1, s0, s1 = _field_pair(state, disc, column, motion)
    sliding = disc.mode != MODE.free
    denominator = jnp.where(sliding & (s0 != s1), s0 - s1, 1.0)
    mu = jnp.where(sliding, s0 / denominator, 0.0)
    mu_used = jnp.clip(mu, 0.0, 1.0)
    field = jax.tree.map(lambda a, b: a + mu_used * (b - a), f0, f1)
    return field, mu


def distances(state: State, disc: Discrete, column: Column, motion):
    """Signed distances to the surfaces `(truncation, release, layer, slide end at μ = 0,
    slide end at μ = 1)`, positive until the event, `(5,)`; and the nearest other layer."""
    num_points = column.u.shape[0]
    theta = state.thresholds
    theta_star = theta[disc.active]
    off_level = disc.mode != MODE.data_slide
    above = column.u[jnp.minimum(disc.high, num_points - 1)]
    below = column.u[jnp.maximum(disc.low - 1, 0)]
    truncation = jnp.where(off_level & (disc.high < num_points), above - theta_star, _FAR)
    release = jnp.where(off_level & (disc.low > 0), theta_star - below, _FAR)
    layers = jnp.arange(theta.shape[0])
    others = (layers != disc.active) & ~((disc.mode == MODE.tie_slide) & (layers == disc.partner))
    gaps = jnp.where(others, theta_star - theta, _FAR)
    layer = jnp.min(gaps)
    _, mu = combined_field(state, disc, column, motion)
    sliding = disc.mode != MODE.free
    ends = jnp.where(sliding, jnp.stack([mu, 1.0 - mu]), _FAR)
    return jnp.concatenate([jnp.stack([truncation, release, layer]), ends]), jnp.argmin(gaps).astype(
        jnp.int32
    )


def _star_speed(state, disc, column, motion):
    field, _ = combined_field(state, disc, column, motion)
    return field.thresholds[disc.active]


def apply_event(state: State, disc: Discrete, column: Column, motion):
    """The nearest surface's event: snaps the state onto it and picks the next discrete
    state from the two one-sided fields. Returns `(state, disc, kind, point, ok)`; `ok` is
    False where the state would slide on two surfaces at once (not supported)."""
    d, nearest_layer = distances(state, disc, column, motion)
    kind = jnp.argmin(d)
    theta = state.thresholds
    layers = jnp.arange(theta.shape[0])
    tie = disc.mode == MODE.tie_slide
    free = disc.mode == MODE.free

    # Data levels (kinds 0, 1): the level, its group of equal coordinates, both sides' speeds.
    num_points = column.u.shape[0]
    index = jnp.where(kind == 0, disc.high, disc.low - 1).clip(0, num_points - 1)
    level = column.u[index]
    low, high = group_bounds(column, level)
    on_level = (layers == disc.active) | (tie & (layers == disc.partner))
    snapped = state._replace(thresholds=jnp.where(on_level, level, theta))
    v_low = _star_speed(snapped, disc._replace(low=low, high=low), column, motion)
    v_high = _star_speed(snapped, disc._replace(low=high, high=high), column, motion)
    crosses_up = (kind == 0) & (v_high > 0)
    crosses_down = (kind == 1) & (v_low < 0)
    crossing = crosses_up | crosses_down
    count = jnp.where(crosses_up, high, low)
    level_disc = Discrete(
        low=jnp.where(crossing, count, low),
        high=jnp.where(crossing, count, high),
        active=disc.active,
        partner=disc.partner,
        mode=jnp.where(crossing, disc.mode, MODE.data_slide).astype(jnp.int32),
    )
    level_ok = crossing | free
    level_kind = jnp.where(
        crosses_up,
        USUAL_EVENT.truncation,
        jnp.where(crosses_down, USUAL_EVENT.release, USUAL_EVENT.data_slide),
    )

    # Layer (kind 2): the other layer reaches θ*; it takes over if it keeps rising past it.
    partner = nearest_layer
    tied = state._replace(thresholds=jnp.where(layers == partner, theta[disc.active], theta))
    as_tie = disc._replace(partner=partner, mode=jnp.asarray(MODE.tie_slide, jnp.int32))
    *_, s1 = _field_pair(tied, as_tie, column, motion)
    takes_over = s1 > 0
    layer_disc = Discrete(
        low=disc.low,
        high=disc.high,
        active=jnp.where(takes_over, partner, disc.active),
        partner=partner,
        mode=jnp.where(takes_over, MODE.free, MODE.tie_slide).astype(jnp.int32),
    )
    layer_kind = jnp.where(takes_over, USUAL_EVENT.layer_switch, USUAL_EVENT.tie_slide)

    # Slide ends (kinds 3, 4): μ = 0 keeps the side of F0, μ = 1 the side of F1.
    to_high = kind == 4
    data_slide = disc.mode == MODE.data_slide
    end_count = jnp.where(to_high, disc.high, disc.low)
    end_disc = Discrete(
        low=jnp.where(data_slide, end_count, disc.low),
        high=jnp.where(data_slide, end_count, disc.high),
        active=jnp.where(tie & to_high, disc.partner, disc.active),
        partner=disc.partner,
        mode=jnp.asarray(MODE.free, jnp.int32),
    )

    pick = lambda a, b, c: jax.tree.map(  # noqa: E731
        lambda x, y, z: jnp.where(kind <= 1, x, jnp.where(kind == 2, y, z)), a, b, c
    )
    new_state = pick(snapped, tied, state)
    new_disc = pick(level_disc, layer_disc, end_disc)
    event_kind = jnp.where(kind <= 1, level_kind, jnp.where(kind == 2, layer_kind, USUAL_EVENT.slide_end))
    ok = jnp.where(kind <= 1, level_ok, jnp.where(kind == 2, free, True))
    point = jnp.where(kind <= 1, column.order[index], -1).astype(jnp.int32)
    return new_state, new_disc, event_kind.astype(jnp.int32), point, ok


def initial_discrete(state: State, column: Column, motion) -> Discrete:
    """As gradient descent counts at t = 0: points at or below θ* truncated, the lowest tied
    layer active, no sliding (a state that starts on a surface leaves it or lands in a
    slide at the first event)."""
    active = jnp.argmax(state.thresholds).astype(jnp.int32)
    _, high = group_bounds(column, state.thresholds[active])
    return Discrete(high, high, active, active, jnp.asarray(MODE.free, jnp.int32))


class CoordinateRun(NamedTuple):
    """One coordinate's solution: states at `ts` and its event list."""

    thresholds: jax.Array  # (T, L)
    scales: jax.Array  # (T, L)
    output_scale: jax.Array  # (T,)
    output_offset: jax.Array  # (T,)
    event_times: jax.Array  # (E,)
    event_kinds: jax.Array
    event_points: jax.Array
    event_layers: jax.Array
    num_events: jax.Array
    num_segments: jax.Array
    num_steps: jax.Array
    result: jax.Array


class _Carry(eqx.Module):
    t: jax.Array
    state: State
    disc: Discrete
    out: State
    events: tuple
    num_events: jax.Array
    num_segments: jax.Array
    num_steps: jax.Array
    result: jax.Array
    done: jax.Array


def solve_coordinate(
    column: Column,
    state: State,
    ts,
    t1,
    *,
    motion,
    solver,
    rtol,
    atol,
    max_steps,
    max_segments,
    max_events,
) -> CoordinateRun:
    """The segment loop of one coordinate from `state` at t = 0 to `t1`, sampled at `ts`."""
    dtype = state.thresholds.dtype
    root_finder = crossing_root_finder(dtype, rtol, atol)
    controller = diffrax.PIDController(rtol=rtol, atol=atol)

    def vector_field(t, y, disc):
        field, _ = combined_field(y, disc, column, motion)
        return field

    def event_fn(t, y, args, **kwargs):
        # A segment starts on the surface it just crossed or left (distance 0), and diffrax
        # detects an event as a sign change from the previous step: from a start at 0, a
        # first step that overshoots the next surface would go unseen. So the start counts
        # as far from every surface. Default float type: diffrax's untriggered branch
        # returns a Python 0.0.
        nearest = jnp.min(distances(y, args, column, motion)[0])
        return jnp.where(t == kwargs["t0"], 1.0, nearest).astype(jnp.result_type(float))

    term = diffrax.ODETerm(vector_field)
    event = diffrax.Event(event_fn, root_finder=root_finder, direction=False)
    nan_out = jax.tree.map(lambda a: jnp.full((ts.shape[0],) + a.shape, jnp.nan, dtype), state)
    events = (jnp.full(max_events, jnp.inf, dtype), *(jnp.full(max_events, -1, jnp.int32) for _ in range(3)))
    finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(a)) for a in state]))
    init = _Carry(
        t=jnp.zeros((), dtype),
        state=state,
        disc=initial_discrete(state, column, motion),
        out=nan_out,
        events=events,
        num_events=jnp.zeros((), jnp.int32),
        num_segments=jnp.zeros((), jnp.int32),
        num_steps=jnp.zeros((), jnp.int32),
        result=jnp.where(finite, RESULTS.successful, RESULTS.nonfinite_state).astype(jnp.int32),
        done=~finite,
    )

    def body(carry: _Carry):
        saveat = diffrax.SaveAt(
            subs=[diffrax.SubSaveAt(ts=jnp.clip(ts, carry.t, t1)), diffrax.SubSaveAt(t1=True)]
        )
        sol = diffrax.diffeqsolve(
            term,
            solver,
            carry.t,
            t1,
            None,
            carry.state,
            args=carry.disc,
            saveat=saveat,
            stepsize_controller=controller,
            event=event,
            max_steps=max_steps,
            throw=False,
        )
        hit = sol.result == diffrax.RESULTS.event_occurred
        ok = hit | (sol.result == diffrax.RESULTS.successful)
        at_ts, at_end = sol.ys
        end = jax.tree.map(lambda a: a[-1], at_end)
        t_end = sol.ts[1][-1]
        ok = ok & jnp.all(jnp.stack([jnp.all(jnp.isfinite(a)) for a in end]))
        keep = (ts >= carry.t) & (ts <= t_end) & ok
        out = jax.tree.map(
            lambda new, old: jnp.where(keep.reshape((-1,) + (1,) * (old.ndim - 1)), new, old),
            at_ts,
            carry.out,
        )
        new_state, new_disc, kind, point, supported = apply_event(end, carry.disc, column, motion)
        hit = hit & ok
        slot = jnp.where(hit, carry.num_events, max_events)
        values = (t_end, kind, point, new_disc.active)
        events = tuple(
            buf.at[slot].set(jnp.asarray(v, buf.dtype), mode="drop") for buf, v in zip(carry.events, values)
        )
        num_segments = carry.num_segments + 1
        capped = hit & (num_segments >= max_segments)
        result = jnp.where(ok, carry.result, RESULTS.solver_failed)
        result = jnp.where(hit & ~supported, RESULTS.double_sliding, result)
        result = jnp.where(capped, RESULTS.max_segments_reached, result).astype(jnp.int32)
        pick = lambda new, old: jax.tree.map(lambda a, b: jnp.where(hit, a, b), new, old)  # noqa: E731
        return _Carry(
            t=jnp.where(hit | ok, t_end, t1),
            state=pick(new_state, end),
            disc=pick(new_disc, carry.disc),
            out=out,
            events=events,
            num_events=carry.num_events + hit.astype(jnp.int32),
            num_segments=num_segments,
            num_steps=carry.num_steps + sol.stats["num_steps"],
            result=result,
            done=~hit | capped | ~supported,
        )

    final = eqxi.while_loop(lambda c: ~c.done, body, init, max_steps=max_segments, kind="checkpointed")
    failed = final.result != RESULTS.successful
    out = jax.tree.map(lambda a: jnp.where(failed, jnp.nan, a), final.out)
    return CoordinateRun(
        *out,
        *final.events,
        num_events=final.num_events,
        num_segments=final.num_segments,
        num_steps=final.num_steps,
        result=final.result,
    )


def sampled_cost(column: Column, thresholds, scales, output_scale, output_offset):
    """`(T,)` coordinate cost at the sampled states of one coordinate."""
    theta_star = jnp.max(thresholds, axis=1)
    slope = output_scale * scales[:, -1]
    shift = output_offset - slope * thresholds[:, -1]
    return jax.vmap(lambda s, a, c: coordinate_cost(column, s, a, c))(theta_star, slope, shift)
