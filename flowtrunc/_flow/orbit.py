r"""The orbit of one coordinate: its state as a function of θ*, independent of the data.

Every component of the effective field is proportional to g (docs/theory.md §5), so between
layer switches the state $y = (\theta^{(1..L)}, D^{(1..L)})$ of a coordinate obeys

$$\frac{d\theta^{(\ell)}}{d\theta^*} = \frac{\Gamma_{\ell\ell^*}}{\Gamma_{\ell^*\ell^*}}, \qquad
\frac{dD^{(\ell)}}{d\theta^*} = \frac{D^{(\ell)}\sum_{n\le\min(\ell,\ell^*)}
(\theta^{(n-1)} - \theta^*)\,d_n^{-2}}{\Gamma_{\ell^*\ell^*}},$$

with no g and no data in it. diffrax integrates it in the path length
$s = \pm(\theta^* - \theta^*_0) \ge 0$, with an `Event` for layer switches only (a lower
layer's threshold meeting a falling θ*; at most L − 1), and keeps a dense interpolant of
every segment, merged into one piecewise polynomial in s.

The state carries a third component, $h = 1/\Gamma_{\ell^*\ell^*}$, with
$dh/d\theta^* = -h^2\,\nabla\Gamma_{\ell^*\ell^*}\cdot dy/d\theta^*$ (one JVP), so the
solver's error control covers it and its dense output is a polynomial in s on every step:
the clock (`clock.py`) integrates those polynomials in closed form and never evaluates
the orbit again.
"""

import functools

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .field import effective_velocity, gamma_column, start_layer


def star_rate(theta, scales, active, motion: str):
    r"""$\Gamma_{\ell^*\ell^*}$ of one coordinate, thresholds and scales `(L,)`."""
    column = gamma_column(theta[:, None], scales[:, None], active[None], motion)
    return column[active, 0]


def orbit_field(s, y, args, motion: str):
    """dy/ds along the orbit: the effective field at g = -1, divided by Γ_{ℓ*ℓ*}, and the
    rate of change of h = 1/Γ_{ℓ*ℓ*} along it."""
    theta, scales, _ = y
    active, direction = args
    dtheta, dscales = effective_velocity(
        theta[:, None], scales[:, None], -jnp.ones(1, theta.dtype), active[None], motion
    )
    factor = direction / dtheta[active, 0]  # at g = -1, dθ*/dt is Γ_{ℓ*ℓ*}
    velocity = (dtheta[:, 0] * factor, dscales[:, 0] * factor)
    rate, change = jax.jvp(lambda th, sc: star_rate(th, sc, active, motion), (theta, scales), velocity)
    return (*velocity, -change / rate**2)


def _switch_distance(t, y, args, **kwargs):
    """θ* minus the largest lower threshold; falls to 0 when a lower layer meets θ*."""
    theta, _, _ = y
    active, direction = args
    lower = jnp.arange(theta.shape[0]) < active
    gap = theta[active] - jnp.max(jnp.where(lower, theta, -jnp.inf))
    return jnp.where((direction < 0) & jnp.any(lower), gap, 1.0).astype(jnp.result_type(float))


# degree of the dense output of diffrax's adaptive solvers, by interpolation class
_DEGREES = {"_Tsit5Interpolation": 4, "_Dopri5Interpolation": 4, "_Dopri8Interpolation": 7}
_HERMITE_DEGREE = 3  # ThirdOrderHermitePolynomialInterpolation.from_k (Bosh3, Heun, implicit RK, ...)
_FALLBACK_DEGREE = 7
CHUNK_STEPS = 16  # solver steps per diffrax solve of an orbit segment (one dense buffer)


def interpolant_degree(interpolation_cls) -> int:
    """Polynomial degree in s of a solver's dense output on one step."""
    name = getattr(interpolation_cls, "__name__", "") or getattr(
        getattr(interpolation_cls, "__self__", None), "__name__", ""
    )
    if "Hermite" in name:
        return _HERMITE_DEGREE
    return _DEGREES.get(name, _FALLBACK_DEGREE)


def _monomial_fit(degree: int):
    """Nodes τ in [0, 1] (Chebyshev points) and the map from values there to the monomial
    coefficients in x = 2τ − 1 ∈ [-1, 1] (well conditioned at these degrees)."""
    x = np.cos(np.pi * (np.arange(degree + 1) + 0.5) / (degree + 1))[::-1]
    return 0.5 * (x + 1.0), np.linalg.inv(np.vander(x, degree + 1, increasing=True))


