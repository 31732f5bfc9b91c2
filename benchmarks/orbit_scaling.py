"""Cost of the effective flow against N: seeds per second of the orbit–clock solver
(default) at N = 10^3, 10^4, 10^5, and of the event loop where it finishes in minutes, in
one process (ratios within one run). Compare scenario (L = 3, M = 2, staircase), 8 seeds,
weights trained, 11 output times on [0, 5]. Also records the orbit's solver steps (they
do not depend on N) and the events of the flow (they grow with N).

    python orbit_scaling.py [--seeds 8] [--out FILE]
"""

import argparse

import equinox as eqx
import jax
import numpy as np

jax.config.update("jax_enable_x64", True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    import jax.numpy as jnp
    from _common import report, timed

    import flowtrunc as ft
    from flowtrunc import CompareConfig
    from flowtrunc.internal import seed_problem

    ts = jnp.linspace(0.0, 5.0, 11)
    rows = []
    for points in (1_000, 10_000, 100_000):
        config = CompareConfig(points=points, precision=64)
        nets, datas = jax.vmap(lambda s, c=config: seed_problem(s, c, None))(np.arange(args.seeds))
        methods = ("orbit", "events") if points <= 10_000 else ("orbit",)
        for method in methods:
            kind = ft.OrbitClock() if method == "orbit" else ft.EventLoop()
            solve = lambda n, d, s=kind: ft.solve_effective(n, d, ts=ts, solver=s)  # noqa: E731
            first, warm, sol = timed(
                eqx.filter_jit(eqx.filter_vmap(solve)), nets, datas, repeats=args.repeats
            )
            rows.append(
                {
                    "method": method,
                    "points": points,
                    "seeds": args.seeds,
                    "compile_plus_first_s": round(first, 3),
                    "warm_s": round(warm, 4),
                    "seeds_per_s": args.seeds / warm,
                    "max_solver_steps": int(np.max(sol.num_steps)),
                    "mean_events": float(np.mean(sol.num_events)),
                    "failed": int(np.sum(np.asarray(sol.result) != 0)),
                }
            )
            print(rows[-1])
    orbit = {row["points"]: row["seeds_per_s"] for row in rows if row["method"] == "orbit"}
    rows.append({"orbit_seeds_per_s_ratio_1e3_over_1e5": orbit[1_000] / orbit[100_000]})
    report("orbit_scaling", rows, args.out)


if __name__ == "__main__":
    main()
