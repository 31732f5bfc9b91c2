"""The effective flow against real training, over many seeds, chunked and sharded.

Per seed: an adapted net drawn from the seed, data (the staircase scenario in that net's
frame, or the user's dataset), the effective flow and gradient-descent training on one
shared time grid `t_i = i · save_every · lr`, and scalar metrics comparing them.
"""

import dataclasses
import json
import math
import os

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from ._data import Dataset, load_npz, make_staircase
from ._effective import at_active, gamma_column
from ._flow import solve_effective
from ._network import AdaptedReLUNet
from ._training import MODES, train
from ._validate import check_positive_int


@dataclasses.dataclass(frozen=True)
class CompareConfig:
    """Everything that defines a comparison run (saved as `config.json`).

    Scenario (ignored for the sizes a `data` file fixes): `depth` L, `dim` M, `points` N,
    `clusters` Q, and the staircase parameters `spread`, `separation`, `jitter`,
    `target_offset` (see `make_staircase`). Initialisation: `scale_spread`, `bias_scale`
    (see `AdaptedReLUNet.random`). Dynamics: gradient descent step `lr` up to `t1`,
    `saves` snapshots after t = 0 (`t1/lr` steps must be a multiple of `saves`),
    `mode` of training, `freeze_weights` (biases only, in both flow and training),
    `precision` 32 or 64, flow tolerances `rtol`/`atol`. Execution: `seeds` (count),
    `chunk_size` seeds per chunk, `keep` seeds whose trajectories are saved for figures.
    """

    seeds: int = 8192
    depth: int = 3
    dim: int = 2
    points: int = 60
    clusters: int = 3
    spread: float = 0.25
    separation: float = 2.5
    jitter: float = 0.3
    target_offset: float = 1.0
    scale_spread: float = 0.1
    bias_scale: float = 0.1
    lr: float = 0.01
    t1: float = 5.0
    saves: int = 100
    mode: str = "adapted"
    freeze_weights: bool = False
    precision: int = 64
    rtol: float = 1e-7
    atol: float = 1e-9
    chunk_size: int = 256
    keep: int = 4
    data: str | None = None

    def __post_init__(self):
        for name in ("seeds", "depth", "dim", "points", "clusters", "saves", "chunk_size"):
            check_positive_int(name, getattr(self, name))
        if not isinstance(self.keep, int) or self.keep < 0:
            raise ValueError(f"`keep` must be an int >= 0, got {self.keep!r}.")
        for name in ("spread", "lr", "t1", "rtol", "atol"):
            if not (isinstance(getattr(self, name), (int, float)) and getattr(self, name) > 0):
                raise ValueError(f"`{name}` must be a positive number, got {getattr(self, name)!r}.")
        for name in ("separation", "jitter", "scale_spread", "bias_scale"):
            if not (isinstance(getattr(self, name), (int, float)) and getattr(self, name) >= 0):
                raise ValueError(f"`{name}` must be a number >= 0, got {getattr(self, name)!r}.")
        if self.mode not in MODES:
            raise ValueError(f"`mode` must be 'adapted' or 'unconstrained', got {self.mode!r}.")
        if self.mode == "unconstrained" and self.freeze_weights:
            raise ValueError(
                "`mode='unconstrained'` contradicts `freeze_weights`: with frozen weights the "
                "net stays adapted. Drop one of the two."
            )
        if self.precision not in (32, 64):
            raise ValueError(f"`precision` must be 32 or 64, got {self.precision!r}.")
        if self.data is None and self.points < self.clusters:
            raise ValueError(f"`points` ({self.points}) must be >= `clusters` ({self.clusters}).")
        steps = self.t1 / self.lr
        if abs(steps - round(steps)) > 1e-9 * steps or round(steps) % self.saves:
            raise ValueError(
                f"t1/lr = {steps:g} steps must be an integer multiple of `saves` = {self.saves}; "
                "adjust `t1`, `lr` or `saves`."
            )

    @property
    def steps(self) -> int:
        return int(round(self.t1 / self.lr))

    @classmethod
    def from_dict(cls, values: dict) -> "CompareConfig":
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown config key(s) {unknown}; valid keys are {sorted(known)}.")
        return cls(**values)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def resolve_data(config: CompareConfig) -> tuple[CompareConfig, Dataset | None]:
    """Loads the user's dataset, if any, and fixes `dim`, `points`, `clusters` from it."""
    if config.data is None:
        return config, None
    data = load_npz(config.data)
    resolved = dataclasses.replace(config, dim=data.width, points=data.num_points, clusters=data.num_classes)
    return resolved, data


