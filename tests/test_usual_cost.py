"""The usual cost after an adapted output layer (docs/theory.md §9): its split into coordinate
problems, its effective field against autodiff of the real network, its event loop against
small-step training (first order), batching, gradients and bad inputs."""

import json
import pathlib

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import problem

import flowtrunc as ft

EPS = float(jnp.finfo(jnp.float64).eps)
SLIDES = ft.USUAL_EVENT_KINDS.index("data_slide")


def usual_problem(key, *, depth=3, width=3, num_points=20):
    """A random adapted net, clustered data (targets read as output targets) and a random
    adapted output layer; works inside vmap."""
    net, data = problem(key, depth=depth, width=width, num_points=num_points, bias_scale=0.8)
    layer = ft.AdaptedOutputLayer.random(jax.random.fold_in(key, 5), width, scale_spread=0.3, bias_scale=0.5)
    return net, layer, data


def pushforward(net, layer, data, train_weights, parameterisation):
    """J(p)(−ρ ∇_p C): the autodiff gradient of the real network's usual cost (forward pass)
    in the layer parameters p = (d, b, d_o, b_o), or (log d, b, log d_o, b_o), pushed to the
    effective state (θ, D, d_o, β = Qᵀ b_o). Frozen weights: the d-gradients are zeroed."""
    as_scales = jnp.exp if parameterisation == "log" else (lambda a: a)
    from_scales = jnp.log if parameterisation == "log" else (lambda a: a)

    def rebuild(p):
        d, b, d_o, b_o = p
        return (
            ft.AdaptedReLUNet(frame=net.frame, scales=as_scales(d), biases=b),
            ft.AdaptedOutputLayer(layer.frame, as_scales(d_o), b_o),
        )

    def cost(p):
        return ft.output_cost(*rebuild(p), data)

    start = (from_scales(net.scales), net.biases, from_scales(layer.scales), layer.bias)
    grad = jax.grad(cost)(start)
    if not train_weights:
        grad = (0 * grad[0], grad[1], 0 * grad[2], grad[3])

    def state(p):
        hidden, output = rebuild(p)
        theta, scales = ft.thresholds(hidden)
        return theta, scales, output.scales, output.offsets

    return jax.jvp(state, (start,), (jax.tree.map(jnp.negative, grad),))[1]


def test_usual_cost_is_the_sum_of_its_coordinate_costs():
    """docs/theory.md §9 split at 50 random states; both sides sum N·M squares of size
    ~C, so they agree to a few N·M·eps relative."""
    nets, layers, datas = eqx.filter_vmap(usual_problem)(jax.random.split(jax.random.key(0), 50))
    split = eqx.filter_vmap(lambda n, o, d: jnp.sum(ft.usual_coordinate_costs(n, o, d)))(nets, layers, datas)
    direct = eqx.filter_vmap(ft.output_cost)(nets, layers, datas)
    bound = 10 * 20 * 3 * EPS * (1 + np.asarray(direct))
    assert np.all(np.abs(np.asarray(split) - np.asarray(direct)) <= bound)
    assert np.all(np.asarray(direct) > 1e-3)  # not a trivially zero cost


@pytest.mark.slow  # compiles the field and the network's cost per case: 28 s for the first on 2 cores
@pytest.mark.parametrize("parameterisation", ["direct", "log"])
@pytest.mark.parametrize("train_weights", [True, False], ids=["trained", "frozen"])
def test_field_equals_autodiff_pushforward(train_weights, parameterisation):
    """The explicit field (docs/theory.md §9) at 50 random non-degenerate states per mode,
    to 1e-10 relative (observed ~1e-14)."""
    nets, layers, datas = eqx.filter_vmap(usual_problem)(jax.random.split(jax.random.key(1), 50))
    field = eqx.filter_vmap(
        lambda n, o, d: ft.usual_cost_field(
            n, o, d, train_weights=train_weights, parameterisation=parameterisation
        )
    )(nets, layers, datas)
    expected = eqx.filter_vmap(lambda n, o, d: pushforward(n, o, d, train_weights, parameterisation))(
        nets, layers, datas
    )
    for got, want in zip(field, expected):
        want = np.asarray(want).reshape(50, -1)
        error = np.max(np.abs(np.asarray(got).reshape(50, -1) - want), axis=1)
        assert np.all(error <= 1e-10 * (1 + np.max(np.abs(want), axis=1))), error
    # the regression term is there: the last layer's scale moves even where no point is truncated
    assert np.all(np.abs(np.asarray(field.output_offsets)) > 0)


