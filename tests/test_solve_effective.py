"""Solvers of the effective flow: diffrax against the exact solution, scipy, closed-form
rates, kinks, gradients, batching and compilation."""

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import fd_error_bound, numpy_effective_rhs, problem
from scipy.integrate import solve_ivp

import flowtrunc as ft

TIGHT = dict(ode_solver=diffrax.Dopri8(), rtol=1e-12, atol=1e-12)
EVENTS = dict(solver=ft.EventLoop(**TIGHT))
SOLVERS = {"orbit": ft.OrbitClock, "events": ft.EventLoop}
TS = jnp.linspace(0.0, 8.0, 9)


@pytest.fixture(scope="module")
def batch():
    """20 seeds of the small problem, with their exact frozen-weight solutions (key 43:
    its batch holds every kind of event by t = 8, kinks included; key 42's has no kink)."""
    keys = jax.random.split(jax.random.key(43), 20)
    nets, datas = eqx.filter_vmap(problem)(keys)
    exact = eqx.filter_vmap(lambda n, d: ft.solve_frozen_exact(n, d, ts=TS))(nets, datas)
    return nets, datas, exact


@pytest.mark.slow  # compiles programs of its own: 58 s on 2 cores (tests/README.md)
def test_diffrax_matches_exact_frozen(batch):
    nets, datas, exact = batch
    flow = eqx.filter_vmap(lambda n, d: ft.solve_effective(n, d, ts=TS, train_weights=False, **EVENTS))(
        nets, datas
    )
    assert np.all(np.asarray(exact.result) == 0) and np.all(np.asarray(flow.result) == 0)
    kinds = np.asarray(exact.event_kinds)
    # the batch exercises every kind of switching surface
    for kind in (
        ft.EVENT_KINDS.index("truncation"),
        ft.EVENT_KINDS.index("release"),
        ft.EVENT_KINDS.index("layer_switch"),
        ft.EVENT_KINDS.index("kink"),
    ):
        assert np.sum(kinds == kind) >= 1, ft.EVENT_KINDS[kind]
    assert np.array_equal(exact.num_events, flow.num_events)
    for field in ("event_kinds", "event_coords", "event_points", "event_layers"):
        assert np.array_equal(getattr(exact, field), getattr(flow, field)), field
    happened = np.isfinite(np.asarray(exact.event_times))
    t_exact, t_flow = np.asarray(exact.event_times)[happened], np.asarray(flow.event_times)[happened]
    # an event's time error is its state error over the speed there, δt = δθ/|θ̇*|: state
    # errors ~1e-10 (up to ~60 segments at rtol 1e-12) over speeds down to ~1e-3 near an
    # asymptote give ~1e-7 on the flow's time scale (1/κ ~ 1: absolute below t = 1);
    # the states themselves are compared to 1e-8 below
    assert np.max(np.abs(t_flow - t_exact) / np.maximum(t_exact, 1.0)) < 1e-7
    scale = np.max(np.abs(np.asarray(exact.thresholds)), axis=(1, 2, 3), keepdims=True)
    assert np.max(np.abs(flow.thresholds - exact.thresholds) / scale) < 1e-8
    assert np.allclose(flow.cost, exact.cost, rtol=1e-8)


