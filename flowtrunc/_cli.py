"""The `flowtrunc` command line: `compare` (the main job), `report`, `demo`."""

import argparse
import json
import os
import sys

import numpy as np

# flag name -> CompareConfig field
_OPTIONS = {
    "seeds": int,
    "depth": int,
    "dim": int,
    "points": int,
    "clusters": int,
    "lr": float,
    "t1": float,
    "saves": int,
    "chunk_size": int,
}


def _resolve_config(args):
    from ._compare import CompareConfig

    values = {}
    if args.config is not None:
        if not os.path.isfile(args.config):
            raise ValueError(f"--config {args.config!r} does not exist.")
        try:
            with open(args.config) as f:
                values = json.load(f)
        except json.JSONDecodeError as error:
            raise ValueError(f"--config {args.config!r} is not valid JSON ({error}).") from error
        if not isinstance(values, dict):
            raise ValueError(f"--config {args.config!r} must hold a JSON object of settings.")
    for name in _OPTIONS:
        if getattr(args, name) is not None:
            values[name] = getattr(args, name)
    if args.mode is not None:
        values["mode"] = args.mode
    if args.freeze_weights:
        values["freeze_weights"] = True
    if args.precision is not None:
        values["precision"] = args.precision
    if args.data is not None:
        fixed = [name for name in ("dim", "points", "clusters") if getattr(args, name) is not None]
        if fixed:
            raise ValueError(
                f"--data fixes the dimension, point count and classes; drop --{', --'.join(fixed)}."
            )
        values["data"] = os.path.abspath(args.data)
    config = CompareConfig.from_dict(values)
    return config


def _compare(args) -> int:
    config = _resolve_config(args)
    # precision must be set before JAX computes anything
    import jax

    jax.config.update("jax_enable_x64", config.precision == 64)
    from ._compare import resolve_data
    from ._output import run_compare

    resolved, _ = resolve_data(config)
    print(
        f"flowtrunc compare: {resolved.seeds} seeds, L={resolved.depth} M={resolved.dim} "
        f"N={resolved.points} Q={resolved.clusters}, lr={resolved.lr}, t1={resolved.t1}, "
        f"mode={resolved.mode}{' (weights frozen)' if resolved.freeze_weights else ''}, "
        f"float{resolved.precision}, {jax.device_count()} device(s) -> {args.out}",
        file=sys.stderr,
    )
    try:
        run_compare(resolved, args.out, resume=args.resume)
    except KeyboardInterrupt:
        print(
            f"\ninterrupted; finished chunks are saved in {args.out}. Continue with the same "
            "command plus --resume.",
            file=sys.stderr,
        )
        return 130
    _print_summary(args.out)
    return 0


def _print_summary(out_dir) -> None:
    with open(os.path.join(out_dir, "summary.json")) as f:
        summary = json.load(f)
    print(
        f"{summary['ok_seeds']}/{summary['seeds']} seeds ok "
        f"({summary['flow_failures']} flow failures, {summary['training_divergences']} diverged)"
    )
    for name in ("threshold_error", "cost_error", "crossing_time_error", "truncation_agreement"):
        q = summary.get(name)
        if q:
            print(f"  {name:22s} median {q['q50']:.3g}   90% {q['q90']:.3g}   max {q['q100']:.3g}")
    print(
        f"  seeds with a collapsed class: flow {summary['seeds_with_collapse_flow']}, "
        f"training {summary['seeds_with_collapse_train']}"
    )
    print(f"results: {out_dir}/summary.json, seeds.npz, figures/")


def _report(args) -> int:
    from ._report import write_report

    write_report(args.dir)
    _print_summary(args.dir)
    return 0


