"""The effective flow against real training, over many seeds, chunked and sharded.

Per seed: an adapted net drawn from the seed, data (the staircase scenario in that net's
frame, or the user's dataset), the effective flow and gradient-descent training on one
shared time grid `t_i = i · save_every · lr`, and scalar metrics comparing them.
"""

import contextlib
import dataclasses
import importlib
import math
import os
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from .. import _program_cache as program_cache
from .._flow.field import at_active, gamma_column
from .._flow.solve import solve_effective
from .._flow.solvers import EventLoop, OrbitClock
from .._flow.usual_cost.event_loop import USUAL_EVENT
from .._flow.usual_cost.solve import solve_usual_cost
from .._linalg import matmul
from .._model.data import Dataset, load_npz, make_staircase
from .._model.network import AdaptedReLUNet
from .._model.off_adapted import (
    family_distance,
    nearest_adapted,
    nearest_adapted_output,
    off_adapted,
    off_adapted_output,
)
from .._model.output_layer import AdaptedOutputLayer, OutputLayer, pulled_back
from .._model.parameterisation import weight_motion
from .._results import RESULTS
from .._training.training import stability_bound_unchecked, train
from .config import CompareConfig, event_loop_steps
from .kinds import solution_kinds


def check_fits_in_memory(config: CompareConfig) -> None:
    """Refuses a run whose per-seed metrics (gathered at the end, ~200 bytes a seed plus two
    collapse times per class) would not fit in this machine's memory."""
    per_seed = 200 + 16 * config.clusters
    needed = config.seeds * per_seed
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return
    if needed > memory // 2:
        raise ValueError(
            f"`seeds` = {config.seeds} needs about {needed / 2**30:.1f} GiB for its per-seed metrics, more "
            f"than half this machine's {memory / 2**30:.1f} GiB; run at most "
            f"{memory // 2 // per_seed} seeds at a time (several --out runs)."
        )


def resolve_data(config: CompareConfig) -> tuple[CompareConfig, Dataset | None]:
    """Loads the user's dataset, if any, and fixes `dim`, `points`, `clusters` from it."""
    if config.data is None:
        return config, None
    with precision(config):  # float64 data stays float64 in a process without x64
        data = load_npz(config.data, dtype=float_dtype(config))
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


def _kappa(thresholds, scales, counts, num_points, motion):
    """κ_k(t) = Γ_{ℓ*ℓ*}(t) n_k(t)/N along a saved trajectory, `(T, M)`."""

    def one(theta, scale, count):
        active = jnp.argmax(theta, axis=0).astype(jnp.int32)
        gamma = gamma_column(theta, scale, active, motion)
        return at_active(gamma, active) * count / num_points

    return jax.vmap(one)(thresholds, scales, counts)


# settings that enter only as numbers (no shape, no branch): the compiled comparison takes
# them as arrays, so a sweep over them reuses one program
VALUE_SETTINGS = (
    "spread",
    "separation",
    "jitter",
    "target_offset",
    "scale_spread",
    "bias_scale",
    "output_departure",
)


def float_dtype(config: "CompareConfig | _ValueView"):
    """The float type of `config.precision` (chosen from the device when unset)."""
    return jnp.float64 if config.on_device().precision == 64 else jnp.float32


def split_values(config: CompareConfig) -> tuple[CompareConfig, dict]:
    """`(static config with the value settings at their defaults, {name: array})`."""
    dtype = float_dtype(config)
    defaults = {f.name: f.default for f in dataclasses.fields(CompareConfig) if f.name in VALUE_SETTINGS}
    values = {name: jnp.asarray(getattr(config, name), dtype) for name in VALUE_SETTINGS}
    return dataclasses.replace(config, **defaults), values


def seed_problem(seed, config: CompareConfig, user_data: Dataset | None, values: dict | None = None):
    """The adapted net and dataset of one seed; `values` (from `split_values`) replace
    the config's value settings."""
    if values is not None:
        config = _ValueView(config, values)
    dtype = float_dtype(config)
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


class _ValueView:
    """A config whose value settings are read from arrays."""

    def __init__(self, config, values):
        self._config, self._values = config, values

    def __getattr__(self, name):
        return self._values[name] if name in self._values else getattr(self._config, name)


