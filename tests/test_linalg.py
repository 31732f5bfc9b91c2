"""The LAPACK-free factorisations of the traced programs, against NumPy's LAPACK, and the
CPU thread-pool deadlock they avoid (docs/upstream/).

Error models (backward-stable algorithms, unit round-off eps, size M): a solve's or an
orthogonal factor's forward error is at most c·M·eps·κ(a) relative, a symmetric
eigenvalue's at most c·M·eps·‖a‖₂ absolute (Weyl); c = 8 covers the constants of both
ours and LAPACK's (the difference of two such results is within twice the bound)."""

import os
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from flowtrunc.internal import orthonormal_columns, polar_factor, solve, symmetric_eigen

EPS = np.finfo(np.float64).eps
SIZES = (1, 2, 7, 64)


def _matrix(size, seed=0):
    return np.random.default_rng(seed).normal(size=(size, size))


@pytest.mark.parametrize("size", SIZES)
def test_solve_matches_lapack(size):
    a, b = _matrix(size), np.random.default_rng(1).normal(size=(size, 3))
    expected = np.linalg.solve(a, b)
    bound = 16 * size * EPS * np.linalg.cond(a) * np.max(np.abs(expected))
    np.testing.assert_allclose(solve(jnp.asarray(a), jnp.asarray(b)), expected, rtol=0, atol=bound)
    np.testing.assert_allclose(
        solve(jnp.asarray(a), jnp.asarray(b[:, 0])), expected[:, 0], rtol=0, atol=bound
    )


@pytest.mark.parametrize("size", SIZES)
def test_orthogonal_factors_match_lapack(size):
    a = _matrix(size, 2)
    q, r = np.linalg.qr(a)
    q = q * np.sign(np.diag(r))[None]  # the factor with R's diagonal positive
    u, _, vt = np.linalg.svd(a)
    bound = 16 * size * EPS * np.linalg.cond(a)
    ours = np.asarray(orthonormal_columns(jnp.asarray(a)))
    np.testing.assert_allclose(ours, q, rtol=0, atol=bound)
    np.testing.assert_allclose(ours.T @ ours, np.eye(size), rtol=0, atol=16 * size * EPS)
    np.testing.assert_allclose(polar_factor(jnp.asarray(a)), u @ vt, rtol=0, atol=bound)


@pytest.mark.parametrize("size", SIZES)
def test_symmetric_eigen_matches_lapack(size):
    a = _matrix(size, 3)
    symmetric = a @ a.T + np.diag(np.arange(size))  # positive definite, distinct scales
    values, vectors = (np.asarray(v) for v in symmetric_eigen(jnp.asarray(symmetric)))
    norm = np.linalg.norm(symmetric, 2)
    np.testing.assert_allclose(values, np.linalg.eigvalsh(symmetric), rtol=0, atol=16 * size * EPS * norm)
    np.testing.assert_allclose(
        symmetric @ vectors, vectors * values[None], rtol=0, atol=16 * size * EPS * norm
    )
    np.testing.assert_allclose(vectors.T @ vectors, np.eye(size), rtol=0, atol=16 * size * EPS)


def test_solve_gradients_match_jnp_linalg():
    a, b = jnp.asarray(_matrix(5, 4)), jnp.asarray(np.random.default_rng(5).normal(size=5))
    ours = jax.grad(lambda a, b: jnp.sum(jnp.sin(solve(a, b))), argnums=(0, 1))(a, b)
    theirs = jax.grad(lambda a, b: jnp.sum(jnp.sin(jnp.linalg.solve(a, b))), argnums=(0, 1))(a, b)
    # the gradient involves two solves with a (and aᵀ): error κ² times the solve's model
    bound = 64 * 5 * EPS * np.linalg.cond(np.asarray(a)) ** 2
    for x, y in zip(ours, theirs):
        np.testing.assert_allclose(x, y, rtol=0, atol=bound * np.max(np.abs(y)))


def test_batched_float32_under_jit():
    a = jnp.asarray(np.stack([_matrix(3, s) for s in range(4)]), jnp.float32)
    b = jnp.ones((4, 3), jnp.float32)
    x = jax.jit(jax.vmap(solve))(a, b)
    assert x.dtype == jnp.float32
    expected = np.linalg.solve(np.asarray(a, np.float64), np.ones((4, 3, 1)))[..., 0]
    cond = max(np.linalg.cond(np.asarray(m, np.float64)) for m in a)
    eps32 = np.finfo(np.float32).eps
    np.testing.assert_allclose(x, expected, rtol=0, atol=16 * 3 * eps32 * cond * np.max(np.abs(expected)))


@pytest.mark.parametrize(
    "settings",
    [dict(), dict(cost="output"), dict(mode="unconstrained", off_adapted=0.1)],
    ids=["default", "output-cost", "off-adapted"],
)
def test_the_compiled_comparison_calls_no_lapack_kernel(settings):
    """Batched LAPACK kernels deadlock XLA's CPU thread pool in jaxlib 0.10 (the run that
    hung on 64-dimensional data): none may appear in the comparison program."""
    from flowtrunc import CompareConfig
    from flowtrunc.internal import compare_batch, split_values

    config = CompareConfig(
        seeds=2, chunk_size=2, dim=8, points=12, clusters=2, depth=2, t1=1.0, saves=5, **settings
    )
    text = compare_batch.lower(
        jnp.arange(2, dtype=jnp.int32), *split_values(config.on_device()), None
    ).as_text()
    calls = set(re.findall(r"custom_call @(\w+)", text))
    assert not {call for call in calls if "lapack" in call}, calls


@pytest.mark.slow
def test_the_deadlocking_program_finishes_with_our_solve():
    """The reproducer of docs/upstream/ through flowtrunc's solve ends (under a timeout:
    the LAPACK version hangs on every try on a 2-core CPU)."""
    script = os.path.join(os.path.dirname(__file__), "..", "docs", "upstream", "lapack_pool_deadlock.py")
    done = subprocess.run([sys.executable, script, "--pure"], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and "done" in done.stdout, done.stderr[-2000:]
