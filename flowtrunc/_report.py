"""Summary and figures of a comparison run, drawn from its saved files only."""

import json
import os

import numpy as np

from ._compare import CompareConfig, summarise, write_json

FIGURES = ("thresholds.png", "cost.png", "errors.png", "truncation.png", "plane.png")


def _load(out_dir: str):
    config_path = os.path.join(out_dir, "config.json")
    seeds_path = os.path.join(out_dir, "seeds.npz")
    if not os.path.isfile(config_path) or not os.path.isfile(seeds_path):
        raise ValueError(
            f"{out_dir!r} holds no finished run (config.json and seeds.npz); run "
            "`flowtrunc compare --out DIR` (with --resume to finish an interrupted one)."
        )
    with open(config_path) as f:
        config = CompareConfig.from_dict(json.load(f))
    with np.load(seeds_path) as archive:
        metrics = {key: archive[key] for key in archive.files}
    trajectories = None
    path = os.path.join(out_dir, "trajectories.npz")
    if os.path.isfile(path):
        with np.load(path) as archive:
            trajectories = {key: archive[key] for key in archive.files}
    return config, metrics, trajectories


def write_report(out_dir: str) -> dict:
    """Writes `summary.json` and `figures/*.png` from the saved results; returns the summary."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    config, metrics, trajectories = _load(out_dir)
    summary = summarise(metrics, config)
    write_json(os.path.join(out_dir, "summary.json"), summary)
    figures = os.path.join(out_dir, "figures")
    os.makedirs(figures, exist_ok=True)
    drawers = [_errors]
    if trajectories is not None and len(trajectories["ts"]):
        drawers += [_thresholds, _cost, _truncation]
        if trajectories["u"].shape[-1] == 2:
            drawers.append(_plane)
    for draw in drawers:
        fig, name = draw(plt, config, metrics, trajectories)
        fig.savefig(os.path.join(figures, name), dpi=110, bbox_inches="tight")
        plt.close(fig)
    return summary


def _class_colours(plt, count):
    return plt.get_cmap("tab10")(np.arange(count) % 10)


def _thresholds(plt, config, metrics, tr):
    seeds = min(len(tr["ts"]), 4)
    coords = min(tr["u"].shape[-1], 3)
    fig, axes = plt.subplots(
        seeds, coords, figsize=(4 * coords, 2.6 * seeds), squeeze=False, constrained_layout=True
    )
    colours = _class_colours(plt, int(tr["labels"].max()) + 1)
    for s in range(seeds):
        ts = tr["ts"][s]
        for k in range(coords):
            ax = axes[s, k]
            ax.plot(ts, tr["thresholds_flow"][s, :, :, k].max(axis=1), "C0", label="effective flow θ*")
            ax.plot(ts, tr["thresholds_train"][s, :, :, k].max(axis=1), "C3--", label="training θ*")
            ax.scatter(
                np.zeros_like(tr["u"][s, :, k]),
                tr["u"][s, :, k],
                marker="_",
                s=80,
                c=colours[tr["labels"][s]],
                label="data coordinates",
            )
            ax.set_title(f"seed {int(metrics['seed'][s])}, frame coordinate {k}", fontsize=9)
            ax.set_xlabel("t")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle("Active thresholds sweeping through the data (ticks: u = Rx by class)")
    return fig, "thresholds.png"


def _cost(plt, config, metrics, tr):
    fig, ax = plt.subplots(figsize=(6, 4), constrained_layout=True)
    for s in range(min(len(tr["ts"]), 4)):
        ax.plot(tr["ts"][s], tr["cost_flow"][s], f"C{s}", label=f"seed {int(metrics['seed'][s])} flow")
        ax.plot(tr["ts"][s], tr["cost_train"][s], f"C{s}--", label="training" if s == 0 else None)
    ax.set_xlabel("t")
    ax.set_ylabel("input-layer cost")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    ax.set_title(f"Cost: effective flow (solid) and gradient descent, lr = {config.lr} (dashed)")
    return fig, "cost.png"


def _errors(plt, config, metrics, tr):
    ok = (metrics["flow_result"] == 0) & (metrics["train_result"] == 0)
    panels = [
        ("threshold_error", "max |θ_train − θ_flow| / max|θ|"),
        ("cost_error", "max |C_train − C_flow| / C(0)"),
        ("crossing_time_error", "max |crossing time error|"),
        ("truncation_agreement", "fraction of times all n_k agree"),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2), constrained_layout=True)
    for ax, (name, label) in zip(axes, panels):
        values = metrics[name][ok]
        values = values[np.isfinite(values)]
        ax.hist(values, bins=40, color="C0")
        ax.set_xlabel(label, fontsize=8)
    axes[0].set_ylabel("seeds")
    fig.suptitle(f"Flow against training across {int(ok.sum())} seeds (lr = {config.lr}, {config.mode})")
    return fig, "errors.png"


def _truncation(plt, config, metrics, tr):
    coords = min(tr["u"].shape[-1], 3)
    fig, axes = plt.subplots(1, coords, figsize=(4.5 * coords, 3.5), squeeze=False, constrained_layout=True)
    ts = tr["ts"][0]
    for k in range(coords):
        ax = axes[0, k]
        ax.step(ts, tr["n_flow"][0, :, k], "C0", where="post", label="n(t) flow")
        ax.step(ts, tr["n_train"][0, :, k], "C3--", where="post", label="n(t) training")
        ax.set_xlabel("t")
        ax.set_ylabel("truncated points")
        twin = ax.twinx()
        twin.plot(ts, tr["kappa_flow"][0, :, k], "C2:", label="κ = Γ n / N")
        twin.set_ylabel("predicted rate κ")
        ax.set_title(f"coordinate {k}", fontsize=9)
    axes[0, 0].legend(loc="upper left", fontsize=7)
    fig.suptitle(f"Truncated counts and the predicted exponential rate (seed {int(metrics['seed'][0])})")
    return fig, "truncation.png"


def _plane(plt, config, metrics, tr):
    ts = tr["ts"][0]
    picks = np.unique(np.linspace(0, len(ts) - 1, 4).round().astype(int))
    frame, u, labels = tr["frame"][0], tr["u"][0], tr["labels"][0]
    colours = _class_colours(plt, int(labels.max()) + 1)
    fig, axes = plt.subplots(
        1, len(picks), figsize=(3.6 * len(picks), 3.6), sharex=True, sharey=True, constrained_layout=True
    )
    for ax, i in zip(np.atleast_1d(axes), picks):
        for name, marker, key in (("flow", "o", "thresholds_flow"), ("training", "x", "thresholds_train")):
            star = tr[key][0, i].max(axis=0)
            points = np.maximum(u, star[None]) @ frame
            ax.scatter(
                points[:, 0],
                points[:, 1],
                c=colours[labels],
                marker=marker,
                s=18,
                alpha=0.8 if marker == "o" else 0.5,
                label=name,
            )
        ax.scatter(
            tr["targets"][0][:, 0],
            tr["targets"][0][:, 1],
            c=colours[: len(tr["targets"][0])],
            marker="*",
            s=160,
            edgecolors="k",
            label="targets",
        )
        ax.set_title(f"t = {ts[i]:.2f}", fontsize=9)
        ax.set_aspect("equal", adjustable="box")
    every = np.concatenate([u @ frame, tr["targets"][0]])
    low, high = every.min(axis=0) - 0.3, every.max(axis=0) + 0.3
    for ax in np.atleast_1d(axes):
        ax.set_xlim(low[0], high[0])
        ax.set_ylim(low[1], high[1])
    np.atleast_1d(axes)[0].legend(fontsize=7)
    fig.suptitle("The data seen in the last layer, in input space: truncation and collapse")
    return fig, "plane.png"
