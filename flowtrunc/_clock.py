r"""The clock of one coordinate: how long θ* takes between consecutive data coordinates.

Along the orbit $dt/d\theta^* = -1/(g\,\Gamma_{\ell^*\ell^*})$ with
$g = (n/N)(\theta^* - \bar v_n)$ affine between data coordinates. In a piece
$[a, b]$ of the path (no data coordinate and no layer switch inside) with count n and
mean truncated target $\bar v$, the substitution $w = \log(|\bar v - a|/|\bar v - \theta^*|)$
turns the logarithmic singularity at $\bar v$ into a linear growth:

$$\Delta t = \frac{N}{n}\int_0^{W} h(\theta^*(w))\,dw, \qquad h = 1/\Gamma_{\ell^*\ell^*},
\qquad W = \log\frac{|\bar v - a|}{|\bar v - b|},$$

with $h$ smooth along the orbit. The integral is $h_\text{ref} W$ (exact) plus the
integral of $h - h_\text{ref}$, $h_\text{ref}$ the value at the end of the piece, by
16-point Gauss–Legendre on the panels [0, 1], [1, 8] and [8, 64] of w (beyond w = 1 the
integrand is a sum of terms $e^{-kw}$, integrated there to ~1e-15 relative). In the piece
that holds $\bar v$ (W = ∞) the second part decays like $e^{-w}$ (neglected past
w = 64), so the time to reach any θ* before $\bar v$ is finite and accurate, and the
piece never ends. Times at given t follow by Newton's method on the monotone clock.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._ending import ASYMPTOTE
from ._orbit import Orbit, star_rate

_FULL = (np.array([0.0, 1.0, 8.0, 64.0]), *np.polynomial.legendre.leggauss(16))
# Short pieces: 4 nodes on [0, 1] and on [1, 64] of w. At most _BUDGET pieces can be
# longer than 1/_BUDGET of the path, and those (those with W > 1 first) get _FULL; a
# 4-node rule on a piece of relative length ℓ errs by ~(ℓ/2)^8 of the integrand's scale.
_SHORT = (np.array([0.0, 1.0, 64.0]), *np.polynomial.legendre.leggauss(4))
_BUDGET = 128
_NEWTON_STEPS = 10
_BATCH = 4096  # pieces per batch of the short rule (bounds memory at large N)


class Clock(eqx.Module):
    """Pieces of one coordinate's path, in path length s, and the time at their ends."""

    breaks: jax.Array  # (P+1,) ascending s of the piece boundaries
    times: jax.Array  # (P+1,) time at each break; inf from the asymptote on
    rates: jax.Array  # (P,) N / n
    means: jax.Array  # (P,) s of the mean truncated target (the piece's asymptote)
    limits: jax.Array  # (P,) W at the end of each piece (inf for the asymptote piece)
    refs: jax.Array  # (P,) h at the end of each piece
    layers: jax.Array  # (P,) active layer in each piece


def _inverse_rate(orbit: Orbit, s, layer, train_weights):
    theta, scales = orbit.state(s)
    return 1.0 / star_rate(theta, scales, layer, train_weights)


def _integral(orbit, clock, piece, width, train_weights, rule=_FULL):
    """$\\int_0^{width} h\\,dw$ in `piece` (width may be inf in the asymptote piece)."""
    panels, nodes, weights = rule
    start = clock.breaks[piece]
    distance = clock.means[piece] - start
    ref = clock.refs[piece]
    dtype = start.dtype
    lo = jnp.minimum(jnp.asarray(panels[:-1], dtype), width)
    hi = jnp.minimum(jnp.asarray(panels[1:], dtype), width)
    half = 0.5 * (hi - lo)
    w = lo[:, None] + half[:, None] * (1.0 + jnp.asarray(nodes, dtype)[None])
    s = start - distance * jnp.expm1(-w)
    h = jax.vmap(jax.vmap(lambda x: _inverse_rate(orbit, x, clock.layers[piece], train_weights)))(s)
    finite_width = jnp.where(jnp.isfinite(width), width, 0.0)
    smooth = jnp.sum(half[:, None] * jnp.asarray(weights, dtype)[None] * (h - ref))
    return ref * finite_width + smooth


