"""`flowtrunc sweep`: a comparison at every point of a grid of settings, resumable, with
one tidy table of all points × metrics and figures of the metrics against the grid.

Layout of the output directory: `sweep.json` (the grid, the base settings, provenance),
`points/NNNN/` (one full `compare` run per grid point, each resumable on its own),
`table.csv` (and `table.parquet` when pyarrow is installed), `figures/`.
"""

import dataclasses
import itertools
import json
import math
import os
import shutil

import jax
import numpy as np

from .._experiment.config import DATA_FIXED, CompareConfig, setting_kind
from .._experiment.kinds import SOLUTION_KINDS
from .compare_run import run_compare, tell_others
from .directory import check_out
from .files import SUMMARY, OutputError, provenance, write_atomic, write_json
from .progress import Progress
from .watchdog import DEFAULT_STALL_TIMEOUT

SWEEP, TABLE = "sweep.json", "table.csv"
# settings that cannot vary inside one sweep (one process, one data set, one layout)
FIXED = ("precision", "data", "chunk_size", "keep", "seeds")
TABLE_METRICS = (
    "threshold_error",
    "cost_error",
    "crossing_time_error",
    "truncation_agreement",
    "drift",
    "start_distance",
    "metric_condition",
    "target_motion",
    "baseline_threshold_error",
    "output_departure",
)
# the built-in sweep: where does the O(lr) agreement hold, and how does it depend on the
# gap between clusters (a few minutes on 2 CPU cores)
DEFAULT_GRID = {"lr": [0.02, 0.01], "separation": [1.0, 2.5]}
# settings of the built-in sweep that differ from compare's defaults
SWEEP_DEFAULTS = {"seeds": 256, "saves": 50}


def parse_grid(items: list[str]) -> dict[str, list]:
    """`["lr=0.01,0.005", "depth=2,3"]` → `{"lr": [0.01, 0.005], "depth": [2, 3]}`,
    each value parsed with its setting's type."""
    fields = {field.name: field for field in dataclasses.fields(CompareConfig)}
    grid = {}
    for item in items:
        key, sep, values = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not values.strip():
            raise ValueError(f"--grid {item!r}: write KEY=V1,V2,... (e.g. --grid lr=0.01,0.005).")
        if key not in fields:
            raise ValueError(f"--grid {item!r}: unknown key {key!r}; valid keys are {sorted(fields)}.")
        if key in FIXED:
            raise ValueError(
                f"--grid {item!r}: {key!r} cannot vary within one sweep (it fixes the process, data "
                "or layout); run one sweep per value."
            )
        if key in grid:
            raise ValueError(f"--grid {key!r} is given twice; list all its values in one --grid.")
        kind = setting_kind(fields[key])
        parsed = []
        for text in values.split(","):
            text = text.strip()
            try:
                value = {"true": True, "false": False}[text.lower()] if kind is bool else kind(text)
            except (ValueError, KeyError):
                raise ValueError(
                    f"--grid {item!r}: {text!r} is not a valid {kind.__name__} for {key!r}."
                ) from None
            parsed.append(value)
        if len(set(parsed)) != len(parsed):
            raise ValueError(f"--grid {item!r}: values repeat.")
        grid[key] = parsed
    return grid


def grid_points(base: CompareConfig, grid: dict) -> list[CompareConfig]:
    """Every point of the grid (last key fastest), each checked by the config's rules."""
    if not grid:
        raise ValueError("the grid is empty; give --grid KEY=V1,V2,... (or none for the built-in sweep).")
    fixed = [key for key in grid if key in DATA_FIXED]
    if base.data is not None and fixed:
        raise ValueError(
            f"--grid {', '.join(fixed)}: the data file {base.data!r} fixes the dimension, point count "
            "and classes, so every point would run the same data; sweep another setting."
        )
    points = []
    for values in itertools.product(*grid.values()):
        settings = dict(zip(grid, values))
        try:
            points.append(dataclasses.replace(base, **settings))
        except ValueError as error:
            where = ", ".join(f"{k}={v}" for k, v in settings.items())
            raise ValueError(f"grid point ({where}) breaks a rule: {error}") from None
    return points


