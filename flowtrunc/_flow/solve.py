"""Public solvers of the effective flow: the orbit–clock solver (default), the
event-driven segment loop (the independent cross-check) and its closed form for frozen
weights."""

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._model.cost import check_data
from .._model.data import Dataset
from .._model.input_space import thresholds
from .._model.network import AdaptedReLUNet
from .._model.parameterisation import weight_motion
from .._validate import check_positive_int, float_array, is_concrete, traced_inputs_ok, with_input_check
from .event_loop import EffectiveSolution, solution, solve_segments
from .events import Discrete, crossing_root_finder, first_event_distance
from .field import at_active, check_adapted, effective_velocity, gamma_column
from .orbit_clock import event_list, flow_coordinates, orbit_tools, result_code, unsort
from .solvers import EventLoop, OrbitClock, check_solver, from_old_keywords
from .statistics import coordinate_stats, cost_gradient


def check_times(ts, t1, allow_inf=False):
    ts = float_array("ts", ts, ndim=1)
    if ts.shape[0] == 0:
        raise ValueError("`ts` is empty; give at least one output time, e.g. jnp.linspace(0, 5, 50).")
    if is_concrete(ts):
        values = np.asarray(ts)
        if np.any(np.isnan(values)):
            raise ValueError("`ts` contains NaN; give output times in [0, inf].")
        if not allow_inf and not np.all(np.isfinite(values)):
            raise ValueError(
                "`ts` contains inf; only solver=ft.OrbitClock() (the default) gives the state at t = inf."
            )
        if np.any(np.diff(values) < 0):
            raise ValueError("`ts` must be sorted in increasing order; pass `jnp.sort(ts)`.")
        if values[0] < 0:
            raise ValueError(f"`ts` must lie in [0, t1]: the flow starts at t = 0, got ts[0] = {values[0]}.")
    if t1 is None:
        return ts, ts[-1] if not allow_inf else jnp.max(jnp.where(jnp.isfinite(ts), ts, 0.0))
    t1 = jnp.asarray(t1, ts.dtype)
    if is_concrete(ts, t1) and float(ts[-1]) > float(t1):
        raise ValueError(f"`ts` must lie in [0, t1]; ts[-1] = {float(ts[-1])} > t1 = {float(t1)}.")
    return ts, t1


def prepare_inputs(net, data, ts, t1, max_segments, max_events, entry_point, allow_inf=False):
    check_adapted(net, entry_point)
    check_data(net, data)
    ts, t1 = check_times(ts, t1, allow_inf)
    bound = net.width * (data.num_points + net.depth + 1) + 2
    max_segments = bound if max_segments is None else max_segments
    max_events = bound if max_events is None else max_events
    check_positive_int("max_segments", max_segments)
    check_positive_int("max_events", max_events)
    theta, scales = thresholds(net)
    dtype = jnp.result_type(theta, data.x, ts)
    stats = coordinate_stats(net.fixed_frame.astype(dtype), data)
    theta, scales, ts, t1 = (a.astype(dtype) for a in (theta, scales, ts, t1))
    return stats, theta, scales, ts, t1, max_segments, max_events