@pytest.mark.slow  # builds or shares the module's heavy fixture (tests/README.md)
def test_exact_solution_is_piecewise_exponential(batch):
    """Between events the exact θ* satisfies θ* - v̄ ∝ exp(-κ t), κ = Γ_{ℓ*ℓ*} n / N."""
    nets, datas, _ = batch
    net, data = jax.tree.map(lambda x: x[3], (nets, datas))
    ts = jnp.linspace(0.0, 3.0, 301)
    sol = ft.solve_frozen_exact(net, data, ts=ts)
    theta_star = np.max(np.asarray(sol.thresholds), axis=1)
    frame = np.asarray(net.frame)
    u, v = np.asarray(data.x) @ frame.T, np.asarray(data.point_targets()) @ frame.T
    checked = 0
    for i in range(1, len(ts) - 1):
        lo, hi = ts[i - 1], ts[i + 1]
        if np.any((np.asarray(sol.event_times) > lo) & (np.asarray(sol.event_times) <= hi)):
            continue
        for k in range(net.width):
            truncated = u[:, k] < theta_star[i, k]
            n = truncated.sum()
            gap = theta_star[:, k] - (v[truncated, k].mean() if n else 0.0)
            if n == 0 or np.abs(gap[i]) < 1e-6:
                continue
            layer = int(np.asarray(sol.active_layer)[i, k])
            gamma = np.sum(np.asarray(sol.scales)[i, : layer + 1, k] ** -2.0)
            rate = -(np.log(np.abs(gap[i + 1])) - np.log(np.abs(gap[i - 1]))) / (hi - lo)
            moving = np.abs(theta_star[i + 1, k] - theta_star[i - 1, k]) > 0
            if moving:
                assert np.isclose(rate, gamma * n / data.num_points, rtol=1e-9), (i, k)
                checked += 1
    assert checked > 100


@pytest.mark.slow  # compiles programs of its own: 22 s on 2 cores (tests/README.md)
@pytest.mark.parametrize("method", ["orbit", "events"])
def test_trained_rate_is_kappa(batch, method):
    """With weights trained, d log|θ* - v̄|/dt = κ(t) = Γ_{ℓ*ℓ*}(t) n/N at every instant
    (measured by central differences, error O(h^2))."""
    nets, datas, _ = batch
    net, data = jax.tree.map(lambda x: x[5], (nets, datas))
    h = 1e-4
    centres = np.array([0.05, 0.2, 0.5])
    ts = jnp.asarray(np.sort(np.concatenate([centres - h, centres, centres + h])))
    sol = ft.solve_effective(net, data, ts=ts, solver=SOLVERS[method](**TIGHT))
    frame = np.asarray(net.frame)
    u, v = np.asarray(data.x) @ frame.T, np.asarray(data.point_targets()) @ frame.T
    theta, scales = np.asarray(sol.thresholds), np.asarray(sol.scales)
    checked = 0
    for c in range(len(centres)):
        i = 3 * c + 1
        if np.any(np.abs(np.asarray(sol.event_times) - centres[c]) < 2 * h):
            continue
        for k in range(net.width):
            star = theta[i, :, k].max()
            truncated = u[:, k] < star
            n = truncated.sum()
            if n == 0:
                continue
            mean = v[truncated, k].mean()
            dtheta, _ = numpy_effective_rhs(theta[i], scales[i], u, v)
            layer = int(np.argmax(theta[i, :, k]))
            kappa = -dtheta[layer, k] / (star - mean)  # = Γ n / N by the formula
            gap = np.abs(theta[[i - 1, i + 1], :, k].max(axis=1) - mean)
            measured = -(np.log(gap[1]) - np.log(gap[0])) / (2 * h)
            assert np.isclose(measured, kappa, rtol=1e-6), (c, k, measured, kappa)
            checked += 1
    assert checked >= 3


