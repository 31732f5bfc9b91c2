"""Shared test helpers: comparisons and small problem builders."""

import jax
import jax.numpy as jnp
import numpy as np

import flowtrunc as ft


def tree_allclose(a, b, *, rtol=1e-12, atol=1e-12) -> bool:
    leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
    return len(leaves_a) == len(leaves_b) and all(
        np.allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)
        for x, y in zip(leaves_a, leaves_b)
    )


def random_general_net(key, depth, width, dtype=jnp.float64) -> ft.ReLUNet:
    """Well-conditioned random weights: identity plus a small Gaussian perturbation."""
    kw, kb = jax.random.split(key)
    noise = jax.random.normal(kw, (depth, width, width), dtype) / width**0.5
    weights = jnp.eye(width, dtype=dtype)[None] + 0.5 * noise
    biases = 0.3 * jax.random.normal(kb, (depth, width), dtype)
    return ft.ReLUNet(weights=weights, biases=biases)


def random_adapted_net(key, depth, width, *, bias_scale=0.5, dtype=jnp.float64):
    return ft.AdaptedReLUNet.random(
        key, depth, width, scale_spread=0.3, bias_scale=bias_scale, dtype=dtype
    )