def wine():
    raw = np.loadtxt(pathlib.Path(__file__).parent / "data" / "wine.csv", delimiter=",", skiprows=1)
    features = raw[:, :-1]
    x = (features - features.mean(0)) / features.std(0)
    return ft.Dataset(x=x, labels=raw[:, -1].astype(int))


def scenario(name):
    key = jax.random.key(0)
    if name == "wine":
        data = wine()
        net = ft.AdaptedReLUNet.random(key, 2, data.width, scale_spread=0.2, bias_scale=0.5)
        layer = ft.AdaptedOutputLayer.random(jax.random.fold_in(key, 1), data.width, bias_scale=0.3)
        return net, layer, data
    if name == "staircase":
        net = ft.AdaptedReLUNet.random(key, 3, 2, scale_spread=0.2, bias_scale=0.5)
        data = ft.make_staircase(jax.random.fold_in(key, 2), net.frame, num_points=60)
        layer = ft.AdaptedOutputLayer.random(jax.random.fold_in(key, 1), 2, bias_scale=0.3)
        return net, layer, data
    return usual_problem(jax.random.key(3), width=2, num_points=24)  # θ* slides on data coordinates


@pytest.mark.slow  # compiles programs of its own: ~40 s each on 2 cores (tests/README.md)
@pytest.mark.parametrize("name", ["wine", "staircase", "sliding"])
def test_small_step_training_converges_to_the_flow_at_first_order(name):
    """Gradient descent with step η is Euler's method on the layer parameters: its distance
    to the flow is O(η), also through sliding motions (where descent chatters around the
    data coordinate). Fitted order over η = 4e-3 ... 5e-4 on t ∈ [0, 2]: 1 ± 0.2."""
    net, layer, data = scenario(name)
    t1, saves = (5.0, 50) if name == "sliding" else (2.0, 10)
    ts = jnp.linspace(0.0, t1, saves + 1)
    flow = ft.solve_usual_cost(net, layer, data, ts=ts)
    assert int(flow.result) == 0
    if name == "sliding":
        assert np.sum(np.asarray(flow.event_kinds) == SLIDES) >= 2
    rates = [4e-3, 2e-3, 1e-3, 5e-4]
    errors = []
    for lr in rates:
        steps = int(round(t1 / lr))
        run = ft.train(
            net, data, lr=lr, steps=steps, save_every=steps // saves, cost="output", output_layer=layer
        )
        assert int(run.result) == 0 and np.max(np.asarray(run.output_departure)) < 1e-12
        errors.append(float(jnp.max(jnp.abs(run.thresholds - flow.thresholds))))
        scale_error = float(jnp.max(jnp.abs(run.output_layer.scales - flow.output_scales[-1])))
        assert scale_error < 20 * lr
    order = np.polyfit(np.log(rates), np.log(errors), 1)[0]
    assert abs(order - 1) <= 0.2, (errors, order)
    assert errors[-1] < 2e-3


