"""An affine output layer and the usual cost, pulled back to the input layer (docs/theory.md §6).

With `A(z) = W_o z + b_o` after the last hidden layer and output targets `y`,
`A(x^(L)) − y = W_o W^(L) (x̃^(L) − ȳ)` because `x^(L) = W^(L) x̃^(L) + b^(L)`, so

`(1/2N) Σ |A(x_j^(L)) − y_j|² = (1/2N) Σ |x̃_j^(L) − ȳ_j|²_G`,
`G = (W_o W^(L))ᵀ (W_o W^(L))`, `ȳ = (W_o W^(L))^{-1} (y − W_o b^(L) − b_o)`.

For an adapted net `(W^(L))^{-1} b^(L) = −Rᵀ θ^(L)`, so the pulled-back targets move with
the last layer's thresholds and scales (and with `W_o`, `b_o`) while training runs.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._custom_types import Array
from .._linalg import matmul, orthonormal_columns, solve
from .._random import standard_normal
from .._validate import (
    check_finite,
    check_orthogonal,
    check_positive,
    check_shape,
    float_array,
    is_concrete,
)
from .cost import check_data
from .data import Dataset
from .input_space import input_layer, thresholds
from .network import AbstractReLUNet, AdaptedReLUNet


class OutputLayer(eqx.Module):
    """`A(z) = weight @ z + bias`, `weight` `(M, M)` invertible, `bias` `(M,)`."""

    weight: jax.Array
    bias: jax.Array

    def __init__(self, weight, bias):
        weight = float_array("weight", weight, ndim=2)
        width = weight.shape[0]
        check_shape("weight", weight, (width, width), "M, M")
        bias = float_array("bias", bias, ndim=1)
        check_shape("bias", bias, (width,), "M")
        check_finite("weight", weight)
        check_finite("bias", bias)
        if is_concrete(weight):
            condition = float(np.linalg.cond(np.asarray(weight, np.float64)))
            limit = 1.0 / (1e3 * float(jnp.finfo(weight.dtype).eps))
            if not condition < limit:
                raise ValueError(
                    f"the output layer's `weight` is singular or nearly so (condition number "
                    f"{condition:.3g} >= {limit:.3g}); the pulled-back targets need its inverse. "
                    "Draw it with OutputLayer.random(key, width, condition=...) or regularise it."
                )
        dtype = jnp.result_type(weight, bias)
        self.weight, self.bias = weight.astype(dtype), bias.astype(dtype)

    @classmethod
    def random(cls, key, width: int, *, condition: float | Array = 1.0, dtype=None) -> "OutputLayer":
        """`U diag(σ) Vᵀ` with Haar `U`, `V` and singular values `σ` log-spaced over
        `[condition^{-1/2}, condition^{1/2}]` (condition number `condition`, geometric mean
        1); zero bias. `condition = 1` gives an orthogonal matrix."""
        if not (isinstance(condition, (int, float)) and np.isfinite(condition) and condition >= 1):
            raise ValueError(
                f"`condition` (of the output layer) must be a finite number >= 1, got {condition!r}; "
                "1 is an orthogonal layer, larger values a more distorting one."
            )
        dtype = jnp.zeros((), dtype).dtype if dtype is not None else jnp.result_type(float)
        ku, kv = jax.random.split(key)
        u = orthonormal_columns(standard_normal(ku, (width, width), dtype))
        v = orthonormal_columns(standard_normal(kv, (width, width), dtype))
        sigma = jnp.asarray(condition, dtype) ** jnp.linspace(0.5, -0.5, width, dtype=dtype)
        return cls(weight=matmul(u * sigma[None], v.T), bias=jnp.zeros(width, dtype))

    def __call__(self, z):
        return matmul(z, self.weight.T) + self.bias.reshape((1,) * (z.ndim - 1) + self.bias.shape)


class AdaptedOutputLayer(eqx.Module):
    r"""An output layer adapted to a frame, as the hidden layers are (docs/theory.md §9):
    `A(z) = Q D_o z + b_o`, `Q` `(M, M)` a fixed orthogonal matrix (the output frame),
    `D_o = diag(scales)`, `scales > 0`, `bias` `(M,)`.

    Only `scales` and `bias` are parameters: `Q` is read through `lax.stop_gradient`, so
    gradients never move it. The usual cost after it splits into M coordinate problems
    (`usual_coordinate_costs`). Positivity, orthogonality and finiteness are checked on
    concrete arrays.
    """

    frame: jax.Array
    scales: jax.Array
    bias: jax.Array

    def __init__(self, frame, scales, bias):
        frame = float_array("frame", frame, ndim=2)
        width = frame.shape[0]
        check_shape("frame", frame, (width, width), "M, M")
        scales = float_array("scales", scales, ndim=1)
        check_shape("scales", scales, (width,), "M")
        bias = float_array("bias", bias, ndim=1)
        check_shape("bias", bias, (width,), "M")
        for name, array in (("frame", frame), ("scales", scales), ("bias", bias)):
            check_finite(name, array)
        check_positive("scales", scales)
        check_orthogonal("frame", frame)
        dtype = jnp.result_type(frame, scales, bias)
        self.frame, self.scales, self.bias = (a.astype(dtype) for a in (frame, scales, bias))

    @classmethod
    def random(
        cls,
        key,
        width: int,
        *,
        scale_spread: float | Array = 0.1,
        bias_scale: float | Array = 0.1,
        dtype=None,
    ) -> "AdaptedOutputLayer":
        """Haar `Q`, scales `exp(scale_spread z)`, bias `bias_scale z` (z standard normal),
        as `AdaptedReLUNet.random` draws the hidden layers."""
        if is_concrete(scale_spread, bias_scale) and (scale_spread < 0 or bias_scale < 0):
            raise ValueError("`scale_spread` and `bias_scale` must be >= 0.")
        dtype = jnp.zeros((), dtype).dtype if dtype is not None else jnp.result_type(float)
        kq, ks, kb = jax.random.split(key, 3)
        frame = orthonormal_columns(standard_normal(kq, (width, width), dtype))
        scales = jnp.exp(scale_spread * standard_normal(ks, (width,), dtype))
        return cls(frame, scales, bias_scale * standard_normal(kb, (width,), dtype))

    @property
    def fixed_frame(self) -> jax.Array:
        """`Q`, with gradients stopped (it is not a trainable parameter)."""
        return jax.lax.stop_gradient(self.frame)

    @property
    def weight(self) -> jax.Array:
        """`W_o = Q D_o`."""
        return self.fixed_frame * self.scales[None]

    @property
    def offsets(self) -> jax.Array:
        """`β = Qᵀ b_o`, the bias in the output frame `(M,)`."""
        return matmul(self.fixed_frame.T, self.bias)

    def __call__(self, z):
        return matmul(z, self.weight.T) + self.bias.reshape((1,) * (z.ndim - 1) + self.bias.shape)

    def to_general(self) -> OutputLayer:
        """The same layer as a general `OutputLayer` (its full weight trains)."""
        return OutputLayer(self.weight, self.bias)


def output_frame_departure(weight, frame) -> jax.Array:
    """`‖Qᵀ W_o − diag(Qᵀ W_o)‖_F / ‖diag(Qᵀ W_o)‖`: how far `W_o` is from the adapted family
    `Q D_o` of the output frame `Q` (0 on it)."""
    in_frame = matmul(frame.T, weight)
    diagonal = jnp.diagonal(in_frame)
    return jnp.linalg.norm(in_frame - jnp.diag(diagonal)) / jnp.linalg.norm(diagonal)


def usual_coordinate_costs(net: AdaptedReLUNet, layer: AdaptedOutputLayer, data: Dataset) -> jax.Array:
    r"""The split $C = \sum_k C_k$ of the usual cost after an adapted output layer
    (docs/theory.md §9): $C_k = \frac{1}{2N}\sum_j (a_k m_{jk} + c_k - w_{jk})^2$ with
    $m_{jk} = \max(u_{jk}, \theta^*_k)$, $a = d_o D^{(L)}$, $c = \beta - a\theta^{(L)}$,
    $u = Rx$, $w = Q^T y$. Shape `(M,)`; the dataset's targets are output-space targets."""
    check_data(net, data)
    check_adapted_output(layer, net.width)
    theta, scales = thresholds(net)
    u = matmul(data.x, net.fixed_frame.T)
    w = matmul(data.point_targets(), layer.fixed_frame)
    slope = layer.scales * scales[-1]
    residual = slope[None] * (jnp.maximum(u, jnp.max(theta, axis=0)[None]) - theta[-1][None])
    residual = residual + layer.offsets[None] - w
    return 0.5 * jnp.mean(residual**2, axis=0)


