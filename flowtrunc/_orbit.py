r"""The orbit of one coordinate: its state as a function of θ*, independent of the data.

Every component of the effective field is proportional to g (THEORY §5), so between
layer switches the state $y = (\theta^{(1..L)}, D^{(1..L)})$ of a coordinate obeys

$$\frac{d\theta^{(\ell)}}{d\theta^*} = \frac{\Gamma_{\ell\ell^*}}{\Gamma_{\ell^*\ell^*}}, \qquad
\frac{dD^{(\ell)}}{d\theta^*} = \frac{D^{(\ell)}\sum_{n\le\min(\ell,\ell^*)}
(\theta^{(n-1)} - \theta^*)\,d_n^{-2}}{\Gamma_{\ell^*\ell^*}},$$

with no g and no data in it. diffrax integrates it in the path length
$s = \pm(\theta^* - \theta^*_0) \ge 0$, with an `Event` for layer switches only (a lower
layer's threshold meeting a falling θ*; at most L − 1), and keeps a dense interpolant of
every segment, merged into one piecewise polynomial in s.
"""

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp

from ._effective import effective_velocity, gamma_column, start_layer


def star_rate(theta, scales, active, train_weights: bool):
    r"""$\Gamma_{\ell^*\ell^*}$ of one coordinate, thresholds and scales `(L,)`."""
    column = gamma_column(theta[:, None], scales[:, None], active[None], train_weights)
    return column[active, 0]


def orbit_field(s, y, args, train_weights: bool):
    """dy/ds along the orbit: the effective field at g = -1, divided by Γ_{ℓ*ℓ*}."""
    theta, scales = y
    active, direction = args
    dtheta, dscales = effective_velocity(
        theta[:, None], scales[:, None], -jnp.ones(1, theta.dtype), active[None], train_weights
    )
    factor = direction / dtheta[active, 0]
    return dtheta[:, 0] * factor, dscales[:, 0] * factor


def _switch_distance(t, y, args, **kwargs):
    """θ* minus the largest lower threshold; falls to 0 when a lower layer meets θ*."""
    theta, _ = y
    active, direction = args
    lower = jnp.arange(theta.shape[0]) < active
    gap = theta[active] - jnp.max(jnp.where(lower, theta, -jnp.inf))
    return jnp.where((direction < 0) & jnp.any(lower), gap, 1.0).astype(jnp.result_type(float))


class Orbit(eqx.Module):
    """One coordinate's orbit on s ∈ [0, length]: merged solver steps (sorted `starts`,
    each step's own `ends` and dense `infos`), and the segments between layer switches."""

    starts: jax.Array
    ends: jax.Array
    infos: dict
    segment_starts: jax.Array  # (L,) s where each segment begins, inf if unused
    segment_layers: jax.Array  # (L,) active layer of each segment
    y0: tuple
    num_steps: jax.Array
    ok: jax.Array
    interpolation_cls: type = eqx.field(static=True)

    def state(self, s):
        """`(theta, scales)` `(L,)` at path length `s`."""
        index = jnp.clip(jnp.searchsorted(self.starts, s, side="right") - 1, 0)
        infos = jax.tree.map(lambda a: a[index], self.infos)
        local = self.interpolation_cls(t0=self.starts[index], t1=self.ends[index], **infos)
        out = local.evaluate(s)
        has_steps = jnp.isfinite(self.starts[0])
        return jax.tree.map(lambda a, b: jnp.where(has_steps, a, b), out, self.y0)

    def layer(self, s):
        """Active layer at `s` (at a switch: the new one)."""
        index = jnp.clip(jnp.searchsorted(self.segment_starts, s, side="right") - 1, 0)
        return self.segment_layers[index]


def solve_orbit(
    theta, scales, direction, length, *, train_weights, solver, controller, root_finder, max_steps
):
    """Integrates one coordinate's orbit from s = 0 to `length`, segment by segment."""
    depth = theta.shape[0]
    dtype = theta.dtype
    term = diffrax.ODETerm(lambda s, y, args: orbit_field(s, y, args, train_weights))
    event = diffrax.Event(_switch_distance, root_finder=root_finder)
    length = length.astype(dtype)

    def segment(carry, _):
        s0, y, active, ok = carry
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
        theta1, scales1 = (a[-1] for a in sol.ys)
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
    starts = rec["starts"].reshape(-1)
    order = jnp.argsort(starts)
    merged = jax.tree.map(lambda a: a.reshape((-1,) + a.shape[2:])[order], (rec["ends"], rec["infos"]))
    segment_starts = rec["segment_start"].at[0].set(0.0)
    return Orbit(
        starts=starts[order],
        ends=merged[0],
        infos=merged[1],
        segment_starts=segment_starts,
        segment_layers=rec["layer"],
        y0=(theta, scales),
        num_steps=jnp.sum(rec["steps"]),
        ok=ok,
        interpolation_cls=solver.interpolation_cls,
    )
