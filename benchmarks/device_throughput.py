"""Throughput on whatever device JAX runs on (written for GPUs; runs on a CPU too):
training steps against the device's memory-bandwidth roofline, the effective flow's seeds
per second, and the whole comparison's seeds per second against the chunk size (which
sets `DEVICE_DEFAULTS`). One precision per process: run it once per precision.

    python device_throughput.py --precision 32 [--quick] [--out FILE]
"""

import argparse


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--precision", type=int, choices=(32, 64), default=32, help="float bits (default: 32)"
    )
    parser.add_argument("--quick", action="store_true", help="small batches only (a smoke run on a CPU)")
    parser.add_argument("--repeats", type=int, default=3, help="warm repeats, median reported (default: 3)")
    parser.add_argument("--out", default=None, help="JSON file for the rows (default: print only)")
    args = parser.parse_args()
    import jax

    jax.config.update("jax_enable_x64", args.precision == 64)
    import equinox as eqx
    import numpy as np
    from _common import copy_bandwidth, report, timed

    import flowtrunc as ft
    from flowtrunc import CompareConfig
    from flowtrunc.internal import compare_seed, seed_problem

    config = CompareConfig(precision=args.precision)
    width, points, params = config.dim, config.points, 2 * config.depth * config.dim
    item = args.precision // 8
    # a step must read inputs and targets and read + write parameters and gradients once
    bytes_per_step = item * (2 * points * width + 4 * params)
    bandwidth = copy_bandwidth()
    rows = [{"part": "device copy bandwidth", "bytes_per_s": bandwidth}]
    quick = args.quick
    save_every = config.steps // config.saves
    ts = np.arange(config.saves + 1) * save_every * config.lr

    def problems(n):
        return jax.vmap(lambda s: seed_problem(s, config, None))(np.arange(n))

    for seeds in (256, 1024) if quick else (1024, 16384, 131072):
        steps = 500
        run = eqx.filter_jit(
            eqx.filter_vmap(
                lambda n, d: ft.train(
                    n, d, lr=config.lr, steps=steps, save_every=steps, check_stability=False
                )
            )
        )
        first, warm, out = timed(run, *problems(seeds), repeats=args.repeats)
        achieved = bytes_per_step * steps * seeds / warm
        rows.append(
            {
                "part": "training (train, 500 steps)",
                "seeds": seeds,
                "compile_plus_first_s": round(first, 3),
                "warm_s": warm,
                "steps_per_s": steps * seeds / warm,
                "roofline_bytes_per_step": bytes_per_step,
                "achieved_bytes_per_s": achieved,
                "fraction_of_bandwidth": achieved / bandwidth,
                "failed": int(np.sum(np.asarray(out.result) != 0)),
            }
        )
        print(rows[-1], flush=True)

    for seeds in (256, 1024) if quick else (1024, 8192, 32768):
        flow = eqx.filter_jit(
            eqx.filter_vmap(
                lambda n, d: ft.solve_effective(
                    n, d, ts=ts, solver=ft.OrbitClock(rtol=config.rtol, atol=config.atol)
                )
            )
        )
        first, warm, out = timed(flow, *problems(seeds), repeats=args.repeats)
        rows.append(
            {
                "part": f"effective flow (orbit-clock, {len(ts)} outputs)",
                "seeds": seeds,
                "compile_plus_first_s": round(first, 3),
                "warm_s": warm,
                "seeds_per_s": seeds / warm,
                "failed": int(np.sum(np.asarray(out.result) != 0)),
            }
        )
        print(rows[-1], flush=True)

    for chunk in (256, 1024) if quick else (256, 1024, 4096, 16384):
        whole = eqx.filter_jit(eqx.filter_vmap(lambda s: compare_seed(s, config)[0]))
        first, warm, _ = timed(whole, np.arange(chunk, dtype=np.int32), repeats=args.repeats)
        rows.append(
            {
                "part": "compare_seed (flow + training + metrics), one chunk",
                "seeds": chunk,
                "compile_plus_first_s": round(first, 3),
                "warm_s": warm,
                "seeds_per_s": chunk / warm,
            }
        )
        print(rows[-1], flush=True)
    report(f"device_throughput_f{args.precision}", rows, args.out)


if __name__ == "__main__":
    main()
