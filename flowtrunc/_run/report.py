"""Summary and figures of a comparison run, drawn from its saved files only."""

import errno
import os
import sys

import numpy as np
from matplotlib.ticker import MaxNLocator

from .._experiment.metrics import METRICS
from .._experiment.summary import ok_seeds, summarise
from .._results import RESULTS
from .chunks import load_metrics
from .files import SEEDS, SUMMARY, TRAJECTORIES, OutputError, read_config, write_json

TIME = "t [flow time = steps × lr]"
LEVEL = "[input units]"
SHOWN = 4  # seeds and coordinates drawn per figure (stated in the titles when more exist)


def _load_npz(path: str) -> dict:
    try:
        with np.load(path) as archive:
            return {key: archive[key] for key in archive.files}
    except Exception as error:
        raise OutputError(
            f"{path!r} is damaged ({error}); delete it and run `flowtrunc compare --resume` on "
            "the directory to rebuild it from the chunks."
        ) from error


def load_run(out_dir: str):
    """`(config, provenance, metrics, trajectories or None)` of a finished run."""
    if not os.path.isfile(os.path.join(out_dir, SEEDS)):
        raise OutputError(
            f"{out_dir!r} holds no finished run (config.json and seeds.npz); run "
            "`flowtrunc compare --out DIR` (with --resume to finish an interrupted one)."
        )
    config, origin = read_config(out_dir)
    metrics = _load_npz(os.path.join(out_dir, SEEDS))
    path = os.path.join(out_dir, TRAJECTORIES)
    trajectories = _load_npz(path) if os.path.isfile(path) else None
    if trajectories is not None:
        trajectories.pop("fingerprint", None)  # checked on resume (`check_chunks`)
    return config, origin, metrics, trajectories