def output_layers(seed, config: CompareConfig, width: int, dtype, values: dict | None = None):
    """For `cost="output"`: `(drawn, start, flow)`. `drawn` is the seed's output layer: a
    general one of condition number `output_condition`, or (`output_layer="adapted"`) an
    adapted `Q diag(d_o)` drawn as the hidden layers are. `start` is the layer training
    starts from: `drawn`, or (unconstrained training) a general layer, its weight perturbed
    by `output_departure` (0: exactly `drawn`'s). `flow` is the adapted layer the usual
    cost's flow starts from (the one nearest to `start`; None for a general layer)."""
    if values is not None:
        config = _ValueView(config, values)
    key = jax.random.fold_in(jax.random.key(seed), 11)
    if config.output_layer != "adapted":
        drawn = OutputLayer.random(key, width, condition=config.output_condition, dtype=dtype)
        return drawn, drawn, None
    drawn = AdaptedOutputLayer.random(
        key, width, scale_spread=config.scale_spread, bias_scale=config.bias_scale, dtype=dtype
    )
    if config.mode != "unconstrained":
        return drawn, drawn, drawn
    start = off_adapted_output(jax.random.fold_in(key, 1), drawn, config.output_departure)
    return drawn, start, nearest_adapted_output(start, drawn.frame)


def output_problem(net, layer, data: Dataset):
    """For `cost="output"`: the dataset with output targets `y_q = A(W^(L) v_q + b^(L))`
    (the image of its targets `v_q` under `net` and `layer`, training's start), the
    prediction's dataset (targets pulled back at t = 0, equal to `v_q` up to round-off)
    and its clock factor `tr G/M` (docs/theory.md §6: the flow in the metric `c I` runs
    `c` times faster)."""
    w_cum, b_cum = net.cumulative()
    targets = layer(matmul(data.targets, w_cum[-1].T) + b_cum[-1][None])
    output_data = Dataset(x=data.x, labels=data.labels, targets=targets)
    metric, pulled = pulled_back(net, layer, output_data)
    predicted = Dataset(x=data.x, labels=data.labels, targets=pulled)
    return output_data, predicted, jnp.trace(metric) / data.width


def usual_crossing_times(flow, num_points: int) -> jax.Array:
    """`(N, M)` first time the usual cost's flow truncates or releases each point in each
    coordinate (inf if it does not by its final time)."""
    crossing = (flow.event_kinds == USUAL_EVENT.truncation) | (flow.event_kinds == USUAL_EVENT.release)
    times = jnp.where(crossing, flow.event_times, jnp.inf)
    points = jnp.where(flow.event_points >= 0, flow.event_points, num_points)  # -1: dropped
    coordinates = jnp.broadcast_to(jnp.arange(points.shape[0])[:, None], points.shape)
    first = jnp.full((points.shape[0], num_points), jnp.inf, times.dtype)
    return first.at[coordinates, points].min(times, mode="drop").T


