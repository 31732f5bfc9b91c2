"""Input validation shared by every public entry point.

Shape and dtype checks are static and run even under `jit`/`vmap`. Value checks (NaN,
positivity, orthogonality, conditioning, label ranges) run only on concrete arrays: under
a transformation the solvers report a per-seed result code instead of aborting the batch.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._linalg import matmul
from ._results import RESULTS


def is_concrete(*arrays) -> bool:
    """True when no argument is a JAX tracer (so its values can be inspected)."""
    return not any(isinstance(a, jax.core.Tracer) for a in arrays)


def float_array(name: str, value, *, ndim: int | None = None) -> jax.Array:
    """Converts `value` to a floating JAX array; rejects integer/bool data and bad rank."""
    if isinstance(value, jax.core.Tracer):
        array = value
    else:
        try:
            array = jnp.asarray(value)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"`{name}` must be an array of floats, got {type(value)}.") from exc
    if not jnp.issubdtype(array.dtype, jnp.floating):
        raise ValueError(
            f"`{name}` has dtype {array.dtype}, but floats are needed; pass "
            f"`{name}.astype(float)` (or jnp.float32/jnp.float64)."
        )
    if ndim is not None and array.ndim != ndim:
        raise ValueError(f"`{name}` must have {ndim} dimensions, got shape {array.shape}.")
    return array


def check_positive_int(name: str, value) -> None:
    """Rejects anything but a Python int >= 1 (bools included)."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"`{name}` must be a positive int, got {value!r}.")


def check_prng_key(name: str, key) -> None:
    """Rejects anything but a JAX PRNG key (typed, or a legacy uint32 pair)."""
    dtype = getattr(key, "dtype", None)
    typed = dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)
    legacy = dtype == jnp.uint32 and getattr(key, "shape", None) == (2,)
    if not (typed or legacy):
        raise ValueError(
            f"`{name}` must be a JAX PRNG key, e.g. jax.random.key({key!r}) for a seed; got "
            f"{type(key).__name__} {key!r}."
        )


def check_finite(name: str, array) -> None:
    """Rejects NaN and inf in a concrete array."""
    if is_concrete(array):
        values = np.asarray(array)
        if not np.all(np.isfinite(values)):
            bad = int(np.size(values) - np.count_nonzero(np.isfinite(values)))
            raise ValueError(
                f"`{name}` contains {bad} NaN or inf value(s); remove or replace them "
                "before building the model."
            )


def check_shape(name: str, array, shape: tuple, names: str) -> None:
    """Checks `array.shape == shape`; `names` spells the expected axes for the message."""
    if tuple(array.shape) != tuple(shape):
        raise ValueError(f"`{name}` must have shape ({names}) = {tuple(shape)}, got {tuple(array.shape)}.")


def orthogonality_tolerance(dtype, width: int) -> float:
    """Largest |R^T R - I| entry accepted for a frame of this dtype and width."""
    return 1000.0 * width * float(jnp.finfo(dtype).eps)


def check_orthogonal(name: str, frame) -> None:
    if is_concrete(frame):
        matrix = np.asarray(frame, dtype=np.float64)
        error = float(np.max(np.abs(matrix.T @ matrix - np.eye(matrix.shape[0]))))
        tol = orthogonality_tolerance(frame.dtype, matrix.shape[0])
        if error > tol:
            raise ValueError(
                f"`{name}` is not orthogonal: max |R^T R - I| = {error:.3g} > {tol:.3g}. "
                "Orthonormalise it, e.g. `jnp.linalg.qr(frame)[0]`, or draw one with "
                "`AdaptedReLUNet.random`."
            )


def check_positive(name: str, array) -> None:
    if is_concrete(array):
        values = np.asarray(array)
        if np.any(values <= 0):
            raise ValueError(
                f"`{name}` must be strictly positive (found min {values.min():.3g}); the "
                "adapted weights are positive diagonal matrices."
            )


def check_invertible(name: str, matrices) -> None:
    """Rejects singular or near-singular square matrices (a stack of them is fine)."""
    if is_concrete(matrices):
        stack = np.asarray(matrices, dtype=np.float64).reshape((-1,) + matrices.shape[-2:])
        limit = 1.0 / (100.0 * float(jnp.finfo(matrices.dtype).eps))
        for index, matrix in enumerate(stack):
            cond = np.linalg.cond(matrix)
            if not np.isfinite(cond) or cond > limit:
                where = f"{name}[{index}]" if stack.shape[0] > 1 else name
                raise ValueError(
                    f"`{where}` is singular or near-singular (condition number {cond:.3g} > "
                    f"{limit:.3g}); the truncation map needs invertible weights. Perturb "
                    "it or draw a new one."
                )


def traced_inputs_ok(net, data, ts=None, allow_inf=True):
    """Under jit or vmap, the checks `prepare_inputs` makes on concrete arrays, as one boolean
    (True when the inputs are concrete: they were checked there). A seed that fails it gets
    `RESULTS.invalid_input`, never a success."""
    leaves = [net.frame, net.scales, net.biases, data.x, data.targets] + ([] if ts is None else [ts])
    if is_concrete(*leaves):
        return jnp.array(True)
    frame = net.frame
    width = frame.shape[0]
    gram = matmul(frame.T, frame)
    ok = jnp.all(
        jnp.abs(gram - jnp.eye(width, dtype=frame.dtype)) <= orthogonality_tolerance(frame.dtype, width)
    )
    ok = ok & jnp.all(net.scales > 0) & jnp.all(jnp.isfinite(net.scales)) & jnp.all(jnp.isfinite(net.biases))
    ok = ok & jnp.all(jnp.isfinite(data.x)) & jnp.all(jnp.isfinite(data.targets))
    if ts is not None:
        finite = jnp.isfinite(ts) | (allow_inf & (ts == jnp.inf))
        ok = ok & jnp.all(finite) & jnp.all(jnp.diff(ts) >= 0) & (ts[0] >= 0)
    return ok


def with_input_check(solution, ok):
    """`solution` with its `result` set to `invalid_input` where `ok` is False: the input is
    the cause of whatever the solver reported (success, "diverged", ...), except NaN or inf
    in the state, which says more (`nonfinite_state` is kept)."""
    failed = ~ok & (solution.result != RESULTS.nonfinite_state)
    return eqx.tree_at(
        lambda s: s.result, solution, jnp.where(failed, RESULTS.invalid_input, solution.result)
    )
