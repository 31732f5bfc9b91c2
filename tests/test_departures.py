"""Departures from the ideal case (issue 12): gradient flow on log d instead of d."""

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import problem

import flowtrunc as ft

TIGHT = dict(solver=diffrax.Dopri8(), rtol=1e-12, atol=1e-12)


@pytest.fixture(scope="module")
def default():
    return problem(jax.random.key(0), num_points=30)


@pytest.mark.parametrize("method", ["orbit", "events"])
def test_log_descent_converges_to_the_log_flow_with_order_one(default, method):
    """Steps on log d against `solve_effective(parameterisation="log")`: fitted slope of
    log error in log lr within [0.8, 1.2] (first order, THEORY section 6), thresholds and
    cumulative scales, over a horizon with events."""
    net, data = default
    horizon = 2.0
    flow = ft.solve_effective(
        net, data, ts=jnp.array([0.0, horizon]), parameterisation="log", method=method, **TIGHT
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


def test_log_and_direct_agree_with_frozen_weights_and_differ_when_trained(default):
    net, data = default
    ts = jnp.linspace(0.0, 2.0, 5)
    solve = lambda p, w: ft.solve_effective(net, data, ts=ts, train_weights=w, parameterisation=p, **TIGHT)  # noqa: E731
    frozen_log, frozen_direct = solve("log", False), solve("direct", False)
    np.testing.assert_array_equal(frozen_log.thresholds, frozen_direct.thresholds)
    train = lambda p, w: ft.train(
        net, data, lr=0.01, steps=200, save_every=50, train_weights=w, parameterisation=p
    )  # noqa: E731
    np.testing.assert_allclose(
        train("log", False).thresholds, train("direct", False).thresholds, rtol=1e-13, atol=1e-14
    )
    # with the weights trained the two flows differ by far more than their error
    gap = float(jnp.max(jnp.abs(solve("log", True).scales - solve("direct", True).scales)))
    assert gap > 1e-3, gap


def test_end_state_follows_the_parameterisation(default):
    """`end_state` with log d ends where the log flow ends (its t = inf output)."""
    net, data = default
    end = ft.end_state(net, data, parameterisation="log", **TIGHT)
    flow = ft.solve_effective(net, data, ts=jnp.array([0.0, jnp.inf]), parameterisation="log", **TIGHT)
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


def test_compare_runs_the_log_parameterisation_and_records_it(tmp_path):
    """Flow and training both on log d: first-order agreement as for d (relative threshold
    error <= C lr; C <= 1.1 measured over 64 default seeds, bounded here by 2), and
    `parameterisation` recorded in config.json and summary.json."""
    import json

    from helpers import TINY

    from flowtrunc._compare import CompareConfig
    from flowtrunc._output import run_compare

    out = tmp_path / "log"
    assert run_compare(CompareConfig(**{**TINY, "parameterisation": "log"}), str(out), progress=False)
    assert json.loads((out / "config.json").read_text())["parameterisation"] == "log"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["parameterisation"] == "log" and summary["ok_seeds"] == TINY["seeds"]
    assert summary["threshold_error"]["q100"] < 2 * TINY["lr"], summary["threshold_error"]
