"""`solve_usual_cost`: the usual cost's effective flow after an adapted output layer,
batched over coordinates (docs/theory.md §9)."""

import equinox as eqx
import jax
import jax.numpy as jnp

from ..._linalg import matmul
from ..._model.cost import check_data
from ..._model.data import Dataset
from ..._model.input_space import thresholds
from ..._model.network import AdaptedReLUNet
from ..._model.output_layer import AdaptedOutputLayer, check_adapted_output
from ..._model.parameterisation import weight_motion
from ..._validate import check_positive_int, orthogonality_tolerance, traced_inputs_ok, with_input_check
from ..field import check_adapted
from ..solve import check_times
from ..solvers import EventLoop, OrbitClock, check_solver
from .event_loop import sampled_cost, solve_coordinate
from .field import State
from .statistics import columns, usual_stats


class UsualCostSolution(eqx.Module):
    """The usual cost's effective flow sampled at `ts`, with its events.

    Arrays: `ts` `(T,)`; `thresholds` and cumulative `scales` `(T, L, M)`; the output
    layer's `output_scales` `d_o` and `output_biases` `b_o` `(T, M)` (its frame `Q` is
    fixed); `cost` `(T,)`, the usual cost; `n_truncated` (points at or below θ*) and
    `active_layer` `(T, M)`. Events per coordinate, in time order and padded to
    `max_events` (times `inf`, other fields -1): `event_times`, `event_kinds`
    (`USUAL_EVENT_KINDS`), `event_points` (data index, or -1) and `event_layers` (active
    layer after the event), each `(M, E)`; `num_events` `(M,)`. `num_segments`,
    `num_steps`: integration segments and ODE steps, in total. `result` is a `RESULTS`
    code; values after a failure are NaN.
    """

    ts: jax.Array
    thresholds: jax.Array
    scales: jax.Array
    output_scales: jax.Array
    output_biases: jax.Array
    cost: jax.Array
    n_truncated: jax.Array
    active_layer: jax.Array
    event_times: jax.Array
    event_kinds: jax.Array
    event_points: jax.Array
    event_layers: jax.Array
    num_events: jax.Array
    num_segments: jax.Array
    num_steps: jax.Array
    result: jax.Array


def solve_usual_cost(
    net: AdaptedReLUNet,
    output_layer: AdaptedOutputLayer,
    data: Dataset,
    *,
    ts,
    t1=None,
    train_weights: bool = True,
    parameterisation: str = "direct",
    solver: EventLoop | None = None,
    max_events: int | None = None,
) -> UsualCostSolution:
    r"""Solves the effective gradient flow of the usual cost
    $\frac{1}{2N}\sum_j |A(x_j^{(L)}) - y_j|^2$ after an adapted output layer
    $A(z) = Q D_o z + b_o$ (docs/theory.md §9): gradient flow on the hidden layers' $(d_\ell,
    b_\ell)$ and on $(d_o, b_o)$, with $R$ and $Q$ fixed. The dataset's targets are read as
    output-space targets $y_q$ (as `train(..., cost="output")` reads them).

    The cost splits into one problem per frame coordinate; each runs an event loop (one
    diffrax solve per segment, restarted where θ* crosses a data coordinate, a layer's
    threshold crosses θ*, or a sliding motion starts or ends).

    **Arguments:**

    - `net`: an `AdaptedReLUNet`, the state at t = 0.
    - `output_layer`: an `AdaptedOutputLayer` of the net's width.
    - `data`: a `Dataset` of matching dimension; its targets are output targets.
    - `ts`: sorted finite output times `>= 0`; `t1`: final time (default `ts[-1]`).
    - `train_weights`: gradient flow on the weights too (True) or on the biases only
      (`d_ℓ` and `d_o` frozen).
    - `parameterisation`: gradient flow on the diagonal entries `d_ℓ`, `d_o` (`"direct"`)
      or on their logarithms (`"log"`).
    - `solver`: `ft.EventLoop(...)` (default `ft.EventLoop()`), its diffrax solver,
      tolerances and caps; `max_segments` counts per coordinate (default `4 (N + L) + 8`).
    - `max_events`: length of each coordinate's event list (default `max_segments`).

    **Returns:** a `UsualCostSolution`, `vmap`-able over seeds (per-seed `result`).
    Differentiable (reverse mode) with respect to the net, the output layer and the data.
    """
    check_adapted(net, "solve_usual_cost")
    check_data(net, data)
    check_adapted_output(output_layer, net.width)
    motion = weight_motion(train_weights, parameterisation)
    solver = EventLoop() if solver is None else solver
    if isinstance(solver, OrbitClock):
        raise ValueError(
            "`solve_usual_cost` takes solver=ft.EventLoop(...): the orbit-clock construction needs every "
            "component of the field proportional to one scalar, and the usual cost's regression term is "
            "not (docs/theory.md §9)."
        )
    check_solver(solver, (EventLoop,))
    ts, t1 = check_times(ts, t1)
    bound = 4 * (data.num_points + net.depth) + 8
    max_segments = bound if solver.max_segments is None else solver.max_segments
    max_events = max_segments if max_events is None else max_events
    check_positive_int("max_segments", max_segments)
    check_positive_int("max_events", max_events)
    theta, scales = thresholds(net)
    dtype = jnp.result_type(theta, output_layer.scales, data.x, ts)
    rtol, atol = solver.tolerances(dtype)
    ok = traced_inputs_ok(net, data, ts, allow_inf=False) & _traced_layer_ok(output_layer)
    run = _solve(
        net.fixed_frame.astype(dtype),
        output_layer.fixed_frame.astype(dtype),
        data,
        State(theta.T, scales.T, output_layer.scales, output_layer.offsets),
        ts.astype(dtype),
        jnp.asarray(t1, dtype),
        motion,
        solver.ode_solver,
        rtol,
        atol,
        solver.max_steps,
        max_segments,
        max_events,
    )
    return with_input_check(run, ok)


