r"""The effective flow of the usual cost after an adapted output layer (docs/theory.md §9).

Per frame coordinate the state is $(\theta^{(1..L)}, D^{(1..L)}, d_o, \beta)$. Gradient flow
on the layer parameters $(d_n, b_n)$ moves the cumulative state by $-K\nabla C$ with the
data-free metric $K = J J^T$ ($J$ the Jacobian of $(d, b) \mapsto (\theta, D)$):

$$K^{\theta\theta}_{\ell m} = \sum_{n\le\min(\ell,m)} (D^{(n)})^{-2}
   + (\theta^{(n-1)} - \theta^{(\ell)})(\theta^{(n-1)} - \theta^{(m)})\rho_n,\quad
  K^{D\theta}_{\ell m} = D^{(\ell)}\sum_{n\le\min(\ell,m)} (\theta^{(n-1)} - \theta^{(m)})\rho_n,\quad
  K^{DD}_{\ell m} = D^{(\ell)} D^{(m)} \sum_{n\le\min(\ell,m)} \rho_n,$$

$\rho_n = d_n^{-2}$ (gradient flow on $d$), 1 (on $\log d$), 0 (weights frozen); the input
cost's $\Gamma$ is $K^{\theta\theta}$. The cost's gradient has the truncation term, on the
active threshold, and the regression term, on $\theta^{(L)}$, $D^{(L)}$, $d_o$ and $\beta$:
$\partial C/\partial\theta^* = a s_T$, $\partial C/\partial\theta^{(L)} \mathrel{+}= -a\bar e$,
$\partial C/\partial D^{(L)} = d_o q$, $\partial C/\partial d_o = D^{(L)} q$,
$\partial C/\partial\beta = \bar e$, with $r_j = a\,m_j + c - w_j$, $s_T = \frac1N\sum_T r_j$,
$\bar e = \frac1N\sum_j r_j$, $q = \frac1N\sum_j r_j (m_j - \theta^{(L)})$.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from ..._model.cost import check_data
from ..._model.data import Dataset
from ..._model.input_space import thresholds
from ..._model.network import AdaptedReLUNet
from ..._model.output_layer import AdaptedOutputLayer, check_adapted_output
from ..._model.parameterisation import weight_motion
from ..field import check_adapted
from .statistics import Sums, columns, group_bounds, shifted, sums_at, usual_stats


class State(NamedTuple):
    """One coordinate's continuous state: thresholds, cumulative scales `(L,)`, the output
    scale `d_o` and the output offset `β = (Qᵀ b_o)_k`."""

    thresholds: jax.Array
    scales: jax.Array
    output_scale: jax.Array
    output_offset: jax.Array


def _previous(values, first):
    return jnp.concatenate([jnp.full_like(values[:1], first), values[:-1]])


def weight_factors(scales, output_scale, motion):
    """`(ρ_n, ρ_o)`: the preconditioning of each weight gradient (docs/theory.md §9)."""
    if motion == "frozen":
        return jnp.zeros_like(scales), jnp.zeros_like(output_scale)
    if motion == "log":
        return jnp.ones_like(scales), output_scale**2
    layer = scales / _previous(scales, 1.0)
    return layer**-2, jnp.ones_like(output_scale)


def metric(state: State, motion):
    """`(K^θθ, K^Dθ, K^DD)`, each `(L, L)`: the push-forward metric on `(θ, D)`."""
    theta, scales = state.thresholds, state.scales
    depth = theta.shape[0]
    rho, _ = weight_factors(scales, state.output_scale, motion)
    layers = jnp.arange(depth)
    # mask[l, m, n] = n <= min(l, m)
    mask = layers[None, None, :] <= jnp.minimum(layers[:, None], layers[None, :])[:, :, None]
    gap = _previous(theta, 0.0)[None, :] - theta[:, None]  # gap[l, n] = θ^(n-1) − θ^(l)
    rho = rho[None, None, :]
    bias_part = (scales**-2)[None, None, :]
    k_tt = jnp.sum(jnp.where(mask, bias_part + gap[:, None, :] * gap[None, :, :] * rho, 0.0), axis=2)
    k_dt = scales[:, None] * jnp.sum(jnp.where(mask, gap[None, :, :] * rho, 0.0), axis=2)
    k_dd = scales[:, None] * scales[None, :] * jnp.sum(jnp.where(mask, rho, 0.0), axis=2)
    return k_tt, k_dt, k_dd


class Gradient(NamedTuple):
    """The usual cost's gradient terms of one coordinate (docs/theory.md §9)."""

    truncation: jax.Array  # a s_T = ∂C/∂θ*
    mean_residual: jax.Array  # ē = ∂C/∂β
    moment: jax.Array  # q: ∂C/∂D^(L) = d_o q, ∂C/∂d_o = D^(L) q


