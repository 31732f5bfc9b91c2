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

from .._linalg import matmul, orthonormal_columns, solve
from .._random import standard_normal
from .._validate import check_finite, check_shape, float_array, is_concrete
from .cost import check_data
from .data import Dataset
from .input_space import input_layer
from .network import AbstractReLUNet


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
    def random(cls, key, width: int, *, condition: float = 1.0, dtype=None) -> "OutputLayer":
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


def output_cost(net: AbstractReLUNet, layer: OutputLayer, data: Dataset) -> jax.Array:
    """The usual cost `(1/2N) Σ |A(x_j^(L)) − y_j|²` from the forward pass; the dataset's
    targets are output-space targets `y_q`."""
    check_data(net, data)
    outputs = layer(net.hidden_layers(data.x)[-1])
    return 0.5 * jnp.mean(jnp.sum((outputs - data.point_targets()) ** 2, axis=-1))


def pulled_back(net: AbstractReLUNet, layer: OutputLayer, data: Dataset) -> tuple[jax.Array, jax.Array]:
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