@functools.cache
def _coefficient_map(interpolation_cls, treedef, shapes, dtype_name):
    """`(D + 1, K)`: the monomial coefficients in x ∈ [-1, 1] of one scalar's interpolant on
    a step, from the K numbers of that scalar's dense output on the step (y0, y1 and the
    stages, flattened in tree order). A Runge–Kutta dense output is linear in them, so the
    map is a matrix, found once by evaluating the solver's own interpolant on the unit
    vectors at the fit's nodes (and checked on a random vector). A step's interpolant
    depends on s only through (s − t0)/(t1 − t0), so it is evaluated on [0, 1]."""
    nodes, fit = _monomial_fit(interpolant_degree(interpolation_cls))
    sizes = [int(np.prod(shape)) for shape in shapes]
    size = sum(sizes)

    def at_nodes(vector):
        parts = np.split(vector, np.cumsum(sizes)[:-1])
        leaves = [jnp.asarray(part.reshape(shape), dtype_name) for part, shape in zip(parts, shapes)]
        local = interpolation_cls(
            t0=jnp.zeros((), dtype_name), t1=jnp.ones((), dtype_name), **jax.tree.unflatten(treedef, leaves)
        )
        return np.array([float(local.evaluate(jnp.asarray(tau, dtype_name))) for tau in nodes])

    with jax.ensure_compile_time_eval():
        values = np.stack([at_nodes(unit) for unit in np.eye(size)], axis=1)  # (nodes, K)
        probe = np.random.default_rng(0).uniform(-1.0, 1.0, size)
        linear = np.allclose(at_nodes(probe), values @ probe, rtol=1e-5, atol=1e-5)
    if not linear:
        raise ValueError(
            f"the dense output of {getattr(interpolation_cls, '__name__', interpolation_cls)} is not "
            "linear in its step data; use an explicit Runge–Kutta solver such as diffrax.Tsit5()."
        )
    return fit @ values


def step_coefficients(interpolation_cls, infos, component: int, dtype):
    """Component `component` of the state on every step of `infos` (dense output, leaves
    `(steps, ...)`) as monomial coefficients `(steps, D + 1, *shape)` in the step's local
    x ∈ [-1, 1]: the solver's own interpolant, exactly (a polynomial of that degree)."""
    info = {key: value[component] for key, value in infos.items()}
    leaves, treedef = jax.tree.flatten(info)
    shape = info["y0"].shape[1:]
    # each leaf as (steps, numbers, *shape), then one list of the K numbers per step
    rows = [r for leaf in leaves for r in jnp.moveaxis(leaf.reshape(leaf.shape[0], -1, *shape), 1, 0)]
    shapes = tuple(leaf.shape[1 : leaf.ndim - len(shape)] for leaf in leaves)
    matrix = _coefficient_map(interpolation_cls, treedef, shapes, jnp.dtype(dtype).name)
    # elementwise sums in a fixed order, not a matrix product: the same bits at any batch
    # size (a chunk of seeds must not change a seed's result)
    columns = [
        sum((float(w) * row for w, row in zip(matrix[j], rows) if w != 0.0), jnp.zeros_like(rows[0]))
        for j in range(matrix.shape[0])
    ]
    return jnp.stack(columns, axis=1)


def horner(coefficients, x):
    """The polynomial with monomial `coefficients` (ascending, along the first axis) at x."""
    value = jnp.zeros_like(coefficients[0] * x)
    for c in coefficients[::-1]:
        value = value * x + c
    return value


class _FirstStep(diffrax.AbstractAdaptiveStepSizeController):
    """`controller`, whose first step is `first_step`. A traced first step given to
    `diffeqsolve` as `dt0` is checked there with a host callback (`eqx.error_if`), which
    makes the whole program one that `jax.export` cannot save (`_program_cache`); given
    here, through `init`, it is not checked, and the steps are the same (t0 + first_step)."""

    controller: diffrax.AbstractAdaptiveStepSizeController
    first_step: jax.Array

    @property
    def rtol(self):
        return self.controller.rtol

    @property
    def atol(self):
        return self.controller.atol

    @property
    def norm(self):
        return self.controller.norm

    def wrap(self, direction):
        return _FirstStep(self.controller.wrap(direction), self.first_step)

    def init(self, terms, t0, t1, y0, dt0, args, func, error_order):
        return self.controller.init(terms, t0, t1, y0, self.first_step, args, func, error_order)

    def adapt_step_size(self, *args, **kwargs):
        return self.controller.adapt_step_size(*args, **kwargs)


KEEP = ("end", "clock", "states")  # what an orbit keeps of its steps (`solve_orbit`)


