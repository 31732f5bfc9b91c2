"""Compile time of the main entry points: first call minus the warm median, on the default
problem (one seed, and one compare chunk of 256 seeds).

    python compile_times.py [--out FILE]
"""

import argparse

import jax

jax.config.update("jax_enable_x64", True)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    import jax.numpy as jnp
    import numpy as np
    from _common import report, timed

    import flowtrunc as ft
    from flowtrunc import CompareConfig
    from flowtrunc.internal import run_chunk, seed_problem

    config = CompareConfig(precision=64)
    net, data = seed_problem(0, config, None)
    ts = jnp.linspace(0.0, 5.0, 101)
    entries = {
        "solve_effective": lambda: ft.solve_effective(net, data, ts=ts),
        "end_state": lambda: ft.end_state(net, data),
        "end_state (with_times=False)": lambda: ft.end_state(net, data, with_times=False),
        "solve_frozen_exact": lambda: ft.solve_frozen_exact(net, data, ts=ts),
        "train (500 steps)": lambda: ft.train(net, data, lr=0.01, steps=500, save_every=5),
        "gradient_flow": lambda: ft.gradient_flow(net, data, ts=ts),
        "compare chunk (256 seeds)": lambda: run_chunk(config, None, np.arange(256)),
    }
    rows = []
    for name, call in entries.items():
        first, warm, _ = timed(call, repeats=3)
        rows.append(
            {
                "entry_point": name,
                "first_call_s": round(first, 3),
                "warm_s": round(warm, 4),
                "compile_s": round(first - warm, 3),
            }
        )
    report("compile_times", rows, args.out)


if __name__ == "__main__":
    main()
