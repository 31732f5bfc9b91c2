"""Prefix sums of the usual cost's coordinate problems (docs/theory.md §9).

Per frame coordinate the data are sorted once by `u = R x`; with the output targets in the
output frame, `w = Qᵀ y`, every sum the field needs over the truncated points (the lowest
`n`) or the others is one gather from the prefix sums of `u`, `u²`, `w`, `u w` and `w²`.
A group of equal coordinates may be truncated in part (a fraction of it, while θ* slides
on it): its sums are the linear interpolation between the prefix sums at the group's ends.
"""

from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp

from ..._linalg import matmul
from ..._model.data import Dataset


class UsualStats(eqx.Module):
    """Frame coordinates sorted per coordinate, `(N, M)`, with the prefix sums `(N+1, M)`
    of `u`, `u²`, `w`, `u w`, `w²` in the same order (`sums` stacks them, `(5, N+1, M)`)."""

    u_sorted: jax.Array
    w_sorted: jax.Array
    order: jax.Array
    sums: jax.Array

    @property
    def num_points(self) -> int:
        return self.u_sorted.shape[0]


def usual_stats(frame, output_frame, data: Dataset) -> UsualStats:
    u = matmul(data.x, frame.T)
    w = matmul(data.point_targets(), output_frame)
    order = jnp.argsort(u, axis=0)
    u, w = (jnp.take_along_axis(a, order, axis=0) for a in (u, w))
    zero = jnp.zeros((5, 1, u.shape[1]), u.dtype)
    sums = jnp.concatenate([zero, jnp.cumsum(jnp.stack([u, u * u, w, u * w, w * w]), axis=1)], axis=1)
    return UsualStats(u, w, order, sums)


class Column(NamedTuple):
    """One coordinate's sorted data (`u`, `w` `(N,)`), the points' original indices `order`
    and the prefix sums `sums` `(5, N+1)`."""

    u: jax.Array
    w: jax.Array
    order: jax.Array
    sums: jax.Array


def columns(stats: UsualStats) -> Column:
    """The coordinates as a batch of `Column`s along axis 0 (for `vmap`)."""
    return Column(stats.u_sorted.T, stats.w_sorted.T, stats.order.T, jnp.moveaxis(stats.sums, 2, 0))


class Sums(NamedTuple):
    """Sums over the data of one coordinate: the count `n` of truncated points (fractional
    while θ* slides on a data coordinate) and, over the truncated points, `w`; over the
    others, `u`, `u²`, `w`, `u w`; over all, `w`, `w²`."""

    n: jax.Array
    trunc_w: jax.Array
    free_u: jax.Array
    free_uu: jax.Array
    free_w: jax.Array
    free_uw: jax.Array
    all_w: jax.Array
    all_ww: jax.Array


def sums_at(column: Column, low, high, fraction) -> Sums:
    """The sums with the points below index `low` truncated, those from `high` on not, and
    `fraction` of the group `low..high-1` truncated (0 or 1 off a slide)."""
    total = column.sums[:, -1]
    lower, upper = column.sums[:, low], column.sums[:, high]
    below = lower + fraction * (upper - lower)
    n = low + fraction * (high - low)
    return Sums(
        n=jnp.asarray(n, total.dtype),
        trunc_w=below[2],
        free_u=total[0] - below[0],
        free_uu=total[1] - below[1],
        free_w=total[2] - below[2],
        free_uw=total[3] - below[3],
        all_w=total[2],
        all_ww=total[4],
    )


def group_bounds(column: Column, level):
    """`(low, high)`: the indices of the points below `level` and at or below it."""
    low = jnp.searchsorted(column.u, level, side="left").astype(jnp.int32)
    high = jnp.searchsorted(column.u, level, side="right").astype(jnp.int32)
    return low, high


def coordinate_cost(column: Column, theta_star, slope, shift):
    r"""$C_k = \frac{1}{2N}\sum_j (a\max(u_j, \theta^*) + c - w_j)^2$ of one coordinate,
    directly from its points (O(N); the outputs' cost, not the field)."""
    residual = slope * jnp.maximum(column.u, theta_star) + shift - column.w
    return 0.5 * jnp.mean(residual**2)


def shifted(sums: Sums, theta_star):
    """`(Σ m, Σ m², Σ m w)` with `m = max(u, θ*)`."""
    n = sums.n
    return (
        n * theta_star + sums.free_u,
        n * theta_star**2 + sums.free_uu,
        theta_star * sums.trunc_w + sums.free_uw,
    )