def compare_seed(seed, config: CompareConfig, user_data: Dataset | None = None, values: dict | None = None):
    """Runs flow and training for one seed; returns `(metrics, trajectories)` dicts."""
    net, data = seed_problem(seed, config, user_data, values)
    start = None
    if config.off_adapted > 0:  # training starts off the family, the prediction nearest to it
        start = off_adapted(jax.random.fold_in(jax.random.key(seed), 7), net, config.off_adapted)
        net = nearest_adapted(start)
    train_weights = not config.freeze_weights
    save_every = config.steps // config.saves
    layer = start_layer = flow_layer = None
    train_data, clock = data, jnp.ones((), data.x.dtype)
    if config.cost == "output":  # training on the usual cost; the flow on its t = 0 pull-back
        layer, start_layer, flow_layer = output_layers(seed, config, data.width, data.x.dtype, values)
        train_data, data, clock = output_problem(net if start is None else start, start_layer, data)
    run = train(
        net,
        train_data,
        start=start,
        cost=config.cost,
        output_layer=layer,
        output_start=start_layer if isinstance(start_layer, OutputLayer) and flow_layer is not None else None,
        train_output=None if layer is None else not config.freeze_output,
        lr=config.lr,
        steps=config.steps,
        save_every=save_every,
        mode=config.mode,
        train_weights=train_weights,
        parameterisation=config.parameterisation,
        check_stability=False,
    )
    flow = pullback = solve_effective(
        net,
        data,
        ts=run.ts * clock,
        train_weights=train_weights,
        parameterisation=config.parameterisation,
        solver=OrbitClock(rtol=config.rtol, atol=config.atol, max_steps=config.max_steps),
    )
    usual = None
    if flow_layer is not None:  # the usual cost's own flow predicts; the pull-back is the baseline
        usual = solve_usual_cost(
            net,
            flow_layer,
            train_data,
            ts=run.ts,
            train_weights=train_weights,
            parameterisation=config.parameterisation,
            solver=EventLoop(rtol=config.rtol, atol=config.atol, max_steps=event_loop_steps(config)),
        )
        flow, clock = usual, jnp.ones((), data.x.dtype)
    # the stability check `train` makes on concrete inputs, per seed (under vmap)
    bound = stability_bound_unchecked(
        net,
        train_data,
        config.mode if train_weights else "adapted",
        50,
        config.parameterisation,
        start_layer,
        not config.freeze_output,
    )
    # along the run: gradient descent on the flow's slowest-to-fastest relaxation
    # dθ*/dt = −κ (θ* − v̄) is stable iff lr κ < 2, κ = Γ_{ℓ*ℓ*} n/N read off the flow's
    # state at every save (free: the flow computed it). Shrinking scales raise Γ ~ D^-2.
    if usual is None:
        kappa = clock * _kappa(
            flow.thresholds,
            flow.scales,
            flow.n_truncated,
            data.num_points,
            weight_motion(train_weights, config.parameterisation),
        )
        along = 2.0 / jnp.max(kappa, axis=1)  # (T,), inf where nothing is truncated
    else:  # the usual cost's flow has no one scalar rate: its bound is the start's alone
        kappa = jnp.full(flow.n_truncated.shape, jnp.nan, flow.thresholds.dtype)
        along = jnp.full(run.ts.shape, jnp.inf, flow.thresholds.dtype)
    left = config.lr > along
    unstable_from = jnp.where(jnp.any(left), run.ts[jnp.argmax(left)], jnp.inf)
    unstable = config.check_stability & ((config.lr > bound) | jnp.any(left))
    # lr above the bound is why such a seed diverges: report the cause (and its fix)
    train_result = jnp.where(
        unstable & ((run.result == 0) | (run.result == RESULTS.diverged)), RESULTS.unstable, run.result
    )
    times = run.ts
    theta_scale = jnp.maximum(jnp.nanmax(jnp.abs(flow.thresholds)), 1e-12)
    star_flow = jnp.max(flow.thresholds, axis=1)
    star_train = jnp.max(run.thresholds, axis=1)
    u = matmul(data.x, net.fixed_frame.T)

    # crossing times, point by point: when training's θ* passes each data coordinate the
    # flow crosses by t1 (interpolated between saves), against the flow's exact time
    if usual is None:
        flow_cross, num_events = flow.crossing_times / clock, flow.num_events
    else:
        flow_cross, num_events = usual_crossing_times(usual, data.num_points), jnp.sum(usual.num_events)
    flow_cost = flow.cost * clock  # the usual cost predicted as c × the input-layer cost
    metric_condition = run.metric_condition
    target_scale = jnp.maximum(jnp.max(jnp.abs(run.pulled_targets[0])), 1e-12)
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
    # classes collapsed already at t = 0 are counted apart, not as collapsing
    at_start = jnp.all(class_top < star_flow[0][None], axis=-1)
    collapse_flow = jnp.where(at_start, jnp.nan, _collapse_times(times, star_flow, class_top))
    collapse_train = jnp.where(at_start, jnp.nan, _collapse_times(times, star_train, class_top))
    both = jnp.isfinite(collapse_flow) & jnp.isfinite(collapse_train)

    # the kind of solution per coordinate, read the same way off both; resolution: the
    # O(lr) gap between training and flow (lr × the largest initial velocity scale)
    tol = 10.0 * config.lr * jnp.maximum(1.0, jnp.max(jnp.abs(u)))
    kind_flow, switch_flow = solution_kinds(flow.thresholds, u, flow.n_truncated, tol)
    kind_train, switch_train = solution_kinds(run.thresholds, u, run.n_truncated, tol)

    metrics = dict(
        seed=jnp.asarray(seed, jnp.int32),
        kind_flow=kind_flow,
        kind_train=kind_train,
        switched_flow=switch_flow,
        switched_train=switch_train,
        kinds_agree=jnp.all((kind_flow == kind_train) & (switch_flow == switch_train)),
        flow_result=flow.result,
        train_result=train_result,
        stability_bound=bound,
        stability_bound_run=jnp.minimum(bound, jnp.min(along)),
        unstable_from=jnp.where(config.lr > bound, 0.0, unstable_from),
        threshold_error=jnp.max(jnp.abs(run.thresholds - flow.thresholds)) / theta_scale,
        cost_error=jnp.max(jnp.abs(run.cost - flow_cost)) / flow_cost[0],
        truncation_agreement=jnp.mean(jnp.all(run.n_truncated == flow.n_truncated, axis=1)),
        final_sets_agree=jnp.all((u <= star_flow[-1][None]) == (u <= star_train[-1][None])),
        num_events=num_events,
        crossings=jnp.sum(in_window),
        unmatched_crossings=jnp.sum(in_window & ~matched),
        extra_crossings=jnp.sum(extra),
        crossing_time_error=jnp.max(crossing_errors),
        collapse_time_flow=collapse_flow,
        collapse_time_train=collapse_train,
        collapsed_flow=jnp.sum(jnp.isfinite(collapse_flow)),
        collapsed_train=jnp.sum(jnp.isfinite(collapse_train)),
        collapsed_at_start=jnp.sum(at_start),
        collapse_time_error=jnp.max(jnp.where(both, jnp.abs(collapse_train - collapse_flow), 0.0)),
        drift=jnp.nanmax(run.drift),
        start_distance=jnp.max(family_distance(start, net)) if start is not None else jnp.zeros_like(bound),
        metric_condition=jnp.nanmax(metric_condition),
        target_motion=jnp.nanmax(jnp.abs(run.pulled_targets - run.pulled_targets[0][None])) / target_scale,
        baseline_threshold_error=(
            jnp.full_like(bound, jnp.nan)
            if usual is None
            else jnp.max(jnp.abs(run.thresholds - pullback.thresholds)) / theta_scale
        ),
        output_departure=jnp.nanmax(run.output_departure),
    )
    trajectories = dict(
        ts=times,
        thresholds_flow=flow.thresholds,
        thresholds_train=run.thresholds,
        cost_flow=flow_cost,
        cost_train=run.cost,
        n_flow=flow.n_truncated,
        n_train=run.n_truncated,
        kappa_flow=kappa,
        u=u,
        labels=data.labels,
        frame=net.frame,
        targets=data.targets,
        drift=run.drift,
        metric_condition=metric_condition,
    )
    return metrics, trajectories


