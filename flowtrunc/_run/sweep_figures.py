"""Figures of a sweep: metrics against one swept key (quantile bands), or heatmaps over two."""

import dataclasses
import os

import numpy as np

from .._experiment.config import CompareConfig
from .._experiment.metrics import METRICS

BANDED = tuple(
    (name, f"{METRICS[name].short} [{METRICS[name].unit}]")
    for name in ("threshold_error", "cost_error", "crossing_time_error", "truncation_agreement")
)
FRACTIONS = (
    ("fraction_with_collapse_flow", "class collapses (flow)"),
    ("fraction_with_collapse_train", "class collapses (training)"),
    ("fraction_final_sets_differ", "flow and training end in different truncated sets"),
    ("fraction_kinds_differ", "flow and training differ in the kind of solution"),
)


def axis_label(key: str) -> str:
    field = {f.name: f for f in dataclasses.fields(CompareConfig)}[key]
    unit = field.metadata["unit"]
    return f"{key} [{unit}]" if unit else key


def _spans_decades(values) -> bool:
    values = np.asarray([v for v in values if isinstance(v, (int, float)) and np.isfinite(v)], float)
    return bool(values.size > 1 and np.all(values > 0) and values.max() > 10 * values.min())


def draw_sweep(out_dir: str, keys: list[str], rows: list[dict]) -> list[str]:
    """Writes the sweep's figures into `out_dir/figures`; returns their file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = os.path.join(out_dir, "figures")
    os.makedirs(folder, exist_ok=True)
    drawn = {}
    if len(keys) == 1:
        drawn["metrics.png"] = one_key(plt, keys[0], rows)
    elif len(keys) == 2:
        drawn["heatmaps.png"] = two_keys(plt, keys, rows)
    for name, fig in drawn.items():
        fig.savefig(os.path.join(folder, name), dpi=110)
        plt.close(fig)
    return list(drawn)


def one_key(plt, key, rows):
    xs = np.array([row[key] for row in rows], dtype=float)
    order = np.argsort(xs)
    fig, axes = plt.subplots(1, len(BANDED) + 1, figsize=(4 * (len(BANDED) + 1), 3.6), layout="constrained")
    for ax, (name, label) in zip(axes, BANDED):
        low, mid, high = (
            np.array([row[f"{name}_{q}"] for row in rows])[order] for q in ("q10", "q50", "q90")
        )
        ax.fill_between(xs[order], low, high, alpha=0.3, color="C0", label="q10–q90 across ok seeds")
        ax.plot(xs[order], mid, "o-", color="C0", label="median")
        ax.set_ylabel(label, fontsize=8)
        if _spans_decades(np.concatenate([low, high])):
            ax.set_yscale("log")
    ax = axes[-1]
    for i, (name, label) in enumerate(FRACTIONS):
        ax.plot(xs[order], np.array([row[name] for row in rows])[order], "o-", color=f"C{i + 1}", label=label)
    ax.set_ylim(-0.03, 1.03)
    ax.set_ylabel("fraction of ok seeds [1]", fontsize=8)
    for ax in axes:
        ax.set_xlabel(axis_label(key), fontsize=8)
        if _spans_decades(xs):
            ax.set_xscale("log")
    handles = axes[0].get_legend_handles_labels()[0] + axes[-1].get_legend_handles_labels()[0]
    labels = axes[0].get_legend_handles_labels()[1] + axes[-1].get_legend_handles_labels()[1]
    fig.legend(handles, labels, loc="outside lower center", ncols=5, fontsize=8)
    fig.suptitle(f"Effective flow against training across {key}", fontsize=10)
    return fig


def two_keys(plt, keys, rows):
    from matplotlib.colors import LogNorm

    first = sorted({row[keys[0]] for row in rows})
    second = sorted({row[keys[1]] for row in rows})

    def grid(name):
        values = np.full((len(first), len(second)), np.nan)
        for row in rows:
            values[first.index(row[keys[0]]), second.index(row[keys[1]])] = row[name]
        return values

    panels = [("threshold_error_q50", f"median {BANDED[0][1]}", True)] + [
        (name, f"fraction: {label} [1]", False) for name, label in (FRACTIONS[0], FRACTIONS[2], FRACTIONS[3])
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.6 * len(panels), 3.9), layout="constrained")
    for ax, (name, label, log) in zip(axes, panels):
        values = grid(name)
        positive = values[np.isfinite(values) & (values > 0)]
        norm = (
            LogNorm(positive.min(), positive.max())
            if log and positive.size and positive.max() > 10 * positive.min()
            else None
        )
        image = ax.imshow(
            values,
            origin="lower",
            aspect="auto",
            cmap="viridis",
            norm=norm,
            vmin=None if norm else (0 if not log else None),
            vmax=None if norm else (1 if not log else None),
        )
        for (i, j), value in np.ndenumerate(values):
            ax.text(
                j,
                i,
                "–" if not np.isfinite(value) else f"{value:.2g}",
                ha="center",
                va="center",
                fontsize=8,
                color="white" if not np.isfinite(value) or image.norm(value) < 0.6 else "black",
            )
        ax.set_xticks(range(len(second)), [str(v) for v in second])
        ax.set_yticks(range(len(first)), [str(v) for v in first])
        ax.set_xlabel(axis_label(keys[1]), fontsize=8)
        ax.set_ylabel(axis_label(keys[0]), fontsize=8)
        fig.colorbar(image, ax=ax).set_label(label, fontsize=8)
    fig.suptitle(
        f"Effective flow against training over {keys[0]} × {keys[1]} (blank –: no ok seed)", fontsize=10
    )
    return fig
