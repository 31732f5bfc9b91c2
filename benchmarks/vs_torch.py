"""Real training: flowtrunc (`train`, all seeds in one vmapped call) against a per-seed
PyTorch CPU loop of the same adapted network, cost and steps (plain SGD, float64).
torch is a benchmark-only dependency (`pip install torch`). Answers are checked: the
final costs must agree to 1e-9 relative.

Also reports a bandwidth roofline for the training step: bytes a step must touch
(inputs, targets, parameters and their gradients, read and written once) over time,
against the device's measured copy bandwidth.

    python vs_torch.py [--seeds 1024] [--torch-seeds 32] [--steps 500] [--out FILE]
"""

import argparse
import time

import jax
import numpy as np

jax.config.update("jax_enable_x64", True)


def torch_train(frame, scales, biases, x, targets, lr, steps):
    import torch

    frame_t = torch.tensor(frame)
    x_t, y_t = torch.tensor(x), torch.tensor(targets)
    d = torch.tensor(scales, requires_grad=True)
    b = torch.tensor(biases, requires_grad=True)
    optimizer = torch.optim.SGD([d, b], lr=lr)

    def cost():
        h = x_t @ frame_t.T
        cum_scale, cum_bias = torch.ones_like(d[0]), torch.zeros_like(b[0])
        for layer in range(d.shape[0]):
            h = torch.relu(d[layer] * h + b[layer])
            cum_scale, cum_bias = d[layer] * cum_scale, d[layer] * cum_bias + b[layer]
        x_tilde = ((h - cum_bias) / cum_scale) @ frame_t
        return 0.5 * ((x_tilde - y_t) ** 2).sum(dim=1).mean()

    for _ in range(steps):
        optimizer.zero_grad()
        loss = cost()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        return float(cost())


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=1024)
    parser.add_argument("--torch-seeds", type=int, default=32)
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    import equinox as eqx
    import torch
    from _common import copy_bandwidth, report, timed

    import flowtrunc as ft
    from flowtrunc import CompareConfig
    from flowtrunc.internal import seed_problem

    torch.set_num_threads(1)  # one seed per loop iteration; threads do not help tiny nets
    config = CompareConfig(precision=64)
    seeds = np.arange(args.seeds)
    nets, datas = jax.vmap(lambda s: seed_problem(s, config, None))(seeds)
    run = eqx.filter_jit(
        eqx.filter_vmap(
            lambda n, d: ft.train(
                n, d, lr=args.lr, steps=args.steps, save_every=args.steps, check_stability=False
            )
        )
    )
    first, warm, out = timed(run, nets, datas, repeats=args.repeats)

    torch_times, worst = [], 0.0
    for s in range(args.torch_seeds):
        net, data = jax.tree.map(lambda a: a[s], (nets, datas))
        start = time.perf_counter()
        final = torch_train(
            np.asarray(net.frame),
            np.asarray(net.scales),
            np.asarray(net.biases),
            np.asarray(data.x),
            np.asarray(data.point_targets()),
            args.lr,
            args.steps,
        )
        torch_times.append(time.perf_counter() - start)
        ours = float(out.cost[s, -1])
        worst = max(worst, abs(final - ours) / abs(ours))
    if worst > 1e-9:
        raise SystemExit(f"answers differ: max relative cost difference {worst:.3g}")

    num_points, width = datas.x.shape[1:]
    params = 2 * config.depth * width
    bytes_per_step = 8 * (2 * num_points * width + 4 * params)
    achieved = bytes_per_step * args.steps * args.seeds / warm
    peak = copy_bandwidth()
    per_seed_torch = float(np.median(torch_times))
    report(
        "vs_torch",
        [
            {
                "seeds_flowtrunc": args.seeds,
                "seeds_torch": args.torch_seeds,
                "steps": args.steps,
                "points": int(num_points),
                "depth": config.depth,
                "width": int(width),
                "flowtrunc_compile_plus_first_s": round(first, 3),
                "flowtrunc_warm_median_s": round(warm, 4),
                "flowtrunc_s_per_seed": warm / args.seeds,
                "torch_median_s_per_seed": per_seed_torch,
                "speedup": per_seed_torch / (warm / args.seeds),
                "max_relative_cost_difference": worst,
                "training_steps_per_s": args.steps * args.seeds / warm,
                "roofline_bytes_per_step": bytes_per_step,
                "achieved_bytes_per_s": achieved,
                "copy_bandwidth_bytes_per_s": peak,
                "fraction_of_bandwidth": achieved / peak,
            }
        ],
        args.out,
    )


if __name__ == "__main__":
    main()