# ---------------------------------------------------------------- many seeds


@eqx.filter_jit
def _compare_batch(seeds, config: CompareConfig, values: dict, user_data):
    """All seeds of a chunk in one vmap. `config` (a frozen dataclass) is static and
    `values` are arrays, so every chunk of a run, and every run or sweep point that differs
    only in value settings, reuses one compilation (the trajectories are cheap next to
    the solves, so every chunk returns them)."""
    return jax.vmap(lambda seed: compare_seed(seed, config, user_data, values))(seeds)


def seed_sharding():
    """A 1-D mesh over every device with a `seeds` axis (all hosts' devices)."""
    mesh = Mesh(np.asarray(jax.devices()), ("seeds",))
    return NamedSharding(mesh, PartitionSpec("seeds"))


def run_chunk(config: CompareConfig, user_data, seeds: np.ndarray, pad_to: int | None = None):
    """Metrics and trajectories for `seeds`, as NumPy arrays.

    The seeds are padded (repeating the last) to `pad_to` and to a multiple of the device
    count, so every chunk of a run has one shape and reuses one compiled program, then
    sharded over the mesh's `seeds` axis; each seed's result depends only on its own seed.
    """
    with precision(config):
        return _run_chunk(config, user_data, seeds, pad_to)


def _run_chunk(config, user_data, seeds, pad_to):
    sharding = seed_sharding()
    devices = sharding.mesh.size
    pad_to = min(pad_to or 0, config.seeds)  # a run smaller than a chunk is not padded up
    padded = math.ceil(max(len(seeds), pad_to) / devices) * devices
    host_seeds = np.concatenate([seeds, np.full(padded - len(seeds), seeds[-1])]).astype(np.int32)
    # every process holds the whole chunk and places its devices' slices (multi-host safe)
    seed_array = jax.make_array_from_callback(host_seeds.shape, sharding, lambda index: host_seeds[index])
    static, values = split_values(config)
    outputs = program_cache.call(
        "compare_batch",
        lambda seeds, values, data: _compare_batch(seeds, static, values, data),
        (seed_array, values, user_data),
        static,
    )
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        outputs = multihost_utils.process_allgather(outputs, tiled=True)
    metrics, trajectories = jax.tree.map(lambda value: np.asarray(value)[: len(seeds)], outputs)
    return metrics, trajectories


