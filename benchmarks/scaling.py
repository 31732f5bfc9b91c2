"""How cost grows: seeds per second of the effective flow and of training against the
number of seeds (1..16384), points N (10^2..10^5) and depth L, with peak memory. Each
row runs in a fresh process so that its peak resident memory is its own.

    python scaling.py [--quick] [--out FILE]
"""

import argparse
import json
import resource
import subprocess
import sys
import time


def run_row(row: dict) -> dict:
    import equinox as eqx
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import numpy as np

    import flowtrunc as ft
    from flowtrunc import CompareConfig
    from flowtrunc.internal import seed_problem

    config = CompareConfig(points=row["points"], depth=row["depth"], precision=64)
    seeds = np.arange(row["seeds"])
    nets, datas = jax.vmap(lambda s: seed_problem(s, config, None))(seeds)
    if row["what"] == "flow":

        def fn(n, d):
            return ft.solve_effective(
                n, d, ts=jnp.array([0.0, 5.0]), solver=ft.OrbitClock(rtol=1e-7, atol=1e-9)
            )
    else:
        fn = lambda n, d: ft.train(n, d, lr=0.01, steps=500, save_every=500, check_stability=False)  # noqa: E731
    batched = eqx.filter_jit(eqx.filter_vmap(fn))
    start = time.perf_counter()
    out = jax.block_until_ready(batched(nets, datas))
    first = time.perf_counter() - start
    start = time.perf_counter()
    out = jax.block_until_ready(batched(nets, datas))
    warm = time.perf_counter() - start
    extra = {"max_segments": int(np.max(out.num_segments))} if row["what"] == "flow" else {}
    return {
        **row,
        **extra,
        "compile_plus_first_s": round(first, 3),
        "warm_s": round(warm, 4),
        "seeds_per_s": row["seeds"] / warm,
        "failed": int(np.sum(np.asarray(out.result) != 0)),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def rows(quick: bool):
    seeds = [1, 16, 256, 1024] if quick else [1, 16, 256, 4096, 16384]
    points = [100, 1000, 10000] if quick else [100, 1000, 10000, 100000]
    depths = [1, 2, 4, 8]
    for what in ("flow", "train"):
        for s in seeds:
            yield {"axis": "seeds", "what": what, "seeds": s, "points": 60, "depth": 3}
        for n in points:
            yield {"axis": "points", "what": what, "seeds": 8, "points": n, "depth": 3}
        for depth in depths:
            yield {"axis": "depth", "what": what, "seeds": 256, "points": 60, "depth": depth}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--row", help=argparse.SUPPRESS)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    if args.row:
        print(json.dumps(run_row(json.loads(args.row))))
        return
    from _common import report

    results = []
    for row in rows(args.quick):
        done = subprocess.run(
            [sys.executable, __file__, "--row", json.dumps(row)], capture_output=True, text=True, check=True
        )
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(json.dumps(results[-1]), file=sys.stderr)
    report("scaling", results, args.out)


if __name__ == "__main__":
    main()