def write_report(out_dir: str) -> dict:
    """Writes `summary.json` and `figures/` from the saved results; returns the summary."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    config, origin, metrics, trajectories = load_run(out_dir)
    seconds = load_metrics(out_dir)[1] if os.path.isdir(os.path.join(out_dir, "chunks")) else None
    summary = summarise(metrics, config, origin, seconds)
    write_json(os.path.join(out_dir, SUMMARY), summary)
    folder = os.path.join(out_dir, "figures")
    os.makedirs(folder, exist_ok=True)
    for name, draw in figure_makers(config, metrics, trajectories, summary):
        path = os.path.join(folder, name)
        try:
            if name.endswith(".gif"):
                draw(path)
                continue
            fig = draw()
            fig.savefig(path, dpi=110)
            plt.close(fig)
        except OSError as error:  # disk full, no permission: name the file and the next step
            plt.close("all")
            reason = "the disk is full" if error.errno == errno.ENOSPC else error.strerror or str(error)
            raise OutputError(
                f"could not write the figure {path!r}: {reason}. The results (summary.json, "
                f"seeds.npz) are complete; free space (or fix the permission) and draw the "
                f"figures again with `flowtrunc report {out_dir}`."
            ) from error
        except Exception as error:  # a figure the numbers cannot make: say why, keep the run
            plt.close("all")
            print(
                f"figure {name} was not drawn: {type(error).__name__}: {str(error).splitlines()[0][:200]} "
                "(the results in summary.json and seeds.npz are complete)",
                file=sys.stderr,
            )
    return summary


def figure_makers(config, metrics, trajectories, summary) -> list:
    """`[(file name, draw)]` of a run: errors across seeds, and, from the kept
    trajectories, thresholds, cost, truncated counts and (M = 2) the input plane and its
    animation. `draw()` returns a Figure (`draw(path)` writes the animation)."""
    import matplotlib.pyplot as plt

    makers = [("errors.png", lambda: _errors(plt, config, metrics, summary))]
    if config.off_adapted > 0 and ok_seeds(metrics).any():
        makers.append(("departure.png", lambda: _departure(plt, config, metrics)))
    if config.cost == "output" and ok_seeds(metrics).any():
        makers.append(("output_metric.png", lambda: _output_metric(plt, config, metrics)))
    if trajectories is not None and len(trajectories["ts"]):
        makers += [
            ("thresholds.png", lambda: _thresholds(plt, metrics, trajectories)),
            ("cost.png", lambda: _cost(plt, config, metrics, trajectories)),
            ("truncation.png", lambda: _truncation(plt, metrics, trajectories)),
        ]
        if trajectories["u"].shape[-1] == 2:
            makers.append(("plane.png", lambda: _plane(plt, metrics, trajectories)))
            makers.append(("truncation.gif", lambda path: animate_plane(trajectories, metrics, path)))
    return makers


def figures(config, metrics, trajectories, summary) -> list:
    """`[(file name, Figure)]` of a run (the animation apart)."""
    return [
        (name, draw())
        for name, draw in figure_makers(config, metrics, trajectories, summary)
        if not name.endswith(".gif")
    ]


def _colours(plt, labels):
    return plt.get_cmap("tab10")(np.arange(int(labels.max()) + 1) % 10)


def _seed_title(metrics, s) -> tuple[str, str]:
    """Title of kept seed `s` and its colour (red, naming the failure, when it failed)."""
    seed = int(metrics["seed"][s])
    flow, train = int(metrics["flow_result"][s]), int(metrics["train_result"][s])
    if flow == 0 and train == 0:
        return f"seed {seed}", "black"
    why = RESULTS(flow).name if flow else f"training {RESULTS(train).name}"
    return f"seed {seed} FAILED ({why})", "red"


def _selection(total: int, what: str) -> str:
    return f" ({what} 0–{SHOWN - 1} of {total} shown)" if total > SHOWN else ""


def _errors(plt, config, metrics, summary):
    ok = ok_seeds(metrics)
    if not ok.any():
        fig, ax = plt.subplots(figsize=(8, 3), layout="constrained")
        ax.set_axis_off()
        reasons = "\n".join(
            f"{f['seeds']} seeds: {f['part']} {f['what']} → {f['fix']}" for f in summary["failures"]
        )
        ax.text(
            0.5,
            0.5,
            f"No seed succeeded, so there is nothing to compare.\n{reasons}",
            ha="center",
            va="center",
            wrap=True,
            fontsize=9,
            color="red",
        )
        fig.suptitle(f"Flow against training: 0 of {len(ok)} seeds succeeded")
        return fig
    panels = [
        (name, METRICS[name].label)
        for name in ("threshold_error", "cost_error", "crossing_time_error", "truncation_agreement")
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.4), layout="constrained")
    for ax, (name, label) in zip(axes, panels):
        values = metrics[name][ok].astype(np.float64)
        values = values[np.isfinite(values)]
        positive = values[values > 0]
        if positive.size > 1 and positive.max() > 100 * positive.min() and name != "truncation_agreement":
            low = max(positive.min(), float(np.quantile(positive, 0.01)))  # round-off outliers aside
            ax.hist(positive, bins=np.geomspace(low, positive.max(), 41), color="C0")
            ax.set_xscale("log")
            hidden = int(np.sum(values < low))
            if hidden:
                ax.set_title(f"{hidden} seeds below {low:.2g} (0 included) not shown", fontsize=8)
        else:
            ax.hist(values, bins=40, color="C0")
        ax.set_xlabel(label, fontsize=8)
        ax.set_ylabel("seeds [count]")
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    failed = len(ok) - int(ok.sum())
    note = f"; {failed} failed seeds excluded (see summary.json `failures`)" if failed else ""
    fig.suptitle(
        f"Flow against training: {int(ok.sum())} of {len(ok)} seeds (lr = {config.lr}, {config.mode}){note}",
        fontsize=10,
    )
    return fig


def _axis(name: str) -> tuple[str, str]:
    return name, METRICS[name].label


def _departure(plt, config, metrics):
    """Per seed: the prediction's error against the measured departure from the adapted
    family at the start (and the drift it grows into)."""
    return _against(
        plt,
        metrics,
        [(_axis("start_distance"), _axis("threshold_error")), (_axis("start_distance"), _axis("drift"))],
        f"Starting off the adapted family: ε = {config.off_adapted}, {int(ok_seeds(metrics).sum())} seeds "
        f"(lr = {config.lr}, unconstrained training, flow from the nearest adapted net)",
    )


def _output_metric(plt, config, metrics):
    """Per seed: the prediction's errors against the two departures of the usual cost, the
    condition number of its metric G and the motion of the pulled-back targets ȳ."""
    condition, motion, threshold = _axis("metric_condition"), _axis("target_motion"), _axis("threshold_error")
    if config.output_layer == "adapted":  # the usual cost's own flow, the pull-back beside it
        departure = _axis("output_departure")
        return _against(
            plt,
            metrics,
            [(departure, threshold), (departure, _axis("baseline_threshold_error"))],
            f"The usual cost after an adapted output layer (ε = {config.output_departure}): its own "
            f"flow (left) and the t = 0 pull-back (right), {int(ok_seeds(metrics).sum())} seeds "
            f"(lr = {config.lr}, {config.mode})",
        )
    cost = ("cost_error", "max |C_train − c C_flow| / (c C_flow(0)) [1]")  # the clock c in the formula
    return _against(
        plt,
        metrics,
        [(condition, threshold), (condition, cost), (motion, threshold)],
        f"The usual cost: output layer of condition {config.output_condition}, "
        f"{int(ok_seeds(metrics).sum())} seeds (lr = {config.lr}, {config.mode}; flow on the "
        "t = 0 pull-back, clock c = tr G/M)",
    )


def _against(plt, metrics, panels, title):
    """Per ok seed, one metric against another in each panel (`((name, label), (name,
    label))`: x, then y), log axes where the values span more than a decade."""
    ok = ok_seeds(metrics)
    fig, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.6), layout="constrained")
    for ax, ((x_name, x_label), (name, label)) in zip(axes, panels):
        along = metrics[x_name][ok].astype(np.float64)
        values = metrics[name][ok].astype(np.float64)
        ax.scatter(along, values, s=8, color="C0", alpha=0.6)
        ax.set_xlabel(x_label, fontsize=8)
        ax.set_ylabel(label, fontsize=8)
        for data, set_scale in ((values, ax.set_yscale), (along, ax.set_xscale)):
            positive = data[data > 0]
            if positive.size > 1 and positive.max() > 10 * positive.min():
                set_scale("log")
    fig.suptitle(title, fontsize=10)
    return fig


def _thresholds(plt, metrics, tr):
    seeds, coords = min(len(tr["ts"]), SHOWN), min(tr["u"].shape[-1], SHOWN)
    fig = plt.figure(figsize=(3.8 * coords, 3.6 * seeds), layout="constrained")
    rows = fig.add_gridspec(2 * seeds, coords, height_ratios=[3, 1.3] * seeds)
    for s in range(seeds):
        ts, colours = tr["ts"][s], _colours(plt, tr["labels"][s])
        title, colour = _seed_title(metrics, s)
        for k in range(coords):
            top = fig.add_subplot(rows[2 * s, k])
            bottom = fig.add_subplot(rows[2 * s + 1, k], sharex=top)
            flow = tr["thresholds_flow"][s, :, :, k].max(axis=1)
            train = tr["thresholds_train"][s, :, :, k].max(axis=1)
            for level, label in zip(tr["u"][s, :, k], tr["labels"][s]):
                top.axhline(level, color=colours[label], lw=0.6, alpha=0.35)
            top.plot(ts, flow, "C0", lw=1.6, label="effective flow θ*")
            top.plot(ts, train, "k--", lw=1.0, label="training θ*")
            top.set_title(f"{title}, frame coordinate {k}", fontsize=8, color=colour)
            top.set_ylabel(f"θ* {LEVEL}", fontsize=8)
            top.tick_params(labelbottom=False)
            bottom.plot(ts, train - flow, "C3", lw=1.0)
            bottom.axhline(0.0, color="grey", lw=0.5)
            bottom.set_ylabel("train − flow [input units]", fontsize=8)
            bottom.set_xlabel(TIME, fontsize=8)
    handles, labels = fig.axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=3, fontsize=8)
    fig.suptitle(
        "Active threshold θ* sweeping through the data (thin lines: data coordinates u = Rx, "
        "coloured by class)" + _selection(tr["u"].shape[-1], "coordinates"),
        fontsize=10,
    )
    return fig


def _cost(plt, config, metrics, tr):
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(7, 5.5), sharex=True, height_ratios=[3, 1.5], layout="constrained"
    )
    for s in range(min(len(tr["ts"]), SHOWN)):
        title, _ = _seed_title(metrics, s)
        top.plot(tr["ts"][s], tr["cost_flow"][s], f"C{s}", label=f"{title}: flow")
        top.plot(
            tr["ts"][s], tr["cost_train"][s], f"C{s}", ls="--", lw=1.0, label="training" if s == 0 else None
        )
        bottom.plot(tr["ts"][s], (tr["cost_train"][s] - tr["cost_flow"][s]) / tr["cost_flow"][s][0], f"C{s}")
    top.set_yscale("log")
    top.set_ylabel(
        (
            "usual cost C (flow: the usual cost's own) [output units²]"
            if config.output_layer == "adapted"
            else "usual cost C (flow: c × input-layer cost) [output units²]"
        )
        if config.cost == "output"
        else "input-layer cost C [input units²]",
        fontsize=8 if config.cost == "output" else None,
    )
    top.set_title(
        f"Cost: effective flow (solid) and gradient descent, lr = {config.lr} (dashed)", fontsize=10
    )
    bottom.axhline(0.0, color="grey", lw=0.5)
    bottom.set_ylabel("(C_train − C_flow) / C(0)", fontsize=8)
    bottom.set_xlabel(TIME)
    fig.legend(loc="outside lower center", ncols=2, fontsize=8)
    return fig


def _truncation(plt, metrics, tr):
    coords = min(tr["u"].shape[-1], SHOWN)
    fig, axes = plt.subplots(1, coords, figsize=(4.6 * coords, 3.8), squeeze=False, layout="constrained")
    ts = tr["ts"][0]
    for k in range(coords):
        ax = axes[0, k]
        ax.step(ts, tr["n_flow"][0, :, k], "C0", where="post", label="n_k(t), flow")
        ax.step(ts, tr["n_train"][0, :, k], "k--", where="post", lw=1.0, label="n_k(t), training")
        ax.set_xlabel(TIME, fontsize=8)
        ax.set_ylabel(f"truncated points [count of N = {tr['u'].shape[1]}]", fontsize=8)
        ax.set_ylim(-0.02 * tr["u"].shape[1], 1.02 * tr["u"].shape[1])
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        twin = ax.twinx()
        twin.plot(ts, tr["kappa_flow"][0, :, k], "C2:", label="κ_k = Γ n_k / N (right axis)")
        twin.set_ylabel("predicted rate κ_k [1 / flow time]", fontsize=8)
        ax.set_title(f"frame coordinate {k}", fontsize=9)
    handles = sum((list(a.get_legend_handles_labels()[0]) for a in (axes[0, 0], fig.axes[-1])), [])
    labels = sum((list(a.get_legend_handles_labels()[1]) for a in (axes[0, 0], fig.axes[-1])), [])
    fig.legend(handles, labels, loc="outside lower center", ncols=3, fontsize=8)
    title, colour = _seed_title(metrics, 0)
    fig.suptitle(
        f"Truncated counts and the predicted exponential rate ({title})"
        + _selection(tr["u"].shape[-1], "coordinates"),
        fontsize=10,
        color=colour,
    )
    return fig


def plane_points(tr, key: str, s: int | np.integer, i: int | np.integer):
    """Seed `s`'s data after the truncation of save `i`, in input space (M = 2)."""
    star = tr[key][s, i].max(axis=0)
    return np.maximum(tr["u"][s], star[None]) @ tr["frame"][s]