@pytest.mark.slow  # compiles programs of its own: ~60 s on 2 cores (tests/README.md)
def test_batch_float32_and_no_recompilation(monkeypatch):
    """vmap over seeds: a seed with a non-positive output scale is `invalid_input`, the
    others equal their own unbatched solves to the solver's tolerances; float32 agrees with float64 to its tolerances
    (rtol 1e-5: ~1e-4 on O(1) thresholds); a second call with new values traces nothing."""
    from flowtrunc.internal import usual_cost_solve as solve_module

    nets, layers, datas = eqx.filter_vmap(lambda k: usual_problem(k, width=2))(
        jax.random.split(jax.random.key(7), 3)
    )
    poisoned = eqx.tree_at(lambda o: o.scales, layers, layers.scales.at[1, 0].set(-1.0))
    ts = jnp.linspace(0.0, 1.0, 6)
    batch = eqx.filter_vmap(lambda n, o, d: ft.solve_usual_cost(n, o, d, ts=ts))(nets, poisoned, datas)
    assert list(np.asarray(batch.result)) == [0, ft.RESULTS.invalid_input, 0]
    take = lambda tree, i: jax.tree.map(lambda a: a[i], tree)  # noqa: E731
    traces = []
    original = solve_module.solve_coordinate
    monkeypatch.setattr(
        solve_module, "solve_coordinate", lambda *a, **k: traces.append(1) or original(*a, **k)
    )
    singles, traced = [], []
    for i in (0, 2):
        singles.append(ft.solve_usual_cost(*take((nets, layers, datas), i), ts=ts))
        traced.append(len(traces))
    # the batched call may already have traced the unbatched program (vmap of a jit traces it
    # at the unbatched shapes), so the first single call traces at most once; the second none
    assert traced[0] <= 1 and traced[1] == traced[0], traced
    # Batched reductions round differently, and a marginal event decision (a side's speed
    # at round-off level) can then go the other way, so the two solves agree to the solver's
    # tolerances (measured: 6e-15 and 2.8e-9 for seed 2, whose slide chatters in one of them)
    rtol, atol = ft.EventLoop().tolerances(jnp.float64)
    for i, single in zip((0, 2), singles):
        assert np.allclose(batch.thresholds[i], single.thresholds, rtol=10 * rtol, atol=10 * atol)
    to32 = lambda tree: jax.tree.map(lambda a: a.astype(jnp.float32), tree)  # noqa: E731
    net, layer, data = take((nets, layers, datas), 0)
    data32 = ft.Dataset(
        x=data.x.astype(jnp.float32), labels=data.labels, targets=data.targets.astype(jnp.float32)
    )
    low = ft.solve_usual_cost(to32(net), to32(layer), data32, ts=ts.astype(jnp.float32))
    assert low.thresholds.dtype == jnp.float32 and int(low.result) == 0
    assert np.max(np.abs(np.asarray(low.thresholds, np.float64) - np.asarray(singles[0].thresholds))) < 1e-3


@pytest.mark.slow  # reverse mode through the event loop compiles for ~2 min on 2 cores
def test_gradient_against_finite_differences():
    """d(cost at t = 1)/d(output bias) by reverse mode through the event loop (three
    truncations on the way) against central differences; the FD error is
    h²·f''' + solve noise/h, about 1e-7 here."""
    net, layer, data = usual_problem(jax.random.key(3), depth=2, width=2, num_points=12)
    ts = jnp.array([0.0, 1.0])
    solver = ft.EventLoop(rtol=1e-11, atol=1e-13)

    def final_cost(bias):
        moved = eqx.tree_at(lambda out: out.bias, layer, bias)
        return ft.solve_usual_cost(net, moved, data, ts=ts, solver=solver).cost[-1]

    grad = np.asarray(jax.jit(jax.grad(final_cost))(layer.bias))
    cost = jax.jit(final_cost)
    h = 1e-5
    fd = np.array(
        [(cost(layer.bias.at[i].add(h)) - cost(layer.bias.at[i].add(-h))) / (2 * h) for i in range(2)]
    )
    assert np.all(np.abs(grad) > 1e-3)
    assert np.allclose(grad, fd, rtol=1e-5, atol=1e-7), (grad, fd)