# ---------------------------------------------------------------- one seed


def _first_crossing(times, values, level, direction):
    """Interpolated first time `direction · (values − level)` turns positive; NaN if never."""
    signed = direction * (values - level)
    crossed = signed > 0
    index = jnp.argmax(crossed)
    before = jnp.maximum(index - 1, 0)
    span = signed[index] - signed[before]
    fraction = jnp.where(span > 0, -signed[before] / jnp.where(span > 0, span, 1.0), 1.0)
    time = jnp.where(index == 0, times[0], times[before] + fraction * (times[index] - times[before]))
    return jnp.where(jnp.any(crossed), time, jnp.nan)


def _collapse_times(times, theta_star, class_top):
    """First saved time at which every point of class q lies below θ* in every coordinate."""
    collapsed = jnp.all(class_top[None] < theta_star[:, None, :], axis=-1)  # (T, Q)
    first = jnp.argmax(collapsed, axis=0)
    return jnp.where(jnp.any(collapsed, axis=0), times[first], jnp.inf)


def _kappa(thresholds, scales, counts, num_points, train_weights):
    """κ_k(t) = Γ_{ℓ*ℓ*}(t) n_k(t)/N along a saved trajectory, `(T, M)`."""

    def one(theta, scale, count):
        active = jnp.argmax(theta, axis=0).astype(jnp.int32)
        gamma = gamma_column(theta, scale, active, train_weights)
        return at_active(gamma, active) * count / num_points

    return jax.vmap(one)(thresholds, scales, counts)


def seed_problem(seed, config: CompareConfig, user_data: Dataset | None):
    """The adapted net and dataset of one seed."""
    dtype = jnp.float64 if config.precision == 64 else jnp.float32
    key_net, key_data = jax.random.split(jax.random.key(seed))
    net = AdaptedReLUNet.random(
        key_net,
        config.depth,
        config.dim,
        scale_spread=config.scale_spread,
        bias_scale=config.bias_scale,
        dtype=dtype,
    )
    if user_data is not None:
        return net, user_data
    data = make_staircase(
        key_data,
        net.frame,
        num_points=config.points,
        num_clusters=config.clusters,
        spread=config.spread,
        separation=config.separation,
        jitter=config.jitter,
        target_offset=config.target_offset,
    )
    return net, data