@pytest.mark.slow  # compiles programs of its own: 30 s on 2 cores (tests/README.md)
@pytest.mark.parametrize("method", ["orbit", "events"])
def test_trained_event_free_stretch_matches_scipy(batch, method):
    nets, datas, _ = batch
    for index in (0, 7):
        net, data = jax.tree.map(lambda x: x[index], (nets, datas))
        probe = ft.solve_effective(net, data, ts=jnp.array([0.0, 2.0]), **EVENTS)
        t_end = 0.9 * float(probe.event_times[0])  # stop before the first event
        ts = jnp.linspace(0.0, t_end, 6)
        sol = ft.solve_effective(net, data, ts=ts, solver=SOLVERS[method](**TIGHT))
        theta0, scales0 = (np.asarray(a) for a in ft.thresholds(net))
        frame = np.asarray(net.frame)
        u, v = np.asarray(data.x) @ frame.T, np.asarray(data.point_targets()) @ frame.T
        shape = theta0.shape

        def rhs(t, y):
            dtheta, dscales = numpy_effective_rhs(
                y[: y.size // 2].reshape(shape), y[y.size // 2 :].reshape(shape), u, v
            )
            return np.concatenate([dtheta.ravel(), dscales.ravel()])

        ref = solve_ivp(
            rhs,
            (0.0, t_end),
            np.concatenate([theta0.ravel(), scales0.ravel()]),
            method="DOP853",
            rtol=1e-10,
            atol=1e-12,
            t_eval=np.asarray(ts),
        )
        half = ref.y.shape[0] // 2
        ref_theta = ref.y[:half].T.reshape((-1,) + shape)
        ref_scales = ref.y[half:].T.reshape((-1,) + shape)
        assert np.max(np.abs(sol.thresholds - ref_theta)) < 1e-8 * (1 + np.max(np.abs(ref_theta)))
        assert np.max(np.abs(sol.scales - ref_scales)) < 1e-8 * (1 + np.max(np.abs(ref_scales)))
        assert np.max(np.abs(ref_theta[-1] - theta0)) > 1e-3  # it did move


# in the fast tier above 20 s: the kink rule on both solvers, both modes (~65 s in all)
@pytest.mark.parametrize("method", ["orbit", "events"])
@pytest.mark.parametrize("train_weights", [True, False], ids=["trained", "frozen"])
def test_constructed_kink_stays_put(train_weights, method):
    """u = (0, 1, 2) with targets (3, -10, 0) and θ* = 0.5: θ* rises toward 3, truncates
    u = 1, after which the mean truncated target is -3.5 < 1: g flips, the coordinate
    stops at θ* = 1 for good, after exactly one crossing. The point on the kink counts as
    truncated (gradient descent: ReLU' = 0 at 0), so n = 2 from then on."""
    net = ft.AdaptedReLUNet(frame=np.eye(1), scales=np.ones((2, 1)), biases=np.array([[-0.5], [0.3]]))
    x = np.array([[0.0], [1.0], [2.0]])
    data = ft.Dataset(x=x, labels=np.array([0, 1, 2]), targets=np.array([[3.0], [-10.0], [0.0]]))
    ts = jnp.linspace(0.0, 50.0, 11)
    sol = ft.solve_effective(net, data, ts=ts, train_weights=train_weights, solver=SOLVERS[method]())
    assert int(sol.result) == 0
    kinds = np.asarray(sol.event_kinds)[: int(sol.num_events)]
    assert list(kinds) == [ft.EVENT_KINDS.index("truncation"), ft.EVENT_KINDS.index("kink")]
    if method == "events":
        assert int(sol.num_segments) == 2  # one segment to the kink, one that stays there
    stop = np.searchsorted(np.asarray(ts), float(sol.event_times[0]))
    assert np.all(np.max(np.asarray(sol.thresholds)[stop:], axis=1) == 1.0)
    assert np.all(np.asarray(sol.n_truncated)[stop:] == 2)


@pytest.mark.slow  # convergence orders / large N: many compiled programs
@pytest.mark.parametrize("method", ["orbit", "events"])
def test_gradients_match_finite_differences(batch, method):
    """d(final cost)/d(initial biases, data) through every event, against central
    differences along random directions, with the tolerance of `fd_error_bound`."""
    nets, datas, _ = batch
    net, data = jax.tree.map(lambda x: x[0], (nets, datas))
    ts = jnp.array([0.0, 3.0])

    def final_cost(biases, x):
        moved = ft.AdaptedReLUNet(frame=net.frame, scales=net.scales, biases=biases)
        moved_data = ft.Dataset(x=x, labels=data.labels, targets=data.targets)
        return ft.solve_effective(moved, moved_data, ts=ts, solver=SOLVERS[method](**TIGHT)).cost[-1]

    grad_b, grad_x = jax.jit(jax.grad(final_cost, argnums=(0, 1)))(net.biases, data.x)
    rng = np.random.default_rng(0)
    for grad, arg in ((grad_b, 0), (grad_x, 1)):
        direction = rng.normal(size=grad.shape)

        def along(step, arg=arg, direction=direction):
            args = [net.biases, data.x]
            args[arg] = args[arg] + step * direction
            return float(final_cost(*args))

        ad = float(np.sum(np.asarray(grad) * direction))
        # noise: the solver's tolerance, accumulated over its steps (~100)
        fd, bound = fd_error_bound(along, h=1e-4, noise=100 * TIGHT["rtol"] * (1 + abs(along(0.0))))
        assert abs(ad) > 1e-4
        assert abs(fd - ad) <= bound, (arg, fd, ad, bound)
        assert bound < 1e-2 * abs(ad)  # tight enough to catch a wrong or missing term


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64])
def test_event_root_finder_stops_on_its_bracket_whatever_the_event_function_rounds_to(dtype):
    """An event function evaluated on a dense output never need reach |f| < atol (its
    rounding can exceed it; here it jumps across the root, the extreme case). optimistix's
    Bisection then ends at its step cap and fails the solve (a Dopri8 orbit did); the
    events' root finder stops once the bracket is within its tolerance, which halving
    reaches in log2(bracket / tol) steps."""
    import optimistix as optx

    from flowtrunc.internal import crossing_root_finder

    root = 0.3
    jump = lambda t, _: jnp.where(t < root, 1.0, -1.0).astype(dtype)  # noqa: E731
    options = dict(lower=jnp.asarray(0.0, dtype), upper=jnp.asarray(1.0, dtype))
    finder = crossing_root_finder(dtype, 1e-10, 1e-12)
    tol = finder.atol + finder.rtol * root
    found = optx.root_find(jump, finder, jnp.asarray(1.0, dtype), options=options, throw=False)
    assert found.result == optx.RESULTS.successful
    assert abs(float(found.value) - root) <= tol + float(jnp.finfo(dtype).eps)
    assert int(found.stats["num_steps"]) <= int(np.ceil(np.log2(1.0 / tol))) + 1
    plain = optx.Bisection(rtol=finder.rtol, atol=finder.atol, flip=True)
    failed = optx.root_find(jump, plain, jnp.asarray(1.0, dtype), options=options, throw=False)
    assert failed.result != optx.RESULTS.successful  # what the events' finder guards against


