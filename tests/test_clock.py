"""The closed-form clock: its piece integral against a 150-digit reference, the step
polynomials against the solver's dense output, no orbit evaluation in the clock, the
end state without times, and accuracy on long and short pieces at N = 10^4."""

from decimal import Decimal, getcontext

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import problem

import flowtrunc as ft
from flowtrunc.internal import clock as clock_module
from flowtrunc.internal import orbit as orbit_module
from flowtrunc.internal import orbit_tools, start_layer

EPS = float(np.finfo(np.float64).eps)


def _reference_integral(p, z, xa, x):
    """∫_xa^x P(ξ)/(z − ξ) dξ in 150-digit decimal arithmetic from the exact binary inputs:
    P(z) log((z − xa)/(z − x)) − ∫ Q, Q by synthetic division (its cancellation costs at most ~60 digits)."""
    getcontext().prec = 150  # P(z) ~ z^7 ~ 1e42 cancels down to the result: keep 100 digits
    p, z, xa, x = [Decimal(float(c)) for c in p], Decimal(float(z)), Decimal(float(xa)), Decimal(float(x))
    b = [p[-1]]
    for c in p[-2::-1]:
        b.append(c + z * b[-1])
    b = b[::-1]
    q = sum(b[j] * (x**j - xa**j) / j for j in range(1, len(b)))
    return float(b[0] * ((z - xa) / (z - x)).ln() - q)


@pytest.mark.parametrize("degree", [0, 3, 4, 7])
def test_piece_integral_against_a_150_digit_reference(degree):
    """Smooth positive h on a step (|p_j| ≤ 0.3^j, so P ≥ 0.57), poles from just past the
    piece to 10^6 step widths away, pieces from 1e-9 of a step to the whole step. Error
    model: closed form (z ≤ 8) ~ 4·D·eps·Σ|p_j|8^j/min P relative (< 3e-12 at D = 7,
    2.4^7 = 460); Gauss–Legendre (z > 8) ρ^{-(D+12)}, ρ ≥ 15.9 (< 1e-14); asked: 5e-12."""
    rng = np.random.default_rng(degree)
    worst = 0.0
    for _ in range(300):
        p = np.concatenate([[1.0], rng.uniform(-1, 1, degree) * 0.3 ** np.arange(1, degree + 1)])
        xa = rng.uniform(-1, 1)
        x = xa + (1 - xa) * 10.0 ** rng.uniform(-9, 0)
        z = x + 10.0 ** rng.uniform(-6, 6)
        ours = float(clock_module.integral(jnp.asarray(p), jnp.asarray(z), jnp.asarray(xa), jnp.asarray(x)))
        ref = _reference_integral(p, z, xa, x)
        worst = max(worst, abs(ours - ref) / abs(ref))
    assert worst < 5e-12, worst


def _orbit(solver, key=3, max_steps=256, coordinate=0, direction=1.0):
    """One coordinate's orbit over a path length of 3 (by default the first, rising)."""
    from flowtrunc.internal import prepare_inputs

    net, data = problem(jax.random.key(key))
    _, theta, scales, *_ = prepare_inputs(net, data, jnp.zeros(1), None, None, None, "test")
    theta, scales, direction = (
        theta[:, coordinate : coordinate + 1],
        scales[:, coordinate],
        jnp.asarray(direction),
    )
    tools = orbit_tools(jnp.float64, 1e-10, 1e-12, solver)
    orbit = orbit_module.solve_orbit(
        theta[:, 0], scales, direction, jnp.asarray(3.0), motion="direct", max_steps=max_steps, **tools
    )
    return orbit, start_layer(theta, direction[None])[0]


def test_merge_of_the_breaks_is_the_sort_and_says_where_each_went():
    """The clock merges the sorted data path lengths with the sorted step bounds by ranks;
    against NumPy's sort of the two together, ties across and within them included."""
    rng = np.random.default_rng(5)
    data = np.sort(np.round(rng.uniform(0, 1, 200), 2))  # many ties within the data
    others = np.sort(np.concatenate([rng.choice(data, 10), np.round(rng.uniform(0, 1, 20), 2)]))
    merged, data_at, others_at = clock_module._merge(jnp.asarray(data), jnp.asarray(others))
    merged, data_at, others_at = (np.asarray(a) for a in (merged, data_at, others_at))
    assert np.array_equal(merged, np.sort(np.concatenate([data, others])))
    assert np.array_equal(np.sort(np.concatenate([data_at, others_at])), np.arange(merged.size))
    assert np.array_equal(merged[data_at], data) and np.array_equal(merged[others_at], others)
    # a data value tied with a bound comes before it (the merge is stable, data first)
    ties = data[:, None] == others[None, :]
    assert ties.sum() >= 10 and np.all((data_at[:, None] < others_at[None, :])[ties])