def _check_sweep_directory(out_dir: str, record: dict, resume: bool) -> None:
    path = os.path.join(out_dir, SWEEP)
    if resume:
        if not os.path.isfile(path):
            raise ValueError(f"--resume: {out_dir!r} holds no {SWEEP}; there is no sweep to resume.")
        with open(path) as f:
            saved = json.load(f)
        for part in ("grid", "base"):
            if saved.get(part) != json.loads(json.dumps(record[part])):
                raise ValueError(
                    f"--resume: {out_dir!r} was made with another {part} ({saved.get(part)} then, "
                    f"{record[part]} now); rerun with the same options, or use a new --out directory."
                )
        if saved["provenance"].get("data_sha256") != record["provenance"]["data_sha256"]:
            raise ValueError(f"--resume: the data file changed since the sweep in {out_dir!r} began.")
        return
    if os.path.isdir(out_dir) and os.listdir(out_dir):
        raise ValueError(
            f"{out_dir!r} is not empty; choose a new or empty --out directory (or --resume a sweep)."
        )


def settle_sweep_settings(base: CompareConfig, out_dir: str, resume: bool) -> CompareConfig:
    """`base.on_device`, taking the unset settings of a resumed sweep from its `sweep.json`."""
    path = os.path.join(os.path.abspath(out_dir), SWEEP)
    saved = None
    if resume and os.path.isfile(path):
        try:
            with open(path) as f:
                saved = json.load(f).get("base")
        except (OSError, ValueError, AttributeError):
            saved = None  # the directory check below names what is wrong with the file
    return base.on_device(saved if isinstance(saved, dict) else None)


def run_sweep(
    base: CompareConfig,
    grid: dict,
    out_dir: str,
    *,
    resume: bool = False,
    max_points: int | None = None,
    progress: bool = True,
    stall_timeout: float | None = DEFAULT_STALL_TIMEOUT,
) -> bool:
    """Runs (or continues) a comparison at every grid point into `out_dir`; returns True
    when every point is done (then the table and figures exist). `max_points` stops after
    that many newly finished points. In a multi-process run process 0 alone checks and
    writes the directory and tells the others which points are done; every process then
    takes part in each remaining point (see `run_compare`, also for `stall_timeout`)."""
    base = settle_sweep_settings(base, out_dir, resume)
    points = grid_points(base, grid)
    if jax.process_index() != 0:
        done = tell_others(True, None, len(points))
        return _run_points(points, grid, os.path.abspath(out_dir), max_points, False, done, stall_timeout)
    try:
        out_dir = check_out(out_dir)
        record = {"grid": grid, "base": base.to_dict(), "provenance": provenance(base)}
        _check_sweep_directory(out_dir, record, resume)
        if not resume:
            try:
                os.makedirs(os.path.join(out_dir, "points"), exist_ok=True)
            except OSError as error:
                raise OutputError(f"--out {out_dir!r} cannot be created ({error.strerror}).") from error
            write_json(os.path.join(out_dir, SWEEP), record)
    except BaseException:
        tell_others(False)
        raise
    finished = [os.path.isfile(os.path.join(_point_folder(out_dir, i), SUMMARY)) for i in range(len(points))]
    done = tell_others(True, np.array(finished, bool), len(points))
    try:
        return _run_points(points, grid, out_dir, max_points, progress, done, stall_timeout)
    except BaseException:
        kept = [
            name
            for name in os.listdir(os.path.join(out_dir, "points"))
            if os.path.isdir(os.path.join(out_dir, "points", name))
        ]
        if not resume and not kept:
            shutil.rmtree(out_dir, ignore_errors=True)  # a failed start leaves nothing behind
        raise


def _point_folder(out_dir: str, index: int) -> str:
    return os.path.join(out_dir, "points", f"{index:04d}")