@pytest.mark.slow  # compiles programs of its own: 43 s on 2 cores (tests/README.md)
def test_no_recompilation(monkeypatch, batch):
    """A second call with new values (net, data, ts) reuses the compiled solver: each
    traced body runs once per method."""
    from flowtrunc.internal import flow_solve as flow_module

    traces = []
    for name in ("solve_segments", "flow_coordinates"):
        original = getattr(flow_module, name)
        monkeypatch.setattr(
            flow_module, name, lambda *a, _o=original, _n=name, **k: traces.append(_n) or _o(*a, **k)
        )
    nets, datas, _ = batch
    first, second = (jax.tree.map(lambda x, i=i: x[i], (nets, datas)) for i in (1, 2))
    ts = jnp.linspace(0.0, 1.0, 5)
    for method in ("orbit", "events"):
        ft.solve_effective(*first, ts=ts, solver=SOLVERS[method](rtol=1e-7, atol=1e-9))
        ft.solve_effective(*second, ts=ts + 0.5, solver=SOLVERS[method](rtol=1e-7, atol=1e-9))
    ft.solve_frozen_exact(*first, ts=ts, max_events=77)
    ft.solve_frozen_exact(*second, ts=ts, max_events=77)
    assert sorted(traces) == ["flow_coordinates", "solve_segments", "solve_segments"]


