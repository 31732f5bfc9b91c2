"""Labelled data with input-space class targets, cluster generator, `.npz` loading."""

import os

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from .._custom_types import Array, Float, Int, PRNGKeyArray
from .._linalg import matmul
from .._random import standard_normal
from .._validate import check_finite, check_positive_int, float_array, is_concrete


class Dataset(eqx.Module):
    """Inputs `x` `(N, M)`, integer `labels` `(N,)` in `0..Q-1`, and one input-space target
    per class, `targets` `(Q, M)` (default: the class means).

    Every class must have at least one point. Value checks run on concrete arrays.
    """

    x: Float[Array, "points width"]
    labels: Int[Array, " points"]
    targets: Float[Array, "classes width"]

    def __init__(self, x, labels, targets=None):
        x = float_array("x", x, ndim=2)
        if x.shape[0] == 0 or x.shape[1] == 0:
            raise ValueError(f"`x` is empty (shape {x.shape}); give at least one point.")
        check_finite("x", x)
        labels = labels if isinstance(labels, jax.core.Tracer) else jnp.asarray(labels)
        if not jnp.issubdtype(labels.dtype, jnp.integer):
            raise ValueError(
                f"`labels` must be integers in 0..Q-1, got dtype {labels.dtype}; pass `labels.astype(int)`."
            )
        if labels.shape != (x.shape[0],):
            raise ValueError(
                f"`labels` must have shape (N,) = ({x.shape[0]},) to match `x`, got {labels.shape}."
            )
        if targets is None:
            if not is_concrete(labels):
                raise ValueError("Pass `targets` explicitly when `labels` is traced.")
            num_classes = int(np.max(np.asarray(labels))) + 1
        else:
            targets = float_array("targets", targets, ndim=2)
            num_classes = targets.shape[0]
            if targets.shape[1] != x.shape[1]:
                raise ValueError(f"`targets` has {targets.shape[1]} features but `x` has {x.shape[1]}.")
            check_finite("targets", targets)
        if is_concrete(labels):
            values = np.asarray(labels)
            if values.min() < 0 or values.max() >= x.shape[0] and targets is None:
                raise ValueError(
                    f"`labels` must be the integers 0..Q-1 (every class with a point), got values "
                    f"{values.min()}..{values.max()} for {x.shape[0]} points; relabel them with "
                    "`labels = numpy.unique(labels, return_inverse=True)[1]`."
                )
            if values.min() < 0 or values.max() >= num_classes:
                raise ValueError(
                    f"`labels` must lie in 0..{num_classes - 1} (one per target row), got "
                    f"range {values.min()}..{values.max()}; relabel, or give one target "
                    "per class."
                )
            counts = np.bincount(values, minlength=num_classes)
            if np.any(counts == 0):
                empty = np.flatnonzero(counts == 0)
                shown = ", ".join(str(q) for q in empty[:5]) + (", ..." if len(empty) > 5 else "")
                raise ValueError(
                    f"{len(empty)} of {num_classes} classes have no points ({shown}). Drop those "
                    "targets, or relabel the classes with "
                    "`labels = numpy.unique(labels, return_inverse=True)[1]`."
                )
        if targets is None:
            one_hot = jax.nn.one_hot(labels, num_classes, dtype=x.dtype)
            targets = matmul(one_hot.T, x) / one_hot.sum(0)[:, None]
        dtype = jnp.result_type(x, targets)
        self.x = x.astype(dtype)
        self.labels = labels.astype(jnp.int32)
        self.targets = targets.astype(dtype)

    @property
    def num_points(self) -> int:
        return self.x.shape[0]

    @property
    def width(self) -> int:
        return self.x.shape[1]

    @property
    def num_classes(self) -> int:
        return self.targets.shape[0]

    def point_targets(self) -> Float[Array, "points width"]:
        """`ȳ_j = targets[labels[j]]`, shape `(N, M)`."""
        return self.targets[self.labels]


def make_clusters(
    key: PRNGKeyArray,
    *,
    num_points: int = 60,
    num_clusters: int = 3,
    dim: int = 2,
    spread: float = 0.3,
    separation: float = 1.0,
    target_offset=0.0,
    dtype=None,
) -> Dataset:
    r"""Draws `num_clusters` Gaussian clusters in $\mathbb{R}^{dim}$.

    - centres $c_q = \text{separation}\cdot z_q$, $z_q \sim N(0, I)$;
    - labels balanced and deterministic, $\omega(j) = j \bmod Q$ (every class non-empty);
    - points $x_j = c_{\omega(j)} + \text{spread}\cdot\varepsilon_j$, $\varepsilon_j \sim N(0, I)$;
    - targets $\bar y_q = c_q + \text{target\_offset}$ (a scalar or a `(dim,)` vector).

    So within-class coordinates have standard deviation `spread`, and the class targets
    are the true centres shifted by `target_offset`.
    """
    for name, value in (("num_points", num_points), ("num_clusters", num_clusters), ("dim", dim)):
        check_positive_int(name, value)
    if num_points < num_clusters:
        raise ValueError(
            f"`num_points` ({num_points}) must be >= `num_clusters` ({num_clusters}) so "
            "that every class has a point."
        )
    if is_concrete(spread, separation) and (not spread > 0 or not separation >= 0):
        raise ValueError("`spread` must be > 0 and `separation` >= 0.")
    dtype = jnp.zeros((), dtype).dtype if dtype is not None else jnp.result_type(float)
    offset = jnp.broadcast_to(jnp.asarray(target_offset, dtype), (dim,))
    kc, kx = jax.random.split(key)
    centres = separation * standard_normal(kc, (num_clusters, dim), dtype)
    labels = jnp.arange(num_points) % num_clusters
    x = centres[labels] + spread * standard_normal(kx, (num_points, dim), dtype)
    return Dataset(x=x, labels=labels, targets=centres + offset[None])


