"""The `flowtrunc` command line."""

import argparse
import sys

import numpy as np


def _demo(args) -> int:
    import jax

    if args.precision == 64:
        jax.config.update("jax_enable_x64", True)
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
    ts = jnp.linspace(0.0, args.t1, 9)
    sol = solve_effective(net, data, ts=ts, train_weights=not args.freeze_weights)
    print(
        f"flowtrunc demo: effective flow, L={args.depth} M={args.dim} N={args.points} "
        f"Q={args.clusters}, weights {'frozen' if args.freeze_weights else 'trained'}"
    )
    print(f"{'t':>8} {'cost':>12}  truncated points per frame coordinate")
    for t, cost, counts in zip(np.asarray(sol.ts), np.asarray(sol.cost), np.asarray(sol.n_truncated)):
        print(f"{t:8.3f} {cost:12.6f}  {counts.tolist()}")
    count = min(int(sol.num_events), len(sol.event_times))
    print(f"{int(sol.num_events)} events in {int(sol.num_segments)} segments:")
    for i in range(count):
        point = int(sol.event_points[i])
        print(
            f"  t={float(sol.event_times[i]):.5f} coordinate {int(sol.event_coords[i])} "
            f"{EVENT_KINDS[int(sol.event_kinds[i])]}"
            + (f" of point {point}" if point >= 0 else f" (active layer {int(sol.event_layers[i]) + 1})")
        )
    message = describe(sol.result)[0]
    print("result:", message or "successful")
    return 0 if not message else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flowtrunc", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="integrate the effective flow on a small clustered dataset")
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
