"""Effective flow: flowtrunc (one vmapped call over all seeds) against what a user would
otherwise write, a per-seed NumPy/scipy `solve_ivp` loop with terminal events.

Problem: the compare scenario (staircase clusters in the net's frame) with L = 2, M = 2,
N = 64, weights trained, 11 output times on [0, 2]. flowtrunc runs both its solvers in
the same process: the orbit–clock solver (default; orbit at its default rtol 1e-10) and
the event loop (Tsit5, rtol 1e-8, atol 1e-10); scipy runs RK45 at rtol 1e-8, atol 1e-10
and returns the final state only. Answers are checked: final thresholds agree to 1e-5.

    python vs_scipy.py [--seeds 1024] [--scipy-seeds 64] [--out FILE]
"""

import argparse
import time

import jax
import numpy as np
from scipy.integrate import solve_ivp

jax.config.update("jax_enable_x64", True)


def scipy_flow(theta, scales, u, v, t1, rtol, atol):
    """Event-driven effective flow for one seed in NumPy + scipy (weights trained)."""
    depth, width = theta.shape
    num = u.shape[0]
    order = np.argsort(u, axis=0)
    u_sorted = np.take_along_axis(u, order, 0)
    v_sorted = np.take_along_axis(v, order, 0)
    prefix = np.vstack([np.zeros(width), np.cumsum(v_sorted, 0)])

    def discrete(theta):
        active = np.argmax(theta, axis=0)
        star = theta[active, np.arange(width)]
        count = np.array([np.searchsorted(u_sorted[:, k], star[k]) for k in range(width)])
        g = (count * star - prefix[count, np.arange(width)]) / num
        return active, count, -np.sign(g)

    def rhs(t, y, active, count, moving):
        th, cum = y[: depth * width].reshape(depth, width), y[depth * width :].reshape(depth, width)
        dth, dcum = np.zeros_like(th), np.zeros_like(cum)
        for k in range(width):
            if moving[k] == 0:
                continue
            a = active[k]
            star = th[a, k]
            g = (count[k] * star - prefix[count[k], k]) / num
            prev = np.concatenate([[0.0], th[:-1, k]])
            prev_cum = np.concatenate([[1.0], cum[:-1, k]])
            inv_d2 = (prev_cum / cum[:, k]) ** 2
            for layer in range(depth):
                n = np.arange(min(layer, a) + 1)
                gamma = np.sum(cum[n, k] ** -2 + (prev[n] - th[layer, k]) * (prev[n] - star) * inv_d2[n])
                dth[layer, k] = -g * gamma
                dcum[layer, k] = -g * cum[layer, k] * np.sum((prev[n] - star) * inv_d2[n])
        return np.concatenate([dth.ravel(), dcum.ravel()])

    def make_events(active, count, moving):
        events = []
        for k in range(width):

            def distance(t, y, *_, k=k):
                th = y[: depth * width].reshape(depth, width)
                star = th[active[k], k]
                if moving[k] > 0 and count[k] < num:
                    return u_sorted[count[k], k] - star
                if moving[k] < 0 and count[k] > 0:
                    return star - u_sorted[count[k] - 1, k]
                return 1.0

            def switch(t, y, *_, k=k):
                th = y[: depth * width].reshape(depth, width)
                if moving[k] == 0 or active[k] == 0:
                    return 1.0
                return th[active[k], k] - th[: active[k], k].max()

            for fn in (distance, switch):
                fn.terminal, fn.direction = True, -1
                events.append(fn)
        return events

    y = np.concatenate([theta.ravel(), scales.ravel()])
    t, events_seen = 0.0, 0
    active, count, moving = discrete(theta)
    while t < t1:
        sol = solve_ivp(
            rhs,
            (t, t1),
            y,
            method="RK45",
            rtol=rtol,
            atol=atol,
            events=make_events(active, count, moving),
            args=(active, count, moving),
        )
        t, y = sol.t[-1], sol.y[:, -1].copy()
        if sol.status != 1:
            break
        events_seen += 1
        th = y[: depth * width].reshape(depth, width)
        for k in range(width):  # apply the crossing(s) at this time
            star = th[active[k], k]
            if moving[k] > 0 and count[k] < num and star >= u_sorted[count[k], k] - 1e-9:
                level = u_sorted[count[k], k]
                th[th[:, k] >= star, k] = level
                count[k] = np.searchsorted(u_sorted[:, k], level, side="right")
            elif moving[k] < 0 and count[k] > 0 and star <= u_sorted[count[k] - 1, k] + 1e-9:
                level = u_sorted[count[k] - 1, k]
                th[th[:, k] >= star, k] = level
                count[k] = np.searchsorted(u_sorted[:, k], level, side="left")
            elif moving[k] != 0 and active[k] > 0 and th[: active[k], k].max() >= star - 1e-9:
                lower = int(np.argmax(th[: active[k], k]))
                th[lower, k] = star
                active[k] = lower
                continue
            else:
                continue
            g = (count[k] * th[active[k], k] - prefix[count[k], k]) / num
            moving[k] = 0 if -np.sign(g) != moving[k] else moving[k]
        y[: depth * width] = th.ravel()
    return y[: depth * width].reshape(depth, width), events_seen


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=1024)
    parser.add_argument("--scipy-seeds", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    import equinox as eqx
    import jax.numpy as jnp
    from _common import report, timed

    import flowtrunc as ft

    rtol, atol, t1 = 1e-8, 1e-10, 2.0

    def problem(key):
        key_net, key_data = jax.random.split(key)
        net = ft.AdaptedReLUNet.random(key_net, 2, 2)
        return net, ft.make_staircase(key_data, net.frame, num_points=64)

    keys = jax.random.split(jax.random.key(0), args.seeds)
    nets, datas = eqx.filter_vmap(problem)(keys)
    ts = jnp.linspace(0.0, t1, 11)
    solvers = {
        "orbit": lambda n, d: ft.solve_effective(n, d, ts=ts),
        "events": lambda n, d: ft.solve_effective(n, d, ts=ts, solver=ft.EventLoop(rtol=rtol, atol=atol)),
    }
    timings = {}
    for name, solve in solvers.items():
        batched = eqx.filter_jit(eqx.filter_vmap(solve))
        timings[name] = timed(batched, nets, datas, repeats=args.repeats)
    sol = timings["orbit"][2]
    failed = int(np.sum(np.asarray(sol.result) != 0))

    scipy_times, worst = [], 0.0
    for s in range(args.scipy_seeds):
        net, data = jax.tree.map(lambda a: a[s], (nets, datas))
        theta, scales = (np.asarray(a) for a in ft.thresholds(net))
        frame = np.asarray(net.frame)
        u, v = np.asarray(data.x) @ frame.T, np.asarray(data.point_targets()) @ frame.T
        start = time.perf_counter()
        final, _ = scipy_flow(theta, scales, u, v, t1, rtol, atol)
        scipy_times.append(time.perf_counter() - start)
        for name in solvers:
            reached = np.asarray(timings[name][2].thresholds[s, -1])
            worst = max(worst, float(np.max(np.abs(final - reached))))
    if worst > 1e-5 or failed:
        raise SystemExit(f"answers differ or seeds failed: max |Δθ| = {worst:.3g}, {failed} failed seeds")
    per_seed_scipy = float(np.median(scipy_times))
    row = {
        "problem": "L=2, M=2, N=64, staircase, weights trained, 11 outputs on [0, 2]",
        "seeds_flowtrunc": args.seeds,
        "seeds_scipy": args.scipy_seeds,
        "scipy_median_s_per_seed": per_seed_scipy,
        "max_abs_threshold_difference": worst,
    }
    for name, (first, warm, _) in timings.items():
        row[f"{name}_compile_plus_first_s"] = round(first, 3)
        row[f"{name}_warm_median_s"] = round(warm, 4)
        row[f"{name}_s_per_seed"] = warm / args.seeds
        row[f"{name}_speedup_vs_scipy"] = per_seed_scipy / (warm / args.seeds)
    row["orbit_vs_events"] = timings["events"][1] / timings["orbit"][1]
    report("vs_scipy", [row], args.out)


if __name__ == "__main__":
    main()