def _demo(args) -> int:
    import jax

    jax.config.update("jax_enable_x64", args.precision == 64)
    import jax.numpy as jnp

    from ._data import make_clusters
    from ._events import EVENT_KINDS
    from ._flow import solve_effective
    from ._network import AdaptedReLUNet
    from ._results import describe

    key = jax.random.key(args.seed)
    net = AdaptedReLUNet.random(key, args.depth, args.dim, scale_spread=0.3, bias_scale=0.6)
    data = make_clusters(
        jax.random.fold_in(key, 1),
        num_points=args.points,
        num_clusters=args.clusters,
        dim=args.dim,
        target_offset=0.4,
    )
    sol = solve_effective(net, data, ts=jnp.linspace(0.0, args.t1, 9), train_weights=not args.freeze_weights)
    print(
        f"flowtrunc demo: effective flow, L={args.depth} M={args.dim} N={args.points} "
        f"Q={args.clusters}, weights {'frozen' if args.freeze_weights else 'trained'}"
    )
    print(f"{'t':>8} {'cost':>12}  truncated points per frame coordinate")
    for t, cost, counts in zip(np.asarray(sol.ts), np.asarray(sol.cost), np.asarray(sol.n_truncated)):
        print(f"{t:8.3f} {cost:12.6f}  {counts.tolist()}")
    print(f"{int(sol.num_events)} events of the whole flow (t in [0, inf)), orbit-clock solver:")
    for i in range(min(int(sol.num_events), len(sol.event_times))):
        point = int(sol.event_points[i])
        what = f"of point {point}" if point >= 0 else f"(active layer {int(sol.event_layers[i]) + 1})"
        print(
            f"  t={float(sol.event_times[i]):.5f} coordinate {int(sol.event_coords[i])} "
            f"{EVENT_KINDS[int(sol.event_kinds[i])]} {what}"
        )
    from ._end_state import END_KINDS, end_state

    end = end_state(net, data, train_weights=not args.freeze_weights)
    for k in range(args.dim):
        when = float(end.end_time[k])
        print(
            f"coordinate {k} ends: {END_KINDS[int(end.kind[k])]} at θ* = {float(end.theta_star[k]):.5f}"
            + (f" (from t = {when:.5f})" if np.isfinite(when) else " (as t → ∞)")
        )
    message = describe(sol.result)[0]
    print("result:", message or "successful")
    return 0 if not message else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="flowtrunc", description="Effective gradient flow of deep ReLU networks."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    compare = commands.add_parser(
        "compare",
        help="effective flow against real training over many seeds (the main job)",
        description="Runs the effective flow and gradient-descent training side by side over "
        "many seeds and writes config.json, summary.json, seeds.npz and figures/ to --out. "
        "Settings: built-in defaults, then --config, then the flags given.",
    )
    compare.add_argument("--out", required=True, help="output directory (new or empty, or with --resume)")
    compare.add_argument("--config", help="JSON file of settings (keys as in config.json)")
    compare.add_argument("--data", help=".npz with x (N, M), labels (N,), optional targets (Q, M)")
    for name, kind in _OPTIONS.items():
        compare.add_argument(f"--{name.replace('_', '-')}", dest=name, type=kind, default=None)
    compare.add_argument("--mode", choices=("adapted", "unconstrained"), default=None)
    compare.add_argument(
        "--freeze-weights", action="store_true", help="train biases only (flow and training)"
    )
    compare.add_argument("--precision", type=int, choices=(32, 64), default=None)
    compare.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    compare.set_defaults(run=_compare)

    report = commands.add_parser("report", help="redraw figures and summary from a finished run")
    report.add_argument("dir")
    report.set_defaults(run=_report)

    demo = commands.add_parser("demo", help="integrate the effective flow once and print its events")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--depth", type=int, default=3)
    demo.add_argument("--dim", type=int, default=2)
    demo.add_argument("--points", type=int, default=30)
    demo.add_argument("--clusters", type=int, default=3)
    demo.add_argument("--t1", type=float, default=4.0)
    demo.add_argument("--freeze-weights", action="store_true")
    demo.add_argument("--precision", type=int, choices=(32, 64), default=64)
    demo.set_defaults(run=_demo)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except ValueError as error:
        print(f"flowtrunc: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
