"""Per-coordinate truncation statistics from frame coordinates sorted once per dataset.

With `u = R x` sorted per coordinate and prefix sums of the targets `v = R ȳ` in the same
order, the truncated count `n_k` is one binary search and the sum of truncated targets is
one gather: O(M log N) per evaluation instead of O(N M).
"""

import equinox as eqx
import jax
import jax.numpy as jnp

from .._custom_types import Array, Float, Int
from .._linalg import matmul
from .._model.data import Dataset


class CoordinateStats(eqx.Module):
    """Frame coordinates of a dataset, sorted per coordinate, with target prefix sums."""

    u_sorted: Float[Array, "points width"]
    v_sorted: Float[Array, "points width"]
    order: Int[Array, "points width"]
    target_sums: Float[Array, "points_plus_one width"]

    @property
    def num_points(self) -> int:
        return self.u_sorted.shape[0]


def coordinate_stats(frame: Float[Array, "width width"], data: Dataset) -> CoordinateStats:
    u = matmul(data.x, frame.T)
    v = matmul(data.point_targets(), frame.T)
    order = jnp.argsort(u, axis=0)
    u_sorted = jnp.take_along_axis(u, order, axis=0)
    v_sorted = jnp.take_along_axis(v, order, axis=0)
    zero = jnp.zeros((1, u.shape[1]), v.dtype)
    return CoordinateStats(u_sorted, v_sorted, order, jnp.concatenate([zero, jnp.cumsum(v_sorted, 0)]))


def count_below(stats: CoordinateStats, level: Float[Array, " width"], side: str = "left"):
    """`#{j : u_jk < level_k}` (side="left") or `<=` (side="right"), shape `(M,)`."""
    search = jax.vmap(lambda col, x: jnp.searchsorted(col, x, side=side), in_axes=(1, 0))
    return search(stats.u_sorted, level).astype(jnp.int32)


def truncated_target_sum(stats: CoordinateStats, count: Int[Array, " width"]):
    """Sum of the targets of the `count_k` lowest points of each coordinate, `(M,)`."""
    return jnp.take_along_axis(stats.target_sums, count[None], axis=0)[0]


def cost_gradient(stats: CoordinateStats, count, target_sum, theta_star):
    r"""$g_k = \partial C/\partial\theta^*_k = (n_k\theta^*_k - \sum_{j\in T_k} v_{jk})/N$."""
    return (count * theta_star - target_sum) / stats.num_points


def frame_cost(stats: CoordinateStats, theta_star: Float[Array, " width"]):
    r"""$C = \frac{1}{2N}\sum_{j,k}(\max(u_{jk}, \theta^*_k) - v_{jk})^2$ (a scalar)."""
    residual = jnp.maximum(stats.u_sorted, theta_star[None]) - stats.v_sorted
    return 0.5 * jnp.sum(residual**2) / stats.num_points
