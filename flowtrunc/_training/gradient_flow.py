"""The true gradient flow of the real network, `dp/dt = −∇_p C(p)` with an autodiff
right-hand side, integrated by diffrax: the `lr → 0` limit of `train`.

The right-hand side jumps on the switching surfaces (a point enters or leaves the
truncated set). An adaptive solver crosses such a surface by rejecting steps until the
local error of the crossing step is below tolerance, so the global error stays of order
`atol + rtol·|p|` at the price of extra steps per crossing. At a Filippov-stationary kink
it would chatter with shrinking steps. Unconstrained training can also *slide* along a
surface (the truncation hyperplane rotates with a point on it), where the adaptive
controller chatters likewise. For such runs pass a fixed step `dt0`: the solver then
follows the Filippov solution with an O(dt0) error near the surface (and the solver's
own order elsewhere). A run that exhausts `max_steps` reports `RESULTS.solver_failed`.
"""

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp

from .._model.cost import check_data, input_cost
from .._model.data import Dataset
from .._model.network import AdaptedReLUNet
from .._results import RESULTS
from .._validate import float_array, is_concrete
from .training import TrainingRun, check_mode, observe, rebuild, trainable_params


def gradient_flow(
    net: AdaptedReLUNet,
    data: Dataset,
    *,
    ts,
    mode: str = "adapted",
    solver: diffrax.AbstractAdaptiveSolver | None = None,
    rtol: float = 1e-8,
    atol: float = 1e-10,
    max_steps: int = 100_000,
    dt0: float | None = None,
) -> TrainingRun:
    """Integrates the true gradient flow of the real network from `net` (t = 0) and
    returns its observables at `ts` (sorted, >= 0) as a `TrainingRun`.

    `mode` as in `train`. Default solver `Tsit5` with a PID controller (`rtol`, `atol`);
    with `dt0` a constant step instead (needed where the flow slides, see above).
    """
    check_mode(mode)
    if not isinstance(net, AdaptedReLUNet):
        raise ValueError(f"`gradient_flow` starts from an AdaptedReLUNet, got {type(net).__name__}.")
    check_data(net, data)
    ts = float_array("ts", ts, ndim=1)
    if ts.shape[0] == 0:
        raise ValueError("`ts` is empty; give at least one output time.")
    if is_concrete(ts) and (bool(jnp.any(jnp.diff(ts) < 0)) or float(ts[0]) < 0):
        raise ValueError("`ts` must be sorted and start at t >= 0.")
    solver = diffrax.Tsit5() if solver is None else solver
    if not isinstance(solver, diffrax.AbstractSolver):
        raise ValueError(f"`solver` must be a diffrax solver, got {type(solver).__name__}.")
    if dt0 is None:
        if not isinstance(solver, diffrax.AbstractAdaptiveSolver):
            raise ValueError(
                f"`solver` {type(solver).__name__} has no error estimate; pass a fixed step "
                "`dt0` or an adaptive solver such as diffrax.Tsit5()."
            )
        if not (rtol > 0 and atol > 0):
            raise ValueError(f"`rtol` and `atol` must be > 0, got {rtol}, {atol}.")
        controller = diffrax.PIDController(rtol=rtol, atol=atol)
    else:
        if not dt0 > 0:
            raise ValueError(f"`dt0` must be > 0, got {dt0!r}.")
        controller = diffrax.ConstantStepSize()
        if is_concrete(ts):
            max_steps = max(max_steps, int(float(ts[-1]) / dt0) + 2)
    if not isinstance(max_steps, int) or max_steps < 1:
        raise ValueError(f"`max_steps` must be a positive int, got {max_steps!r}.")
    return _gradient_flow(net, data, ts.astype(net.biases.dtype), mode, solver, controller, dt0, max_steps)


@eqx.filter_jit
def _gradient_flow(net, data, ts, mode, solver, controller, dt0, max_steps):
    def vector_field(t, params, args):
        grads = jax.grad(lambda p: input_cost(rebuild(net, mode, p), data, method="forward"))(params)
        return jax.tree.map(jnp.negative, grads)

    sol = diffrax.diffeqsolve(
        diffrax.ODETerm(vector_field),
        solver,
        jnp.zeros((), ts.dtype),
        ts[-1],
        dt0,
        trainable_params(net, mode),
        saveat=diffrax.SaveAt(ts=ts),
        stepsize_controller=controller,
        max_steps=max_steps,
        throw=False,
    )
    history = jax.vmap(lambda p: observe(rebuild(net, mode, p), data, net.fixed_frame))(sol.ys)
    ok = sol.result == diffrax.RESULTS.successful
    return TrainingRun(
        ts=ts,
        result=jnp.where(ok, RESULTS.successful, RESULTS.solver_failed).astype(jnp.int32),
        diverged_step=jnp.array(-1, jnp.int32),
        net=rebuild(net, mode, jax.tree.map(lambda a: a[-1], sol.ys)),
        **history,
    )
