"""Where the floor of the effective flow's cost lies (issue 21's missed targets), in one run.

The default compare problem (L = 3, M = 2, N = 60), 2048 seeds drawn as `compare` draws
them, float64: their 4096 coordinate orbits, flattened into one `vmap`ped batch, each
solved from θ*(0) to its end level (what `end_state(with_times=False)` needs):

- `solve_orbit`, as the flow runs it (Dopri8, rtol 1e-10, switch event, continued solves);
- one `diffeqsolve` of the orbit field over the first segment, adaptive, no event;
- the same with a constant step: as many Dopri8 steps as the batch's slowest orbit took
  in `solve_orbit` (16 on this problem);
- the orbit field evaluated that many × 13 times in one loop, each evaluation at the last
  one's output (no solver at all): what any Dopri8 of those steps costs in field evaluations;

and, at N = 10^4 (8 seeds, both coordinates), XLA's CPU sort against NumPy's, the floor of
any clock (every crossing time needs the sorted order).

    python orbit_floor.py [--seeds 2048] [--repeats 5] [--out FILE]
"""

import argparse
import statistics
import time

import diffrax
import jax
import jax.numpy as jnp
import numpy as np

jax.config.update("jax_enable_x64", True)

STAGES = 13  # Dopri8's field evaluations per step


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--seeds", type=int, default=2048, help="seeds of the default problem (default: 2048)"
    )
    parser.add_argument("--repeats", type=int, default=5, help="warm repeats per part (default: 5)")
    parser.add_argument("--out", default=None, help="JSON file for the results (default: print only)")
    args = parser.parse_args()
    from _common import report, timed

    import flowtrunc as ft
    from flowtrunc import CompareConfig
    from flowtrunc._flow.coordinate_end import coordinate_end
    from flowtrunc._flow.field import start_layer
    from flowtrunc._flow.orbit import orbit_field, solve_orbit, star_rate
    from flowtrunc._flow.orbit_clock import orbit_tools
    from flowtrunc._flow.solve import prepare_inputs
    from flowtrunc.internal import seed_problem

    config = CompareConfig(precision=64)
    nets, datas = jax.vmap(lambda s: seed_problem(s, config, None))(np.arange(args.seeds))
    inputs = lambda n, d: prepare_inputs(n, d, jnp.zeros(1), None, None, None, "x")[:3]  # noqa: E731
    stats, theta, scales = jax.jit(jax.vmap(inputs))(nets, datas)
    flat = lambda a: jnp.moveaxis(a, 2, 1).reshape(-1, a.shape[1])  # noqa: E731  (seed, coordinate) rows
    u, sums, theta, scales = flat(stats.u_sorted), flat(stats.target_sums), flat(theta), flat(scales)
    ends = jax.jit(jax.vmap(lambda u, s, t: coordinate_end(u, s, jnp.max(t))))(u, sums, theta)
    length = jnp.abs(ends.level - jnp.max(theta, axis=1))
    direction = ends.direction
    tools = orbit_tools(jnp.float64, *ft.OrbitClock().tolerances(jnp.float64), diffrax.Dopri8())
    term = diffrax.ODETerm(lambda s, y, a: orbit_field(s, y, a, "direct"))

    def first_segment(t, sc, d):
        d = d.astype(t.dtype)
        active = start_layer(t[:, None], d[None])[0]
        return (t, sc, 1.0 / star_rate(t, sc, active, "direct")), (active, d)

    def first_segment_solve(t, sc, d, size, steps):
        """One diffeqsolve of the first segment: adaptive (`steps` None) or `steps` equal ones."""
        y0, a = first_segment(t, sc, d)
        sol = diffrax.diffeqsolve(
            term,
            diffrax.Dopri8(),
            0.0,
            size,
            None if steps is None else size / steps,
            y0,
            args=a,
            max_steps=64 if steps is None else steps + 1,
            throw=False,
            stepsize_controller=tools["controller"] if steps is None else diffrax.ConstantStepSize(),
            saveat=diffrax.SaveAt(t1=True),
        )
        return sol.ys, sol.stats["num_steps"]

    def evaluations(t, sc, d, size, steps):
        y, a = first_segment(t, sc, d)
        h = size / steps

        def step(_, y):
            k = y
            for _ in range(STAGES):  # each evaluation at the last one's output: none can be skipped
                k = jax.tree.map(
                    lambda base, slope: base + h / STAGES * slope, y, orbit_field(0.0, k, a, "direct")
                )
            return k

        return jax.lax.fori_loop(0, steps, step, y), jnp.full((), steps)

    def orbit(t, sc, d, size):
        o = solve_orbit(t, sc, d, size, motion="direct", max_steps=64, keep="end", **tools)
        return o.end, o.num_steps

    rows = []

    def measure(name, fn):
        first, warm, (_, steps) = timed(
            jax.jit(jax.vmap(fn)), theta, scales, direction, length, repeats=args.repeats
        )
        steps = np.asarray(steps)
        rows.append(
            {
                "part": name,
                "orbits": int(theta.shape[0]),
                "compile_plus_first_s": round(first, 2),
                "warm_s": warm,
                "us_per_orbit": 1e6 * warm / theta.shape[0],
                "mean_steps": float(steps.mean()),
                "max_steps": int(steps.max()),
            }
        )
        print(rows[-1], flush=True)

    measure("solve_orbit (keep='end'), as the flow runs it", orbit)
    steps = rows[-1]["max_steps"]  # the batch runs its slowest orbit
    measure("diffeqsolve, first segment, adaptive, no event", lambda *a: first_segment_solve(*a, None))
    measure(f"diffeqsolve, first segment, {steps} constant steps", lambda *a: first_segment_solve(*a, steps))
    measure(
        f"orbit field alone, {steps} x {STAGES} evaluations in one loop", lambda *a: evaluations(*a, steps)
    )
    floor = rows[-1]["warm_s"]
    for row in rows[:-1]:
        row["over_field_evaluations"] = row["warm_s"] / floor

    large = CompareConfig(precision=64, points=10_000)
    nets, datas = jax.vmap(lambda s: seed_problem(s, large, None))(np.arange(8))
    coords = jax.jit(jax.vmap(lambda n, d: (d.x @ n.frame.T).T))(nets, datas)  # (8, M, N)
    _, xla_argsort, _ = timed(jax.jit(lambda c: jnp.argsort(c, axis=-1)), coords, repeats=args.repeats)
    _, xla_sort, _ = timed(jax.jit(lambda c: jnp.sort(c, axis=-1)), coords, repeats=args.repeats)
    host = np.asarray(coords)
    numpy_times = {}
    for kind, fn in (
        ("argsort", lambda: np.argsort(host, axis=-1, kind="stable")),
        ("sort", lambda: np.sort(host, axis=-1)),
    ):
        samples = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            fn()
            samples.append(time.perf_counter() - start)
        numpy_times[kind] = statistics.median(samples)
    rows.append(
        {
            "part": "sort of 8 seeds' frame coordinates, N = 10^4, M = 2",
            "xla_argsort_s": xla_argsort,
            "xla_sort_s": xla_sort,
            "numpy_stable_argsort_s": numpy_times["argsort"],
            "numpy_sort_s": numpy_times["sort"],
            "xla_over_numpy_argsort": xla_argsort / numpy_times["argsort"],
        }
    )
    print(rows[-1], flush=True)
    report("orbit_floor", rows, args.out)


if __name__ == "__main__":
    main()
