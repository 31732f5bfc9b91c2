r"""The network seen in input space: cumulative parameters and truncation maps.

With $W^{(\ell)} = W_\ell W^{(\ell-1)}$, $b^{(\ell)} = W_\ell b^{(\ell-1)} + b_\ell$ and
$\tau_{W,b}(x) = W^{-1}(\sigma(Wx + b) - b)$, every hidden layer satisfies
$x^{(\ell)} = W^{(\ell)} \tilde x^{(\ell)} + b^{(\ell)}$ with
$\tilde x^{(\ell)} = \tau_{W^{(\ell)}, b^{(\ell)}}(\tilde x^{(\ell-1)})$ (docs/theory.md).

References: T. Chen, arXiv:2501.07400, section 2.
"""

import jax.numpy as jnp
from jax import lax

from .._custom_types import Array, ArrayLike, Float
from .._linalg import matmul, solve
from .._validate import check_finite, check_invertible, float_array
from .network import AbstractReLUNet, AdaptedReLUNet


def _check_net(net) -> None:
    if not isinstance(net, AbstractReLUNet):
        raise ValueError(f"`net` must be a flowtrunc.ReLUNet or flowtrunc.AdaptedReLUNet, got {type(net)}.")


def _check_inputs(x, width: int, name: str = "x"):
    x = float_array(name, x)
    if x.ndim not in (1, 2) or x.shape[-1] != width:
        raise ValueError(
            f"`{name}` must have shape (N, {width}) or ({width},) to match the network width, got {x.shape}."
        )
    check_finite(name, x)
    return x


def cumulative(
    net: AbstractReLUNet,
) -> tuple[Float[Array, "depth width width"], Float[Array, "depth width"]]:
    """The cumulative weights `W^(l)` `(L, M, M)` and biases `b^(l)` `(L, M)` of `net`."""
    _check_net(net)
    return net.cumulative()


def truncation_map(
    weights: ArrayLike,
    biases: ArrayLike,
    x: ArrayLike,
) -> Float[Array, "*batch width"]:
    r"""$\tau_{W,b}(x) = W^{-1}(\mathrm{relu}(Wx + b) - b)$ for `x` of shape `(N, M)` or `(M,)`.

    `weights` must be square and invertible.
    """
    weights = float_array("weights", weights, ndim=2)
    biases = float_array("biases", biases, ndim=1)
    width = biases.shape[0]
    if weights.shape != (width, width):
        raise ValueError(
            f"`weights` must have shape (M, M) = ({width}, {width}) to match `biases`, got {weights.shape}."
        )
    check_finite("weights", weights)
    check_finite("biases", biases)
    check_invertible("weights", weights)
    x = _check_inputs(x, width)
    return _truncate(weights, biases, x.reshape(-1, width)).reshape(x.shape)


def _truncate(weights, biases, x):
    """The truncation map on a batch `(N, M)`, without validation."""
    activated = jnp.maximum(matmul(x, weights.T) + biases[None], 0.0) - biases[None]
    return solve(weights, activated.T).T


def thresholds(
    net: AdaptedReLUNet,
) -> tuple[Float[Array, "depth width"], Float[Array, "depth width"]]:
    r"""Thresholds $\theta^{(\ell)} = -(D^{(\ell)})^{-1} b^{(\ell)}$ and cumulative scales
    $D^{(\ell)}$ of an adapted network, each `(L, M)`.

    In frame coordinates $u = Rx$, layer $\ell$ maps coordinate $k$ to
    $\max(u_k, \theta^{(1)}_k, \dots, \theta^{(\ell)}_k)$.
    """
    if not isinstance(net, AdaptedReLUNet):
        raise ValueError(
            "`thresholds` needs an AdaptedReLUNet (weights D_1 R, D_2, ...); a general "
            "ReLUNet has no per-coordinate thresholds. Use `input_layer` for general nets."
        )
    cum_scales = net.cumulative_scales()
    # theta^(l) = -sum_{n<=l} b_n / D^(n)
    return -jnp.cumsum(net.biases / cum_scales, axis=0), cum_scales


def _resolve_layer(layer, depth: int) -> int:
    if layer is None:
        return depth
    if not isinstance(layer, int) or isinstance(layer, bool) or not 0 <= layer <= depth:
        raise ValueError(f"`layer` must be an int in 0..{depth} (0 is the input), got {layer!r}.")
    return layer


def input_layer(
    net: AbstractReLUNet,
    x: ArrayLike,
    layer: int | None = None,
    *,
    method: str = "closed_form",
) -> Float[Array, "*batch width"]:
    r"""Hidden layer `layer` seen in input space, $\tilde x^{(\ell)}$ (default: the last).

    **Arguments:**

    - `net`: a `ReLUNet` or `AdaptedReLUNet`.
    - `x`: inputs `(N, M)` or `(M,)`.
    - `layer`: 0..L; 0 returns `x`.
    - `method`: `"closed_form"` uses $R^T\max(Rx, \theta^{(1)}, \dots)$ for adapted nets
      and the composition of truncation maps for general ones; `"compose"` always
      composes truncation maps; `"forward"` runs the real forward pass and maps back,
      $\tilde x^{(\ell)} = (W^{(\ell)})^{-1}(x^{(\ell)} - b^{(\ell)})$.
    """
    _check_net(net)
    x = _check_inputs(x, net.width)
    layer = _resolve_layer(layer, net.depth)
    if method not in ("closed_form", "compose", "forward"):
        raise ValueError(f"`method` must be 'closed_form', 'compose' or 'forward', got {method!r}.")
    if layer == 0:
        return x
    flat = x.reshape(-1, net.width).astype(jnp.result_type(x, net.biases))
    if method == "closed_form" and isinstance(net, AdaptedReLUNet):
        theta, _ = thresholds(net)
        active = jnp.max(theta[:layer], axis=0)
        frame = net.fixed_frame
        return matmul(jnp.maximum(matmul(flat, frame.T), active[None]), frame).reshape(x.shape)
    w_cum, b_cum = net.cumulative()
    check_invertible("cumulative weights", w_cum[:layer])
    if method == "forward":
        hidden = net.hidden_layers(flat)[layer - 1] - b_cum[layer - 1][None]
        return solve(w_cum[layer - 1], hidden.T).T.reshape(x.shape)

    def step(xt, wb):
        return _truncate(*wb, xt), None

    xt, _ = lax.scan(step, flat, (w_cum[:layer], b_cum[:layer]))
    return xt.reshape(x.shape)