@pytest.mark.slow  # compiles programs of its own: 76 s on 2 cores (tests/README.md)
def test_one_bad_seed_does_not_abort_the_batch(batch):
    nets, datas, _ = batch
    nets4, datas4 = jax.tree.map(lambda x: x[:4], (nets, datas))
    poisoned = eqx.tree_at(lambda n: n.biases, nets4, nets4.biases.at[2, 0, 0].set(jnp.nan))
    ts = jnp.linspace(0.0, 2.0, 5)
    events = lambda n, d, ts: ft.solve_effective(n, d, ts=ts, solver=ft.EventLoop())  # noqa: E731
    for solve in (ft.solve_effective, events, ft.solve_frozen_exact, ft.end_state):
        sol = eqx.filter_vmap(lambda n, d: solve(n, d, ts=ts) if solve is not ft.end_state else solve(n, d))(
            poisoned, datas4
        )
        assert list(np.asarray(sol.result)) == [0, 0, ft.RESULTS.nonfinite_state, 0]
        if solve is ft.end_state:
            assert np.all(np.isfinite(np.asarray(sol.thresholds)[[0, 1, 3]]))
            continue
        assert list(np.asarray(sol.result)) == [0, 0, ft.RESULTS.nonfinite_state, 0]
        assert np.all(np.isfinite(np.asarray(sol.cost)[[0, 1, 3]]))
        assert "NaN or inf" in ft.describe(sol.result)[2]


@pytest.mark.slow  # builds or shares the module's heavy fixture (tests/README.md)
def test_segment_cap_is_reported(batch):
    nets, datas, exact = batch
    net, data = jax.tree.map(lambda x: x[0], (nets, datas))
    sol = ft.solve_effective(net, data, ts=TS, solver=ft.EventLoop(max_segments=3))
    assert int(sol.result) == ft.RESULTS.max_segments_reached
    assert "raise `max_segments`" in ft.describe(sol.result)[0]
    assert np.isnan(np.asarray(sol.cost)[-1])


@pytest.mark.slow  # compiles programs of its own: 86 s on 2 cores (tests/README.md)
def test_float32_matches_float64_reference(batch):
    nets, datas, exact = batch
    net, data = jax.tree.map(lambda x: x[4], (nets, datas))
    net32 = jax.tree.map(lambda a: a.astype(jnp.float32) if a.dtype == jnp.float64 else a, net)
    data32 = jax.tree.map(lambda a: a.astype(jnp.float32) if a.dtype == jnp.float64 else a, data)
    ts = TS.astype(jnp.float32)
    for method in ("orbit", "events"):
        for train_weights in (False, True):
            sol32 = ft.solve_effective(
                net32, data32, ts=ts, train_weights=train_weights, solver=SOLVERS[method]()
            )
            sol64 = ft.solve_effective(
                net, data, ts=TS, train_weights=train_weights, solver=ft.OrbitClock(**TIGHT)
            )
            assert sol32.thresholds.dtype == jnp.float32 and int(sol32.result) == 0
            assert np.allclose(sol32.thresholds, sol64.thresholds, rtol=1e-3, atol=1e-3)