def load_npz(path: str | os.PathLike, dtype=None) -> Dataset:
    """Loads a dataset from an `.npz` file with arrays `x` `(N, M)`, `labels` `(N,)` and,
    optionally, `targets` `(Q, M)` (default: class means). Numbers of any integer or
    floating type are cast to `dtype` (default: JAX's default float), after a check that
    they fit in it."""
    path = os.fspath(path)
    if os.path.isdir(path):
        raise ValueError(f"data file {path!r} is a directory; give the path of an .npz file.")
    if not os.path.exists(path):
        raise ValueError(f"data file {path!r} does not exist; give the path of an .npz file.")
    try:
        archive = np.load(path, allow_pickle=False)
    except Exception as exc:
        raise ValueError(
            f"data file {path!r} is not a readable .npz archive ({exc}); save it with "
            "`numpy.savez(path, x=..., labels=...)`."
        ) from exc
    if not hasattr(archive, "files"):
        raise ValueError(f"data file {path!r} holds a single array, not an .npz archive.")
    with archive:
        missing = [name for name in ("x", "labels") if name not in archive.files]
        if missing:
            raise ValueError(
                f"data file {path!r} lacks array(s) {missing}; it has {archive.files}. Save "
                "it with `numpy.savez(path, x=..., labels=..., targets=...)`."
            )
        try:
            x, labels = archive["x"], archive["labels"]
            targets = archive["targets"] if "targets" in archive.files else None
        except ValueError as error:  # object arrays need pickle, which is refused
            raise ValueError(
                f"data file {path!r} holds object arrays ({error}); save plain numeric arrays, "
                "e.g. `numpy.savez(path, x=x.astype(float), labels=labels.astype(int))`."
            ) from None
        dtype = jnp.zeros((), dtype).dtype if dtype is not None else jnp.result_type(float)
        x = _as_float(path, "x", x, dtype)
        targets = None if targets is None else _as_float(path, "targets", targets, dtype)
        if not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(
                f"data file {path!r}: `labels` has dtype {labels.dtype}, but labels must be "
                "integers 0..Q-1; map class names to integers first, e.g. "
                "`labels = numpy.unique(names, return_inverse=True)[1]`."
            )
        return Dataset(x=x, labels=labels, targets=targets)


def _as_float(path, name, values, dtype) -> np.ndarray:
    """`values` cast to `dtype`, refusing non-numbers and values that overflow it."""
    if not (np.issubdtype(values.dtype, np.integer) or np.issubdtype(values.dtype, np.floating)):
        raise ValueError(f"data file {path!r}: `{name}` has dtype {values.dtype}; it must hold numbers.")
    wide = values.astype(np.float64) if values.dtype != np.float64 else values
    if not np.all(np.isfinite(wide)):
        bad = int(np.sum(~np.isfinite(wide)))
        raise ValueError(
            f"data file {path!r}: `{name}` contains {bad} NaN or inf value(s); remove or impute them."
        )
    limit = float(np.finfo(dtype).max)
    if wide.size and float(np.max(np.abs(wide))) > limit:
        raise ValueError(
            f"data file {path!r}: `{name}` holds values up to {float(np.max(np.abs(wide))):.3g}, beyond "
            f"the largest {np.dtype(dtype).name} ({limit:.3g}); standardise the data, or run at "
            "--precision 64."
        )
    return wide.astype(dtype)


def make_staircase(
    key: PRNGKeyArray,
    frame: Float[Array, "width width"],
    *,
    num_points: int = 60,
    num_clusters: int = 3,
    spread: float | Array = 0.25,
    separation: float | Array = 2.5,
    jitter: float | Array = 0.3,
    target_offset: float | Array = 1.0,
    dtype=None,
) -> Dataset:
    r"""Clusters stacked along the diagonal of a frame: the collapse scenario.

    In frame coordinates $u = Rx$ (R = `frame`): centres
    $c_q = q\,\text{separation}\,\mathbf 1 + \text{jitter}\,z_q$ (q = 0..Q-1), points
    $u_j = c_{\omega(j)} + \text{spread}\,\varepsilon_j$, targets
    $v_q = c_q + \text{target\_offset}\,\mathbf 1$, labels $\omega(j) = j \bmod Q$; inputs
    and targets are mapped back by $R^T$. With an offset of several spreads but below the
    gap to the next cluster, the effective flow lifts θ* through the lowest cluster in
    every coordinate, toward its target: that cluster collapses to a point.
    """
    for name, value in (("num_points", num_points), ("num_clusters", num_clusters)):
        check_positive_int(name, value)
    if num_points < num_clusters:
        raise ValueError(f"`num_points` ({num_points}) must be >= `num_clusters` ({num_clusters}).")
    if is_concrete(spread, separation, jitter) and (not spread > 0 or not separation >= 0 or not jitter >= 0):
        raise ValueError("`spread` must be > 0, `separation` and `jitter` >= 0.")
    frame = float_array("frame", frame, ndim=2)
    dtype = frame.dtype if dtype is None else jnp.zeros((), dtype).dtype
    width = frame.shape[0]
    kc, kx = jax.random.split(key)
    steps = jnp.arange(num_clusters, dtype=dtype)[:, None] * separation
    centres = steps + jitter * standard_normal(kc, (num_clusters, width), dtype)
    labels = jnp.arange(num_points) % num_clusters
    u = centres[labels] + spread * standard_normal(kx, (num_points, width), dtype)
    frame = frame.astype(dtype)
    return Dataset(x=matmul(u, frame), labels=labels, targets=matmul(centres + target_offset, frame))
