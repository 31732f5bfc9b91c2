"""What the effective flow costs against the training it predicts (issue 21), in one run:
the default compare problem (L = 3, M = 2, N = 60, Q = 3, lr = 0.01, t1 = 5), seeds drawn
as `compare` draws them, every part `vmap`ped over the same seeds, warm medians.

- `end_state` with every field (times included) and with `with_times=False`;
- `solve_effective` at the compare job's 101 output times;
- 500 steps of gradient descent on the same seeds (the compare job's training);
- at `--large-points` (default 10^5, 8 seeds): the flow against sorting each seed's data
  coordinates, the floor of any clock.

    python clock.py [--seeds 2048] [--repeats 3] [--large-points 100000] [--out FILE]
"""

import argparse

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--seeds", type=int, default=2048, help="seeds of the default problem (default: 2048)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="warm repeats per part (default: 3)")
    parser.add_argument(
        "--large-points", type=int, default=100000, help="N of the large problem (default: 1e5)"
    )
    parser.add_argument("--large-seeds", type=int, default=8, help="seeds of the large problem (default: 8)")
    parser.add_argument("--out", default=None, help="JSON file for the results (default: print only)")
    args = parser.parse_args()
    from _common import report, timed

    import flowtrunc as ft
    from flowtrunc import CompareConfig
    from flowtrunc.internal import seed_problem

    config = CompareConfig(precision=64)
    nets, datas = jax.vmap(lambda s: seed_problem(s, config, None))(np.arange(args.seeds))
    save_every = config.steps // config.saves
    ts = jnp.asarray(np.arange(config.saves + 1) * save_every * config.lr)
    batched = lambda fn: eqx.filter_jit(eqx.filter_vmap(fn))  # noqa: E731
    parts = {
        "training, 500 steps": lambda n, d: (
            ft.train(
                n, d, lr=config.lr, steps=config.steps, save_every=save_every, check_stability=False
            ).thresholds
        ),
        "end_state, every field": lambda n, d: ft.end_state(n, d),
        "end_state, with_times=False": lambda n, d: ft.end_state(n, d, with_times=False),
        "solve_effective, 101 outputs": lambda n, d: (
            ft.solve_effective(
                n, d, ts=ts, solver=ft.OrbitClock(rtol=config.rtol, atol=config.atol)
            ).thresholds
        ),
    }
    rows = []
    for name, fn in parts.items():
        first, warm, _ = timed(batched(fn), nets, datas, repeats=args.repeats)
        rows.append(
            {"part": name, "seeds": args.seeds, "compile_plus_first_s": round(first, 2), "warm_s": warm}
        )
        print(rows[-1], flush=True)
    training = rows[0]["warm_s"]
    for row in rows[1:]:
        row["training_over_this"] = training / row["warm_s"]

    large = CompareConfig(precision=64, points=args.large_points)
    nets, datas = jax.vmap(lambda s: seed_problem(s, large, None))(np.arange(args.large_seeds))
    frame_inputs = jax.vmap(lambda n, d: d.x @ n.frame.T)(nets, datas)
    first, sort_s, _ = timed(jax.jit(lambda u: jnp.argsort(u, axis=1)), frame_inputs, repeats=args.repeats)
    for name, fn in (
        ("large N: end_state, every field", lambda n, d: ft.end_state(n, d)),
        ("large N: solve_effective, 101 outputs", lambda n, d: ft.solve_effective(n, d, ts=ts).thresholds),
    ):
        first, warm, _ = timed(batched(fn), nets, datas, repeats=args.repeats)
        rows.append(
            {
                "part": name,
                "seeds": args.large_seeds,
                "points": args.large_points,
                "compile_plus_first_s": round(first, 2),
                "warm_s": warm,
                "sort_s": sort_s,
                "this_over_sort": warm / sort_s,
            }
        )
        print(rows[-1], flush=True)
    report("clock", rows, args.out)


if __name__ == "__main__":
    main()