def _plane_limits(tr, s):
    every = np.concatenate([tr["u"][s] @ tr["frame"][s], tr["targets"][s]])
    low, high = every.min(axis=0), every.max(axis=0)
    margin = 0.06 * (high - low).max()
    return low - margin, high + margin


def _draw_plane(ax, plt, tr, s, i):
    labels = tr["labels"][s]
    colours = _colours(plt, labels)
    flow = plane_points(tr, "thresholds_flow", s, i)
    train = plane_points(tr, "thresholds_train", s, i)
    ax.scatter(
        flow[:, 0],
        flow[:, 1],
        s=22,
        facecolors="none",
        edgecolors=colours[labels],
        lw=1.0,
        label="effective flow",
    )
    ax.scatter(train[:, 0], train[:, 1], s=12, marker="x", c=colours[labels], lw=0.8, label="training")
    targets = tr["targets"][s]
    ax.scatter(
        targets[:, 0],
        targets[:, 1],
        marker="*",
        s=150,
        c=colours[: len(targets)],
        edgecolors="k",
        label="class targets",
    )
    for q in range(len(targets)):  # a collapsed class is one dot: say how many points it holds
        members = flow[labels == q]
        if len(members) > 1 and np.ptp(members, axis=0).max() < 1e-9:
            ax.annotate(
                f"{len(members)} points",
                members[0],
                xytext=(6, -10),
                textcoords="offset points",
                fontsize=7,
                color=colours[q],
            )
    low, high = _plane_limits(tr, s)
    ax.set_xlim(low[0], high[0])
    ax.set_ylim(low[1], high[1])
    ax.set_aspect("equal")
    ax.xaxis.set_major_locator(MaxNLocator(nbins=3))
    ax.set_xlabel(f"x₁ {LEVEL}", fontsize=8)
    ax.set_ylabel(f"x₂ {LEVEL}", fontsize=8)