def check_adapted_output(layer, width: int) -> None:
    """Rejects anything but an `AdaptedOutputLayer` of the net's width."""
    if not isinstance(layer, AdaptedOutputLayer):
        raise ValueError(
            f"the usual cost's effective flow needs an AdaptedOutputLayer (weight Q diag(d_o), Q "
            f"orthogonal, d_o > 0), got {type(layer).__name__}. Build one with "
            "AdaptedOutputLayer(frame=Q, scales=d_o, bias=b_o) or AdaptedOutputLayer.random(key, M); "
            "a general OutputLayer couples the coordinates and has no such flow."
        )
    if layer.bias.shape != (width,):
        raise ValueError(
            f"the output layer has width {layer.bias.shape[0]} but the network has width {width}; "
            "they must match."
        )


def output_cost(net: AbstractReLUNet, layer: "OutputLayer | AdaptedOutputLayer", data: Dataset) -> jax.Array:
    """The usual cost `(1/2N) Σ |A(x_j^(L)) − y_j|²` from the forward pass; the dataset's
    targets are output-space targets `y_q`."""
    check_data(net, data)
    outputs = layer(net.hidden_layers(data.x)[-1])
    return 0.5 * jnp.mean(jnp.sum((outputs - data.point_targets()) ** 2, axis=-1))


def pulled_back(
    net: AbstractReLUNet, layer: "OutputLayer | AdaptedOutputLayer", data: Dataset
) -> tuple[jax.Array, jax.Array]:
    """`(G, ȳ)`: the metric `(W_o W^(L))ᵀ(W_o W^(L))` `(M, M)` and the class targets
    pulled back to the input layer, `(W_o W^(L))^{-1}(y_q − W_o b^(L) − b_o)` `(Q, M)`."""
    w_cum, b_cum = net.cumulative()
    total = matmul(layer.weight, w_cum[-1])
    shifted = data.targets - (matmul(layer.weight, b_cum[-1]) + layer.bias)[None]
    return matmul(total.T, total), solve(total, shifted.T).T


def metric_cost(net: AbstractReLUNet, data: Dataset, metric) -> jax.Array:
    """The input-layer cost in the metric `G`: `(1/2N) Σ (x̃_j − ȳ_j)ᵀ G (x̃_j − ȳ_j)`,
    `ȳ` the dataset's (input-space) targets."""
    check_data(net, data)
    gap = input_layer(net, data.x) - data.point_targets()
    return 0.5 * jnp.mean(jnp.sum(gap * matmul(gap, metric.T), axis=-1))