@pytest.mark.slow  # compiles programs of its own: 53 s on 2 cores (tests/README.md)
@pytest.mark.parametrize("solver", [diffrax.Tsit5(), diffrax.Dopri5(), diffrax.Dopri8(), diffrax.Bosh3()])
def test_step_polynomials_are_the_dense_output_of_the_solver(solver):
    """The polynomials kept per step reproduce the solver's own interpolant on random step
    data, every state component (round-off: the fit's condition number at degree ≤ 7 is
    < 100), so the degree table and the linear map from a step's data are right; and
    along a real orbit h tracks 1/Γ of the interpolated state to the solver tolerance."""
    term = diffrax.ODETerm(lambda t, y, args: (-y[0], 0.5 * y[1], jnp.cos(y[2])))
    y0 = (jnp.array([0.3, -0.2, 0.1]), jnp.array([1.0, 0.8, 1.2]), jnp.asarray(0.7))
    state = solver.init(term, 0.0, 0.1, y0, None)
    _, _, info, _, _ = solver.step(term, 0.0, 0.1, y0, None, state, made_jump=False)
    rng = np.random.default_rng(1)
    infos = jax.tree.map(lambda a: jnp.asarray(rng.uniform(-1, 1, (6, *a.shape))), info)
    for component in range(3):
        ours = orbit_module.step_coefficients(solver.interpolation_cls, infos, component, jnp.float64)
        for index in range(6):
            step = jax.tree.map(lambda a: a[index], infos)
            local = solver.interpolation_cls(t0=jnp.asarray(0.0), t1=jnp.asarray(1.0), **step)
            for tau in rng.uniform(0, 1, 4):
                dense = local.evaluate(jnp.asarray(tau))[component]
                mine = orbit_module.horner(ours[index], 2 * tau - 1)
                assert np.max(np.abs(np.asarray(mine - dense))) < 1e3 * EPS * (
                    1 + float(np.max(np.abs(dense)))
                )

    orbit, active = _orbit(solver)
    widths = np.asarray(orbit.ends - orbit.starts)
    (steps,) = np.nonzero(widths > 0)
    assert steps.size >= 3
    starts = np.asarray(orbit.starts)
    assert np.all(np.diff(starts[np.isfinite(starts)]) >= 0) and np.all(np.diff(starts[steps]) > 0)
    for index in steps:
        t0, t1 = float(orbit.starts[index]), float(orbit.ends[index])
        s = t0 + (t1 - t0) * rng.uniform(0, 1, 5)
        h = orbit_module.horner(orbit.polynomials[index], jnp.asarray(2 * (s - t0) / (t1 - t0) - 1))
        theta, scales = jax.vmap(orbit.state)(jnp.asarray(s))
        exact = 1.0 / jax.vmap(lambda th, sc: orbit_module.star_rate(th, sc, active, "direct"))(theta, scales)
        assert np.max(np.abs(np.asarray(h - exact) / exact)) < 1e-6  # rtol 1e-10 over ≤ 100 steps


