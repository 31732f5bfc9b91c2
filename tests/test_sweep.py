"""`flowtrunc sweep`: grid points equal single comparisons, resume, table, bad input."""

import dataclasses
import json
import os
import pathlib

import numpy as np
import pytest
from helpers import TINY

from flowtrunc import CompareConfig, compare
from flowtrunc.internal import main, parse_grid, read_table, run_sweep, summarise

GRID = {"lr": [0.02, 0.01], "separation": [1.0, 2.5]}


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("sweep") / "run")
    assert run_sweep(CompareConfig(**TINY), GRID, out, progress=False)
    return out


@pytest.mark.slow  # compiles programs of its own: 73 s on 2 cores (tests/README.md)
def test_each_row_equals_a_single_comparison(swept):
    table = read_table(swept)
    assert list(table["lr"]) == [0.02, 0.02, 0.01, 0.01]
    assert list(table["separation"]) == [1.0, 2.5, 1.0, 2.5]
    for row, (lr, separation) in enumerate([(0.02, 1.0), (0.02, 2.5), (0.01, 1.0), (0.01, 2.5)]):
        config = dataclasses.replace(CompareConfig(**TINY), lr=lr, separation=separation)
        summary = summarise(compare(config)[0], config)
        assert table["ok_seeds"][row] == summary["ok_seeds"] == 8
        for name in ("threshold_error", "cost_error", "crossing_time_error", "truncation_agreement"):
            for q in ("q10", "q50", "q90"):
                assert table[f"{name}_{q}"][row] == pytest.approx(summary[name][q], rel=1e-12), (row, name, q)
        assert table["seeds_with_collapse_flow"][row] == summary["seeds_with_collapse_flow"]
    # the O(lr) agreement shows across the grid: halving lr halves the median error
    ratio = table["threshold_error_q50"][2:] / table["threshold_error_q50"][:2]
    assert np.all((0.35 < ratio) & (ratio < 0.65)), ratio
    assert os.path.isfile(os.path.join(swept, "figures", "heatmaps.png"))


@pytest.mark.slow  # compiles programs of its own: 49 s on 2 cores (tests/README.md)
def test_interrupted_and_resumed_sweep_gives_the_same_table(swept, tmp_path):
    out = str(tmp_path / "part")
    assert not run_sweep(CompareConfig(**TINY), GRID, out, max_points=1, progress=False)
    assert not os.path.exists(os.path.join(out, "table.csv"))
    assert run_sweep(CompareConfig(**TINY), GRID, out, resume=True, progress=False)
    assert (
        pathlib.Path(os.path.join(out, "table.csv")).read_text()
        == pathlib.Path(os.path.join(swept, "table.csv")).read_text()
    )
    with pytest.raises(ValueError, match="made with another grid"):
        run_sweep(CompareConfig(**TINY), {"lr": [0.02]}, out, resume=True, progress=False)