@pytest.mark.wrong_types
def test_bad_inputs_name_the_argument_and_the_fix():
    net, layer, data = usual_problem(jax.random.key(0))
    ts = jnp.linspace(0, 1, 3)
    with pytest.raises(ValueError, match="frame.*not orthogonal"):
        ft.AdaptedOutputLayer(2 * np.eye(3), np.ones(3), np.zeros(3))
    with pytest.raises(ValueError, match="scales.*strictly positive"):
        ft.AdaptedOutputLayer(np.eye(3), np.array([1.0, 0.0, 1.0]), np.zeros(3))
    with pytest.raises(ValueError, match="NaN"):
        ft.AdaptedOutputLayer(np.eye(3), np.ones(3), np.array([0.0, np.nan, 0.0]))
    general = layer.to_general()
    with pytest.raises(ValueError, match="perturbs an AdaptedOutputLayer"):
        ft.off_adapted_output(jax.random.key(4), general, 0.1)
    for call in (
        lambda: ft.solve_usual_cost(net, general, data, ts=ts),
        lambda: ft.usual_cost_field(net, general, data),
        lambda: ft.usual_coordinate_costs(net, general, data),
    ):
        with pytest.raises(ValueError, match="needs an AdaptedOutputLayer.*AdaptedOutputLayer.random"):
            call()
    narrow = ft.AdaptedOutputLayer.random(jax.random.key(1), 2)
    with pytest.raises(ValueError, match="width 2 but the network has width 3"):
        ft.solve_usual_cost(net, narrow, data, ts=ts)
    with pytest.raises(ValueError, match="solver=ft.EventLoop"):
        ft.solve_usual_cost(net, layer, data, ts=ts, solver=ft.OrbitClock())
    with pytest.raises(ValueError, match="sorted"):
        ft.solve_usual_cost(net, layer, data, ts=jnp.array([1.0, 0.0]))
    with pytest.raises(ValueError, match="`train_weights` must be True or False"):
        ft.usual_cost_field(net, layer, data, train_weights="log")
    with pytest.raises(ValueError, match="belongs to the usual cost"):
        ft.train(net, data, lr=1e-3, steps=2, output_layer=layer)
    with pytest.raises(ValueError, match="needs an AdaptedReLUNet"):
        ft.solve_usual_cost(net.to_general(), layer, data, ts=ts)
    with pytest.raises(ValueError, match="`output_start`.*needs cost='output' with an AdaptedOutputLayer"):
        ft.train(net, data, lr=1e-3, steps=2, cost="output", output_layer=general, output_start=general)
    with pytest.raises(ValueError, match="and mode='unconstrained'"):
        ft.train(net, data, lr=1e-3, steps=2, cost="output", output_layer=layer, output_start=general)
    with pytest.raises(ValueError, match="`output_start` must be an OutputLayer of width 3"):
        ft.train(
            net,
            data,
            lr=1e-3,
            steps=2,
            cost="output",
            output_layer=layer,
            output_start=layer,
            mode="unconstrained",
        )


def test_a_perturbed_output_layer_has_its_size_and_the_nearest_adapted_layer_is_exact():
    """`off_adapted_output` moves W_o = Q D_o by exactly ε in relative Frobenius norm (to a
    few eps: one norm ratio); `nearest_adapted_output` of an adapted weight returns its d_o
    (diag(QᵀQ D_o): M-term dot products, M eps relative); a weight with no positive
    diagonal in its frame is refused."""
    layer = ft.AdaptedOutputLayer.random(jax.random.key(3), 4, scale_spread=0.3, bias_scale=0.5)
    moved = ft.off_adapted_output(jax.random.key(4), layer, 0.1)
    size = np.linalg.norm(moved.weight - layer.weight) / np.linalg.norm(layer.weight)
    assert abs(size - 0.1) <= 0.1 * 16 * EPS
    assert np.array_equal(moved.bias, layer.bias)
    assert float(ft.output_frame_departure(moved.weight, layer.frame)) > 0
    nearest = ft.nearest_adapted_output(layer.to_general(), layer.frame)
    np.testing.assert_allclose(nearest.scales, layer.scales, rtol=4 * 4 * EPS)
    assert float(ft.output_frame_departure(layer.weight, layer.frame)) <= 16 * EPS
    flipped = ft.OutputLayer(-layer.weight, layer.bias)
    with pytest.raises(ValueError, match="no adapted output layer is near it"):
        ft.nearest_adapted_output(flipped, layer.frame)
    with pytest.raises(ValueError, match="must be a finite number >= 0"):
        ft.off_adapted_output(jax.random.key(4), layer, -0.1)