def _compact(records, max_steps):
    """The chunks' accepted steps, in order, in `max_steps` slots (the budget: an orbit
    that needs more is not ok); the slots after the last step start and end at inf, with
    zero polynomials. Unused slots of a chunk cost the clock nothing this way."""
    flat = jax.tree.map(lambda a: a.reshape(-1, *a.shape[2:]), records)
    valid = flat.pop("valid")
    slot = jnp.where(valid, jnp.cumsum(valid) - 1, max_steps)  # out of range: dropped

    def place(values, fill):
        # nothing but zeros off the steps (no NaN to reach a gradient through the scatter)
        values = jnp.where(valid.reshape(-1, *[1] * (values.ndim - 1)), values, fill)
        slots = jnp.full((max_steps, *values.shape[1:]), fill, values.dtype)
        return slots.at[slot].set(values, mode="drop")

    return dict(
        starts=place(flat["starts"], jnp.inf),
        ends=place(flat["ends"], jnp.inf),
        polynomials=place(flat["polynomials"], 0.0),
        states=None if "states" not in flat else tuple(place(a, 0.0) for a in flat["states"]),
    )


class Orbit(eqx.Module):
    """One coordinate's orbit on s ∈ [0, length]: its solver steps in s order, one slot each
    of `max_steps` (`starts`, `ends`, the `polynomials` of h on each and, where kept,
    `states`, the polynomials of the thresholds and scales; the slots after the last step
    start at inf), the segments between layer switches, and the state at `length`. Fields
    of what was not kept are None."""

    starts: jax.Array | None  # (P,) step starts, ascending (unused: inf)
    ends: jax.Array | None  # (P,)
    polynomials: jax.Array | None  # (P, D + 1) monomials of h in each step's x ∈ [-1, 1]
    states: tuple | None  # (theta, scales), each (P, D + 1, L): monomials of the state
    segment_starts: jax.Array  # (L,) s where each segment begins, inf if unused
    segment_layers: jax.Array  # (L,) active layer of each segment (unused: the last one)
    y0: tuple
    end: tuple  # (theta, scales) (L,) at s = length: the last solver step's state
    num_steps: jax.Array
    ok: jax.Array

    def step(self, s):
        """The slot of the last step that starts at or before path length `s`."""
        return jnp.clip(jnp.searchsorted(self.starts, s, side="right") - 1, 0)

    def state(self, s):
        """`(theta, scales)` `(L,)` at path length `s` (needs `keep="states"`)."""
        index = self.step(s)
        width = self.ends[index] - self.starts[index]
        on_step = width > 0  # False only off every step: an orbit of length 0
        start = jnp.where(on_step, self.starts[index], s)
        x = 2.0 * (s - start) / jnp.where(on_step, width, 1.0) - 1.0
        out = tuple(horner(coefficients[index], x) for coefficients in self.states)
        return jax.tree.map(lambda a, b: jnp.where(on_step, a, b), out, self.y0)

    def layer(self, s):
        """Active layer at `s` (at a switch: the new one)."""
        index = jnp.clip(jnp.searchsorted(self.segment_starts, s, side="right") - 1, 0)
        return self.segment_layers[index]


