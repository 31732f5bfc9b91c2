"""Effective flow throughput: 1024 seeds of the default problem (the `flowtrunc demo`
scenario: L=3, M=2, N=30, Q=3), batched with vmap, warm.

    python benchmarks/effective_flow.py [--seeds 1024] [--precision 64] [--out FILE]
"""

import argparse

import jax


def default_problem(key):
    """The `flowtrunc demo` scenario: L=3, M=2, N=30, Q=3."""
    import flowtrunc as ft

    net = ft.AdaptedReLUNet.random(key, 3, 2, scale_spread=0.3, bias_scale=0.6)
    data = ft.make_clusters(
        jax.random.fold_in(key, 1), num_points=30, num_clusters=3, dim=2, target_offset=0.4
    )
    return net, data


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=1024)
    parser.add_argument("--precision", type=int, choices=(32, 64), default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    jax.config.update("jax_enable_x64", args.precision == 64)
    import equinox as eqx
    import jax.numpy as jnp
    import numpy as np
    from _common import report, timed

    import flowtrunc as ft

    keys = jax.random.split(jax.random.key(0), args.seeds)
    nets, datas = eqx.filter_vmap(default_problem)(keys)
    ts = jnp.linspace(0.0, 4.0, 9)
    rows = []
    for name, solve in (
        ("solve_effective (trained, Tsit5)", lambda n, d: ft.solve_effective(n, d, ts=ts)),
        (
            "solve_effective (frozen, Tsit5)",
            lambda n, d: ft.solve_effective(n, d, ts=ts, train_weights=False),
        ),
        ("solve_frozen_exact", lambda n, d: ft.solve_frozen_exact(n, d, ts=ts)),
    ):
        batched = eqx.filter_jit(eqx.filter_vmap(solve))
        first, warm, sol = timed(batched, nets, datas, repeats=args.repeats)
        events = int(np.sum(np.asarray(sol.num_events)))
        failed = int(np.sum(np.asarray(sol.result) != 0))
        rows.append(
            {
                "solver": name,
                "seeds": args.seeds,
                "precision": args.precision,
                "compile_plus_first_s": round(first, 3),
                "warm_median_s": round(warm, 4),
                "seconds_per_seed": warm / args.seeds,
                "events_total": events,
                "events_per_second": events / warm,
                "failed_seeds": failed,
            }
        )
    report("effective_flow", rows, args.out)


if __name__ == "__main__":
    main()
