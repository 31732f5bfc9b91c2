"""The orbit–clock solver: coordinates as independent problems, orbit in θ*, clock in
closed form, outputs by inverting the clock (docs/theory.md §7)."""

from typing import NamedTuple

import diffrax
import jax
import jax.numpy as jnp

from .._results import RESULTS
from .clock import build_clock, data_times, path_at, time_at
from .coordinate_end import END, coordinate_end
from .events import EVENT, crossing_root_finder
from .orbit import solve_orbit


class CoordinateFlow(NamedTuple):
    """One coordinate's flow: outputs at `ts`, its end, and its crossings."""

    thresholds: jax.Array  # (T, L)
    scales: jax.Array  # (T, L)
    crossing_times: jax.Array | None  # (N,) in sorted order; inf where the point never crosses
    crosses: jax.Array  # (N,) in sorted order: θ* reaches the point (its crossing time is finite)
    direction: jax.Array
    end_kind: jax.Array
    end_level: jax.Array
    end_time: jax.Array | None  # when the coordinate stops (inf for an asymptote)
    end_thresholds: jax.Array  # (L,)
    end_scales: jax.Array  # (L,)
    switch_times: jax.Array | None  # (L-1,) inf if unused
    switch_layers: jax.Array  # (L-1,) active layer after each switch
    crossing_layers: jax.Array  # (N,) active layer at each crossing
    num_steps: jax.Array
    ok: jax.Array


def orbit_tools(dtype, rtol, atol, solver):
    return dict(
        solver=solver,
        controller=diffrax.PIDController(rtol=rtol, atol=atol),
        root_finder=crossing_root_finder(dtype, rtol, atol),
    )


def coordinate_flow(
    u_sorted, target_sums, theta, scales, ts, *, motion, tools, max_steps, with_times=True
) -> CoordinateFlow:
    """One coordinate's flow. `ts=None`: no outputs (`thresholds`, `scales` None).
    `with_times=False`: the end and which points it reaches, from the scan and the orbit
    alone (no clock; `ts` unused, time fields None)."""
    theta_star = jnp.max(theta)
    end = coordinate_end(u_sorted, target_sums, theta_star)
    direction = end.direction.astype(theta.dtype)
    length = jnp.abs(end.level - theta_star)
    keep = "end" if not with_times else "clock" if ts is None else "states"
    orbit = solve_orbit(
        theta, scales, end.direction, length, motion=motion, max_steps=max_steps, keep=keep, **tools
    )
    switches = orbit.segment_starts[1:]

    def exact_star(s, theta_s):
        """θ* exact on the orbit: θ*_0 ± s (the end level itself at the end)."""
        star = jnp.where(s >= length, end.level, theta_star + direction * s)
        return jnp.minimum(theta_s, star).at[orbit.layer(s)].set(star)

    def state(s):
        theta_s, scales_s = orbit.state(s)
        return exact_star(s, theta_s), scales_s

    level = direction * (u_sorted - theta_star)  # path length of each data coordinate
    final = direction * (end.level - theta_star)
    rising = (end.direction > 0) & (level > 0) & (level <= final)
    falling = (end.direction < 0) & (level >= 0) & (level < final)
    # a point exactly on an asymptote is reached only as t → ∞
    crosses = (rising | falling) & ~((end.kind == END.asymptote) & (level >= final))
    # the end from the last solver step, whatever is kept of the steps (the same bits)
    end_thresholds, end_scales = exact_star(length, orbit.end[0]), orbit.end[1]
    theta_ts = scales_ts = crossing = switch_times = end_time = None
    if with_times:
        clock = build_clock(
            orbit, u_sorted, target_sums, theta_star, direction, end.level, end.kind, switches
        )
        if ts is not None:
            theta_ts, scales_ts = jax.vmap(state)(jax.vmap(lambda t: path_at(clock, t))(ts))
        crossing = jnp.where(crosses, data_times(clock), jnp.inf)
        switch_times = jnp.where(
            jnp.isfinite(switches),
            jax.vmap(lambda s: time_at(clock, s))(jnp.minimum(switches, length)),
            jnp.inf,
        )
        end_time = jnp.where(
            end.kind == END.kink, clock.times[-1], jnp.where(end.direction == 0, 0.0, jnp.inf)
        )
    return CoordinateFlow(
        thresholds=theta_ts,
        scales=scales_ts,
        crossing_times=crossing,
        crosses=crosses,
        direction=end.direction,
        end_kind=end.kind,
        end_level=end.level,
        end_time=end_time,
        end_thresholds=end_thresholds,
        end_scales=end_scales,
        switch_times=switch_times,
        switch_layers=orbit.segment_layers[1:],
        crossing_layers=jax.vmap(orbit.layer)(jnp.clip(level, 0.0, length)),
        num_steps=orbit.num_steps,
        ok=orbit.ok,
    )


