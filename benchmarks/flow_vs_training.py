"""What the theory saves: the effective flow against real training at equal accuracy of
the predicted thresholds, at N = 10^4 points, same horizon t1 = 5.

Training's threshold error is first order in lr (measured here at two step sizes, error
≈ C·lr); reaching an accuracy ε takes t1·C/ε steps. Training time at ε is the measured
time per step times that step count (measured directly where it is affordable); the flow
is timed at a tolerance whose own error (against a tight Dopri8 reference) is below ε.

Each side is timed twice: returning its whole result (the flow's event list, crossing
times, costs; training's saved trajectory and costs), and returning only the thresholds
that the accuracy is measured on (what a user asking "where is θ at t1?" reads; XLA then
drops what the answer does not need: the flow's event list, not training's steps).

    python flow_vs_training.py [--points 10000] [--seeds 8] [--out FILE]
"""

import argparse

import jax

jax.config.update("jax_enable_x64", True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--points", type=int, default=10000, help="N, points per seed (default: 10000)")
    parser.add_argument("--seeds", type=int, default=8, help="seeds (default: 8)")
    parser.add_argument("--out", default=None, help="JSON file for the results (default: print only)")
    args = parser.parse_args()
    import diffrax
    import equinox as eqx
    import jax.numpy as jnp
    import numpy as np
    from _common import report, timed

    import flowtrunc as ft
    from flowtrunc import CompareConfig
    from flowtrunc.internal import seed_problem

    t1 = 5.0
    config = CompareConfig(points=args.points, precision=64)
    nets, datas = jax.vmap(lambda s: seed_problem(s, config, None))(np.arange(args.seeds))
    ts = jnp.array([0.0, t1])

    def flow(rtol, atol, thresholds_only=False, **solver):
        def fn(n, d):
            sol = ft.solve_effective(n, d, ts=ts, solver=ft.OrbitClock(rtol=rtol, atol=atol, **solver))
            return sol.thresholds if thresholds_only else sol

        return eqx.filter_jit(eqx.filter_vmap(fn))

    reference = flow(1e-11, 1e-13, ode_solver=diffrax.Dopri8())(nets, datas).thresholds[:, -1]

    def error(thresholds):
        return float(jnp.max(jnp.abs(thresholds - reference)))

    flows = []
    for rtol, atol in ((1e-4, 1e-6), (1e-6, 1e-8), (1e-8, 1e-10)):
        first, warm, out = timed(flow(rtol, atol), nets, datas, repeats=2)
        _, only, thresholds = timed(flow(rtol, atol, thresholds_only=True), nets, datas, repeats=2)
        assert np.array_equal(np.asarray(thresholds), np.asarray(out.thresholds))
        flows.append(
            {
                "rtol": rtol,
                "seconds": warm,
                "thresholds_only_seconds": only,
                "error": error(out.thresholds[:, -1]),
            }
        )

    trainings = []
    for lr in (0.02, 0.01):
        steps = int(round(t1 / lr))
        fn = lambda n, d, lr=lr, steps=steps: ft.train(  # noqa: E731
            n, d, lr=lr, steps=steps, save_every=steps, check_stability=False
        )
        first, warm, out = timed(eqx.filter_jit(eqx.filter_vmap(fn)), nets, datas, repeats=2)
        only_fn = lambda n, d, fn=fn: fn(n, d).thresholds  # noqa: E731
        _, only, _ = timed(eqx.filter_jit(eqx.filter_vmap(only_fn)), nets, datas, repeats=2)
        trainings.append(
            {
                "lr": lr,
                "steps": steps,
                "seconds": warm,
                "thresholds_only_seconds": only,
                "error": error(out.thresholds[:, -1]),
            }
        )
    constant = trainings[-1]["error"] / trainings[-1]["lr"]
    order = np.log(trainings[0]["error"] / trainings[1]["error"]) / np.log(2)
    per_step = trainings[-1]["seconds"] / trainings[-1]["steps"]
    per_step_only = trainings[-1]["thresholds_only_seconds"] / trainings[-1]["steps"]

    rows = []
    for target in (1e-3, 1e-4, 1e-5, 1e-6):
        candidates = [f for f in flows if f["error"] <= target]
        if not candidates:
            continue
        fastest = min(candidates, key=lambda f: f["seconds"])
        steps = t1 * constant / target
        rows.append(
            {
                "target_threshold_error": target,
                "flow_rtol": fastest["rtol"],
                "flow_s": fastest["seconds"],
                "flow_error": fastest["error"],
                "training_lr": target / constant,
                "training_steps": int(steps),
                "training_s_estimated": steps * per_step,
                "ratio": steps * per_step / fastest["seconds"],
                "flow_thresholds_only_s": fastest["thresholds_only_seconds"],
                "training_thresholds_only_s_estimated": steps * per_step_only,
                "ratio_thresholds_only": steps * per_step_only / fastest["thresholds_only_seconds"],
            }
        )
    report(
        "flow_vs_training",
        [
            {
                "points": args.points,
                "seeds": args.seeds,
                "t1": t1,
                "flow_runs": flows,
                "training_runs": trainings,
                "training_error_constant": constant,
                "training_error_order": order,
                "seconds_per_training_step": per_step,
                "equal_accuracy": rows,
            }
        ],
        args.out,
    )


if __name__ == "__main__":
    main()