def chunk_results(config: CompareConfig, user_data, chunks, guard=None):
    """Runs each array of seeds in `chunks` as one chunk (padded to `config.chunk_size`,
    so every chunk reuses one compiled program) and yields `(seeds, metrics,
    trajectories, seconds)`. `guard(compute, seeds)`, if given, runs each chunk's
    computation (the run loop's stall watch). The one chunk loop of `compare` and
    `run_compare`."""
    for seeds in chunks:
        began = time.perf_counter()

        def compute(seeds=seeds):
            return run_chunk(config, user_data, seeds, pad_to=config.chunk_size)

        metrics, trajectories = compute() if guard is None else guard(compute, seeds)
        yield seeds, metrics, trajectories, time.perf_counter() - began


def kept_trajectories(config: CompareConfig, trajectories: dict) -> dict:
    """The trajectories a run keeps: those of its first `config.keep` seeds."""
    return {name: value[: config.keep] for name, value in trajectories.items()}


def compare(config: CompareConfig, seeds=None, *, progress=None):
    """Runs the comparison for `seeds` (default `range(config.seeds)`), chunk by chunk,
    in memory. Returns `(metrics, trajectories)`: per-seed metric arrays, and the
    trajectories of the first `config.keep` seeds. For runs that write results as they
    go and can resume, use `run_compare` (the `flowtrunc compare` command)."""
    config = config.on_device()
    check_fits_in_memory(config)
    config, user_data = resolve_data(config)
    seeds = np.arange(config.seeds) if seeds is None else np.asarray(seeds, np.int64)
    chunks = [seeds[start : start + config.chunk_size] for start in range(0, len(seeds), config.chunk_size)]
    parts, kept = [], None
    for count, (_, metrics, trajectories, _) in enumerate(chunk_results(config, user_data, chunks)):
        parts.append(metrics)
        if count == 0:
            kept = kept_trajectories(config, trajectories)
        if progress is not None:
            progress(count + 1, len(chunks))
    merged = {name: np.concatenate([part[name] for part in parts]) for name in parts[0]}
    return merged, kept


@contextlib.contextmanager
def precision(config: CompareConfig):
    """JAX's x64 mode as `config.precision` asks, for this block in this thread only: the
    library leaves JAX's configuration as it found it (`jax.enable_x64` is thread-local, so
    the chunk's worker thread enters it itself)."""
    wanted = config.on_device().precision == 64
    if jax.config.jax_enable_x64 == wanted:
        yield
        return
    # `jax.enable_x64` (newer JAX; a config state whose truth value raises), else the experimental one
    enable_x64 = (
        jax.enable_x64
        if hasattr(jax, "enable_x64")
        else importlib.import_module("jax.experimental").enable_x64
    )
    with enable_x64(wanted):
        yield