def flow_coordinates(
    stats, theta, scales, ts, *, motion, tools, max_steps, with_times=True
) -> CoordinateFlow:
    """`coordinate_flow` for every coordinate (vmapped; the coordinate axis comes first)."""
    return jax.vmap(
        lambda u, v, th, sc: coordinate_flow(
            u,
            v,
            th,
            sc,
            ts,
            motion=motion,
            tools=tools,
            max_steps=max_steps,
            with_times=with_times,
        ),
        in_axes=(1, 1, 1, 1),
    )(stats.u_sorted, stats.target_sums, theta, scales)


def unsort(stats, sorted_values):
    """Values per sorted position `(M, N)` back to the points' order, `(N, M)`."""
    rows = jnp.zeros_like(sorted_values.T)
    columns = jnp.arange(stats.order.shape[1])[None]
    return rows.at[stats.order, columns].set(sorted_values.T)


def event_list(stats, flows: CoordinateFlow, max_events: int):
    """The padded event list (time order) derived from crossings, switches and kinks."""
    width, num = flows.crossing_times.shape
    depth_minus_one = flows.switch_times.shape[1]
    coords = jnp.arange(width, dtype=jnp.int32)[:, None]
    cross_kind = jnp.where(flows.direction[:, None] > 0, EVENT.truncation, EVENT.release)
    parts = [
        (
            flows.crossing_times,
            jnp.broadcast_to(cross_kind, (width, num)),
            stats.order.T,
            flows.crossing_layers,
        ),
        (
            flows.switch_times,
            jnp.full((width, depth_minus_one), EVENT.layer_switch),
            jnp.full((width, depth_minus_one), -1),
            flows.switch_layers,
        ),
        (
            jnp.where(flows.end_kind == END.kink, flows.end_time, jnp.inf)[:, None],
            jnp.full((width, 1), EVENT.kink),
            jnp.full((width, 1), -1),
            flows.end_thresholds.argmax(axis=1)[:, None],
        ),
    ]
    times = jnp.concatenate([p[0] for p in parts], axis=1).reshape(-1)
    kinds = jnp.concatenate([p[1] for p in parts], axis=1).reshape(-1).astype(jnp.int32)
    points = jnp.concatenate([p[2] for p in parts], axis=1).reshape(-1).astype(jnp.int32)
    layers = jnp.concatenate([p[3] for p in parts], axis=1).reshape(-1).astype(jnp.int32)
    coordinate = jnp.broadcast_to(coords, (width, times.shape[0] // width)).reshape(-1)
    # Time order, ties by (coordinate, kind): the list is built coordinate by coordinate with
    # its parts in increasing EVENT order, so a stable sort on the times alone gives it (a
    # lexsort on the three keys costs a third more at N = 10^4).
    order = jnp.argsort(times, stable=True)[:max_events]
    happened = jnp.isfinite(times[order])
    pad = max_events - order.shape[0]

    def take(values, fill):
        picked = jnp.where(happened, values[order], fill)
        return jnp.concatenate([picked, jnp.full(pad, fill, picked.dtype)]) if pad > 0 else picked

    return (
        take(times, jnp.inf),
        take(coordinate, -1),
        take(kinds, -1),
        take(points, -1),
        take(layers, -1),
        jnp.sum(jnp.isfinite(times), dtype=jnp.int32),
    )


def result_code(flows: CoordinateFlow, theta, scales):
    finite = jnp.all(jnp.isfinite(theta)) & jnp.all(jnp.isfinite(scales))
    ok = jnp.all(flows.ok)
    return jnp.where(
        ~finite, RESULTS.nonfinite_state, jnp.where(ok, RESULTS.successful, RESULTS.solver_failed)
    ).astype(jnp.int32)