def compare_seed(seed, config: CompareConfig, user_data: Dataset | None = None):
    """Runs flow and training for one seed; returns `(metrics, trajectories)` dicts."""
    net, data = seed_problem(seed, config, user_data)
    train_weights = not config.freeze_weights
    save_every = config.steps // config.saves
    run = train(
        net,
        data,
        lr=config.lr,
        steps=config.steps,
        save_every=save_every,
        mode=config.mode,
        train_weights=train_weights,
        check_stability=False,
    )
    flow = solve_effective(
        net, data, ts=run.ts, train_weights=train_weights, rtol=config.rtol, atol=config.atol
    )
    times = run.ts
    theta_scale = jnp.maximum(jnp.nanmax(jnp.abs(flow.thresholds)), 1e-12)
    star_flow = jnp.max(flow.thresholds, axis=1)
    star_train = jnp.max(run.thresholds, axis=1)
    u = data.x @ net.fixed_frame.T

    # crossing times, point by point: when training's θ* passes each data coordinate the
    # flow crosses by t1 (interpolated between saves), against the flow's exact time
    flow_cross = flow.crossing_times
    in_window = flow_cross <= times[-1]
    direction = jnp.where(
        jnp.max(flow.thresholds[-1], axis=0) >= jnp.max(flow.thresholds[0], axis=0), 1.0, -1.0
    )
    seen = jax.vmap(  # over coordinates, then points
        lambda star, levels, sign: jax.vmap(lambda level: _first_crossing(times, star, level, sign))(levels),
        in_axes=(1, 1, 0),
        out_axes=1,
    )(star_train, u, direction)
    initially = u <= star_train[0][None]
    train_cross = jnp.where(initially == (direction[None] > 0), jnp.nan, seen)
    matched = in_window & jnp.isfinite(train_cross)
    crossing_errors = jnp.where(matched, jnp.abs(train_cross - flow_cross), 0.0)
    extra = jnp.isfinite(train_cross) & ~in_window

    class_top = jax.ops.segment_max(u, data.labels, num_segments=data.num_classes)
    collapse_flow = _collapse_times(times, star_flow, class_top)
    collapse_train = _collapse_times(times, star_train, class_top)
    both = jnp.isfinite(collapse_flow) & jnp.isfinite(collapse_train)

    metrics = dict(
        seed=jnp.asarray(seed, jnp.int32),
        flow_result=flow.result,
        train_result=run.result,
        threshold_error=jnp.max(jnp.abs(run.thresholds - flow.thresholds)) / theta_scale,
        cost_error=jnp.max(jnp.abs(run.cost - flow.cost)) / flow.cost[0],
        truncation_agreement=jnp.mean(jnp.all(run.n_truncated == flow.n_truncated, axis=1)),
        num_events=flow.num_events,
        crossings=jnp.sum(in_window),
        unmatched_crossings=jnp.sum(in_window & ~matched),
        extra_crossings=jnp.sum(extra),
        crossing_time_error=jnp.max(crossing_errors),
        collapse_time_flow=collapse_flow,
        collapse_time_train=collapse_train,
        collapsed_flow=jnp.sum(jnp.isfinite(collapse_flow)),
        collapsed_train=jnp.sum(jnp.isfinite(collapse_train)),
        collapse_time_error=jnp.max(jnp.where(both, jnp.abs(collapse_train - collapse_flow), 0.0)),
        drift=jnp.nanmax(run.drift),
    )
    trajectories = dict(
        ts=times,
        thresholds_flow=flow.thresholds,
        thresholds_train=run.thresholds,
        cost_flow=flow.cost,
        cost_train=run.cost,
        n_flow=flow.n_truncated,
        n_train=run.n_truncated,
        kappa_flow=_kappa(flow.thresholds, flow.scales, flow.n_truncated, data.num_points, train_weights),
        u=u,
        labels=data.labels,
        frame=net.frame,
        targets=data.targets,
        drift=run.drift,
    )
    return metrics, trajectories


# ---------------------------------------------------------------- many seeds


@eqx.filter_jit
def _compare_batch(seeds, config: CompareConfig, user_data, with_trajectories: bool):
    """All seeds of a chunk in one vmap. `config` (a frozen dataclass) is static, so every
    chunk of a run, and every run with the same config, reuses one compilation."""

    def one(seed):
        metrics, trajectories = compare_seed(seed, config, user_data)
        return metrics, (trajectories if with_trajectories else None)

    return jax.vmap(one)(seeds)


def seed_sharding():
    """A 1-D mesh over every device with a `seeds` axis (all hosts' devices)."""
    mesh = Mesh(np.asarray(jax.devices()), ("seeds",))
    return NamedSharding(mesh, PartitionSpec("seeds"))


def run_chunk(config: CompareConfig, user_data, seeds: np.ndarray, with_trajectories: bool = False):
    """Metrics (and optionally trajectories) for `seeds`, as NumPy arrays.

    The seeds are padded to a multiple of the device count and sharded over the mesh's
    `seeds` axis; each seed's result depends only on its own seed.
    """
    sharding = seed_sharding()
    devices = sharding.mesh.size
    padded = math.ceil(len(seeds) / devices) * devices
    host_seeds = np.concatenate([seeds, np.full(padded - len(seeds), seeds[-1])]).astype(np.int32)
    # every process holds the whole chunk and places its devices' slices (multi-host safe)
    seed_array = jax.make_array_from_callback(host_seeds.shape, sharding, lambda index: host_seeds[index])
    outputs = _compare_batch(seed_array, config, user_data, with_trajectories)
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        outputs = multihost_utils.process_allgather(outputs, tiled=True)
    metrics, trajectories = jax.tree.map(lambda value: np.asarray(value)[: len(seeds)], outputs)
    return metrics, trajectories


