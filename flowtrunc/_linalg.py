"""Matrix products at the precision of their inputs on every device."""

import jax.numpy as jnp
from jax import lax


def matmul(a, b):
    """`a @ b` at full precision: on GPUs JAX multiplies float32 matrices in TF32 (about
    three decimal digits) unless told otherwise, which moves thresholds by ~1e-3."""
    return jnp.matmul(a, b, precision=lax.Precision.HIGHEST)