def solve_effective(
    net: AdaptedReLUNet,
    data: Dataset,
    *,
    ts,
    t1=None,
    train_weights: bool = True,
    parameterisation: str = "direct",
    solver: OrbitClock | EventLoop | diffrax.AbstractSolver | None = None,  # a diffrax solver: deprecated
    max_events: int | None = None,
    method: str | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    max_steps: int | None = None,
    max_segments: int | None = None,
) -> EffectiveSolution:
    r"""Solves the effective gradient flow of `net` on `data` (gradient flow on the
    diagonal entries $d_\ell$ themselves and the biases; R fixed).

    `solver=ft.OrbitClock()` (default): each coordinate is its own problem. diffrax integrates
    the data-independent orbit in θ* (events only at layer switches, at most L − 1),
    the data drive the clock, a sum of one-dimensional integrals between consecutive
    data coordinates, and the state at `ts` follows by inverting the clock
    (docs/theory.md §7). The sequential work does not grow with N.

    `solver=ft.EventLoop()`: the event-driven segment loop, restarting a diffrax solve at
    every truncation, release and layer switch (the independent cross-check). With
    frozen weights `solve_frozen_exact` is its closed form.

    Both follow the same rules: a point exactly at θ* counts as truncated (as in
    gradient descent, ReLU' = 0 at 0), a release that would reverse g is a kink, and
    tied layers follow the highest tied layer while θ* rises, the lowest while it falls.

    **Arguments:**

    - `net`: an `AdaptedReLUNet`, the state at t = 0.
    - `data`: a `Dataset` of matching dimension.
    - `ts`: sorted output times `>= 0`; with `OrbitClock` they may include `inf`
      (the end state).
    - `t1`: final time of the event loop (default `ts[-1]`); unused by the orbit.
    - `train_weights`: gradient flow on `(d, b)` (True) or on the biases only.
    - `parameterisation`: gradient flow on the diagonal entries `d` (`"direct"`, the
      default) or on `log d` (`"log"`; each `d_n^{-2}` of the d-terms becomes 1). The
      two agree when the weights are frozen.
    - `solver`: `ft.OrbitClock(...)` or `ft.EventLoop(...)`, each with its diffrax solver,
      tolerances and step caps (their defaults depend on the float type; see each).
    - `max_events`: length of the event list (default `M (N + L + 1) + 2`, enough since
      θ* is monotone per coordinate).
    - `method`, `rtol`, `atol`, `max_steps`, `max_segments` and a diffrax solver as
      `solver`: the keywords of version 0.1, deprecated (they still work, with a warning
      that names the replacement).

    **Returns:** an `EffectiveSolution`; its `result` is a per-seed code (`RESULTS`), so
    the function can be `vmap`ped over seeds without one failure aborting the batch.

    Differentiable (reverse mode) with respect to the net and the data.
    """
    solver = from_old_keywords(
        solver,
        "solve_effective",
        method=method,
        rtol=rtol,
        atol=atol,
        max_steps=max_steps,
        max_segments=max_segments,
    )
    check_solver(solver, (OrbitClock, EventLoop))
    orbit = isinstance(solver, OrbitClock)
    motion = weight_motion(train_weights, parameterisation)
    stats, theta, scales, ts, t1, max_segments, max_events = prepare_inputs(
        net,
        data,
        ts,
        t1,
        None if orbit else solver.max_segments,
        max_events,
        "solve_effective",
        allow_inf=orbit,
    )
    rtol, atol = solver.tolerances(theta.dtype)
    max_steps, ode_solver = solver.max_steps, solver.ode_solver
    ok = traced_inputs_ok(net, data, ts, allow_inf=orbit)
    if orbit:
        return with_input_check(
            _solve_orbit(stats, theta, scales, ts, motion, ode_solver, rtol, atol, max_steps, max_events), ok
        )
    return with_input_check(
        _solve_diffrax(
            stats,
            theta,
            scales,
            ts,
            t1,
            motion,
            ode_solver,
            rtol,
            atol,
            max_steps,
            max_segments,
            max_events,
        ),
        ok,
    )


@eqx.filter_jit
def _solve_orbit(stats, theta, scales, ts, motion, solver, rtol, atol, max_steps, max_events):
    tools = orbit_tools(theta.dtype, rtol, atol, solver)
    flows = flow_coordinates(stats, theta, scales, ts, motion=motion, tools=tools, max_steps=max_steps)
    result = result_code(flows, theta, scales)
    failed = result != 0
    blank = lambda a: jnp.where(failed, jnp.nan, a)  # noqa: E731
    out_theta = blank(jnp.moveaxis(flows.thresholds, 0, -1))  # (T, L, M)
    out_scales = blank(jnp.moveaxis(flows.scales, 0, -1))
    *events, num_events = event_list(stats, flows, max_events)
    return solution(
        stats,
        ts,
        out_theta,
        out_scales,
        tuple(events),
        num_events,
        unsort(stats, flows.crossing_times),
        jnp.sum(jnp.isfinite(flows.switch_times)) + theta.shape[1],
        jnp.sum(flows.num_steps),
        result,
    )


@eqx.filter_jit
def _solve_diffrax(
    stats, theta, scales, ts, t1, motion, solver, rtol, atol, max_steps, max_segments, max_events
):
    controller = diffrax.PIDController(rtol=rtol, atol=atol)
    root_finder = crossing_root_finder(theta.dtype, rtol, atol)

    def vector_field(t, y, disc: Discrete):
        theta, scales = y
        theta_star = at_active(theta, disc.active)
        g = cost_gradient(stats, disc.count, disc.target_sum, theta_star)
        g = jnp.where(disc.moving != 0, g, 0.0)
        return effective_velocity(theta, scales, g, disc.active, motion)

    def event_fn(t, y, args, **kwargs):
        # Default float dtype: diffrax's untriggered branch returns a Python 0.0, which is
        # float64 under x64 even for a float32 state (lax.cond needs equal types).
        return first_event_distance(stats, y[0], args).astype(jnp.result_type(float))

    term = diffrax.ODETerm(vector_field)
    event = diffrax.Event(event_fn, root_finder=root_finder)

    def propagate(t, theta, scales, disc):
        # Two sub-saves: after an event diffrax compacts saves, so the final state must
        # not share an array with the (partly unreached) output times.
        saveat = diffrax.SaveAt(subs=[diffrax.SubSaveAt(ts=jnp.clip(ts, t, t1)), diffrax.SubSaveAt(t1=True)])
        sol = diffrax.diffeqsolve(
            term,
            solver,
            t,
            t1,
            None,
            (theta, scales),
            args=disc,
            saveat=saveat,
            stepsize_controller=controller,
            event=event,
            max_steps=max_steps,
            throw=False,
        )
        hit = sol.result == diffrax.RESULTS.event_occurred
        ok = hit | (sol.result == diffrax.RESULTS.successful)
        (theta_ts, scales_ts), (theta_end, scales_end) = sol.ys
        steps = sol.stats["num_steps"]
        return sol.ts[1][-1], theta_end[-1], scales_end[-1], theta_ts, scales_ts, hit, ok, steps

    return solve_segments(
        propagate, stats, theta, scales, ts, t1, max_segments=max_segments, max_events=max_events
    )


