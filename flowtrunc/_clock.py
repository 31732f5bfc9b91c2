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
Gauss–Legendre on the panels [0, 1], [1, 8] and [8, 64] of w (beyond w = 1 the integrand
is a sum of terms $e^{-kw}$). In the piece that holds $\bar v$ (W = ∞) the second part
decays like $e^{-w}$ (neglected past w = 64), so the time to reach any θ* before
$\bar v$ is finite and the piece never ends.

Nodes per panel, by need: every piece gets 4 on [0, 1] and 4 on [1, 8]; the `_LONG`
longest pieces get 16 on each of [0, ¼], [¼, ½], [½, 1] (the others are shorter than
1/`_LONG` of the path, where a 4-node rule errs by ~(ℓ/2)^8 of h's variation); the
`_TAILED` pieces with the largest W > 1 (the asymptote's among them) get 16 on each of
[1, 2], [2, 4], …, [32, 64]. Each panel keeps the Legendre coefficients of its
interpolant, so the clock at any w inside a piece, and its inverse by Newton's method,
cost no further evaluation of the orbit.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._ending import ASYMPTOTE
from ._linalg import matmul
from ._orbit import Orbit, star_rate

_SHORT_PANELS = ((0.0, 1.0), (1.0, 8.0))  # every piece, 4 nodes each
_HEAD_PANELS = ((0.0, 0.25), (0.25, 0.5), (0.5, 1.0))  # the _LONG longest pieces, 16 nodes
_TAIL_PANELS = ((1.0, 2.0), (2.0, 4.0), (4.0, 8.0), (8.0, 16.0), (16.0, 32.0), (32.0, 64.0))  # _TAILED
_DEGREE = 16  # Legendre coefficients kept per panel
_LONG = 32
_TAILED = 8
_NEWTON_STEPS = 10
_BATCH = 4096  # pieces per batch of the 4-node pass (bounds memory at large N)


def _rule(nodes: int):
    """Gauss–Legendre nodes, weights and the node values → Legendre coefficients map."""
    x, w = np.polynomial.legendre.leggauss(nodes)
    basis = np.polynomial.legendre.legvander(x, nodes - 1)  # (nodes, nodes)
    transform = (np.arange(nodes)[:, None] + 0.5) * basis.T * w[None]
    return x, w, transform


_RULES = {4: _rule(4), 16: _rule(16)}


class Clock(eqx.Module):
    """Pieces of one coordinate's path, in path length s, and the time at their ends, with
    the Legendre coefficients of h − h_ref on each quadrature panel."""

    breaks: jax.Array  # (P+1,) ascending s of the piece boundaries
    times: jax.Array  # (P+1,) time at each break; inf from the asymptote on
    rates: jax.Array  # (P,) N / n
    means: jax.Array  # (P,) s of the mean truncated target (the piece's asymptote)
    limits: jax.Array  # (P,) W at the end of each piece (inf for the asymptote piece)
    refs: jax.Array  # (P,) h at the end of each piece
    layers: jax.Array  # (P,) active layer in each piece
    short: jax.Array  # (P, 2, 4) on _SHORT_PANELS
    long_slot: jax.Array  # (P,) row of `head`, or -1
    head: jax.Array  # (B1, 3, 16) on _HEAD_PANELS
    tail_slot: jax.Array  # (P,) row of `tail`, or -1
    tail: jax.Array  # (B2, 6, 16) on _TAIL_PANELS


def _inverse_rate(orbit: Orbit, s, layer, train_weights):
    theta, scales = orbit.state(s)
    return 1.0 / star_rate(theta, scales, layer, train_weights)


def _panel(orbit, clock, piece, bounds, nodes, train_weights):
    """Integral of h − h_ref over the panel `bounds` of `piece` (clipped to its W), and the
    Legendre coefficients of the interpolant through the nodes."""
    x, w, transform = _RULES[nodes]
    dtype = clock.breaks.dtype
    width = clock.limits[piece]
    lo, hi = jnp.minimum(bounds[0], width), jnp.minimum(bounds[1], width)
    half = 0.5 * (hi - lo)
    at = lo + half * (1.0 + jnp.asarray(x, dtype))
    s = clock.breaks[piece] - (clock.means[piece] - clock.breaks[piece]) * jnp.expm1(-at)
    values = (
        jax.vmap(lambda x: _inverse_rate(orbit, x, clock.layers[piece], train_weights))(s) - clock.refs[piece]
    )
    return half * jnp.sum(jnp.asarray(w, dtype) * values), matmul(jnp.asarray(transform, dtype), values)


def _panels(orbit, clock, piece, panels, nodes, train_weights):
    out = [_panel(orbit, clock, piece, bounds, nodes, train_weights) for bounds in panels]
    return sum(o[0] for o in out), jnp.stack([o[1] for o in out])


def _series(lows, highs, coefficients, w):
    """For panels `[lows, highs]` with Legendre coefficients `(panels, degree)`: the sum
    of their integrals over [lo, min(w, hi)], and the series' value at w (derivative)."""
    half = 0.5 * (highs - lows)
    inside = (w >= lows) & (w < highs)
    x = jnp.clip(jnp.where(half > 0, (w - lows) / jnp.where(half > 0, half, 1.0) - 1.0, -1.0), -1.0, 1.0)
    previous, current = jnp.ones_like(x), x
    integral = coefficients[:, 0] * (x + 1.0)
    value = coefficients[:, 0] + coefficients[:, 1] * x
    for k in range(1, coefficients.shape[1]):
        following = ((2 * k + 1) * x * current - k * previous) / (k + 1)
        integral = integral + coefficients[:, k] * (following - previous) / (2 * k + 1)
        if k + 1 < coefficients.shape[1]:
            value = value + coefficients[:, k + 1] * following
        previous, current = current, following
    return jnp.sum(half * integral), jnp.sum(jnp.where(inside, value, 0.0))


def _pad(coefficients):
    return jnp.pad(coefficients, ((0, 0), (0, _DEGREE - coefficients.shape[1])))


def _clock_integral(clock, piece, w):
    """$\\int_0^w h\\,dw'$ inside `piece` from the stored coefficients, and h(w)."""
    width = clock.limits[piece]
    long_slot, tail_slot = clock.long_slot[piece], clock.tail_slot[piece]
    panels = _SHORT_PANELS + _HEAD_PANELS + _TAIL_PANELS
    bounds = jnp.minimum(jnp.asarray(panels, width.dtype), width)
    use = jnp.concatenate(
        [
            jnp.stack([long_slot < 0, tail_slot < 0]),
            jnp.full(len(_HEAD_PANELS), long_slot >= 0),
            jnp.full(len(_TAIL_PANELS), tail_slot >= 0),
        ]
    )
    coefficients = jnp.concatenate(
        [
            _pad(clock.short[piece]),
            clock.head[jnp.maximum(long_slot, 0)],
            clock.tail[jnp.maximum(tail_slot, 0)],
        ]
    )
    coefficients = jnp.where(use[:, None], coefficients, 0.0)
    integral, value = _series(bounds[:, 0], bounds[:, 1], coefficients, w)
    ref = clock.refs[piece]
    return ref * jnp.where(jnp.isfinite(w), w, 0.0) + integral, ref + value


def _slots(chosen, num_pieces):
    return jnp.full(num_pieces, -1, jnp.int32).at[chosen].set(jnp.arange(chosen.shape[0], dtype=jnp.int32))


def build_clock(
    orbit: Orbit, u_sorted, target_sums, theta_star, direction, end_level, end_kind, switches, train_weights
):
    """The clock of one coordinate. `switches` `(L-1,)`: path lengths of layer switches."""
    num = u_sorted.shape[0]
    dtype = u_sorted.dtype
    length = jnp.abs(end_level - theta_star)
    path = lambda level: jnp.clip(direction * (level - theta_star), 0.0, length)  # noqa: E731
    breaks = jnp.sort(
        jnp.concatenate([jnp.zeros(1, dtype), path(u_sorted), jnp.clip(switches, 0.0, length), length[None]])
    )
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
    num_pieces = a.shape[0]
    _, long = jax.lax.top_k(b - a, min(_LONG, num_pieces))
    _, tailed = jax.lax.top_k(jnp.where(limits > 1.0, limits, 0.0), min(_TAILED, num_pieces))
    clock = Clock(
        breaks=breaks,
        times=jnp.zeros_like(breaks),
        rates=num / safe_counts.astype(dtype),
        means=means,
        limits=limits,
        refs=refs,
        layers=layers,
        short=jnp.zeros((num_pieces, 2, 4), dtype),
        long_slot=_slots(long, num_pieces),
        head=jnp.zeros((long.shape[0], 3, _DEGREE), dtype),
        tail_slot=_slots(tailed, num_pieces),
        tail=jnp.zeros((tailed.shape[0], 6, _DEGREE), dtype),
    )

    def short(piece):
        return [_panels(orbit, clock, piece, (bounds,), 4, train_weights) for bounds in _SHORT_PANELS]

    (head_span, head_c), (tail_span, tail_c) = jax.lax.map(short, jnp.arange(num_pieces), batch_size=_BATCH)
    long_span, long_c = jax.vmap(lambda i: _panels(orbit, clock, i, _HEAD_PANELS, 16, train_weights))(long)
    tailed_span, tailed_c = jax.vmap(lambda i: _panels(orbit, clock, i, _TAIL_PANELS, 16, train_weights))(
        tailed
    )
    head_span = head_span.at[long].set(long_span)
    tail_span = tail_span.at[tailed].set(tailed_span)
    spans = refs * jnp.where(asymptote, 0.0, limits) + head_span + tail_span
    durations = jnp.where(asymptote, jnp.inf, clock.rates * spans)
    times = jnp.concatenate([jnp.zeros(1, dtype), jnp.cumsum(durations)])
    short_c = jnp.concatenate([head_c, tail_c], axis=1)
    return eqx.tree_at(
        lambda c: (c.times, c.short, c.head, c.tail), clock, (times, short_c, long_c, tailed_c)
    )


def time_at(clock: Clock, s):
    """The time at which θ* reaches path length `s`, for `s` on a piece boundary."""
    return clock.times[jnp.searchsorted(clock.breaks, s, side="left")]


def path_at(clock: Clock, t):
    """Path length s reached at time `t` (t may be inf), by Newton's method in w on the
    stored interpolants of h (no evaluation of the orbit)."""
    num_pieces = clock.rates.shape[0]
    piece = jnp.searchsorted(clock.times, t, side="right") - 1
    beyond = piece >= num_pieces
    piece = jnp.clip(piece, 0, num_pieces - 1)
    start = clock.breaks[piece]
    distance = clock.means[piece] - start
    target = jnp.where(beyond, 0.0, (t - clock.times[piece]) / clock.rates[piece])
    limit = clock.limits[piece]

    def newton(w, _):
        integral, slope = _clock_integral(clock, piece, w)
        w = w - (integral - target) / jnp.maximum(slope, 0.5 * clock.refs[piece])
        return jnp.clip(w, 0.0, limit), None

    w0 = jnp.clip(target / clock.refs[piece], 0.0, limit)
    w, _ = jax.lax.scan(newton, w0, None, length=_NEWTON_STEPS)
    s = start - distance * jnp.expm1(-w)
    return jnp.where(beyond, clock.breaks[-1], jnp.clip(s, start, clock.breaks[piece + 1]))
