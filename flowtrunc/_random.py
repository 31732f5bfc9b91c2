"""Random draws that mean the same at every precision."""

import jax
import jax.numpy as jnp


def standard_normal(key, shape, dtype) -> jax.Array:
    """Standard normal variates drawn in float32 and cast to `dtype`: one key gives the
    same numbers (to float32 rounding) in float32 and float64, so a seed is one problem at
    either precision (JAX draws different numbers for different dtypes)."""
    return jax.random.normal(key, shape, jnp.float32).astype(dtype)
