"""Departures from the ideal case: gradient flow on log d instead of d."""

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import problem

import flowtrunc as ft

TIGHT = dict(ode_solver=diffrax.Dopri8(), rtol=1e-12, atol=1e-12)
SOLVERS = {"orbit": ft.OrbitClock, "events": ft.EventLoop}


@pytest.fixture(scope="module")
def default():
    return problem(jax.random.key(0), num_points=30)


@pytest.mark.slow  # convergence orders / large N: many compiled programs
@pytest.mark.parametrize("method", ["orbit", "events"])
def test_log_descent_converges_to_the_log_flow_with_order_one(default, method):
    """Steps on log d against `solve_effective(parameterisation="log")`: fitted slope of
    log error in log lr within [0.8, 1.2] (first order, docs/theory.md §6), thresholds and
    cumulative scales, over a horizon with events."""
    net, data = default
    horizon = 2.0
    flow = ft.solve_effective(
        net, data, ts=jnp.array([0.0, horizon]), parameterisation="log", solver=SOLVERS[method](**TIGHT)
    )
    assert int(flow.num_events) >= 2
    rates = [0.02, 0.01, 0.005, 0.0025]
    errors = []
    for lr in rates:
        steps = int(round(horizon / lr))
        run = ft.train(net, data, lr=lr, steps=steps, save_every=steps, parameterisation="log")
        assert int(run.result) == 0
        errors.append(
            max(
                float(jnp.max(jnp.abs(run.thresholds[-1] - flow.thresholds[-1]))),
                float(jnp.max(jnp.abs(run.scales[-1] - flow.scales[-1]))),
            )
        )
    slope = np.polyfit(np.log(rates), np.log(errors), 1)[0]
    assert 0.8 <= slope <= 1.2, (slope, errors)
    assert errors[-1] < 1e-3


@pytest.mark.slow  # compiles programs of its own: 89 s on 2 cores (tests/README.md)
def test_log_and_direct_agree_with_frozen_weights_and_differ_when_trained(default):
    net, data = default
    ts = jnp.linspace(0.0, 2.0, 5)

    def solve(p, w):
        return ft.solve_effective(
            net, data, ts=ts, train_weights=w, parameterisation=p, solver=ft.OrbitClock(**TIGHT)
        )

    frozen_log, frozen_direct = solve("log", False), solve("direct", False)
    np.testing.assert_array_equal(frozen_log.thresholds, frozen_direct.thresholds)

    def train(p, w):
        return ft.train(net, data, lr=0.01, steps=200, save_every=50, train_weights=w, parameterisation=p)

    np.testing.assert_allclose(
        train("log", False).thresholds, train("direct", False).thresholds, rtol=1e-13, atol=1e-14
    )
    # with the weights trained the two flows differ by far more than their error
    gap = float(jnp.max(jnp.abs(solve("log", True).scales - solve("direct", True).scales)))
    assert gap > 1e-3, gap