@pytest.mark.slow  # traces the orbit three times: ~40 s on 2 cores
def test_max_steps_bounds_the_steps_of_all_segments_together():
    """The orbit is solved in chunks of `CHUNK_STEPS` steps through all its segments; its
    step budget is the total, and its accepted steps are kept in that many slots, in order,
    with no gap where a chunk ended early. With exactly the steps it takes it succeeds with the
    same steps and the same end, every slot a step; one fewer fails (a count, not a
    tolerance: the step sequence is the same)."""
    falling = dict(key=7, coordinate=0, direction=-1.0)  # 89 steps, two layer switches
    orbit, _ = _orbit(diffrax.Tsit5(), **falling)
    steps = int(orbit.num_steps)
    segments = int(np.isfinite(np.asarray(orbit.segment_starts)).sum())
    assert (
        bool(orbit.ok) and segments >= 3 and steps > 2 * orbit_module.CHUNK_STEPS
    )  # restarts inside segments
    starts, ends = np.asarray(orbit.starts), np.asarray(orbit.ends)
    kept = int(np.isfinite(starts).sum())  # accepted steps (`num_steps` counts rejected ones too)
    assert 2 * orbit_module.CHUNK_STEPS < kept <= steps and np.all(np.isinf(starts[kept:]))
    assert np.all(np.diff(starts[:kept]) > 0) and np.all(ends[:kept] > starts[:kept])
    assert starts[0] == 0.0 and ends[kept - 1] == 3.0  # the whole path, step by step
    exact, _ = _orbit(diffrax.Tsit5(), max_steps=steps, **falling)
    assert bool(exact.ok) and int(exact.num_steps) == steps
    assert all(np.array_equal(a, b) for a, b in zip(exact.end, orbit.end))
    assert np.array_equal(np.asarray(exact.starts)[:kept], starts[:kept])
    short, _ = _orbit(diffrax.Tsit5(), max_steps=steps - 1, **falling)
    assert not bool(short.ok)


@pytest.mark.slow  # compiles programs of its own: 60 s on 2 cores (tests/README.md)
def test_the_clock_never_evaluates_the_orbit(monkeypatch):
    """Building the clock and inverting it use the step polynomials only: tracing them
    with every orbit evaluation made to fail succeeds. Orbit evaluations are then the ODE
    solver's own steps, which do not grow with N (`test_sequential_steps_do_not_grow_with_n`)."""
    orbit, _ = _orbit(diffrax.Tsit5())
    net, data = problem(jax.random.key(3), num_points=500)
    from flowtrunc.internal import prepare_inputs

    stats, theta, *_ = prepare_inputs(net, data, jnp.zeros(1), None, None, None, "test")

    def forbidden(*args, **kwargs):
        raise AssertionError("the clock evaluated the orbit")

    monkeypatch.setattr(orbit_module.Orbit, "state", forbidden)
    monkeypatch.setattr(orbit_module, "star_rate", forbidden)
    star = jnp.max(theta[:, 0])
    clock = clock_module.build_clock(
        orbit, stats.u_sorted[:, 0], stats.target_sums[:, 0], star, 1.0, star + 3.0, 1, jnp.full(2, jnp.inf)
    )
    s = jax.vmap(lambda t: clock_module.path_at(clock, t))(jnp.linspace(0.0, 5.0, 11))
    assert np.all(np.diff(np.asarray(s)) >= 0)


@pytest.mark.slow  # compiles programs of its own: 61 s on 2 cores (tests/README.md)
def test_end_state_without_times_equals_end_state_with_times():
    keys = jax.random.split(jax.random.key(11), 40)
    nets, datas = eqx.filter_vmap(problem)(keys)
    full = eqx.filter_vmap(ft.end_state)(nets, datas)
    where = eqx.filter_vmap(lambda n, d: ft.end_state(n, d, with_times=False))(nets, datas)
    shared = 0
    for name in full.__dataclass_fields__:
        a, b = getattr(full, name), getattr(where, name)
        if b is None:
            assert name in ("end_time", "crossing_times", "truncated_from", "collapse_time")
            continue
        assert np.array_equal(np.asarray(a), np.asarray(b)), name
        shared += 1
    assert shared == 9
    # and truncation read off the times agrees with the rule without them
    crosses = np.isfinite(np.asarray(full.crossing_times))
    at_start = np.asarray(full.truncated) != crosses
    assert np.array_equal(np.isfinite(np.asarray(full.truncated_from)), np.asarray(full.truncated))
    assert np.asarray(full.collapsed).any() and at_start.any()


@pytest.mark.wrong_types
@pytest.mark.parametrize("value", ["yes", 1, None])
def test_with_times_must_be_a_bool(value):
    net, data = problem(jax.random.key(0))
    with pytest.raises(TypeError, match=r"`with_times` must be True .* or False"):
        ft.end_state(net, data, with_times=value)