def solve_frozen_exact(
    net: AdaptedReLUNet,
    data: Dataset,
    *,
    ts,
    t1=None,
    max_segments: int | None = None,
    max_events: int | None = None,
) -> EffectiveSolution:
    r"""Exact solution of the bias-only effective flow (weights frozen).

    Γ is constant, so between events $\theta^*(t) = \bar v + (\theta^*(t_0) - \bar v)
    e^{-\kappa(t - t_0)}$, $\kappa = \Gamma_{\ell^*\ell^*} n/N$, every other threshold moves
    by $(\Gamma_{\ell\ell^*}/\Gamma_{\ell^*\ell^*})(\theta^*(t) - \theta^*(t_0))$, and event
    times are logarithms. Same arguments and return type as `solve_effective`.
    """
    stats, theta, scales, ts, t1, max_segments, max_events = prepare_inputs(
        net, data, ts, t1, max_segments, max_events, "solve_frozen_exact"
    )
    ok = traced_inputs_ok(net, data, ts, allow_inf=False)
    return with_input_check(_solve_exact(stats, theta, scales, ts, t1, max_segments, max_events), ok)


@eqx.filter_jit
def _solve_exact(stats, theta, scales, ts, t1, max_segments, max_events):
    n_points = stats.num_points
    depth = theta.shape[0]

    def propagate(t, theta, scales, disc):
        gamma = gamma_column(theta, scales, disc.active, "frozen")
        gamma_star = at_active(gamma, disc.active)
        theta_star = at_active(theta, disc.active)
        count = jnp.maximum(disc.count, 1)
        mean_target = disc.target_sum / count
        rate = gamma_star * disc.count / n_points
        gap = theta_star - mean_target
        moving = disc.moving != 0
        safe_gap = jnp.where(moving, gap, 1.0)
        safe_rate = jnp.where(moving, rate, 1.0)

        def time_to(level, allowed):
            """Time for θ* to reach `level` `(rows, M)`; inf where it never does."""
            q = (level - mean_target[None]) / safe_gap[None]
            valid = allowed & moving[None] & (q > 0) & (q <= 1)
            return jnp.where(valid, -jnp.log(jnp.where(valid, q, 1.0)) / safe_rate[None], jnp.inf)

        above = jnp.take_along_axis(stats.u_sorted, jnp.minimum(disc.count, n_points - 1)[None], 0)[0]
        below = jnp.take_along_axis(stats.u_sorted, jnp.maximum(disc.count - 1, 0)[None], 0)[0]
        to_trunc = time_to(above[None], ((disc.moving > 0) & (disc.count < n_points))[None])[0]
        to_release = time_to(below[None], ((disc.moving < 0) & (disc.count > 0))[None])[0]
        ratio = gamma / gamma_star[None]
        lower = jnp.arange(depth)[:, None] < disc.active[None]
        meet = theta_star[None] + (theta - theta_star[None]) / jnp.where(lower, 1 - ratio, 1.0)
        to_switch = jnp.min(time_to(meet, lower), axis=0)
        step = jnp.min(jnp.stack([to_trunc, to_release, to_switch]))
        hit = t + step <= t1
        t_end = jnp.where(hit, t + step, t1)

        def state_at(s):
            shift = gap * jnp.expm1(-safe_rate * (s - t))
            return theta + jnp.where(moving, shift, 0.0)[None] * ratio

        theta_ts = jax.vmap(state_at)(jnp.clip(ts, t, t1))
        scales_ts = jnp.broadcast_to(scales, theta_ts.shape)
        return t_end, state_at(t_end), scales, theta_ts, scales_ts, hit, jnp.array(True), jnp.array(0)

    return solve_segments(
        propagate, stats, theta, scales, ts, t1, max_segments=max_segments, max_events=max_events
    )