@pytest.mark.slow  # compiles programs of its own: 49 s on 2 cores (tests/README.md)
def test_end_state_follows_the_parameterisation(default):
    """`end_state` with log d ends where the log flow ends (its t = inf output)."""
    net, data = default
    end = ft.end_state(net, data, parameterisation="log", solver=ft.OrbitClock(**TIGHT))
    flow = ft.solve_effective(
        net, data, ts=jnp.array([0.0, jnp.inf]), parameterisation="log", solver=ft.OrbitClock(**TIGHT)
    )
    np.testing.assert_allclose(end.thresholds, flow.thresholds[-1], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(
    "call, message",
    [
        (
            lambda n, d: ft.effective_field(n, d, parameterisation="exp"),
            "`parameterisation` must be 'direct'",
        ),
        (
            lambda n, d: ft.solve_effective(n, d, ts=jnp.ones(2), parameterisation="Log"),
            "`parameterisation` must be",
        ),
        (lambda n, d: ft.train(n, d, lr=0.1, steps=1, parameterisation="logs"), "`parameterisation` must be"),
        (
            lambda n, d: ft.train(n, d, lr=0.1, steps=1, mode="unconstrained", parameterisation="log"),
            "unconstrained training moves full matrices",
        ),
    ],
)
def test_bad_parameterisation_is_named(default, call, message):
    net, data = default
    with pytest.raises(ValueError, match=message):
        call(net, data)


@pytest.mark.slow  # compiles programs of its own: 67 s on 2 cores (tests/README.md)
def test_compare_runs_the_log_parameterisation_and_records_it(tmp_path):
    """Flow and training both on log d: first-order agreement as for d (relative threshold
    error <= C lr; C <= 1.1 measured over 64 default seeds, bounded here by 2), and
    `parameterisation` recorded in config.json and summary.json."""
    import json

    from helpers import TINY

    from flowtrunc import CompareConfig
    from flowtrunc.internal import run_compare

    out = tmp_path / "log"
    assert run_compare(CompareConfig(**{**TINY, "parameterisation": "log"}), str(out), progress=False)
    assert json.loads((out / "config.json").read_text())["parameterisation"] == "log"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["parameterisation"] == "log" and summary["ok_seeds"] == TINY["seeds"]
    assert summary["threshold_error"]["q100"] < 2 * TINY["lr"], summary["threshold_error"]


# ------------------------------------------------ starting off the adapted family


def test_nearest_adapted_recovers_an_adapted_net_and_off_adapted_has_the_asked_size(default):
    net, _ = default
    back = ft.nearest_adapted(net.to_general())
    for name in ("frame", "scales", "biases"):
        np.testing.assert_allclose(getattr(back, name), getattr(net, name), rtol=1e-13, atol=1e-14)
    start = ft.off_adapted(jax.random.key(3), net, 0.1)
    gap = np.asarray(start.layer_weights() - net.layer_weights())
    size = np.linalg.norm(gap, axis=(1, 2)) / np.linalg.norm(np.asarray(net.layer_weights()), axis=(1, 2))
    np.testing.assert_allclose(size, 0.1, rtol=1e-12)
    np.testing.assert_array_equal(start.biases, net.biases)
    # layers >= 2: the diagonal fit is the nearest diagonal matrix, so it is at least as
    # near as the adapted net the perturbation started from (layer 1 fits D R via the polar
    # factor, not a joint optimum)
    nearest = ft.nearest_adapted(start)
    fitted = np.linalg.norm(np.asarray(start.layer_weights() - nearest.layer_weights())[1:], axis=(1, 2))
    assert np.all(fitted <= np.linalg.norm(gap[1:], axis=(1, 2)) * (1 + 1e-12))


def test_training_from_a_start_equals_unconstrained_training_from_it(default):
    """`start=net.to_general()` is the unconstrained run from `net` itself, step for step."""
    net, data = default
    run = lambda **k: ft.train(net, data, lr=0.01, steps=100, save_every=25, mode="unconstrained", **k)  # noqa: E731
    plain, started = run(), run(start=net.to_general())
    np.testing.assert_allclose(started.thresholds, plain.thresholds, rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(started.drift, plain.drift, rtol=1e-10, atol=1e-13)


OFF = dict(seeds=16, points=12, clusters=2, t1=1.0, lr=0.02, saves=10, chunk_size=16, keep=1)


@pytest.mark.slow  # compiles programs of its own: 96 s on 2 cores (tests/README.md)
def test_off_adapted_zero_reproduces_the_run_exactly():
    from flowtrunc import CompareConfig, compare

    for mode in ("adapted", "unconstrained"):
        base, _ = compare(CompareConfig(**{**OFF, "mode": mode}))
        zero, _ = compare(CompareConfig(**{**OFF, "mode": mode, "off_adapted": 0.0}))
        for key in base:
            np.testing.assert_array_equal(zero[key], base[key], err_msg=key)
        assert np.all(zero["start_distance"] == 0)


@pytest.mark.slow
def test_prediction_error_grows_with_the_departure():
    """ε = 0, 0.1, 0.2, 0.3 on the same 64 seeds: the measured start distance grows with ε
    (about ε less the part of the perturbation the nearest adapted net absorbs), and so do the
    medians of the prediction's threshold and cost errors (measured: threshold 0.117,
    0.168, 0.246, 0.409; at ε = 0 the error is that of unconstrained training itself).
    Steps of 0.1 in ε: with 16 seeds or steps of 0.05 the seed-to-seed spread hides them."""
    from flowtrunc import CompareConfig, compare

    settings = {**OFF, "seeds": 64, "chunk_size": 64, "mode": "unconstrained"}
    medians, costs, distances = [], [], []
    for eps in (0.0, 0.1, 0.2, 0.3):
        metrics, _ = compare(CompareConfig(**{**settings, "off_adapted": eps}))
        assert np.all(metrics["flow_result"] == 0) and np.all(metrics["train_result"] == 0)
        medians.append(float(np.median(metrics["threshold_error"])))
        costs.append(float(np.median(metrics["cost_error"])))
        distances.append(float(np.median(metrics["start_distance"])))
    assert np.all(np.diff(distances) > 0), distances
    assert np.all(np.diff(medians) > 0), medians
    assert np.all(np.diff(costs) > 0), costs


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"off_adapted": -0.1, "mode": "unconstrained"}, r"`off_adapted` \(ε"),
        ({"off_adapted": 1.5, "mode": "unconstrained"}, r"must be in \[0, 1\)"),
        ({"off_adapted": 0.1}, "add mode='unconstrained'"),
        (
            {"parameterisation": "log", "mode": "unconstrained"},
            "Use mode='adapted' or parameterisation='direct'",
        ),
    ],
)
def test_contradictory_or_bad_departure_settings_are_refused(settings, message):
    from flowtrunc import CompareConfig

    with pytest.raises(ValueError, match=message):
        CompareConfig(**{**OFF, **settings})


