"""Dense linear algebra for the traced programs, in plain XLA operations.

Matrix products run at the precision of their inputs on every device (`matmul`).

The factorisations (`solve`, `orthonormal_columns`, `symmetric_eigen`, `polar_factor`)
replace `jnp.linalg`'s LAPACK custom calls inside flowtrunc's compiled programs. On the
CPU, jaxlib 0.10 runs a batched LAPACK kernel (what `vmap` over seeds makes of every
factorisation) by splitting the batch over XLA's intra-op thread pool from a thread of that
same pool and waiting for the parts; when the program runs as many such kernels at once as
the pool has threads (two on a 2-core machine), every thread waits and none is left to do
the work: the comparison hung forever on 64-dimensional data (docs/upstream/, the
reproducer). The matrices here are M × M with M the data dimension (2 to a few hundred),
so loops of M small steps cost little next to the solves and training around them.
"""

import jax.numpy as jnp
import numpy as np
from jax import lax


def matmul(a, b):
    """`a @ b` at full precision: on GPUs JAX multiplies float32 matrices in TF32 (about
    three decimal digits) unless told otherwise, which moves thresholds by ~1e-3."""
    return jnp.matmul(a, b, precision=lax.Precision.HIGHEST)


def _eps(dtype):
    return float(jnp.finfo(dtype).eps)


# ---------------------------------------------------------------- LU with partial pivoting


def lu_factor(a):
    """`(lu, perm)` with `a[perm] = L U` (L unit lower, U upper, packed in `lu`): Gaussian
    elimination with partial pivoting, as LAPACK's getrf. A zero pivot (singular `a`) gives
    inf or NaN in the solves, as LAPACK's does."""
    size = a.shape[-1]
    rows = jnp.arange(size)

    def step(k, carry):
        lu, perm = carry
        pivot_row = jnp.argmax(jnp.where(rows >= k, jnp.abs(lu[:, k]), -1.0))
        swap = jnp.where(rows == k, pivot_row, jnp.where(rows == pivot_row, k, rows))
        lu, perm = lu[swap], perm[swap]
        pivot = lu[k, k]
        below = rows > k
        factors = jnp.where(below, lu[:, k] / jnp.where(pivot == 0, 1.0, pivot), 0.0)
        lu = lu - factors[:, None] * jnp.where(below, lu[k], 0.0)[None, :]
        lu = lu.at[:, k].set(jnp.where(below, factors, lu[:, k]))
        return lu, perm

    return lax.fori_loop(0, size, step, (a, rows))


def _substitute(matrix, b, *, lower, unit):
    """Solves `T x = b` for the triangle of `matrix` (`b` `(M, K)`)."""
    size = matrix.shape[-1]
    cols = jnp.arange(size)

    def step(i, x):
        row = i if lower else size - 1 - i
        known = (cols < row) if lower else (cols > row)
        value = b[row] - jnp.sum(jnp.where(known, matrix[row], 0.0)[:, None] * x, axis=0)
        return x.at[row].set(value if unit else value / matrix[row, row])

    return lax.fori_loop(0, size, step, jnp.zeros_like(b))


def lu_solve(lu, perm, b, *, transpose=False):
    """`a⁻¹ b` (or `a⁻ᵀ b`) from `lu_factor(a)`; `b` `(M,)` or `(M, K)`."""
    vector = b.ndim == 1
    b = b[:, None] if vector else b
    if transpose:  # aᵀ = Uᵀ Lᵀ P
        z = _substitute(lu.T, b, lower=True, unit=False)
        w = _substitute(lu.T, z, lower=False, unit=True)
        x = jnp.zeros_like(w).at[perm].set(w)
    else:
        y = _substitute(lu, b[perm], lower=True, unit=True)
        x = _substitute(lu, y, lower=False, unit=False)
    return x[:, 0] if vector else x


def solve(a, b):
    """`a⁻¹ b` for a square `a` `(M, M)` and `b` `(M,)` or `(M, K)`, differentiable in both
    (as `jnp.linalg.solve`: the factorisation is not differentiated, the linear solve is)."""
    lu, perm = lu_factor(lax.stop_gradient(a))
    return lax.custom_linear_solve(
        lambda x: matmul(a, x),
        b,
        solve=lambda _, rhs: lu_solve(lu, perm, rhs),
        transpose_solve=lambda _, rhs: lu_solve(lu, perm, rhs, transpose=True),
    )


