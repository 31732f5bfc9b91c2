r"""The clock of one coordinate, in closed form: how long θ* takes along its path.

Along the orbit $dt/ds = -h(s)/g$ in the path length s; in a piece $[a, b]$ of the path (no data
coordinate, layer switch or solver step boundary inside) the count n and the mean
truncated target are fixed, so with $c$ the path length of that mean (the piece's
asymptote, $c \ge b$), $-g = (n/N)(c - s)$ and

$$\Delta t = \frac{N}{n}\int_a^b \frac{h(s)}{c - s}\,ds, \qquad h = 1/\Gamma_{\ell^*\ell^*}.$$

The orbit carries h as a state component (`orbit.py`), so on each solver step h is the
step's dense output: a polynomial $P$ of degree D ≤ 7 in the step's local $x \in [-1, 1]$,
and $ds/(c - s) = dx/(z - x)$ with $z$ the local coordinate of c. Then, exactly,

$$\int_{x_a}^{x} \frac{P(\xi)}{z - \xi}\,d\xi = P(z)\log\frac{z - x_a}{z - x} - \int_{x_a}^{x} Q,
\qquad P(\xi) = P(z) + (\xi - z)\,Q(\xi),$$

Q by synthetic division (Horner at z). Its rounding error grows like $|z|^j$ times the
coefficient $p_j$, so for a pole far from the step ($z > 8$) the integrand is smooth on
$[x_a, x]$ instead, and (D + 6)-point Gauss–Legendre, exact for degree 2D + 11, errs by
the best degree-(D + 11) fit of $1/(z - \xi)$: $\sim\rho^{-(D + 12)}$ with
$\rho \ge 8 + \sqrt{63} \approx 15.9$ (the pole's Bernstein ellipse), below 1e-14.
No orbit evaluation, no node budget: the accuracy of a piece does not depend on its
length or on N.

The time at any s inside a piece is the same closed form; its inverse (output times) is
Newton's method in $w = \log\frac{c - a}{c - s}$, where $dt/dw = (N/n)\,h$ is bounded
and positive even at the asymptote.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .coordinate_end import END
from .orbit import Orbit, horner

_NEAR = 8.0  # local pole position up to which the closed form is used
_EXTRA_NODES = 6  # Gauss–Legendre nodes beyond the degree, for poles past _NEAR
_NEWTON_STEPS = 8


class Clock(eqx.Module):
    """Pieces of one coordinate's path, in path length s, with the time at their ends and
    what the closed form needs inside each."""

    breaks: jax.Array  # (P+1,) ascending s of the piece boundaries
    times: jax.Array  # (P+1,) time at each break; inf from the asymptote on
    rates: jax.Array  # (P,) N / n
    means: jax.Array  # (P,) s of the mean truncated target (the piece's asymptote)
    steps: jax.Array  # (P,) solver step each piece lies in
    step_starts: jax.Array  # (P,) s where that step starts
    step_widths: jax.Array  # (P,) its length in s
    polynomials: jax.Array  # (steps, D+1) h on each step (`Orbit.polynomials`)
    data_breaks: jax.Array  # (N,) the break of each data coordinate (in sorted order)


def _local(clock: Clock, piece, s):
    width = clock.step_widths[piece]
    return 2.0 * (s - clock.step_starts[piece]) / jnp.where(width > 0, width, 1.0) - 1.0


def integral(p, z, xa, x):
    r"""$\int_{x_a}^{x} P(\xi)/(z - \xi)\,d\xi$ for monomial coefficients `p` (ascending)
    and $x_a \le x < z$; closed form near the pole, Gauss–Legendre far from it."""
    near = z <= _NEAR
    # closed form (with safe arguments where it is not used: no NaN in its gradients)
    zn = jnp.where(near, z, _NEAR)
    xn, xan = jnp.where(near, x, -1.0), jnp.where(near, xa, -1.0)
    b = [p[-1]]
    for c in p[-2::-1]:
        b.append(c + zn * b[-1])
    b = b[::-1]  # b[0] = P(z); Q(ξ) = Σ_{j≥1} b[j] ξ^{j-1}
    # x^j − xa^j without cancellation: d_1 = x − xa, d_j = x d_{j−1} + (x − xa) xa^{j−1}
    step, difference, power_a, integral_q = xn - xan, xn - xan, jnp.ones_like(zn), jnp.zeros_like(zn)
    for j in range(1, len(b)):
        if j > 1:
            power_a = power_a * xan
            difference = xn * difference + step * power_a
        integral_q = integral_q + b[j] * difference / j
    closed = b[0] * jnp.log1p((xn - xan) / (zn - xn)) - integral_q
    # far pole: the integrand is a polynomial over a smooth factor
    zf = jnp.where(near, _NEAR + 1.0, z)
    gauss_x, gauss_w = np.polynomial.legendre.leggauss(len(p) - 1 + _EXTRA_NODES)
    half, middle = 0.5 * (x - xa), 0.5 * (x + xa)
    nodes = middle + half * jnp.asarray(gauss_x, x.dtype)
    terms = jnp.asarray(gauss_w, x.dtype) * horner(p, nodes) / (zf - nodes)
    far = half * sum(terms[i] for i in range(terms.shape[0]))  # fixed order: batch-independent bits
    return jnp.where(near, closed, far)


def _merge(data, others):
    """`data` (ascending) and `others` (ascending) merged, and where each element of either
    went: a stable merge by ranks, O(N log K) for K others, instead of a sort of N + K."""
    data_at = jnp.arange(data.shape[0]) + jnp.searchsorted(others, data, side="left")
    others_at = jnp.arange(others.shape[0]) + jnp.searchsorted(data, others, side="right")
    merged = jnp.zeros(data.shape[0] + others.shape[0], data.dtype)
    merged = merged.at[data_at].set(data, unique_indices=True).at[others_at].set(others, unique_indices=True)
    return merged, data_at, others_at


def build_clock(orbit: Orbit, u_sorted, target_sums, theta_star, direction, end_level, end_kind, switches):
    """The clock of one coordinate. `switches` `(L-1,)`: path lengths of layer switches."""
    num = u_sorted.shape[0]
    dtype = u_sorted.dtype
    length = jnp.abs(end_level - theta_star)
    # the data's path lengths ascend along u_sorted when θ* rises, descend when it falls
    rising = direction > 0
    levels = jnp.clip(direction * (u_sorted - theta_star), 0.0, length)
    levels = jnp.where(rising, levels, levels[::-1])
    step_bounds = jnp.clip(jnp.where(jnp.isfinite(orbit.starts), orbit.starts, length), 0.0, length)
    others = jnp.sort(
        jnp.concatenate([jnp.zeros(1, dtype), jnp.clip(switches, 0.0, length), step_bounds, length[None]])
    )
    breaks, at, _ = _merge(levels, others)
    a, b = breaks[:-1], breaks[1:]
    middle = 0.5 * (a + b)
    # points at or below each piece's start in path length (all of them inside a moving
    # piece: no data coordinate lies within one); truncated: those behind θ*
    behind = jnp.cumsum(jnp.zeros(breaks.shape[0], jnp.int32).at[at].set(1, unique_indices=True))[:-1]
    counts = jnp.where(rising, behind, num - behind)
    safe_counts = jnp.maximum(counts, 1)
    means = direction * (target_sums[counts] / safe_counts - theta_star)
    moving = b > a
    last = jnp.max(jnp.where(moving, jnp.arange(a.shape[0]), -1))
    asymptote = (jnp.arange(a.shape[0]) == last) & (end_kind == END.asymptote)
    steps = orbit.step(middle)
    clock = Clock(
        breaks=breaks,
        times=jnp.zeros_like(breaks),
        rates=num / safe_counts.astype(dtype),
        means=means,
        steps=steps,
        step_starts=jnp.where(jnp.isfinite(orbit.starts[steps]), orbit.starts[steps], 0.0),
        step_widths=jnp.where(
            jnp.isfinite(orbit.starts[steps]), orbit.ends[steps] - orbit.starts[steps], 0.0
        ),
        polynomials=orbit.polynomials,
        data_breaks=jnp.where(rising, at, at[::-1]),
    )
    pieces = jnp.arange(a.shape[0])
    usable = moving & ~asymptote  # the asymptote's piece never ends; zero-width pieces take no time
    xa = _local(clock, pieces, a)
    xb = jnp.where(usable, _local(clock, pieces, b), xa)
    z = jnp.where(usable, _local(clock, pieces, means), xb + 1.0)
    spans = jax.vmap(integral)(orbit.polynomials[steps], z, xa, xb)
    durations = jnp.where(asymptote, jnp.inf, jnp.where(usable, clock.rates * spans, 0.0))
    times = jnp.concatenate([jnp.zeros(1, dtype), jnp.cumsum(durations)])
    return eqx.tree_at(lambda c: c.times, clock, times)


def time_at(clock: Clock, s):
    """The time at which θ* reaches path length `s`, for `s` on a piece boundary."""
    return clock.times[jnp.searchsorted(clock.breaks, s, side="left")]


def data_times(clock: Clock):
    """`(N,)` the time at which θ* reaches each data coordinate's path length (clipped to
    the path), in sorted order: `time_at` without a search."""
    return clock.times[clock.data_breaks]


def path_at(clock: Clock, t):
    """Path length s reached at time `t` (t may be inf): Newton's method in
    w = log((c − a)/(c − s)) on the closed form (no evaluation of the orbit)."""
    num_pieces = clock.rates.shape[0]
    piece = jnp.searchsorted(clock.times, t, side="right") - 1
    beyond = piece >= num_pieces
    piece = jnp.clip(piece, 0, num_pieces - 1)
    start, end, mean = clock.breaks[piece], clock.breaks[piece + 1], clock.means[piece]
    moving = end > start
    p = clock.polynomials[clock.steps[piece]]
    xa = _local(clock, piece, start)
    z = jnp.where(moving, _local(clock, piece, mean), xa + 1.0)
    target = jnp.where(beyond | ~moving, 0.0, (t - clock.times[piece]) / clock.rates[piece])
    limit = jnp.where(jnp.isfinite(clock.times[piece + 1]), jnp.log1p((end - start) / (mean - end)), jnp.inf)
    limit = jnp.where(moving, limit, 0.0)
    h_start = horner(p, xa)

    def newton(w, _):
        x = xa - (z - xa) * jnp.expm1(-w)
        w = w - (integral(p, z, xa, jnp.minimum(x, z)) - target) / jnp.maximum(horner(p, x), 0.5 * h_start)
        return jnp.clip(w, 0.0, limit), None

    w, _ = jax.lax.scan(newton, jnp.clip(target / h_start, 0.0, limit), None, length=_NEWTON_STEPS)
    s = start - (mean - start) * jnp.expm1(-w)
    return jnp.where(beyond, clock.breaks[-1], jnp.clip(s, start, end))
