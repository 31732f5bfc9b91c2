"""Switching surfaces of the effective flow and what happens on them (docs/theory.md §5).

Per coordinate the discrete state is the truncated count `n`, the active layer and the
direction `moving` of θ* (+1 up, -1 down, 0 at rest). Every component of the field is
proportional to `g`, and θ* relaxes monotonically toward the mean truncated target, so
in a segment only three surfaces can be hit, each from a known side:

- truncation (moving up): θ* reaches the lowest untruncated point `u_(n)`;
- release (moving down): θ* reaches the highest truncated point `u_(n-1)`;
- layer switch: a lower layer's threshold reaches θ*. A higher layer can never catch up
  (its gap obeys a linear ODE, docs/theory.md), and once tied it follows θ* exactly.

After a truncation or release the new `g` either keeps its sign (the flow continues) or
flips/vanishes: then both one-sided fields are parallel and point into the surface, the
Filippov solution is stationary (a kink minimum), and the coordinate stops for good.
"""

from typing import NamedTuple

import jax.numpy as jnp
import optimistix as optx

from .._codes import Codes
from .field import at_active, start_state
from .statistics import CoordinateStats, cost_gradient, count_below, truncated_target_sum


class BracketBisection(optx.AbstractRootFinder):
    """`optx.Bisection` that stops when the bracket is below tolerance, whatever the value
    of the function there. Bisection alone also asks |f| < atol, which an event function
    evaluated on a solver's dense output may never reach: its rounding (~ the sum of the
    interpolant's weights times eps, larger for Dopri8's 16 stages) can exceed atol, and
    the root find then ends at its step cap and fails the solve. Halving the bracket
    reaches any tolerance above eps·|t| in a known number of steps."""

    bisection: optx.Bisection

    @property
    def rtol(self):
        return self.bisection.rtol

    @property
    def atol(self):
        return self.bisection.atol

    @property
    def norm(self):
        return self.bisection.norm

    def init(self, *args, **kwargs):
        return self.bisection.init(*args, **kwargs)

    def step(self, *args, **kwargs):
        return self.bisection.step(*args, **kwargs)

    def terminate(self, fn, y, args, options, state, tags):
        small = jnp.abs(state.lower - state.upper) < self.atol + self.rtol * jnp.abs(y)
        return small, optx.RESULTS.successful

    def postprocess(self, *args, **kwargs):
        return self.bisection.postprocess(*args, **kwargs)


def crossing_root_finder(dtype, rtol: float, atol: float) -> BracketBisection:
    """The root finder of every event (a crossing, a release, a layer switch): bisection,
    not Newton, since an event function is a minimum over surfaces (piecewise smooth) that
    diffrax brackets; each only decreases through zero (flip=True, no detection under
    vmap). The event time to 1e-4 of the solver's tolerances, or 10 eps."""
    root_tol = max(10 * float(jnp.finfo(dtype).eps), 1e-4 * min(rtol, atol))
    return BracketBisection(optx.Bisection(rtol=root_tol, atol=root_tol, flip=True))


class EVENT(Codes):
    """What happens on a switching surface of the effective flow."""

    truncation = 0, "θ* (moving up) reaches the lowest untruncated point, which joins the truncated set"
    release = 1, "θ* (moving down) reaches the highest truncated point, which leaves the truncated set"
    layer_switch = 2, "a lower layer's threshold reaches θ* and becomes the active layer"
    kink = 3, "g flips or vanishes on a data coordinate: θ* stops there for good (a kink minimum)"


EVENT_KINDS = EVENT.names()
_FAR = 1e30  # distance reported for a surface that cannot be hit


class Discrete(NamedTuple):
    """Discrete state per coordinate, each `(M,)`."""

    count: jnp.ndarray  # n_k, truncated points
    active: jnp.ndarray  # ℓ*_k, 0-based
    moving: jnp.ndarray  # +1, -1 or 0
    target_sum: jnp.ndarray  # sum of the targets of the truncated points


def _direction(stats, count, target_sum, level):
    g = cost_gradient(stats, count, target_sum, level)
    return -jnp.sign(g).astype(jnp.int32), g


def initial_discrete(stats: CoordinateStats, theta) -> Discrete:
    state = start_state(stats, theta)
    return Discrete(state.count, state.active, state.direction, state.target_sum)