def build_clock(orbit: Orbit, u_sorted, target_sums, theta_star, direction, end_level, end_kind, switches, train_weights):
    """The clock of one coordinate. `switches` `(L-1,)`: path lengths of layer switches."""
    num = u_sorted.shape[0]
    dtype = u_sorted.dtype
    length = jnp.abs(end_level - theta_star)
    path = lambda level: jnp.clip(direction * (level - theta_star), 0.0, length)  # noqa: E731
    breaks = jnp.sort(jnp.concatenate([jnp.zeros(1, dtype), path(u_sorted), jnp.clip(switches, 0.0, length), length[None]]))
    a, b = breaks[:-1], breaks[1:]
    middle = theta_star + direction * 0.5 * (a + b)
    counts = jnp.searchsorted(u_sorted, middle, side="right")
    safe_counts = jnp.maximum(counts, 1)
    means = direction * (target_sums[counts] / safe_counts - theta_star)
    moving = b > a
    last = jnp.max(jnp.where(moving, jnp.arange(a.shape[0]), -1))
    asymptote = (jnp.arange(a.shape[0]) == last) & (end_kind == ASYMPTOTE)
    gap = jnp.where(moving & ~asymptote, means - b, 1.0)
    limits = jnp.where(asymptote, jnp.inf, jnp.where(moving, jnp.log1p((b - a) / gap), 0.0))
    layers = jax.vmap(orbit.layer)(0.5 * (a + b))
    refs = jax.vmap(lambda s, layer: _inverse_rate(orbit, s, layer, train_weights))(b, layers)
    clock = Clock(breaks, jnp.zeros_like(breaks), num / safe_counts.astype(dtype), means, limits, refs, layers)
    pieces = jnp.arange(a.shape[0])
    spans = jax.lax.map(
        lambda args: _integral(orbit, clock, *args, train_weights, _SHORT), (pieces, limits), batch_size=_BATCH
    )
    score = jnp.where(limits > 1.0, 2.0 + jnp.minimum(limits, 64.0), (b - a) / jnp.maximum(length, 1e-300))
    _, hard = jax.lax.top_k(score, min(_BUDGET, a.shape[0]))
    spans = spans.at[hard].set(jax.vmap(lambda i: _integral(orbit, clock, i, limits[i], train_weights))(hard))
    durations = jnp.where(asymptote, jnp.inf, clock.rates * spans)
    times = jnp.concatenate([jnp.zeros(1, dtype), jnp.cumsum(durations)])
    return eqx.tree_at(lambda c: c.times, clock, times)


def time_at(clock: Clock, s):
    """The time at which θ* reaches path length `s`, for `s` on a piece boundary."""
    return clock.times[jnp.searchsorted(clock.breaks, s, side="left")]


def path_at(orbit: Orbit, clock: Clock, t, train_weights):
    """Path length s reached at time `t` (t may be inf), by Newton's method in w."""
    num_pieces = clock.rates.shape[0]
    piece = jnp.searchsorted(clock.times, t, side="right") - 1
    beyond = piece >= num_pieces
    piece = jnp.clip(piece, 0, num_pieces - 1)
    start = clock.breaks[piece]
    distance = clock.means[piece] - start
    target = jnp.where(beyond, 0.0, (t - clock.times[piece]) / clock.rates[piece])
    limit = clock.limits[piece]
    layer = clock.layers[piece]

    def newton(w, _):
        s = start - distance * jnp.expm1(-w)
        slope = _inverse_rate(orbit, s, layer, train_weights)
        w = w - (_integral(orbit, clock, piece, w, train_weights) - target) / slope
        return jnp.clip(w, 0.0, limit), None

    w0 = jnp.clip(target / clock.refs[piece], 0.0, limit)
    w, _ = jax.lax.scan(newton, w0, None, length=_NEWTON_STEPS)
    s = start - distance * jnp.expm1(-w)
    return jnp.where(beyond, clock.breaks[-1], jnp.clip(s, start, clock.breaks[piece + 1]))
