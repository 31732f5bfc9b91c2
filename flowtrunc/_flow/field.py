r"""The effective gradient flow of an adapted network (docs/theory.md §3), explicitly.

Per frame coordinate, with $\theta^{(0)} = 0$, $D^{(0)} = 1$, $d_n = D^{(n)}/D^{(n-1)}$ and
active layer $\ell^*$, gradient flow on the layer parameters $(d_\ell, b_\ell)$ gives

$$\dot\theta^{(\ell)} = -g\,\Gamma_{\ell\ell^*}, \quad
\Gamma_{\ell m} = \sum_{n=1}^{\min(\ell,m)} (D^{(n)})^{-2}
 + (\theta^{(n-1)} - \theta^{(\ell)})(\theta^{(n-1)} - \theta^{(m)})\,d_n^{-2},$$

$$\dot D^{(\ell)} = -g\,D^{(\ell)}\sum_{n=1}^{\min(\ell,\ell^*)}(\theta^{(n-1)} - \theta^*)\,d_n^{-2}.$$

With weights frozen only the $(D^{(n)})^{-2}$ terms remain and $\dot D = 0$. That is
the *direct* parameterisation (gradient flow on $d_\ell$). Gradient flow on $\log d_\ell$
(`parameterisation="log"`) preconditions each $d_n$-gradient by $d_n^2$, so every
$d_n^{-2}$ factor of the d-terms becomes 1; the bias terms are unchanged.
Derivation: docs/theory.md. References: T. Chen, arXiv:2501.07400.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from .._custom_types import Array, Float, Int
from .._model.cost import check_data
from .._model.data import Dataset
from .._model.input_space import thresholds
from .._model.network import AdaptedReLUNet
from .._model.parameterisation import weight_motion
from .coordinate_end import direction_at
from .statistics import CoordinateStats, coordinate_stats, count_below, truncated_target_sum


def _previous(theta):
    """`θ^(n-1)` for n = 1..L, with `θ^(0) = 0`."""
    return jnp.concatenate([jnp.zeros_like(theta[:1]), theta[:-1]], axis=0)


def _inverse_square_factors(scales):
    """`d_n^{-2}` from the cumulative scales `D^(n)`, shape `(L, M)`."""
    layer = scales / _previous_scales(scales)
    return layer**-2


def d_term_factors(scales, motion):
    """The factor of each d-term: `d_n^{-2}` on the direct parameterisation, 1 on log d."""
    if motion == "log":
        return jnp.ones_like(scales)
    return _inverse_square_factors(scales)


def _previous_scales(scales):
    return jnp.concatenate([jnp.ones_like(scales[:1]), scales[:-1]], axis=0)


def at_active(values: Float[Array, "depth width"], active: Int[Array, " width"]):
    """`values[active_k, k]` for every coordinate k, shape `(M,)`."""
    return jnp.take_along_axis(values, active[None], axis=0)[0]


def active_layer(theta: Float[Array, "depth width"]) -> Int[Array, " width"]:
    """The layer holding the largest threshold, lowest index on ties, `(M,)`."""
    return jnp.argmax(theta, axis=0).astype(jnp.int32)


def start_layer(theta: Float[Array, "depth width"], direction: Array) -> Int[Array, " width"]:
    """The active layer at a state: at a tie, gradient descent moves the highest tied
    layer (ReLU' = 0 at 0); if θ* rises that layer pulls ahead, if it falls the lowest
    tied layer takes over at once (docs/theory.md §5). So: highest tied when rising,
    lowest tied otherwise."""
    highest = (theta.shape[0] - 1 - jnp.argmax(theta[::-1], axis=0)).astype(jnp.int32)
    return jnp.where(direction > 0, highest, active_layer(theta))


class StartState(NamedTuple):
    """Discrete state of the flow at given thresholds, per coordinate `(M,)`."""

    count: jax.Array  # truncated points that the flow moves
    active: jax.Array  # active layer
    direction: jax.Array  # +1, -1 or 0 (at rest, or on a kink)
    target_sum: jax.Array  # sum of the targets of the `count` lowest points


def start_state(stats: CoordinateStats, theta: Float[Array, "depth width"]) -> StartState:
    """Counts as gradient descent does: a point at θ* is truncated while θ* rises or sits
    on a kink, and released at once when θ* falls."""
    theta_star = jnp.max(theta, axis=0)
    direction, _ = jax.vmap(direction_at, in_axes=(1, 1, 0))(stats.u_sorted, stats.target_sums, theta_star)
    side_count = jnp.where(
        direction < 0,
        count_below(stats, theta_star, side="left"),
        count_below(stats, theta_star, side="right"),
    )
    return StartState(
        side_count, start_layer(theta, direction), direction, truncated_target_sum(stats, side_count)
    )


def _layer_sums(theta, scales, active, motion: str):
    r"""Partial sums over $n \le \min(\ell, \ell^*)$, `(L, M)` each, O(L M): $A_\ell = \sum
    (D^{(n)})^{-2} + \theta^{(n-1)}(\theta^{(n-1)} - \theta^*) f_n$ and $B_\ell = \sum
    (\theta^{(n-1)} - \theta^*) f_n$, with $f_n$ the d-term factor (0 when frozen), so
    that $\Gamma_{\ell\ell^*} = A_\ell - \theta^{(\ell)} B_\ell$ and
    $\dot D^{(\ell)} = -g D^{(\ell)} B_\ell$."""
    below = jnp.arange(theta.shape[0])[:, None] <= active[None]
    inverse_squares = scales**-2
    if motion == "frozen":
        return jnp.cumsum(jnp.where(below, inverse_squares, 0.0), axis=0), None
    prev = _previous(theta)
    offset = prev - at_active(theta, active)[None]
    drift = jnp.where(below, offset * d_term_factors(scales, motion), 0.0)
    a = jnp.cumsum(jnp.where(below, inverse_squares, 0.0) + prev * drift, axis=0)
    return a, jnp.cumsum(drift, axis=0)


def gamma_column(theta, scales, active, motion: str):
    r"""$\Gamma_{\ell,\ell^*}$ for every layer ℓ, shape `(L, M)`; O(L M)."""
    a, b = _layer_sums(theta, scales, active, motion)
    return a if b is None else a - theta * b


def effective_velocity(theta, scales, g, active, motion: str):
    """`(dθ/dt, dD/dt)` for thresholds and cumulative scales `(L, M)` given `g` `(M,)`."""
    a, b = _layer_sums(theta, scales, active, motion)
    if b is None:
        return -g[None] * a, jnp.zeros_like(scales)
    return -g[None] * (a - theta * b), -g[None] * scales * b


class EffectiveVelocity(NamedTuple):
    """Time derivatives of the thresholds, cumulative scales and cumulative biases."""

    thresholds: Float[Array, "depth width"]
    scales: Float[Array, "depth width"]
    biases: Float[Array, "depth width"]


def effective_field(
    net: AdaptedReLUNet, data: Dataset, *, train_weights: bool = True, parameterisation: str = "direct"
) -> EffectiveVelocity:
    r"""The effective flow's right-hand side at the state of `net`, in frame coordinates.

    Returns $\dot\theta^{(\ell)}$, $\dot D^{(\ell)}$ and the cumulative-bias velocity
    $\dot b^{(\ell)} = -(\dot D^{(\ell)}\theta^{(\ell)} + D^{(\ell)}\dot\theta^{(\ell)})$
    (frame coordinates: the input-space bias is unchanged, $b^{(\ell)}$ lives in layer ℓ).
    `train_weights=False` is the bias-only flow. `parameterisation`: gradient flow on the
    diagonal entries `d_l` ("direct", docs/theory.md §3) or on `log d_l` ("log"); the two
    agree when the weights are frozen.

    This is the velocity of the flow that gradient descent converges to: a point exactly
    at θ* counts as truncated (ReLU' = 0 at 0), except that a falling θ* releases it at
    once; at tied thresholds the highest tied layer is active when θ* rises, the lowest
    when it falls; on a kink the velocity is zero (docs/theory.md §5). At states with no
    ties and no point on a threshold it equals the push-forward of the gradient.
    """
    check_adapted(net, "effective_field")
    check_data(net, data)
    motion = weight_motion(train_weights, parameterisation)
    theta, scales = thresholds(net)
    stats = coordinate_stats(net.fixed_frame, data)
    state = start_state(stats, theta)
    g = (state.count * jnp.max(theta, axis=0) - state.target_sum) / stats.num_points
    g = jnp.where(state.direction != 0, g, 0.0)
    dtheta, dscales = effective_velocity(theta, scales, g, state.active, motion)
    return EffectiveVelocity(dtheta, dscales, -(dscales * theta + scales * dtheta))


def check_adapted(net, entry_point: str) -> None:
    if not isinstance(net, AdaptedReLUNet):
        raise ValueError(
            f"`{entry_point}` needs an AdaptedReLUNet (weights D_1 R, D_2, ..., D_L), got "
            f"{type(net).__name__}. The effective flow holds only for adapted weights; for "
            "a general ReLUNet, train the real network by gradient descent instead."
        )