# a small comparison: 8 seeds of the default scenario (N = 60, L = 3, M = 2), 200 steps
ADAPTED = dict(
    seeds=8, chunk_size=8, t1=2.0, lr=0.01, saves=20, keep=1, cost="output", output_layer="adapted"
)


@pytest.mark.slow  # compiles two comparison programs: ~4 min on 2 cores (tests/README.md)
def test_compare_predicts_the_usual_cost_after_an_adapted_output_layer(tmp_path):
    """`compare --cost output --output-layer adapted`: the usual cost's own flow is within
    10 lr of training (first order in lr, the issue's bound) on seeds where the t = 0
    pull-back, side by side, is O(1) off; the adapted layer stays adapted; its figure puts
    both errors against the measured departure. Off the family (unconstrained training
    from Q D_o perturbed by ε, one program for every ε), the error grows with ε and so does
    the measured departure. (At ε = 0 unconstrained training leaves the family by itself,
    hidden layers included, measured: error 0.09 at drift 0.09 and output departure 0.08,
    as large as ε = 0.1 gives; so the dial is read from 0.1 up: 0.09, 0.19, 0.47 at 0.1,
    0.3, 0.6.)"""
    from flowtrunc import CompareConfig, compare
    from flowtrunc.internal import figures, load_run, run_compare

    out = tmp_path / "adapted"
    run_compare(CompareConfig(**ADAPTED), str(out), progress=False)
    config, _, metrics, trajectories = load_run(str(out))
    assert np.all(metrics["flow_result"] == 0) and np.all(metrics["train_result"] == 0)
    errors, baseline = metrics["threshold_error"], metrics["baseline_threshold_error"]
    assert np.median(errors) <= 10 * config.lr, errors
    assert np.median(baseline) >= 0.5 and np.all(baseline > 10 * errors), (baseline, errors)
    assert np.all(metrics["output_departure"] <= 16 * EPS)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["output_layer"] == "adapted" and summary["baseline_threshold_error"]["q50"] >= 0.5
    drawn = dict(figures(config, metrics, trajectories, summary))
    axes = drawn["output_metric.png"].axes
    assert [ax.get_xlabel() for ax in axes] == [ft_metric_label("output_departure")] * 2
    assert [ax.get_ylabel() for ax in axes] == [
        ft_metric_label("threshold_error"),
        ft_metric_label("baseline_threshold_error"),
    ]
    import matplotlib.pyplot as plt

    for fig in drawn.values():
        plt.close(fig)

    medians, departures = [], []
    for eps in (0.1, 0.25, 0.5):
        metrics, _ = compare(CompareConfig(**ADAPTED, mode="unconstrained", output_departure=eps))
        ok = (metrics["flow_result"] == 0) & (metrics["train_result"] == 0)
        assert ok.sum() >= 5, (metrics["flow_result"], metrics["train_result"])
        medians.append(float(np.median(metrics["threshold_error"][ok])))
        departures.append(float(np.median(metrics["output_departure"][ok])))
    assert medians[0] < medians[1] < medians[2], medians
    assert departures[0] < departures[1] < departures[2], departures


def ft_metric_label(name):
    from flowtrunc.internal import METRICS

    return METRICS[name].label
