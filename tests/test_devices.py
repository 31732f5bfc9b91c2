"""Settings chosen from the device, and the notice when a GPU build of JAX finds no GPU."""

import json
import os

import jax
import jax.numpy as jnp
import pytest
from helpers import TINY, cli_process

from flowtrunc import CompareConfig
from flowtrunc.internal import (
    DEVICE_CHOSEN,
    DEVICE_DEFAULTS,
    float_dtype,
    gpu_fallback_notice,
    settle_device_settings,
)


@pytest.mark.parametrize("backend, table", [("cpu", "cpu"), ("gpu", "accelerator"), ("tpu", "accelerator")])
def test_unset_settings_come_from_the_device(backend, table):
    chosen = CompareConfig().on_device(backend=backend)
    for name in DEVICE_CHOSEN:
        assert getattr(chosen, name) == DEVICE_DEFAULTS[table][name]


def test_given_and_saved_settings_win_over_the_device():
    given = CompareConfig(precision=64, chunk_size=7).on_device(backend="gpu")
    assert (given.precision, given.chunk_size) == (64, 7)
    resumed = CompareConfig().on_device({"precision": 64, "chunk_size": 100}, backend="gpu")
    assert (resumed.precision, resumed.chunk_size) == (64, 100)


def test_this_process_gets_the_defaults_of_its_backend():
    """The test process runs with x64 enabled: an unset precision is then 64 everywhere."""
    assert jax.config.jax_enable_x64
    table = "cpu" if jax.default_backend() == "cpu" else "accelerator"
    assert CompareConfig().on_device().chunk_size == DEVICE_DEFAULTS[table]["chunk_size"]
    assert float_dtype(CompareConfig()) == jnp.float64


def test_a_resumed_run_keeps_the_settings_it_began_with(tiny_run):
    unset = CompareConfig(**{**TINY, "chunk_size": None, "precision": None})
    with open(os.path.join(tiny_run, "config.json")) as f:
        saved = json.load(f)
    resumed = settle_device_settings(unset, tiny_run, resume=True)
    assert (resumed.chunk_size, resumed.precision) == (saved["chunk_size"], saved["precision"])
    fresh = settle_device_settings(unset, tiny_run, resume=False)
    assert fresh.chunk_size == CompareConfig().on_device().chunk_size


def test_a_gpu_build_without_a_gpu_gives_one_line():
    notice = gpu_fallback_notice("cpu", ["jax-cuda12-plugin", "jax-cuda12-pjrt"])
    assert "\n" not in notice and "jax-cuda12-plugin" in notice and "running on the CPU" in notice
    assert gpu_fallback_notice("gpu", ["jax-cuda12-plugin"]) is None
    assert gpu_fallback_notice("cpu", []) is None


@pytest.mark.slow  # compiles programs of its own: 66 s on 2 cores (tests/README.md)
def test_float32_comparison_agrees_with_float64(tmp_path, tiny_run):
    """`--precision 32` (a GPU's default) against the float64 run of the same seeds.
    Error model, per seed: gradient descent's K = t1/lr steps each round ~(N + 4L) float32
    operations per coordinate (relative eps32), of size S = max |data|, amplified at most
    by exp(λ_max t1) (λ_max = 2 / the stability bound); the flow adds ~10 N eps32 S (its
    clock sums N pieces). Metrics that are differences of the two stay within the sum."""
    import numpy as np

    from flowtrunc.internal import resolve_data, seed_problem

    flags = [f"--{k.replace('_', '-')}={v}" for k, v in TINY.items()]
    child = cli_process(["compare", "--out", str(tmp_path / "f32"), "--precision", "32", *flags])
    out, err = child.communicate(timeout=600)
    assert child.returncode == 0, err
    f32, f64 = np.load(tmp_path / "f32" / "seeds.npz"), np.load(os.path.join(tiny_run, "seeds.npz"))
    config, _ = resolve_data(CompareConfig(**TINY).on_device())
    eps32, steps = float(np.finfo(np.float32).eps), config.steps
    for i, seed in enumerate(f64["seed"]):
        _, data = seed_problem(int(seed), config, None)
        size = float(max(np.abs(data.x).max(), np.abs(data.point_targets()).max()))
        growth = np.exp(2.0 / f64["stability_bound"][i] * config.t1)
        train = growth * steps * (config.points + 4 * config.depth) * eps32 * size
        tol = train + 10 * config.points * eps32 * size
        for name in ("threshold_error", "cost_error", "drift"):
            assert abs(f32[name][i] - f64[name][i]) <= tol, (name, int(seed), f32[name][i], f64[name][i], tol)
    assert np.all(f32["flow_result"] == 0) and np.all(f32["train_result"] == 0)


def _dot_precisions(jaxpr):
    """The `precision` of every dot_general in a jaxpr and its sub-jaxprs."""
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "dot_general":
            yield eqn.params["precision"]
        for param in eqn.params.values():
            for sub in param if isinstance(param, (list, tuple)) else [param]:
                inner = getattr(sub, "jaxpr", sub)
                if hasattr(inner, "eqns"):
                    yield from _dot_precisions(inner)


def test_every_matrix_product_runs_at_full_precision():
    """On GPUs JAX multiplies float32 matrices in TF32 (~1e-3) by default; measured on an
    H100, that moved the default comparison's median cost error from 2.6e-4 to 4.8e-3.
    Every product in one seed's comparison (flow, training, metrics) must ask for HIGHEST."""
    from jax import lax

    from flowtrunc.internal import compare_seed

    config = CompareConfig(**{**TINY, "mode": "unconstrained"}).on_device()
    precisions = list(_dot_precisions(jax.make_jaxpr(lambda s: compare_seed(s, config))(0).jaxpr))
    assert precisions, "no matrix product found: the walk over the jaxpr is broken"
    highest = (lax.Precision.HIGHEST, lax.Precision.HIGHEST)
    assert all(p == highest for p in precisions), precisions


def test_jax_plugin_traceback_is_replaced_by_the_one_line_notice(monkeypatch, caplog):
    """With the cuda12 extra on a host without a GPU, JAX logs the plugin's failed start as
    a multi-line traceback (checked in a real `.[cuda12]` install here); the CLI drops
    that one record and prints its own line. Other JAX warnings still pass."""
    import logging

    from flowtrunc.internal import processes

    logger = logging.getLogger("jax._src.xla_bridge")
    monkeypatch.setattr(logger, "filters", [])
    monkeypatch.setattr(processes, "_gpu_plugins", lambda: ["jax-cuda12-plugin"])
    monkeypatch.setattr(processes.os.path, "exists", lambda path: False)
    processes.quiet_gpu_plugin_without_gpu()
    with caplog.at_level(logging.WARNING, logger="jax._src.xla_bridge"):
        logger.error("Jax plugin configuration error: Exception when calling %s.initialize()", "x")
        logger.warning("another JAX warning")
    assert [r.getMessage() for r in caplog.records] == ["another JAX warning"]
