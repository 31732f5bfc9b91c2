r"""Where one coordinate of the effective flow goes, from the sorted data alone (docs/theory.md §7).

θ* is monotone for all time (docs/theory.md §5), and between consecutive data coordinates
$g = (n/N)(\theta^* - \bar v_n)$ is affine with a fixed count n, so θ* relaxes toward the
mean truncated target $\bar v_n$. One scan over the sorted coordinates with prefix sums of
the targets therefore says where the coordinate ends, with no time integration:

- *asymptote*: the interval holding θ* also holds $\bar v_n$; θ* tends to it as t → ∞;
- *kink*: g changes sign across a data coordinate; θ* stops on it in finite time;
- *still*: g = 0 at t = 0 (no truncated point, or θ* already at $\bar v_n$).

A kink can also hold from t = 0: a point exactly at a falling θ* whose release would
reverse g.

Counting follows gradient descent: a point exactly at θ* counts as truncated (ReLU's
derivative is 0 at 0, so the real network moves it with θ*).
"""

from typing import NamedTuple

import jax.numpy as jnp

from .._codes import Codes


class END(Codes):
    """How one coordinate of the effective flow ends."""

    asymptote = 0, "θ* tends to the mean truncated target as t → ∞"
    kink = 1, "θ* stops on a data coordinate in finite time (g changes sign across it)"
    still = 2, "θ* does not move (g = 0 at t = 0)"


END_KINDS = END.names()


class CoordinateEnd(NamedTuple):
    """How one coordinate moves and where it ends (scalars)."""

    direction: jnp.ndarray  # +1 (θ* rises), -1 (falls), 0 (stays)
    level: jnp.ndarray  # θ* as t → ∞
    kind: jnp.ndarray  # an `END` code


def direction_at(u_sorted, target_sums, level):
    """`(direction, pushed)` of θ* at `level` in one coordinate, counting as gradient
    descent does.

    Rising needs g < 0 with the points at `level` counted as truncated; falling needs
    g > 0 both with and without them. `pushed` (g != 0) with direction 0 is a kink.
    """

    def gradient(count):
        return count * level - target_sums[count]

    at_or_below = gradient(jnp.searchsorted(u_sorted, level, side="right"))
    below = gradient(jnp.searchsorted(u_sorted, level, side="left"))
    rising = at_or_below < 0
    falling = (at_or_below > 0) & (below > 0)
    direction = jnp.where(rising, 1, jnp.where(falling, -1, 0)).astype(jnp.int32)
    return direction, at_or_below != 0


def coordinate_end(u_sorted, target_sums, level) -> CoordinateEnd:
    """The end of one coordinate's flow from θ* = `level`; O(N) with the sorted data.

    `u_sorted` `(N,)` ascending, `target_sums` `(N+1,)` prefix sums of the targets in
    the same order.
    """
    num = u_sorted.shape[0]
    direction, pushed = direction_at(u_sorted, target_sums, level)
    counts = jnp.arange(num + 1)
    inf = jnp.asarray(jnp.inf, u_sorted.dtype)
    upper = jnp.concatenate([u_sorted, inf[None]])  # u_(p): first point above interval p
    lower = jnp.concatenate([-inf[None], u_sorted])  # u_(p-1): last point in it
    means = target_sums / jnp.maximum(counts, 1)
    nonempty = lower < upper

    # Rising from count n0 = #{u <= level}: interval p = [u_(p-1), u_(p)) is left at its
    # top unless its mean target lies at or below that top.
    n_rise = jnp.searchsorted(u_sorted, level, side="right")
    stop_rise = (counts >= n_rise) & ((counts == n_rise) | nonempty) & (means <= upper)
    p_rise = jnp.argmax(stop_rise)
    start_rise = jnp.where(p_rise == n_rise, level, lower[p_rise])
    asym_rise = means[p_rise] > start_rise

    # Falling from count n0 = #{u < level}: interval p = (u_(p-1), u_(p)] is left at its
    # bottom unless its mean lies at or above it; with no truncated point g = 0.
    n_fall = jnp.searchsorted(u_sorted, level, side="left")
    stop_fall = (counts <= n_fall) & ((counts == n_fall) | nonempty) & ((counts == 0) | (means >= lower))
    p_fall = jnp.max(jnp.where(stop_fall, counts, -1))
    start_fall = jnp.where(p_fall == n_fall, level, upper[jnp.minimum(p_fall, num)])
    asym_fall = (p_fall > 0) & (means[p_fall] < start_fall)

    rising, falling = direction > 0, direction < 0
    asymptote = jnp.where(rising, asym_rise, falling & asym_fall)
    start = jnp.where(rising, start_rise, jnp.where(falling, start_fall, level))
    mean = jnp.where(rising, means[p_rise], means[p_fall])
    end_level = jnp.where(asymptote, mean, start)
    kind = jnp.where(asymptote, END.asymptote, jnp.where((direction == 0) & ~pushed, END.still, END.kink))
    return CoordinateEnd(direction, end_level.astype(u_sorted.dtype), kind.astype(jnp.int32))
