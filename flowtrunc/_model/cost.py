r"""The Euclidean cost in the input layer, $C = \frac{1}{2N}\sum_j |\tilde x_j^{(L)} - \bar y_j|^2$."""

import jax.numpy as jnp

from .._custom_types import Array, Float
from .._linalg import matmul
from .data import Dataset
from .input_space import input_layer, thresholds
from .network import AbstractReLUNet, AdaptedReLUNet


def check_data(net: AbstractReLUNet, data: Dataset) -> None:
    """Rejects a dataset that is not a `Dataset` or whose width differs from the net's."""
    if not isinstance(data, Dataset):
        raise ValueError(
            f"`data` must be a flowtrunc.Dataset, got {type(data)}; build one with "
            "`Dataset(x=..., labels=...)` or `load_npz`."
        )
    if data.width != net.width:
        raise ValueError(
            f"`data` has dimension M = {data.width} but the network has width {net.width}; they must match."
        )


def input_cost(net: AbstractReLUNet, data: Dataset, *, method: str = "closed_form"):
    """The input-layer cost of `net` on `data` (a scalar). `method` as in `input_layer`:
    `"forward"` computes it from the real forward pass."""
    check_data(net, data)
    residual = input_layer(net, data.x, method=method) - data.point_targets()
    return 0.5 * jnp.mean(jnp.sum(residual**2, axis=-1))


def coordinate_costs(net: AdaptedReLUNet, data: Dataset) -> Float[Array, " width"]:
    r"""The split $C = \sum_k C_k$ in frame coordinates,
    $C_k = \frac{1}{2N}\sum_j (\max(u_{jk}, \theta^*_k) - v_{jk})^2$, shape `(M,)`."""
    check_data(net, data)
    theta, _ = thresholds(net)
    frame = net.fixed_frame
    u, v = matmul(data.x, frame.T), matmul(data.point_targets(), frame.T)
    return 0.5 * jnp.mean((jnp.maximum(u, jnp.max(theta, axis=0)[None]) - v) ** 2, axis=0)