def compare(config: CompareConfig, seeds=None, *, progress=None):
    """Runs the comparison for `seeds` (default `range(config.seeds)`), chunk by chunk,
    in memory. Returns `(metrics, trajectories)`: per-seed metric arrays, and the
    trajectories of the first `config.keep` seeds. For runs that write results as they
    go and can resume, use `run_compare` (the `flowtrunc compare` command)."""
    config, user_data = resolve_data(config)
    seeds = np.arange(config.seeds) if seeds is None else np.asarray(seeds, np.int64)
    _enable_precision(config)
    parts, kept = [], None
    for start in range(0, len(seeds), config.chunk_size):
        chunk = seeds[start : start + config.chunk_size]
        metrics, trajectories = run_chunk(config, user_data, chunk, with_trajectories=start == 0)
        parts.append(metrics)
        if trajectories is not None:
            kept = {name: value[: config.keep] for name, value in trajectories.items()}
        if progress is not None:
            progress(start // config.chunk_size + 1, math.ceil(len(seeds) / config.chunk_size))
    merged = {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}
    return merged, kept


def _enable_precision(config: CompareConfig) -> None:
    if config.precision == 64 and not jax.config.jax_enable_x64:
        jax.config.update("jax_enable_x64", True)
    if config.precision == 32 and jax.config.jax_enable_x64:
        raise ValueError(
            "`precision=32` was asked for but JAX runs with x64 enabled in this process; "
            "start a new process (the CLI does), or use precision=64."
        )


QUANTILES = (0.0, 0.1, 0.5, 0.9, 1.0)


def summarise(metrics: dict, config: CompareConfig) -> dict:
    """Quantiles across seeds of every scalar metric, plus counts (keys in the README)."""

    def quantiles(values):
        values = np.asarray(values, np.float64)
        values = values[np.isfinite(values)]
        if values.size == 0:
            return None
        return {f"q{int(q * 100)}": float(np.quantile(values, q)) for q in QUANTILES}

    ok = (metrics["flow_result"] == 0) & (metrics["train_result"] == 0)
    scalar = (
        "threshold_error",
        "cost_error",
        "truncation_agreement",
        "crossing_time_error",
        "num_events",
        "unmatched_crossings",
        "extra_crossings",
        "collapse_time_error",
        "drift",
    )
    flow_times = np.where(np.isfinite(metrics["collapse_time_flow"]), metrics["collapse_time_flow"], np.nan)
    summary = {
        "seeds": int(len(metrics["seed"])),
        "ok_seeds": int(ok.sum()),
        "flow_failures": int(np.sum(metrics["flow_result"] != 0)),
        "training_divergences": int(np.sum(metrics["train_result"] != 0)),
        "lr": config.lr,
        "t1": config.t1,
        "mode": config.mode,
        "freeze_weights": config.freeze_weights,
        "seeds_with_collapse_flow": float(np.mean(metrics["collapsed_flow"][ok] > 0)) if ok.any() else None,
        "seeds_with_collapse_train": float(np.mean(metrics["collapsed_train"][ok] > 0)) if ok.any() else None,
        "collapse_time_flow": quantiles(flow_times[ok].ravel()),
    }
    for name in scalar:
        summary[name] = quantiles(metrics[name][ok])
    return summary


def write_atomic(path: str, write) -> None:
    """Writes through a temporary file in the same folder, then renames it into place."""
    temporary = f"{path}.tmp-{os.getpid()}"
    write(temporary)
    os.replace(temporary, path)


def write_json(path: str, value: dict) -> None:
    def write(temporary):
        with open(temporary, "w") as f:
            json.dump(value, f, indent=2, sort_keys=True)
            f.write("\n")

    write_atomic(path, write)
