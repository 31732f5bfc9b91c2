"""ReLU networks of constant width: general, and adapted to the activation coordinates.

References: T. Chen, arXiv:2501.07400 (2025), section 2; Chen and Muñoz Ewald,
arXiv:2309.10370.
"""

import abc

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import lax

from .._custom_types import Array, ArrayLike, Float, PRNGKeyArray
from .._linalg import matmul, orthonormal_columns
from .._random import standard_normal
from .._validate import (
    check_finite,
    check_orthogonal,
    check_positive,
    check_positive_int,
    check_prng_key,
    check_shape,
    float_array,
    is_concrete,
)


class AbstractReLUNet(eqx.Module):
    """A ReLU network `x^(l) = relu(W_l x^(l-1) + b_l)` with `L` hidden layers of width `M`."""

    @property
    @abc.abstractmethod
    def depth(self) -> int: ...

    @property
    @abc.abstractmethod
    def width(self) -> int: ...

    @abc.abstractmethod
    def layer_weights(self) -> Float[Array, "depth width width"]:
        """The layer matrices `W_l`, shape `(L, M, M)`."""

    @abc.abstractmethod
    def cumulative(
        self,
    ) -> tuple[Float[Array, "depth width width"], Float[Array, "depth width"]]:
        """The cumulative parameters `(W^(l), b^(l))`, shapes `(L, M, M)` and `(L, M)`."""

    def hidden_layers(self, x: ArrayLike) -> Float[Array, "depth *batch width"]:
        """Every hidden layer `x^(l)`, l = 1..L, of the real forward pass."""
        x = float_array("x", x)
        if x.shape[-1] != self.width:
            raise ValueError(f"`x` has {x.shape[-1]} features but the network has width {self.width}.")

        def step(h, wb):
            weight, bias = wb
            h = jax.nn.relu(matmul(h, weight.T) + bias[None])
            return h, h

        flat = x.reshape(-1, self.width).astype(jnp.result_type(x, self.biases))
        _, layers = lax.scan(step, flat, (self.layer_weights(), self.biases))
        return layers.reshape((self.depth,) + x.shape)

    def __call__(self, x: ArrayLike) -> Float[Array, "*batch width"]:
        """The last hidden layer `x^(L)` for inputs of shape `(N, M)` or `(M,)`."""
        return self.hidden_layers(x)[-1]


def _check_depth_width(weights_shape, biases, weights_name: str):
    if biases.ndim != 2:
        raise ValueError(f"`biases` must have shape (L, M), got {biases.shape}.")
    depth, width = biases.shape
    if depth < 1 or width < 1:
        raise ValueError(f"`biases` must have at least one layer and one unit, got {biases.shape}.")
    if weights_shape[0] != depth:
        raise ValueError(
            f"`{weights_name}` has {weights_shape[0]} layers but `biases` has {depth}; "
            "give one row of biases per layer."
        )
    return depth, width


class ReLUNet(AbstractReLUNet):
    """A general ReLU network with square weights.

    **Arguments:**

    - `weights`: `(L, M, M)`, the layer matrices `W_l` (invertible where input-space maps
      are asked for).
    - `biases`: `(L, M)`, the layer biases `b_l`.
    """

    weights: Float[Array, "depth width width"]
    biases: Float[Array, "depth width"]

    def __init__(self, weights, biases):
        weights = float_array("weights", weights, ndim=3)
        biases = float_array("biases", biases, ndim=2)
        depth, width = _check_depth_width(weights.shape, biases, "weights")
        check_shape("weights", weights, (depth, width, width), "L, M, M")
        check_finite("weights", weights)
        check_finite("biases", biases)
        dtype = jnp.result_type(weights, biases)
        self.weights = weights.astype(dtype)
        self.biases = biases.astype(dtype)

    @property
    def depth(self) -> int:
        return self.biases.shape[0]

    @property
    def width(self) -> int:
        return self.biases.shape[1]

    def layer_weights(self):
        return self.weights

    def cumulative(self):
        def step(carry, wb):
            w_cum, b_cum = carry
            weight, bias = wb
            carry = (matmul(weight, w_cum), matmul(weight, b_cum) + bias)
            return carry, carry

        eye = jnp.eye(self.width, dtype=self.weights.dtype)
        zero = jnp.zeros(self.width, self.biases.dtype)
        _, (w_cum, b_cum) = lax.scan(step, (eye, zero), (self.weights, self.biases))
        return w_cum, b_cum


