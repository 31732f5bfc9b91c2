"""Starting off the adapted family: a perturbed start and the adapted network nearest to it.

- `off_adapted(key, net, eps)`: the general network whose every weight matrix is the
  adapted one plus a random perturbation of relative Frobenius size `eps`,
  `W_l + eps ‖W_l‖_F Z_l / ‖Z_l‖_F` with `Z_l` standard Gaussian; biases unchanged.
- `off_adapted_output(key, layer, eps)`, `nearest_adapted_output(layer, frame)`: the same
  for an adapted output layer `Q D_o` (docs/theory.md §9): the perturbed general layer, and
  the adapted layer of frame `Q` nearest to a general one, `d_o = diag(Qᵀ W_o)`.
- `nearest_adapted(net)`: the adapted network the effective prediction starts from. The
  frame is the orthogonal polar factor of `W_1` (`W_1 = S R`, `S = (W_1 W_1ᵀ)^{1/2}`: the
  orthogonal matrix nearest to `W_1`), `d_1 = diag(W_1 Rᵀ) = diag(S)` (positive, S being
  positive definite), `d_l = diag(W_l)` for l ≥ 2 (the nearest diagonal matrices in the
  Frobenius norm), the biases kept. On an adapted network both steps are exact, so
  `nearest_adapted(net.to_general()) == net` up to round-off.
"""

import jax
import jax.numpy as jnp
import numpy as np

from .._linalg import matmul, polar_factor
from .._random import standard_normal
from .._validate import is_concrete
from .network import AdaptedReLUNet, ReLUNet
from .output_layer import AdaptedOutputLayer, OutputLayer


def off_adapted(key, net: AdaptedReLUNet, eps) -> ReLUNet:
    """`net`'s weights, each plus a random perturbation of relative Frobenius size `eps`."""
    if not isinstance(net, AdaptedReLUNet):
        raise ValueError(f"`off_adapted` perturbs an AdaptedReLUNet, got {type(net).__name__}.")
    _check_eps(eps)
    return ReLUNet(weights=_perturbed(key, net.layer_weights(), eps), biases=net.biases)


def off_adapted_output(key, layer: AdaptedOutputLayer, eps) -> OutputLayer:
    """The general output layer `Q D_o + eps ‖Q D_o‖_F Z/‖Z‖_F` (bias unchanged)."""
    if not isinstance(layer, AdaptedOutputLayer):
        raise ValueError(f"`off_adapted_output` perturbs an AdaptedOutputLayer, got {type(layer).__name__}.")
    _check_eps(eps)
    return OutputLayer(_perturbed(key, layer.weight[None], eps)[0], layer.bias)


def nearest_adapted_output(layer: OutputLayer, frame) -> AdaptedOutputLayer:
    """The adapted layer `Q diag(d_o)` of frame `Q` nearest to `layer`'s weight in the
    Frobenius norm, `d_o = diag(Qᵀ W_o)`, the bias kept. A `d_o <= 0` is an error on
    concrete inputs and NaN under `vmap` (no adapted layer of that frame is near)."""
    scales = jnp.diagonal(matmul(frame.T, layer.weight))
    if is_concrete(scales) and not bool(jnp.all(scales > 0)):
        raise ValueError(
            "the output weight has a diagonal entry <= 0 in its frame: no adapted output layer is "
            "near it. Lower the perturbation (`output_departure`, well below 1)."
        )
    scales = jnp.where(scales > 0, scales, jnp.nan)
    return AdaptedOutputLayer(frame, scales, layer.bias)


def _check_eps(eps) -> None:
    if is_concrete(eps) and not (np.isfinite(eps) and eps >= 0):
        raise ValueError(
            f"`eps` (the relative size of the perturbation) must be a finite number >= 0, got {eps!r}."
        )


def _perturbed(key, weights, eps):
    """`(L, M, M)` weights, each plus Gaussian noise of relative Frobenius size `eps`."""
    noise = standard_normal(key, weights.shape, weights.dtype)
    norm = lambda a: jnp.linalg.norm(a, axis=(1, 2), keepdims=True)  # noqa: E731
    return weights + eps * (norm(weights) / norm(noise)) * noise


def nearest_adapted(net: ReLUNet) -> AdaptedReLUNet:
    """The adapted network nearest to `net` (see the module docstring). Under `vmap` a
    layer l >= 2 with a diagonal entry <= 0 gives NaN scales (no adapted network is near);
    on concrete inputs it is an error."""
    weights = net.layer_weights()
    frame = polar_factor(weights[0])
    first = jnp.diagonal(matmul(weights[0], frame.T))
    rest = jnp.diagonal(weights[1:], axis1=1, axis2=2)
    scales = jnp.concatenate([first[None], rest], axis=0)
    if is_concrete(scales) and not bool(jnp.all(scales > 0)):
        raise ValueError(
            "the perturbed weights have a diagonal entry <= 0: no adapted network is near them. "
            "Lower `off_adapted` (relative size of the perturbation; well below 1)."
        )
    scales = jnp.where(scales > 0, scales, jnp.nan)
    return AdaptedReLUNet(frame=frame, scales=scales, biases=net.biases)


def family_distance(net: ReLUNet, adapted: AdaptedReLUNet) -> jax.Array:
    """Per layer, `‖W_l − Ŵ_l‖_F / ‖Ŵ_l‖_F` between `net` and the adapted `adapted`."""
    gap = net.layer_weights() - adapted.layer_weights()
    return jnp.linalg.norm(gap, axis=(1, 2)) / jnp.linalg.norm(adapted.layer_weights(), axis=(1, 2))
