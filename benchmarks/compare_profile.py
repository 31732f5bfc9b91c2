"""Where the time of the default `flowtrunc compare` goes: one chunk (256 seeds) of the
default configuration, timed as the whole per-seed comparison, the effective flow alone,
and training alone, in one process (warm medians; compilation timed apart).

    python compare_profile.py [--chunk 256] [--out FILE]
"""

import argparse

import equinox as eqx
import jax
import numpy as np

jax.config.update("jax_enable_x64", True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--chunk", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    from _common import report, timed

    import flowtrunc as ft
    from flowtrunc import CompareConfig
    from flowtrunc.internal import compare_seed, seed_problem

    config = CompareConfig(precision=64)
    seeds = np.arange(args.chunk)
    nets, datas = jax.vmap(lambda s: seed_problem(s, config, None))(seeds)
    save_every = config.steps // config.saves
    ts = np.arange(config.saves + 1) * save_every * config.lr

    def flow(n, d):
        return ft.solve_effective(n, d, ts=ts, solver=ft.OrbitClock(rtol=config.rtol, atol=config.atol))

    def training(n, d):
        return ft.train(n, d, lr=config.lr, steps=config.steps, save_every=save_every, check_stability=False)

    parts = {
        "compare_seed (flow + training + metrics)": (lambda s: compare_seed(s, config)[0], (seeds,)),
        "effective flow (orbit-clock)": (flow, (nets, datas)),
        "training (gradient descent)": (training, (nets, datas)),
    }
    rows = []
    for name, (fn, inputs) in parts.items():
        first, warm, _ = timed(eqx.filter_jit(eqx.filter_vmap(fn)), *inputs, repeats=args.repeats)
        rows.append(
            {
                "part": name,
                "seeds": args.chunk,
                "compile_plus_first_s": round(first, 3),
                "warm_s": round(warm, 4),
            }
        )
        print(rows[-1])
    rows.append({"flow_fraction_of_compare": rows[1]["warm_s"] / rows[0]["warm_s"]})
    report("compare_profile", rows, args.out)


if __name__ == "__main__":
    main()