@pytest.mark.wrong_types
def test_solver_rejects_bad_input():
    net, data = problem(jax.random.key(43))  # refused before anything is compiled
    with pytest.raises(ValueError, match="`solve_effective` needs an AdaptedReLUNet"):
        ft.solve_effective(net.to_general(), data, ts=TS)
    with pytest.raises(ValueError, match="`ts` must be sorted"):
        ft.solve_effective(net, data, ts=jnp.array([0.0, 2.0, 1.0]))
    with pytest.raises(ValueError, match=r"`ts` must lie in \[0, t1\]: the flow starts at t = 0"):
        ft.solve_effective(net, data, ts=jnp.array([-1.0, 2.0]))
    with pytest.raises(ValueError, match=r"ts\[-1\] = 2.0 > t1 = 1.0"):
        ft.solve_frozen_exact(net, data, ts=jnp.array([0.0, 2.0]), t1=1.0)
    with pytest.raises(ValueError, match="`ts` contains NaN"):
        ft.solve_effective(net, data, ts=jnp.array([0.0, jnp.nan]))
    with pytest.raises(ValueError, match="`ts` is empty"):
        ft.solve_effective(net, data, ts=jnp.zeros(0))
    other = ft.make_clusters(jax.random.key(0), dim=3)
    with pytest.raises(ValueError, match="`data` has dimension M = 3"):
        ft.solve_effective(net, other, ts=TS)
    with pytest.raises(ValueError, match="`ode_solver` must be an adaptive diffrax solver"):
        ft.solve_effective(net, data, ts=TS, solver=ft.OrbitClock(ode_solver=diffrax.Euler()))
    with pytest.raises(ValueError, match="`rtol` and `atol` must be positive numbers, got rtol = 0.0"):
        ft.solve_effective(net, data, ts=TS, solver=ft.OrbitClock(rtol=0.0))
    with pytest.raises(ValueError, match="`method` must be 'orbit' or 'events', got 'rk4'"):
        ft.solve_effective(net, data, ts=TS, method="rk4")
    with pytest.raises(ValueError, match=r"`solver` must be ft.OrbitClock\(\) or ft.EventLoop\(\), got str"):
        ft.solve_effective(net, data, ts=TS, solver="orbit")
    with pytest.raises(
        ValueError, match=r"give the settings inside `solver` \(OrbitClock\(...\)\), not also as `rtol=`"
    ):
        ft.solve_effective(net, data, ts=TS, solver=ft.OrbitClock(), rtol=1e-6)
    with pytest.raises(ValueError, match=r"`solver` must be ft.OrbitClock\(\), got EventLoop"):
        ft.end_state(net, data, solver=ft.EventLoop())
    with pytest.raises(ValueError, match=r"`ts` contains inf; only solver=ft.OrbitClock\(\)"):
        ft.solve_effective(net, data, ts=jnp.array([0.0, jnp.inf]), solver=ft.EventLoop())
    with pytest.raises(ValueError, match=r"`ts` must lie in \[0, t1\]: the flow starts at t = 0"):
        ft.solve_effective(net, data, ts=jnp.array([-0.5, jnp.inf]))
    with pytest.raises(ValueError, match="`end_state` needs an AdaptedReLUNet"):
        ft.end_state(net.to_general(), data)
    with pytest.raises(ValueError, match="`data` has dimension M = 3"):
        ft.end_state(net, other)
    with pytest.raises(ValueError, match="`max_segments` must be a positive int"):
        ft.solve_effective(net, data, ts=TS, solver=ft.EventLoop(max_segments=0))
    with pytest.raises(ValueError, match="`max_steps` must be a positive int"):
        ft.solve_effective(net, data, ts=TS, solver=ft.OrbitClock(max_steps=2.5))
    with pytest.raises(ValueError, match="`x` contains 1 NaN"):
        ft.Dataset(x=np.array([[np.nan, 0.0]]), labels=np.array([0]))


@pytest.mark.slow  # compiles a program per deprecated keyword: 31 s on 2 cores (tests/README.md)
def test_the_keywords_of_version_0_1_still_work_with_a_warning_naming_the_replacement():
    """`method=`, `rtol=`, `atol=`, `max_steps=`, `max_segments=` and a diffrax solver as
    `solver=` are deprecated for one version: same numbers as the solver objects, bit for bit."""
    net, data = problem(jax.random.key(43))
    with pytest.warns(DeprecationWarning, match=r"pass `solver=ft.EventLoop\(rtol=1e-09, max_segments=50\)`"):
        old = ft.solve_effective(net, data, ts=TS, method="events", rtol=1e-9, max_segments=50)
    new = ft.solve_effective(net, data, ts=TS, solver=ft.EventLoop(rtol=1e-9, max_segments=50))
    np.testing.assert_array_equal(old.thresholds, new.thresholds)
    with pytest.warns(
        DeprecationWarning, match=r"a diffrax solver as `solver=`.*ft.OrbitClock\(ode_solver=Dopri5"
    ):
        old = ft.end_state(net, data, solver=diffrax.Dopri5(), max_steps=300, with_times=False)
    new = ft.end_state(
        net, data, solver=ft.OrbitClock(ode_solver=diffrax.Dopri5(), max_steps=300), with_times=False
    )
    np.testing.assert_array_equal(old.theta_star, new.theta_star)
