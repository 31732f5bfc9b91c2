"""`flowtrunc demo`: the effective flow of one random network, its events and end state."""

import math

from .processes import set_process_precision


def check_demo(args) -> None:
    for name in ("depth", "dim", "points", "clusters"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name} must be a positive integer, got {getattr(args, name)}.")
    if args.points < args.clusters:
        raise ValueError(f"--points ({args.points}) must be >= --clusters ({args.clusters}).")
    if not (math.isfinite(args.t1) and args.t1 > 0):
        raise ValueError(f"--t1 must be a finite positive time, got {args.t1}.")
    if not 0 <= args.seed < 2**32:  # jax.random.key takes a 32-bit seed (64 with x64)
        raise ValueError(f"--seed must be in 0..{2**32 - 1}, got {args.seed}.")


def run_demo(args) -> int:
    check_demo(args)
    set_process_precision(args.precision)
    import jax
    import jax.numpy as jnp
    import numpy as np

    from .._flow.end_state import END_KINDS, end_state
    from .._flow.events import EVENT_KINDS
    from .._flow.solve import solve_effective
    from .._model.data import make_clusters
    from .._model.network import AdaptedReLUNet
    from .._results import describe

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