def test_one_key_figure_has_bands_units_and_log_axes(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from flowtrunc.internal import one_key

    rows = []
    for lr in (0.001, 0.01, 0.1):
        row = {
            "lr": lr,
            **{
                f"fraction_{n}": 0.5
                for n in ("with_collapse_flow", "with_collapse_train", "final_sets_differ", "kinds_differ")
            },
        }
        for name in ("threshold_error", "cost_error", "crossing_time_error", "truncation_agreement"):
            row.update({f"{name}_q10": lr / 2, f"{name}_q50": lr, f"{name}_q90": 2 * lr})
        rows.append(row)
    fig = one_key(plt, "lr", rows)
    assert len(fig.axes) == 5
    assert all(ax.get_xlabel() == "lr [flow time]" and ax.get_xscale() == "log" for ax in fig.axes)
    assert fig.axes[0].get_yscale() == "log" and len(fig.axes[0].collections) == 1  # the q10–q90 band
    assert fig.axes[-1].get_ylabel() == "fraction of ok seeds [1]"
    plt.close(fig)


@pytest.mark.parametrize(
    "grid, message",
    [
        (["speed=1,2"], r"unknown key 'speed'"),
        (["lr=0.01,fast"], r"'fast' is not a valid float for 'lr'"),
        (["lr"], r"write KEY=V1,V2"),
        (["lr="], r"write KEY=V1,V2"),
        (["precision=32,64"], r"'precision' cannot vary within one sweep"),
        (["lr=0.03"], r"grid point \(lr=0.03\) breaks a rule: t1/lr = 33.3333 steps"),
        (["depth=2,0"], r"grid point \(depth=0\) breaks a rule: `depth` must be a positive int"),
        (["lr=0.01,0.01"], r"values repeat"),
    ],
)
def test_bad_grids_are_refused_before_anything_is_written(tmp_path, capsys, grid, message):
    config = tmp_path / "c.json"
    config.write_text(json.dumps(TINY))
    out = tmp_path / "out"
    argv = ["sweep", "--out", str(out), "--config", str(config)]
    for item in grid:
        argv += ["--grid", item]
    assert main(argv) == 2
    assert __import__("re").search(message, capsys.readouterr().err)
    assert not out.exists()


def test_grid_values_take_their_settings_types():
    assert parse_grid(["depth=2,3", "lr=0.01", "freeze-weights=true,false"]) == {
        "depth": [2, 3],
        "lr": [0.01],
        "freeze_weights": [True, False],
    }


def test_the_built_in_sweep_is_valid():
    from flowtrunc.internal import DEFAULT_GRID, SWEEP_DEFAULTS, grid_points

    points = grid_points(CompareConfig(**SWEEP_DEFAULTS), DEFAULT_GRID)
    assert len(points) == 4 and {p.seeds for p in points} == {256}


@pytest.mark.slow  # compiles programs of its own: 42 s on 2 cores (tests/README.md)
def test_points_differing_only_in_values_share_one_compilation(tmp_path, monkeypatch):
    """separation × target_offset enter as arrays: one trace for all four points, and each
    point equals its single comparison."""
    import jax

    from flowtrunc.internal import comparison as compare_module
    from flowtrunc.internal import program_cache

    jax.clear_caches()  # start with nothing compiled or traced in this process
    program_cache._memory.clear()
    before = program_cache.counts()
    traces = []
    original = compare_module.compare_seed
    monkeypatch.setattr(compare_module, "compare_seed", lambda *a, **k: traces.append(1) or original(*a, **k))
    base = CompareConfig(**{**TINY, "jitter": 0.2})
    grid = {"separation": [1.0, 2.5], "target_offset": [0.5, 1.0]}
    out = str(tmp_path / "run")
    assert run_sweep(base, grid, out, progress=False)
    after = program_cache.counts()
    # one program for the four points: traced here once, or loaded once from the suite's cache
    assert (after["saved"] - before["saved"]) + (after["loaded"] - before["loaded"]) == 1
    assert len(traces) == after["saved"] - before["saved"] <= 1
    monkeypatch.undo()
    table = read_table(out)
    config = dataclasses.replace(base, separation=2.5, target_offset=0.5)
    summary = summarise(compare(config)[0], config)
    assert table["threshold_error_q50"][2] == pytest.approx(summary["threshold_error"]["q50"], rel=1e-12)


def test_a_sweep_failing_at_its_start_leaves_nothing(tmp_path, monkeypatch):
    from flowtrunc.internal import sweep as sweep_module

    def broken(*args, **kwargs):
        raise ValueError("a failure in the first point")

    monkeypatch.setattr(sweep_module, "run_compare", broken)
    out = tmp_path / "run"
    with pytest.raises(ValueError, match="first point"):
        run_sweep(CompareConfig(**TINY), GRID, str(out), progress=False)
    assert not out.exists()


@pytest.mark.slow  # builds or shares the module's heavy fixture (tests/README.md)
def test_parquet_table_equals_the_csv_when_pyarrow_is_installed(swept):
    pq = pytest.importorskip("pyarrow.parquet")
    parquet = pq.read_table(os.path.join(swept, "table.parquet")).to_pydict()
    csv = read_table(swept)
    assert list(parquet) == list(csv)
    for name, values in csv.items():
        np.testing.assert_array_equal(np.asarray(parquet[name], float), values, err_msg=name)


@pytest.mark.slow  # compiles programs of its own: 30 s on 2 cores (tests/README.md)
def test_one_progress_line_spans_every_point(tmp_path, capsys):
    out = str(tmp_path / "run")
    assert run_sweep(CompareConfig(**TINY), {"separation": [1.0, 2.5]}, out, progress=True)
    err = capsys.readouterr().err
    assert "point 2/2 (separation=2.5)" in err and "16/16 seeds" in err
    assert err.count("\n") == 1  # one line, redrawn in place