def _long_and_short_pieces(points):
    """1-D data in four clumps of width 0.05 (thousands of pieces of ~2e-5) separated by
    gaps of ~1 (a few long pieces), targets far above the data, θ* starting inside the
    first clump: θ* rises through every point."""
    rng = np.random.default_rng(5)
    clumps = np.array([0.2, 1.4, 2.9, 4.0])
    u = np.concatenate([c + 0.05 * rng.uniform(size=(points // 4, 1)) for c in clumps])
    net = ft.AdaptedReLUNet(
        frame=np.eye(1), scales=np.array([[1.0], [0.9], [1.3]]), biases=np.array([[-0.17], [-0.05], [0.1]])
    )
    data = ft.Dataset(x=u, labels=np.arange(u.shape[0]) % 2, targets=np.array([[8.0], [9.0]]))
    return net, data


def _reference_crossing_times(theta, scales, u, v):
    """Crossing times of a rising θ* (one coordinate, no layer switch) by SciPy's DOP853 in
    θ*, one solve per piece between consecutive data coordinates, the field written out
    from docs/theory.md §2–§3 with loops: dθ/dθ* = Γ_{lℓ*}/Γ_{ℓ*ℓ*}, dD/dθ* likewise,
    dt/dθ* = N/((S_n − n θ*) Γ_{ℓ*ℓ*}). Independent of the orbit, the clock and diffrax."""
    from scipy.integrate import solve_ivp

    depth = theta.shape[0]
    star_layer = int(np.argmax(theta))

    def field(level, y):
        th, cum = np.concatenate([[0.0], y[:depth]]), np.concatenate([[1.0], y[depth : 2 * depth]])
        th[star_layer + 1] = level
        gamma, drift = np.zeros(depth), np.zeros(depth)
        for layer in range(1, depth + 1):
            for m in range(1, min(layer, star_layer + 1) + 1):
                inv_d2 = (cum[m - 1] / cum[m]) ** 2
                gamma[layer - 1] += cum[m] ** -2 + (th[m - 1] - th[layer]) * (th[m - 1] - level) * inv_d2
                drift[layer - 1] += (th[m - 1] - level) * inv_d2
        rate = gamma[star_layer]
        return np.concatenate([gamma / rate, cum[1:] * drift / rate, [1.0 / rate]])

    order = np.argsort(u)
    u, v = u[order], v[order]
    star = float(np.max(theta))
    y = np.concatenate([theta, scales, [0.0]])
    times = np.full(u.shape, np.inf)
    count = int(np.sum(u <= star))
    sums = np.cumsum(v)
    level = star
    for index in range(count, u.shape[0]):
        n, total = index, sums[index - 1]
        if total / n <= u[index]:
            break  # θ* stops short of this point

        def piece(level, y, n=n, total=total):
            out = field(level, y)
            out[-1] *= u.shape[0] / (total - n * level)
            return out

        y = solve_ivp(piece, (level, u[index]), y, method="DOP853", rtol=1e-13, atol=1e-15).y[:, -1]
        level = u[index]
        times[index] = y[-1]
    result = np.empty_like(times)
    result[order] = times
    return result


@pytest.mark.slow  # 10^4 SciPy solves, one per piece
def test_crossing_times_on_long_and_short_pieces_at_large_n():
    """N = 10^4: thousands of pieces of ~2e-5 and a few of ~1, against a SciPy re-derivation
    of the crossing times. Error model: the orbit at rtol 1e-10 over ≤ 100 steps (~1e-9),
    the closed form per piece ~1e-14 (summed over 10^4 pieces: ~1e-12), the reference at
    rtol 1e-13; asked: 1e-8 relative, the same as against the event loop at small N."""
    from flowtrunc.internal import prepare_inputs

    net, data = _long_and_short_pieces(10_000)
    ours = np.asarray(ft.end_state(net, data).crossing_times[:, 0])
    _, theta, scales, *_ = prepare_inputs(net, data, jnp.zeros(1), None, None, None, "test")
    ref = _reference_crossing_times(
        np.asarray(theta[:, 0]),
        np.asarray(scales[:, 0]),
        np.asarray(data.x[:, 0]),
        np.asarray(data.point_targets()[:, 0]),
    )
    seen = np.isfinite(ref)
    assert seen.sum() > 8000 and np.array_equal(seen, np.isfinite(ours))
    assert np.max(np.abs(ours[seen] - ref[seen]) / ref[seen]) < 1e-8