def gradient(state: State, sums: Sums, theta_star, num_points) -> Gradient:
    theta_last, scale_last = state.thresholds[-1], state.scales[-1]
    slope = state.output_scale * scale_last
    sum_m, sum_mm, sum_mw = shifted(sums, theta_star)
    sum_r = slope * (sum_m - num_points * theta_last) + num_points * state.output_offset - sums.all_w
    sum_trunc = sums.n * (slope * (theta_star - theta_last) + state.output_offset) - sums.trunc_w
    sum_rm = slope * (sum_mm - theta_last * sum_m) + state.output_offset * sum_m - sum_mw
    return Gradient(
        truncation=slope * sum_trunc / num_points,
        mean_residual=sum_r / num_points,
        moment=(sum_rm - theta_last * sum_r) / num_points,
    )


def velocity(state: State, grad: Gradient, active, partner, route, motion) -> State:
    """`−K ∇C` with the truncation term on the active threshold, a fraction `route` of it
    moved to layer `partner` (the Filippov combination on a tie; 0 off a tie)."""
    depth = state.thresholds.shape[0]
    layers = jnp.arange(depth)
    slope = state.output_scale * state.scales[-1]
    g_theta = grad.truncation * ((1 - route) * (layers == active) + route * (layers == partner))
    g_theta = g_theta - slope * grad.mean_residual * (layers == depth - 1)
    g_scale = state.output_scale * grad.moment * (layers == depth - 1)
    k_tt, k_dt, k_dd = metric(state, motion)
    _, rho_o = weight_factors(state.scales, state.output_scale, motion)
    return State(
        thresholds=-(k_tt @ g_theta + k_dt.T @ g_scale),
        scales=-(k_dt @ g_theta + k_dd @ g_scale),
        output_scale=-rho_o * state.scales[-1] * grad.moment,
        output_offset=-grad.mean_residual,
    )


class UsualVelocity(NamedTuple):
    """Time derivatives of the usual cost's effective state, frame coordinates: thresholds
    and cumulative scales `(L, M)`, output scales `d_o` `(M,)` and output offsets `β = Qᵀb_o`
    `(M,)` (so `db_o/dt = Q dβ/dt`)."""

    thresholds: jax.Array
    scales: jax.Array
    output_scales: jax.Array
    output_offsets: jax.Array


def usual_cost_field(
    net: AdaptedReLUNet,
    output_layer: AdaptedOutputLayer,
    data: Dataset,
    *,
    train_weights: bool = True,
    parameterisation: str = "direct",
) -> UsualVelocity:
    r"""The right-hand side of the usual cost's effective flow at the state of `net` and
    `output_layer` (docs/theory.md §9): gradient flow on the hidden layers' `(d_ℓ, b_ℓ)` and
    the output layer's `(d_o, b_o)`, `R` and `Q` fixed; the dataset's targets are output-space
    targets. `train_weights=False` moves the biases only (`d_ℓ` and `d_o` frozen);
    `parameterisation="log"` is gradient flow on `log d_ℓ` and `log d_o`.

    As gradient descent counts: a point exactly at θ* is truncated, the lowest tied layer is
    active. At states with no ties and no point on a threshold it equals the push-forward of
    the real network's gradient.
    """
    check_adapted(net, "usual_cost_field")
    check_data(net, data)
    check_adapted_output(output_layer, net.width)
    motion = weight_motion(train_weights, parameterisation)
    theta, scales = thresholds(net)
    dtype = jnp.result_type(theta, output_layer.scales, data.x)
    stats = usual_stats(net.fixed_frame.astype(dtype), output_layer.fixed_frame.astype(dtype), data)
    states = State(theta.T, scales.T, output_layer.scales, output_layer.offsets)
    active = jnp.argmax(theta, axis=0).astype(jnp.int32)

    def one(state, column, active):
        theta_star = state.thresholds[active]
        _, high = group_bounds(column, theta_star)
        grad = gradient(state, sums_at(column, high, high, 0.0), theta_star, stats.num_points)
        return velocity(state, grad, active, active, 0.0, motion)

    out = jax.vmap(one)(jax.tree.map(lambda a: a.astype(dtype), states), columns(stats), active)
    return UsualVelocity(out.thresholds.T, out.scales.T, out.output_scale, out.output_offset)