def test_bad_off_adapted_arguments(default):
    net, data = default
    with pytest.raises(ValueError, match="must be a finite number >= 0"):
        ft.off_adapted(jax.random.key(0), net, -1.0)
    with pytest.raises(ValueError, match="no adapted network is near"):
        ft.nearest_adapted(ft.off_adapted(jax.random.key(0), net, 50.0))
    with pytest.raises(ValueError, match="needs mode='unconstrained'"):
        ft.train(net, data, lr=0.01, steps=1, start=net.to_general())


# ------------------------------------------------ the usual cost with an output layer


@pytest.mark.slow  # compiles programs of its own: 31 s on 2 cores (tests/README.md)
@pytest.mark.parametrize("adapted", [True, False], ids=["adapted", "general"])
@pytest.mark.parametrize("condition", [1.0, 10.0, 1e3])
def test_usual_cost_is_the_input_layer_cost_in_the_metric_g(adapted, condition):
    """docs/theory.md §6 at 20 random states each: the forward-pass output cost equals the
    input-layer cost in G with the pulled-back targets, adapted nets and general ones (a
    perturbed start), orthogonal to ill-conditioned output layers. Error model: the
    pull-back solves with T = W_o W^(L), a relative error of ~κ(T) eps; bound 64 κ(T) eps
    (1e-12 when κ(T) < 70, as for orthogonal output layers)."""
    for i in range(20):
        key = jax.random.key(100 + i)
        net, data = problem(key, depth=3, width=3, num_points=25, bias_scale=0.8)
        if not adapted:
            net = ft.off_adapted(jax.random.fold_in(key, 1), net, 0.3)
        layer = ft.OutputLayer.random(jax.random.fold_in(key, 2), 3, condition=condition)
        layer = ft.OutputLayer(layer.weight, jax.random.normal(jax.random.fold_in(key, 3), (3,)))
        outputs = ft.Dataset(x=data.x, labels=data.labels, targets=data.targets * 2.0 + 1.0)
        metric, targets = ft.pulled_back(net, layer, outputs)
        usual = float(ft.output_cost(net, layer, outputs))
        pulled = float(ft.metric_cost(net, ft.Dataset(x=data.x, labels=data.labels, targets=targets), metric))
        eigenvalues = np.linalg.eigvalsh(np.asarray(metric))
        assert np.all(eigenvalues > 0)
        kappa = float(np.sqrt(eigenvalues[-1] / eigenvalues[0]))  # κ(T), G = TᵀT
        error = abs(usual - pulled) / usual
        assert error < 64 * kappa * np.finfo(np.float64).eps, (i, error, kappa)


def test_output_layer_condition_is_the_dial():
    for condition in (1.0, 4.0, 100.0):
        layer = ft.OutputLayer.random(jax.random.key(0), 4, condition=condition)
        np.testing.assert_allclose(np.linalg.cond(np.asarray(layer.weight)), condition, rtol=1e-10)


@pytest.mark.parametrize(
    "build, message",
    [
        (lambda: ft.OutputLayer(jnp.array([[1.0, 2.0], [2.0, 4.0]]), jnp.zeros(2)), "singular or nearly so"),
        (
            lambda: ft.OutputLayer(jnp.array([[1.0, 0.0], [0.0, 1e-20]]), jnp.zeros(2)),
            "singular or nearly so",
        ),
        (lambda: ft.OutputLayer.random(jax.random.key(0), 2, condition=0.0), "must be a finite number >= 1"),
        (lambda: ft.OutputLayer.random(jax.random.key(0), 2, condition=-3.0), "must be a finite number >= 1"),
        (lambda: ft.OutputLayer(jnp.ones((2, 3)), jnp.zeros(2)), r"`weight` must have shape \(M, M\)"),
        (lambda: ft.OutputLayer(jnp.eye(2), jnp.array([0.0, jnp.nan])), "bias"),
    ],
)
def test_bad_output_layers_are_named(build, message):
    with pytest.raises(ValueError, match=message):
        build()