def _lower_max(theta, active):
    """Largest threshold among layers below the active one (and its layer), `(M,)`."""
    below = jnp.arange(theta.shape[0])[:, None] < active[None]
    masked = jnp.where(below, theta, -jnp.inf)
    return jnp.max(masked, axis=0), jnp.argmax(masked, axis=0).astype(jnp.int32)


def event_distances(stats: CoordinateStats, theta, disc: Discrete):
    """Signed distances to the three surfaces, each `(M,)`; positive until the event."""
    n_points = stats.num_points
    theta_star = at_active(theta, disc.active)
    above = jnp.take_along_axis(stats.u_sorted, jnp.minimum(disc.count, n_points - 1)[None], 0)[0]
    below = jnp.take_along_axis(stats.u_sorted, jnp.maximum(disc.count - 1, 0)[None], 0)[0]
    truncation = jnp.where((disc.moving > 0) & (disc.count < n_points), above - theta_star, _FAR)
    release = jnp.where((disc.moving < 0) & (disc.count > 0), theta_star - below, _FAR)
    lower, _ = _lower_max(theta, disc.active)
    switch = jnp.where((disc.moving != 0) & (disc.active > 0), theta_star - lower, _FAR)
    return truncation, release, switch


def first_event_distance(stats, theta, disc):
    """The event function handed to the integrator: the smallest distance."""
    return jnp.min(jnp.stack(event_distances(stats, theta, disc)))


class Fired(NamedTuple):
    """Which events fired, per coordinate, with the data point involved."""

    kinds: jnp.ndarray  # (M, 4) bool, one column per `EVENT` in code order
    points: jnp.ndarray  # (M,) original index of the truncated/released point, or -1
    layers: jnp.ndarray  # (M,) active layer after the events


def apply_events(stats: CoordinateStats, theta, disc: Discrete, tolerance):
    """Fires every surface within `tolerance` (and always the nearest one), snaps the state
    exactly onto it and updates the discrete state. Returns `(theta, disc, fired)`."""
    distances = jnp.stack(event_distances(stats, theta, disc))  # (3, M)
    nearest = jnp.zeros_like(distances, dtype=bool).reshape(-1)
    nearest = nearest.at[jnp.argmin(distances)].set(True).reshape(distances.shape)
    fire = ((distances <= tolerance) | nearest) & (distances < _FAR)
    fire_trunc, fire_release, fire_switch = fire

    # Layer switch: the lower layer takes over (lowest index on ties), snapped onto θ*.
    theta_star = at_active(theta, disc.active)
    _, lower_layer = _lower_max(theta, disc.active)
    layers = jnp.arange(theta.shape[0])[:, None]
    theta = jnp.where(fire_switch[None] & (layers == lower_layer[None]), theta_star[None], theta)
    active = jnp.where(fire_switch, lower_layer, disc.active)

    # Truncation / release: snap every layer tied at θ* onto the data coordinate.
    # A point at θ* counts as truncated (gradient descent: ReLU' = 0 at 0). So a release
    # whose new g would reverse is a kink with the point still on the threshold.
    n_points = stats.num_points
    index = jnp.where(fire_trunc, disc.count, disc.count - 1).clip(0, n_points - 1)
    crossing = fire_trunc | fire_release
    level = jnp.take_along_axis(stats.u_sorted, index[None], 0)[0]
    tied = theta >= theta_star[None]
    theta = jnp.where(crossing[None] & tied, level[None], theta)
    count = jnp.where(
        fire_trunc,
        count_below(stats, level, side="right"),
        jnp.where(fire_release, count_below(stats, level, side="left"), disc.count),
    )
    new_moving, _ = _direction(stats, count, truncated_target_sum(stats, count), at_active(theta, active))
    kink = crossing & (new_moving != disc.moving)
    released = fire_release & ~kink
    count = jnp.where(fire_release & kink, disc.count, count)
    target_sum = truncated_target_sum(stats, count)
    moving = jnp.where(crossing, jnp.where(kink, 0, new_moving), disc.moving)

    point = jnp.take_along_axis(stats.order, index[None], 0)[0]
    fired = Fired(
        kinds=jnp.stack([fire_trunc, released, fire_switch, kink], axis=1),
        points=jnp.where(fire_trunc | released, point, -1).astype(jnp.int32),
        layers=active,
    )
    return theta, Discrete(count, active, moving, target_sum), fired