def _plane(plt, metrics, tr):
    ts = tr["ts"][0]
    picks = np.unique(np.linspace(0, len(ts) - 1, 4).round().astype(int))
    low, high = _plane_limits(tr, 0)
    aspect = (high[1] - low[1]) / (high[0] - low[0])  # equal axes: panel width follows the data
    height = 3.6
    width = float(np.clip(height / aspect, 1.8, 5.5))
    fig, axes = plt.subplots(
        1, len(picks), figsize=(width * len(picks) + 0.6, height + 1.2), layout="constrained"
    )
    for ax, i in zip(np.atleast_1d(axes), picks):
        _draw_plane(ax, plt, tr, 0, i)
        ax.set_title(f"t = {ts[i]:.2f}", fontsize=9)
    handles, labels = np.atleast_1d(axes)[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=3, fontsize=8)
    title, colour = _seed_title(metrics, 0)
    fig.suptitle(
        f"The data as the last layer sees it, in input space ({title}): truncation and collapse",
        fontsize=10,
        color=colour,
    )
    return fig


def animate_plane(tr, metrics, path: str, frames: int = 40) -> None:
    """A GIF of seed 0's data truncating in input space (M = 2), flow and training."""
    import matplotlib.pyplot as plt
    from matplotlib.animation import PillowWriter

    ts = tr["ts"][0]
    picks = np.unique(np.linspace(0, len(ts) - 1, min(frames, len(ts))).round().astype(int))
    low, high = _plane_limits(tr, 0)
    width = float(np.clip(4.2 * (high[0] - low[0]) / (high[1] - low[1]), 2.6, 6.0))
    fig, ax = plt.subplots(figsize=(width + 0.8, 5.0), layout="constrained")
    title, _ = _seed_title(metrics, 0)

    def draw(i):
        ax.clear()
        _draw_plane(ax, plt, tr, 0, picks[i])
        ax.set_title(
            f"{title}: data in input space, t = {ts[picks[i]]:.2f}\n(○ flow, × training, ★ targets)",
            fontsize=8,
        )

    # lay the figure out once (every frame has the same axes, limits and title length) and
    # draw each frame once: FuncAnimation.save draws every frame three times
    draw(0)
    fig.canvas.draw()
    fig.set_layout_engine("none")
    writer = PillowWriter(fps=8)
    with writer.saving(fig, path, dpi=fig.dpi):
        for i in range(len(picks)):
            draw(i)
            writer.grab_frame()
    plt.close(fig)