def _run_points(points, grid, out_dir, max_points, progress, done, stall_timeout) -> bool:
    """One progress line over every point's seeds (ETA from the chunks that did not compile).
    `done`: which points were finished before (the same in every process)."""
    bar = Progress(sum(config.seeds for config in points), enabled=progress)
    finished = 0
    for index, config in enumerate(points):
        folder = _point_folder(out_dir, index)
        if done[index]:
            bar.skip(config.seeds)
            continue
        if max_points is not None and finished >= max_points:
            return False
        where = ", ".join(f"{k}={getattr(config, k)}" for k in grid)
        bar.label = f"point {index + 1}/{len(points)} ({where}) "
        run_compare(config, folder, resume=os.path.isdir(folder), progress=bar, stall_timeout=stall_timeout)
        finished += 1
    if jax.process_index() == 0:
        write_table(out_dir)
    return True


def table_rows(out_dir: str) -> tuple[list[str], list[dict]]:
    """One row per grid point: its grid values, counts, and quantiles of every metric."""
    with open(os.path.join(out_dir, SWEEP)) as f:
        record = json.load(f)
    grid = record["grid"]
    points = list(itertools.product(*grid.values()))
    missing = [
        i for i in range(len(points)) if not os.path.isfile(os.path.join(_point_folder(out_dir, i), SUMMARY))
    ]
    if missing:
        shown = ", ".join(str(i) for i in missing[:5]) + (", ..." if len(missing) > 5 else "")
        raise OutputError(
            f"the sweep in {out_dir!r} is unfinished: {len(missing)} of {len(points)} points have no "
            f"results yet (points {shown}). Continue it with the same `flowtrunc sweep` command plus "
            "--resume; the table and figures are written when every point is done."
        )
    rows = []
    for index, values in enumerate(points):
        with open(os.path.join(out_dir, "points", f"{index:04d}", SUMMARY)) as f:
            summary = json.load(f)
        ok = summary["ok_seeds"]
        row = {"point": index, **dict(zip(grid, values)), "seeds": summary["seeds"], "ok_seeds": ok}
        for name in ("seeds_with_collapse_flow", "seeds_with_collapse_train", "seeds_final_sets_differ"):
            row[name] = summary[name]
            row[f"fraction_{name.removeprefix('seeds_')}"] = summary[name] / ok if ok else math.nan
        row["fraction_kinds_differ"] = summary["seeds_kinds_differ"] / ok if ok else math.nan
        pairs = sum(summary["kinds_flow"][k] for k in SOLUTION_KINDS)
        for kind in (*SOLUTION_KINDS, "switched_layer"):
            row[f"fraction_flow_{kind}"] = summary["kinds_flow"][kind] / pairs if pairs else math.nan
        for name in TABLE_METRICS:
            for q in ("q10", "q50", "q90"):
                row[f"{name}_{q}"] = summary[name][q] if summary[name] else math.nan
        rows.append(row)
    return list(grid), rows


def write_table(out_dir: str) -> None:
    """`table.csv` (and `table.parquet` with pyarrow) and the figures, from the points."""
    keys, rows = table_rows(out_dir)
    columns = list(rows[0])

    def write(path):
        with open(path, "w") as f:
            f.write(",".join(columns) + "\n")
            for row in rows:
                f.write(",".join(_csv(row[c]) for c in columns) + "\n")

    write_atomic(os.path.join(out_dir, TABLE), write)
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        pass
    else:
        table = pa.table({c: [row[c] for row in rows] for c in columns})
        write_atomic(os.path.join(out_dir, "table.parquet"), lambda p: pq.write_table(table, p))
    from .sweep_figures import draw_sweep

    draw_sweep(out_dir, keys, rows)


def _csv(value) -> str:
    if isinstance(value, float) and math.isnan(value):
        return ""
    return str(value)


def read_table(out_dir: str) -> dict:
    """`table.csv` as a dict of NumPy columns (numbers where every entry parses)."""
    with open(os.path.join(out_dir, TABLE)) as f:
        lines = [line.rstrip("\n").split(",") for line in f]
    columns = {}
    for i, name in enumerate(lines[0]):
        values = [line[i] for line in lines[1:]]
        try:
            columns[name] = np.array([float(v) if v else np.nan for v in values])
        except ValueError:
            columns[name] = np.array(values)
    return columns
