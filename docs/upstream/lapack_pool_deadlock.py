"""Minimal reproducer: jaxlib 0.10.2 on the CPU hangs when a program runs, at the same
time, as many batched LAPACK kernels as XLA's intra-op thread pool has threads.

Each batched kernel (here `trsm`, from `jnp.linalg.solve` under `vmap`) runs on a pool
thread, splits its batch over the same pool (`jax::ParallelBatchMap`) and blocks on a
`BlockingCounter`; with every pool thread blocked so, nothing runs the parts. Native stacks
of the hang (gdb `thread apply all bt`): both `tf_XLAEigen` threads in
`BlockingCounter::Wait <- ParallelBatchMap <- TriMatrixEquationSolver::Kernel <-
lapack_dtrsm_ffi <- CustomCallThunk::Execute <- ThunkExecutor`, the main thread in
`PyArray::BlockUntilReady`.

Run: `timeout 120 python lapack_pool_deadlock.py` (exit 124 = the hang). It prints "done"
when the LAPACK kernels do not deadlock. `--pure` runs the same program through
flowtrunc's LAPACK-free `solve` (finishes).
"""

import sys

import jax
import jax.numpy as jnp

jax.config.update("jax_enable_x64", True)

if "--pure" in sys.argv:
    from flowtrunc._linalg import solve
else:
    solve = jnp.linalg.solve

SIZE, BATCH, INDEPENDENT = 64, 8, 8  # INDEPENDENT >= the pool's threads (cores)


@jax.jit
def program(a, b):
    # independent batched solves the thunk executor may run at once, repeated in a loop
    def body(_, x):
        return sum(jax.vmap(solve)(a + k, x) for k in range(INDEPENDENT)) / INDEPENDENT

    return jax.lax.fori_loop(0, 20, body, b)


key_a, key_b = jax.random.split(jax.random.key(0))
a = jax.random.normal(key_a, (BATCH, SIZE, SIZE)) + SIZE * jnp.eye(SIZE)
b = jax.random.normal(key_b, (BATCH, SIZE, 3))
print(jax.__version__, jax.devices())
program(a, b).block_until_ready()
print("done")