# ---------------------------------------------------------------- orthogonal factors


def orthonormal_columns(a):
    """The Q of `a = Q R` with R's diagonal positive (unique for a nonsingular `a`):
    Gram–Schmidt, each column orthogonalised twice ("twice is enough", orthogonal to
    round-off)."""
    size = a.shape[-1]

    def step(j, q):
        v = a[:, j]
        for _ in range(2):
            v = v - matmul(q, matmul(q.T, v))  # columns >= j of q are still zero
        return q.at[:, j].set(v / jnp.linalg.norm(v))

    return lax.fori_loop(0, size, step, jnp.zeros_like(a))


def polar_factor(a):
    """The orthogonal factor U of `a = U P` (P symmetric positive definite; the orthogonal
    matrix nearest to `a` in Frobenius norm): Newton's iteration X ← (X + X⁻ᵀ)/2, which
    converges quadratically from any nonsingular `a` (each singular value σ → (σ + 1/σ)/2),
    stopped at round-off."""
    eps = _eps(a.dtype)
    identity = jnp.eye(a.shape[-1], dtype=a.dtype)

    def step(carry):
        x, _, count = carry
        lu, perm = lu_factor(x)
        new = 0.5 * (x + lu_solve(lu, perm, identity, transpose=True))
        return new, jnp.max(jnp.abs(new - x)), count + 1

    def going(carry):
        _, change, count = carry
        return (change > 8 * eps) & (count < 60)

    x, _, _ = lax.while_loop(going, step, (a, jnp.asarray(jnp.inf, a.dtype), 0))
    return x


# ---------------------------------------------------------------- symmetric eigenproblem


def symmetric_eigen(a):
    """`(eigenvalues, eigenvectors)` of a symmetric `a` `(M, M)`, ascending, by cyclic
    Jacobi rotations (each eigenvalue within a few eps·‖a‖ of the exact one), sweeps
    repeated until the off-diagonal part is below eps·‖a‖."""
    size = a.shape[-1]
    eps = _eps(a.dtype)
    vectors = jnp.eye(size, dtype=a.dtype)
    if size == 1:
        return jnp.diagonal(a), vectors
    p_index, q_index = (jnp.asarray(i) for i in np.triu_indices(size, 1))

    def rotate(k, carry):
        m, v = carry
        p, q = p_index[k], q_index[k]
        app, aqq, apq = m[p, p], m[q, q], m[p, q]
        zero = apq == 0
        theta = (aqq - app) / (2.0 * jnp.where(zero, 1.0, apq))
        t = jnp.where(zero, 0.0, jnp.sign(theta + (theta == 0)) / (jnp.abs(theta) + jnp.sqrt(theta**2 + 1)))
        c = 1.0 / jnp.sqrt(t**2 + 1)
        s = t * c
        row_p, row_q = m[p], m[q]
        m = m.at[p].set(c * row_p - s * row_q).at[q].set(s * row_p + c * row_q)
        col_p, col_q = m[:, p], m[:, q]
        m = m.at[:, p].set(c * col_p - s * col_q).at[:, q].set(s * col_p + c * col_q)
        m = m.at[p, q].set(0.0).at[q, p].set(0.0)
        vec_p, vec_q = v[:, p], v[:, q]
        v = v.at[:, p].set(c * vec_p - s * vec_q).at[:, q].set(s * vec_p + c * vec_q)
        return m, v

    def off(m):
        return jnp.sqrt(jnp.sum(jnp.triu(m, 1) ** 2))

    scale = jnp.sqrt(jnp.sum(a**2))

    def going(carry):
        m, _, count = carry
        return (off(m) > eps * scale) & (count < 30)

    def sweep(carry):
        m, v, count = carry
        m, v = lax.fori_loop(0, p_index.shape[0], rotate, (m, v))
        return m, v, count + 1

    m, v, _ = lax.while_loop(going, sweep, (0.5 * (a + a.T), vectors, 0))
    values = jnp.diagonal(m)
    order = jnp.argsort(values)
    return values[order], v[:, order]


def symmetric_eigenvalues(a):
    """Ascending eigenvalues of a symmetric `a` (`symmetric_eigen` without the vectors)."""
    return symmetric_eigen(a)[0]
