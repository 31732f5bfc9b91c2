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
the clock (`_clock.py`) integrates those polynomials in closed form and never evaluates
the orbit again.
"""

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


def step_polynomials(interpolation_cls, infos, dtype):
    """h on every solver step as monomial coefficients `(steps, degree + 1)` in the step's
    local x ∈ [-1, 1]: the dense output of h, exactly (it is a polynomial of that degree).
    A step's interpolant depends on s only through (s − t0)/(t1 − t0), so it is evaluated
    on [0, 1]."""
    nodes, fit = _monomial_fit(interpolant_degree(interpolation_cls))
    h_infos = {key: value[2] for key, value in infos.items()}

    def on_step(info):
        local = interpolation_cls(t0=jnp.zeros((), dtype), t1=jnp.ones((), dtype), **info)
        return jax.vmap(local.evaluate)(jnp.asarray(nodes, dtype))

    values = jax.vmap(on_step)(h_infos)
    # elementwise sums in a fixed order, not a matrix product: the same bits at any batch
    # size (a chunk of seeds must not change a seed's result)
    return jnp.stack(
        [sum(float(fit[j, i]) * values[:, i] for i in range(fit.shape[1])) for j in range(fit.shape[0])],
        axis=-1,
    )


class Orbit(eqx.Module):
    """One coordinate's orbit on s ∈ [0, length]: the solver steps of every segment
    between layer switches (`step_starts`, `step_ends` and dense `infos`, `(L, S, ...)`,
    unused slots at inf), the same steps merged in s with the `polynomials` of h on each
    (for the clock), and the segments themselves."""

    starts: jax.Array  # (L·S,) merged step starts, ascending, inf for unused slots
    ends: jax.Array  # (L·S,)
    polynomials: jax.Array  # (L·S, degree + 1) monomials of h in each step's x ∈ [-1, 1]
    step_starts: jax.Array  # (L, S) per segment
    step_ends: jax.Array  # (L, S)
    infos: dict  # dense output per segment and step, leaves (L, S, ...)
    segment_starts: jax.Array  # (L,) s where each segment begins, inf if unused
    segment_layers: jax.Array  # (L,) active layer of each segment
    y0: tuple
    num_steps: jax.Array
    ok: jax.Array
    interpolation_cls: type = eqx.field(static=True)

    def state(self, s):
        """`(theta, scales)` `(L,)` at path length `s`."""
        segment = jnp.clip(jnp.searchsorted(self.segment_starts, s, side="right") - 1, 0)
        starts = self.step_starts[segment]
        index = jnp.clip(jnp.searchsorted(starts, s, side="right") - 1, 0)
        infos = jax.tree.map(lambda a: a[segment, index], self.infos)
        local = self.interpolation_cls(t0=starts[index], t1=self.step_ends[segment, index], **infos)
        out = local.evaluate(s)[:2]
        has_steps = jnp.isfinite(self.step_starts[0, 0])
        return jax.tree.map(lambda a, b: jnp.where(has_steps, a, b), out, self.y0)

    def layer(self, s):
        """Active layer at `s` (at a switch: the new one)."""
        index = jnp.clip(jnp.searchsorted(self.segment_starts, s, side="right") - 1, 0)
        return self.segment_layers[index]


def solve_orbit(theta, scales, direction, length, *, motion, solver, controller, root_finder, max_steps):
    """Integrates one coordinate's orbit from s = 0 to `length`, segment by segment."""
    depth = theta.shape[0]
    dtype = theta.dtype
    term = diffrax.ODETerm(lambda s, y, args: orbit_field(s, y, args, motion))
    event = diffrax.Event(_switch_distance, root_finder=root_finder)
    length = length.astype(dtype)

    def segment(carry, _):
        s0, (theta0, scales0), active, ok = carry
        y = (theta0, scales0, 1.0 / star_rate(theta0, scales0, active, motion))
        sol = diffrax.diffeqsolve(
            term,
            solver,
            s0,
            length,
            None,
            y,
            args=(active, direction.astype(dtype)),
            saveat=diffrax.SaveAt(t1=True, dense=True),
            stepsize_controller=controller,
            event=event,
            max_steps=max_steps,
            throw=False,
        )
        hit = sol.result == diffrax.RESULTS.event_occurred
        ok = ok & (hit | (sol.result == diffrax.RESULTS.successful))
        s1 = jnp.where(hit, sol.ts[-1], length)
        theta1, scales1, _ = (a[-1] for a in sol.ys)
        lower = jnp.arange(depth) < active
        new_active = jnp.argmax(jnp.where(lower, theta1, -jnp.inf)).astype(jnp.int32)
        # the layer that met θ* takes over, snapped exactly onto it (the tie then persists)
        theta1 = jnp.where(hit & (jnp.arange(depth) == new_active), theta1[active], theta1)
        active1 = jnp.where(hit, new_active, active)
        interp = sol.interpolation
        steps = jnp.arange(max_steps)
        valid = steps < interp.ts_size - 1
        record = dict(
            starts=jnp.where(valid, interp.ts[:-1], jnp.inf),
            ends=interp.ts[1:],
            infos=interp.infos,
            segment_start=jnp.where(s0 < length, s0, jnp.inf),
            layer=active,
            steps=sol.stats["num_steps"],
        )
        return (s1, (theta1, scales1), active1, ok), record

    active0 = start_layer(theta[:, None], direction[None])[0]
    zero = jnp.zeros((), dtype)
    carry = (zero, (theta, scales), active0, jnp.array(True))
    (_, _, _, ok), rec = jax.lax.scan(segment, carry, None, length=depth)
    # the clock needs only step boundaries and h's polynomials in s order (no dense infos moved)
    polynomials = jax.vmap(lambda infos: step_polynomials(solver.interpolation_cls, infos, dtype))(
        rec["infos"]
    )
    starts = rec["starts"].reshape(-1)
    order = jnp.argsort(starts)
    return Orbit(
        starts=starts[order],
        ends=rec["ends"].reshape(-1)[order],
        polynomials=polynomials.reshape(-1, polynomials.shape[-1])[order],
        step_starts=rec["starts"],
        step_ends=rec["ends"],
        infos=rec["infos"],
        segment_starts=rec["segment_start"].at[0].set(0.0),
        segment_layers=rec["layer"],
        y0=(theta, scales),
        num_steps=jnp.sum(rec["steps"]),
        ok=ok,
        interpolation_cls=solver.interpolation_cls,
    )