def _traced_layer_ok(layer: AdaptedOutputLayer):
    width = layer.frame.shape[0]
    gram = matmul(layer.frame.T, layer.frame)
    tol = orthogonality_tolerance(layer.frame.dtype, width)
    ok = jnp.all(jnp.abs(gram - jnp.eye(width, dtype=layer.frame.dtype)) <= tol)
    return (
        ok
        & jnp.all(layer.scales > 0)
        & jnp.all(jnp.isfinite(layer.scales))
        & jnp.all(jnp.isfinite(layer.bias))
    )


@eqx.filter_jit
def _solve(
    frame, output_frame, data, state, ts, t1, motion, solver, rtol, atol, max_steps, max_segments, max_events
):
    stats = usual_stats(frame, output_frame, data)
    cols = columns(stats)
    state = jax.tree.map(lambda a: a.astype(ts.dtype), state)

    def one(column, coordinate_state):
        return solve_coordinate(
            column,
            coordinate_state,
            ts,
            t1,
            motion=motion,
            solver=solver,
            rtol=rtol,
            atol=atol,
            max_steps=max_steps,
            max_segments=max_segments,
            max_events=max_events,
        )

    runs = jax.vmap(one)(cols, state)  # leading axis: coordinates
    costs = jax.vmap(sampled_cost)(cols, runs.thresholds, runs.scales, runs.output_scale, runs.output_offset)
    theta = jnp.moveaxis(runs.thresholds, 0, -1)  # (T, L, M)
    theta_star = jnp.max(theta, axis=1)
    counts = jax.vmap(
        lambda col, level: jnp.searchsorted(col, level, side="right"), in_axes=(1, 1), out_axes=1
    )(stats.u_sorted, theta_star)
    failed = runs.result != 0
    result = jnp.where(jnp.any(failed), runs.result[jnp.argmax(failed)], 0).astype(jnp.int32)
    offsets = runs.output_offset.T  # (T, M)
    return UsualCostSolution(
        ts=ts,
        thresholds=theta,
        scales=jnp.moveaxis(runs.scales, 0, -1),
        output_scales=runs.output_scale.T,
        output_biases=matmul(offsets, output_frame.T),
        cost=jnp.sum(costs, axis=0),
        n_truncated=counts.astype(jnp.int32),
        active_layer=jnp.argmax(theta, axis=1).astype(jnp.int32),
        event_times=runs.event_times,
        event_kinds=runs.event_kinds,
        event_points=runs.event_points,
        event_layers=runs.event_layers,
        num_events=runs.num_events,
        num_segments=jnp.sum(runs.num_segments),
        num_steps=jnp.sum(runs.num_steps),
        result=result,
    )