def solve_orbit(
    theta, scales, direction, length, *, motion, solver, controller, root_finder, max_steps, keep="states"
):
    """Integrates one coordinate's orbit from s = 0 to `length` in at most `max_steps`
    solver steps (all segments together). `keep`: what is kept of the steps, "end" (none:
    the segments and the end state, all the end without times needs), "clock" (each step's
    polynomial of h, all the clock needs) or "states" (also the thresholds' and scales'
    polynomials, for the state at output times). The solve is the same, so is its end.

    One loop of diffrax solves of at most `CHUNK_STEPS` steps each: a solve continues the
    last (state, step size, controller and solver state) or, after a layer switch, starts
    the next segment. Under `vmap` the batch then steps through its segments together (it
    runs max(total steps), not the sum over segments of the slowest orbit's steps). Each
    chunk's steps become polynomials at once (the dense output's stages are not kept)."""
    if keep not in KEEP:
        raise ValueError(f"`keep` must be one of {KEEP}, got {keep!r}.")
    depth = theta.shape[0]
    dtype = theta.dtype
    term = diffrax.ODETerm(lambda s, y, args: orbit_field(s, y, args, motion))
    event = diffrax.Event(_switch_distance, root_finder=root_finder)
    length = length.astype(dtype)
    direction = direction.astype(dtype)
    chunk = min(CHUNK_STEPS, max_steps)
    num_chunks = -(-max_steps // chunk) + depth  # each segment's last chunk may be partial
    # Dense output always: under `vmap`, diffrax's event root find runs for the whole batch
    # once any orbit has an event, and then reports for an orbit stopped by its step budget
    # the end of its last *attempted* step, rejected or not (diffrax 0.7.2); the last
    # accepted step's `y1` in the dense buffer is the restart point instead.
    saveat = diffrax.SaveAt(t1=True, dense=True, solver_state=True, controller_state=True)

    def begin(s, theta_s, scales_s, active):
        """The solver's start of a segment at `s` with `active` the layer of θ*."""
        y = (theta_s, scales_s, 1.0 / star_rate(theta_s, scales_s, active, motion))
        args = (active, direction)
        s_next, controller_state = controller.init(
            term, s, length, y, None, args, solver.func, solver.error_order(term)
        )
        s_next = jnp.minimum(s_next, length)
        return dict(
            y=y,
            dt=s_next - s,
            controller_state=controller_state,
            solver_state=solver.init(term, s, s_next, y, args),
        )

    def piece(state, _):
        live = ~state["done"]
        active = state["active"]
        sol = diffrax.diffeqsolve(
            term,
            solver,
            state["s"],
            jnp.where(live, length, state["s"]),
            None,  # the first step travels in the controller (_FirstStep)
            state["y"],
            args=(active, direction),
            saveat=saveat,
            stepsize_controller=_FirstStep(controller, jnp.where(live, state["dt"], 0.0)),
            event=event,
            max_steps=chunk,
            throw=False,
            solver_state=state["solver_state"],
            controller_state=state["controller_state"],
            made_jump=False,
        )
        hit = sol.result == diffrax.RESULTS.event_occurred
        more = sol.result == diffrax.RESULTS.max_steps_reached
        failed = ~(hit | more | (sol.result == diffrax.RESULTS.successful))
        interp = sol.interpolation
        accepted = interp.ts_size - 1
        last = jnp.clip(accepted - 1, 0)
        restart = more & (accepted > 0)
        s1 = jnp.where(restart, interp.ts[last + 1], jnp.where(more, state["s"], sol.ts[-1]))
        theta1, scales1, h1 = (
            jnp.where(restart, step_end[last], jnp.where(more, start, at_end[-1]))
            for at_end, step_end, start in zip(sol.ys, interp.infos["y1"], state["y"])
        )
        lower = jnp.arange(depth) < active
        new_active = jnp.argmax(jnp.where(lower, theta1, -jnp.inf)).astype(jnp.int32)
        # the layer that met θ* takes over, snapped exactly onto it (the tie then persists)
        theta1 = jnp.where(hit & (jnp.arange(depth) == new_active), theta1[active], theta1)
        active1 = jnp.where(hit, new_active, active)
        following = hit & (s1 < length)
        fresh = begin(s1, theta1, scales1, active1)
        # a continued solve restarts at the chunk's mean accepted step (the same rule with or
        # without dense output, so both take the same steps); the controller adapts it
        going = dict(
            y=(theta1, scales1, h1),
            dt=jnp.where(more, (s1 - state["s"]) / jnp.maximum(accepted, 1), state["dt"]),
            controller_state=sol.controller_state,
            solver_state=sol.solver_state,
        )
        segment = state["segment"] + following
        new = dict(
            s=s1,
            **jax.tree.map(lambda a, b: jnp.where(following, a, b), fresh, going),
            active=active1,
            segment=segment,
            segment_starts=jnp.where(
                following, state["segment_starts"].at[segment].set(s1), state["segment_starts"]
            ),
            segment_layers=jnp.where(
                following & (jnp.arange(depth) >= segment), active1, state["segment_layers"]
            ),
            done=failed | ~(more | following),
            failed=failed,
            steps=state["steps"] + sol.stats["num_steps"],
        )
        record = {}
        if keep != "end":
            valid = live & (jnp.arange(chunk) < accepted)
            record = dict(
                valid=valid,
                starts=interp.ts[:-1],
                ends=interp.ts[1:],
                polynomials=step_coefficients(solver.interpolation_cls, interp.infos, 2, dtype),
            )
            if keep == "states":
                record["states"] = tuple(
                    step_coefficients(solver.interpolation_cls, interp.infos, c, dtype) for c in (0, 1)
                )
        return jax.tree.map(lambda a, b: jnp.where(live, a, b), new, state), record

    active0 = start_layer(theta[:, None], direction[None])[0]
    zero = jnp.zeros((), dtype)
    start = dict(
        s=zero,
        **begin(zero, theta, scales, active0),
        active=active0,
        segment=jnp.zeros((), jnp.int32),
        segment_starts=jnp.full(depth, jnp.inf, dtype).at[0].set(0.0),
        segment_layers=jnp.full(depth, active0, jnp.int32),
        done=length <= 0,
        failed=jnp.array(False),
        steps=jnp.zeros((), jnp.int32),
    )
    final, rec = jax.lax.scan(piece, start, None, length=num_chunks)
    steps = dict(starts=None, ends=None, polynomials=None, states=None)
    if keep != "end":
        steps.update(_compact(rec, max_steps))
    return Orbit(
        **steps,
        segment_starts=final["segment_starts"],
        segment_layers=final["segment_layers"],
        y0=(theta, scales),
        end=(final["y"][0], final["y"][1]),
        num_steps=final["steps"],
        ok=final["done"] & ~final["failed"] & (final["steps"] <= max_steps),
    )