class AdaptedReLUNet(AbstractReLUNet):
    r"""A ReLU network adapted to the activation coordinate system (docs/theory.md §2):
    $W_1 = D_1 R$ and $W_\ell = D_\ell$ for $\ell \ge 2$, with $D_\ell = \mathrm{diag}(d_\ell)$,
    $d_\ell > 0$, and $R$ a fixed orthogonal frame. Then every cumulative weight is
    $W^{(\ell)} = D^{(\ell)} R$ with $D^{(\ell)} = D_\ell \cdots D_1$.

    The structure holds by construction: only `scales` and `biases` are parameters; the
    frame is read through `lax.stop_gradient`, so gradients never move it.

    **Arguments:**

    - `frame`: `(M, M)` orthogonal matrix $R$.
    - `scales`: `(L, M)` positive diagonal entries $d_\ell$ (the per-layer factors, not
      the cumulative products).
    - `biases`: `(L, M)` layer biases $b_\ell$.

    Positivity, orthogonality and finiteness are checked on concrete arrays; inside `jit`
    or `vmap` the arrays are accepted as given (the solvers report bad seeds).
    """

    frame: Float[Array, "width width"]
    scales: Float[Array, "depth width"]
    biases: Float[Array, "depth width"]

    def __init__(self, frame, scales, biases):
        frame = float_array("frame", frame, ndim=2)
        scales = float_array("scales", scales, ndim=2)
        biases = float_array("biases", biases, ndim=2)
        depth, width = _check_depth_width(scales.shape, biases, "scales")
        check_shape("scales", scales, (depth, width), "L, M")
        check_shape("frame", frame, (width, width), "M, M")
        for name, array in (("frame", frame), ("scales", scales), ("biases", biases)):
            check_finite(name, array)
        check_positive("scales", scales)
        check_orthogonal("frame", frame)
        dtype = jnp.result_type(frame, scales, biases)
        self.frame = frame.astype(dtype)
        self.scales = scales.astype(dtype)
        self.biases = biases.astype(dtype)

    @classmethod
    def random(
        cls,
        key: PRNGKeyArray,
        depth: int,
        width: int,
        *,
        scale_spread: float | Array = 0.1,
        bias_scale: float | Array = 0.1,
        dtype=None,
    ) -> "AdaptedReLUNet":
        """Draws a random adapted network.

        - frame: Haar-distributed on O(M) (the Q of a standard Gaussian matrix's QR
          factorisation with R's diagonal positive);
        - scales: `exp(scale_spread * z)`, z standard normal (log-normal around 1);
        - biases: `bias_scale * z`, z standard normal.
        """
        check_prng_key("key", key)
        check_positive_int("depth", depth)
        check_positive_int("width", width)
        if is_concrete(scale_spread, bias_scale) and (scale_spread < 0 or bias_scale < 0):
            raise ValueError("`scale_spread` and `bias_scale` must be >= 0.")
        dtype = jnp.zeros((), dtype).dtype if dtype is not None else jnp.result_type(float)
        kf, ks, kb = jax.random.split(key, 3)
        gauss = standard_normal(kf, (width, width), dtype)
        frame = orthonormal_columns(gauss)
        scales = jnp.exp(scale_spread * standard_normal(ks, (depth, width), dtype))
        biases = bias_scale * standard_normal(kb, (depth, width), dtype)
        return cls(frame=frame, scales=scales, biases=biases)

    @property
    def depth(self) -> int:
        return self.scales.shape[0]

    @property
    def width(self) -> int:
        return self.scales.shape[1]

    @property
    def fixed_frame(self) -> Float[Array, "width width"]:
        """The frame `R`, with gradients stopped (it is not a trainable parameter)."""
        return lax.stop_gradient(self.frame)

    def cumulative_scales(self) -> Float[Array, "depth width"]:
        """Diagonals of `D^(l) = D_l ... D_1`, shape `(L, M)`."""
        return jnp.cumprod(self.scales, axis=0)

    def layer_weights(self):
        first = self.scales[0][:, None] * self.fixed_frame
        rest = jax.vmap(jnp.diag)(self.scales[1:])
        return jnp.concatenate([first[None], rest], axis=0)

    def cumulative(self):
        cum_scales = self.cumulative_scales()
        weights = cum_scales[:, :, None] * self.fixed_frame[None]
        # b^(l) = D^(l) * sum_{n<=l} b_n / D^(n)
        biases = cum_scales * jnp.cumsum(self.biases / cum_scales, axis=0)
        return weights, biases

    def to_general(self) -> ReLUNet:
        """The same network as a general `ReLUNet` with full weight matrices."""
        return ReLUNet(weights=self.layer_weights(), biases=self.biases)
