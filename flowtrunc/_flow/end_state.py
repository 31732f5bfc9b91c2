"""Where the effective flow ends as t → ∞, and when, without integrating in time."""

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._custom_types import Array, Bool, Float, Int
from .._model.data import Dataset
from .._model.network import AdaptedReLUNet
from .._model.parameterisation import weight_motion
from .coordinate_end import END_KINDS as END_KINDS
from .orbit_clock import flow_coordinates, orbit_tools, result_code, unsort
from .solve import prepare_inputs, traced_inputs_ok, with_input_check
from .solvers import OrbitClock, check_solver, from_old_keywords


class EndState(eqx.Module):
    """The end of the effective flow of one network on one dataset (frame coordinates).

    - `theta_star` `(M,)`: the limit of θ* per coordinate; `kind` `(M,)`: how it gets
      there, an index into `END_KINDS` (0 asymptote: θ* tends to the mean truncated
      target inside an interval; 1 kink: it stops on a data coordinate in finite time;
      2 still: g = 0 at t = 0); `direction` `(M,)`: +1 rising, -1 falling, 0 at rest;
      `end_time` `(M,)`: when the coordinate stops (`inf` for an asymptote, 0 at rest).
    - `thresholds`, `scales` `(L, M)`: all thresholds and cumulative scales at the end.
    - `crossing_times` `(N, M)`: when each point is truncated or released (`inf`: never).
    - `truncated` `(N, M)`: truncated for all large t; `truncated_from` `(N, M)`: the time
      from which it stays truncated (0 if from the start, `inf` if never).
    - `collapsed` `(Q,)`: every point of the class ends truncated in every coordinate (it
      maps to one point); `collapse_time` `(Q,)`: from when (`inf` if never);
      `collapsed_at_start` `(Q,)`: already collapsed at t = 0 (reported apart).
    - `result`: a `RESULTS` code.

    With `end_state(..., with_times=False)` the time fields (`end_time`, `crossing_times`,
    `truncated_from`, `collapse_time`) are None and every other field is the same.
    """

    theta_star: Float[Array, " width"]
    kind: Int[Array, " width"]
    direction: Int[Array, " width"]
    end_time: Float[Array, " width"] | None
    thresholds: Float[Array, "depth width"]
    scales: Float[Array, "depth width"]
    crossing_times: Float[Array, "points width"] | None
    truncated: Bool[Array, "points width"]
    truncated_from: Float[Array, "points width"] | None
    collapsed: Bool[Array, " classes"]
    collapse_time: Float[Array, " classes"] | None
    collapsed_at_start: Bool[Array, " classes"]
    result: Int[Array, ""]


def end_state(
    net: AdaptedReLUNet,
    data: Dataset,
    *,
    train_weights: bool = True,
    parameterisation: str = "direct",
    solver: OrbitClock | diffrax.AbstractSolver | None = None,  # a diffrax solver: deprecated
    with_times: bool = True,
    rtol: float | None = None,
    atol: float | None = None,
    max_steps: int | None = None,
) -> EndState:
    """Where the effective flow of `net` on `data` ends, why, and when (docs/theory.md §7).

    The end level of each coordinate comes from one scan over the sorted data; the final
    thresholds and scales from the data-free orbit in θ*; the times (crossings, kinks,
    collapses) from the clock. No integration in time, so it is cheap enough for 10^5
    seeds under `vmap`. Same rules and arguments (`parameterisation` included) as
    `solve_effective(solver=ft.OrbitClock())`; `solver` takes an `OrbitClock` (its
    `rtol`, `atol`, `max_steps` and diffrax solver); `rtol`, `atol`, `max_steps` as keywords
    are deprecated.

    `with_times=False` skips the clock: where the flow ends, which points end truncated
    and which classes collapse, without when (the time fields are None). That is the
    cheap map over many seeds.
    """
    if not isinstance(with_times, bool | np.bool_):
        raise TypeError(
            f"`with_times` must be True (the end and when it is reached) or False (the end only), "
            f"got {with_times!r}."
        )
    solver = from_old_keywords(solver, "end_state", rtol=rtol, atol=atol, max_steps=max_steps)
    check_solver(solver, (OrbitClock,))
    motion = weight_motion(train_weights, parameterisation)
    stats, theta, scales, _, _, _, _ = prepare_inputs(net, data, jnp.zeros(1), None, None, None, "end_state")
    rtol, atol = solver.tolerances(theta.dtype)
    settings = (solver.ode_solver, rtol, atol, solver.max_steps)
    end = _end_state(stats, theta, scales, data.labels, data.num_classes, motion, *settings, bool(with_times))
    return with_input_check(end, traced_inputs_ok(net, data))


@eqx.filter_jit
def _end_state(stats, theta, scales, labels, num_classes, motion, solver, rtol, atol, max_steps, with_times):
    tools = orbit_tools(theta.dtype, rtol, atol, solver)
    flows = flow_coordinates(
        stats,
        theta,
        scales,
        None,
        motion=motion,
        tools=tools,
        max_steps=max_steps,
        with_times=with_times,
    )
    # in each coordinate's sorted order, then back to the points' (no second sort)
    at_start_sorted = stats.u_sorted.T <= jnp.max(theta, axis=0)[:, None]
    at_start = unsort(stats, at_start_sorted)
    truncated = unsort(stats, at_start_sorted != flows.crosses)
    stays = jax.ops.segment_min(
        jnp.all(truncated, axis=1).astype(jnp.int32), labels, num_segments=num_classes
    )
    start_all = jax.ops.segment_min(
        jnp.all(at_start, axis=1).astype(jnp.int32), labels, num_segments=num_classes
    )
    crossing = truncated_from = collapse_time = None
    if with_times:
        crossing = unsort(stats, flows.crossing_times)
        truncated_from = unsort(
            stats,
            jnp.where(
                at_start_sorted & ~flows.crosses,
                0.0,
                jnp.where(~at_start_sorted & flows.crosses, flows.crossing_times, jnp.inf),
            ),
        )
        per_point = jnp.max(truncated_from, axis=1)
        collapse_time = jax.ops.segment_max(per_point, labels, num_segments=num_classes)
    return EndState(
        theta_star=flows.end_level,
        kind=flows.end_kind,
        direction=flows.direction,
        end_time=flows.end_time,
        thresholds=flows.end_thresholds.T,
        scales=flows.end_scales.T,
        crossing_times=crossing,
        truncated=truncated,
        truncated_from=truncated_from,
        collapsed=stays == 1,  # (an empty class's minimum is the int maximum)
        collapse_time=collapse_time,
        collapsed_at_start=start_all == 1,
        result=result_code(flows, theta, scales),
    )
