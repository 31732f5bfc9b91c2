"""A run on disk: nothing lost (atomic chunks, resume), no silent nonsense, errors that name the fix, readable output."""

import dataclasses
import errno
import json
import os
import pathlib
import re

import jax
import numpy as np
import pytest
from helpers import TINY

import flowtrunc as ft
from flowtrunc import CompareConfig, compare
from flowtrunc.internal import (
    DESCRIPTIONS,
    DEVICE_CHOSEN,
    DEVICE_DEFAULTS,
    NO_SEED_OK,
    build_parser,
    compare_run,
    comparison,
    figures,
    files,
    load_run,
    main,
    pending_chunks,
    resolve_config,
    run_compare,
    seed_problem,
)


def _metrics(out_dir):
    with np.load(os.path.join(out_dir, "seeds.npz")) as archive:
        return {key: archive[key] for key in archive.files}


def _same(a, b, rtol=0.0):
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=rtol, atol=0.0, err_msg=key)


def _config_file(tmp_path, with_data=False, **values):
    """TINY as a config file; with a data file, without the settings the data fix."""
    settings = {**TINY, **values}
    if with_data:
        settings = {k: v for k, v in settings.items() if k not in ("dim", "points", "clusters")}
    path = tmp_path / "c.json"
    path.write_text(json.dumps(settings))
    return str(path)


@pytest.fixture
def reference(tiny_run):
    return tiny_run


# ---------------------------------------------------------------- nothing lost


@pytest.mark.slow  # compiles programs of its own: 48 s on 2 cores (tests/README.md)
def test_failed_start_leaves_nothing_and_a_corrected_rerun_works(tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    assert main(["compare", "--out", str(out), "--config", _config_file(tmp_path), "--lr", "inf"]) == 2
    assert "`lr` must be a finite number, got inf" in capsys.readouterr().err
    assert not out.exists()

    def broken(*args, **kwargs):
        raise ValueError("a failure inside the first chunk")

    monkeypatch.setattr(comparison, "run_chunk", broken)
    with pytest.raises(ValueError, match="inside the first chunk"):
        run_compare(CompareConfig(**TINY), str(out), progress=False)
    assert not out.exists()  # the failed start removed what it made
    monkeypatch.undo()
    with pytest.raises(ValueError, match="no config.json; there is no run to resume"):
        run_compare(CompareConfig(**TINY), str(out), resume=True, progress=False)
    assert run_compare(CompareConfig(**TINY), str(out), max_chunks=1, progress=False) is False


@pytest.mark.slow  # compiles programs of its own: 46 s on 2 cores (tests/README.md)
def test_resume_refuses_changed_data_and_records_provenance(tmp_path, capsys):
    data = tmp_path / "mine.npz"
    rng = np.random.default_rng(0)
    np.savez(data, x=rng.normal(size=(10, 2)), labels=np.arange(10) % 2)
    config = CompareConfig(**{**TINY, "data": str(data)})
    out = str(tmp_path / "run")
    assert not run_compare(config, out, max_chunks=1, progress=False)
    saved = json.loads(pathlib.Path(os.path.join(out, "config.json")).read_text())["provenance"]
    assert saved["data_sha256"] == __import__("hashlib").sha256(data.read_bytes()).hexdigest()
    assert saved["versions"]["flowtrunc"] == ft.__version__
    np.savez(data, x=rng.normal(size=(10, 2)), labels=np.arange(10) % 2)  # same shape, new data
    before = sorted(os.listdir(os.path.join(out, "chunks")))
    with pytest.raises(ValueError, match="the data file .* changed since the run .* began"):
        run_compare(config, out, resume=True, progress=False)
    assert sorted(os.listdir(os.path.join(out, "chunks"))) == before


@pytest.mark.slow  # compiles programs of its own: 58 s on 2 cores (tests/README.md)
def test_resume_with_another_chunk_size_gives_identical_results(tmp_path, reference):
    out = str(tmp_path / "run")
    assert not run_compare(CompareConfig(**TINY), out, max_chunks=1, progress=False)
    resumed = CompareConfig(**{**TINY, "chunk_size": 3})
    assert run_compare(resumed, out, resume=True, progress=False)
    assert sorted(os.listdir(os.path.join(out, "chunks"))) == [
        "seeds_00000000-00000004.npz",
        "seeds_00000004-00000007.npz",
        "seeds_00000007-00000008.npz",
    ]
    # another batch shape may fuse the clock's Newton steps differently: a few ulps in
    # thresholds, ~1e-13 relative in error metrics of size 1e-3 (as test_compare's
    # chunk-size test allows); integer and boolean metrics exactly
    _same(_metrics(out), _metrics(reference), rtol=1e-12)


def test_pending_chunks_fill_the_gaps():
    assert pending_chunks(10, 3, []) == [(0, 3), (3, 6), (6, 9), (9, 10)]
    assert pending_chunks(10, 4, [(0, 3), (5, 7)]) == [(3, 5), (7, 10)]
    assert pending_chunks(4, 2, [(0, 4)]) == []


def test_disk_full_gives_one_clear_error_and_resume_finishes(tmp_path, monkeypatch, reference):
    out = str(tmp_path / "run")
    real, calls = compare_run.save_npz, []

    def fills_up(path, arrays):
        calls.append(path)
        if len(calls) == 3:  # trajectories, first chunk, then the disk is full
            with open(path, "wb") as f:
                f.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, arrays)

    monkeypatch.setattr(compare_run, "save_npz", fills_up)
    with pytest.raises(
        ValueError, match=r"could not write .*seeds_00000004-00000008.npz.*the disk is full.*--resume"
    ):
        run_compare(CompareConfig(**TINY), out, progress=False)
    monkeypatch.undo()
    leftovers = [name for _, _, files in os.walk(out) for name in files if ".tmp-" in name or name == ".lock"]
    assert leftovers == []
    assert run_compare(CompareConfig(**TINY), out, resume=True, progress=False)
    assert [name for _, _, files in os.walk(out) for name in files if ".tmp-" in name] == []
    _same(_metrics(out), _metrics(reference))


def test_a_second_process_on_one_directory_is_refused(tmp_path):
    out = str(tmp_path / "run")
    assert not run_compare(CompareConfig(**TINY), out, max_chunks=1, progress=False)
    lock = os.path.join(out, ".lock")
    with open(lock, "w") as f:  # a live holder: this very process
        f.write(f"{__import__('socket').gethostname()} {os.getpid()}\n")
    with pytest.raises(ValueError, match="another flowtrunc process .* is writing to"):
        run_compare(CompareConfig(**TINY), out, resume=True, progress=False)
    with open(lock, "w") as f:  # a dead holder: taken over
        f.write(f"{__import__('socket').gethostname()} 999999999\n")
    assert run_compare(CompareConfig(**TINY), out, resume=True, progress=False)
    assert not os.path.exists(lock)


# ---------------------------------------------------------------- no silent nonsense


@pytest.mark.slow  # compiles programs of its own: 50 s on 2 cores (tests/README.md)
def test_unstable_learning_rate_fails_every_seed_and_exits_nonzero(tmp_path, capsys):
    out = tmp_path / "run"
    config = _config_file(tmp_path, lr=5.0, t1=10.0, saves=2)
    assert main(["compare", "--out", str(out), "--config", config]) == NO_SEED_OK
    captured = capsys.readouterr()
    assert "0 of 8 seeds ok" in captured.out
    assert re.search(r"8 of 8 seeds: training .*fix: lower --lr \(now 5.0\) below \d", captured.out)
    assert "no seed succeeded, so these results are meaningless" in captured.err
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ok_seeds"] == 0 and summary["threshold_error"] is None
    assert {f["code"] for f in summary["failures"]} <= {"unstable", "diverged"}
    bound = _metrics(out)["stability_bound"]
    assert np.all(bound < 5.0) and np.all(bound > 0)


@pytest.mark.slow  # compiles programs of its own: 54 s on 2 cores (tests/README.md)
def test_stability_bound_matches_the_train_check():
    config = CompareConfig(**TINY)
    metrics, _ = compare(dataclasses.replace(config, seeds=2))
    for seed in range(2):
        net, data = seed_problem(seed, config, None)
        assert metrics["stability_bound"][seed] == pytest.approx(
            float(ft.stability_bound(net, data)), rel=1e-9
        )


@pytest.mark.slow  # compiles programs of its own: 52 s on 2 cores (tests/README.md)
def test_raw_scale_data_says_standardise(tmp_path, capsys):
    rng = np.random.default_rng(2)
    data = tmp_path / "raw.npz"
    np.savez(data, x=1e8 * rng.normal(size=(12, 2)), labels=np.arange(12) % 2)
    out = tmp_path / "run"
    assert (
        main(
            [
                "compare",
                "--out",
                str(out),
                "--config",
                _config_file(tmp_path, with_data=True),
                "--data",
                str(data),
            ]
        )
        == NO_SEED_OK
    )
    assert "standardise them" in capsys.readouterr().out


@pytest.mark.slow  # compiles programs of its own: 54 s on 2 cores (tests/README.md)
def test_max_steps_is_exposed_and_named_in_the_fix(tmp_path, capsys):
    out = tmp_path / "run"
    assert (
        main(["compare", "--out", str(out), "--config", _config_file(tmp_path), "--max-steps", "1"])
        == NO_SEED_OK
    )
    assert "fix: raise --max-steps (now 1)" in capsys.readouterr().out


@pytest.mark.slow  # compiles programs of its own: 42 s on 2 cores (tests/README.md)
def test_classes_collapsed_at_start_are_counted_apart(tmp_path):
    """Class 0 is built below seed 0's initial θ* in every coordinate."""
    config = CompareConfig(**{**TINY, "seeds": 1, "chunk_size": 1})
    net, _ = seed_problem(0, config, None)
    star = np.asarray(ft.thresholds(net)[0]).max(axis=0)
    rng = np.random.default_rng(3)
    u = np.concatenate([star - 1.0 - 0.1 * rng.random((4, 2)), star + 1.0 + rng.random((6, 2))])
    path = tmp_path / "d.npz"
    np.savez(path, x=u @ np.asarray(net.frame), labels=np.array([0] * 4 + [1] * 6))
    metrics, _ = compare(dataclasses.replace(config, data=str(path)))
    assert metrics["collapsed_at_start"][0] == 1
    assert np.isnan(metrics["collapse_time_flow"][0, 0]) and metrics["collapsed_flow"][0] == 0


# ---------------------------------------------------------------- errors name the fix


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"data": 5}, r"`data` must be a path \(string\), got 5 \(int\)"),
        ({"target_offset": "big"}, r"`target_offset` must be a finite number, got 'big' \(str\)"),
        ({"t1": float("inf")}, "`t1` must be a finite number"),
        ({"freeze_weights": "yes"}, "`freeze_weights` must be true or false"),
        ({"mode": "free"}, r"`mode` must be one of \['adapted', 'unconstrained'\]"),
        ({"seeds": 2.5}, "`seeds` must be an integer"),
    ],
)
@pytest.mark.wrong_types
def test_config_type_errors_name_the_key(tmp_path, capsys, settings, message):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({**TINY, **settings}))
    assert main(["compare", "--out", str(tmp_path / "run"), "--config", str(path)]) == 2
    assert re.search(message, capsys.readouterr().err)
    assert not (tmp_path / "run").exists()


def test_t1_inf_flag_and_string_labels(tmp_path, capsys):
    assert main(["compare", "--out", str(tmp_path / "a"), "--t1", "inf"]) == 2
    assert "`t1` must be a finite number, got inf" in capsys.readouterr().err
    path = tmp_path / "names.npz"
    np.savez(path, x=np.zeros((4, 2)), labels=np.array(["cat", "dog", "cat", "dog"]))
    assert main(["compare", "--out", str(tmp_path / "b"), "--data", str(path)]) == 2
    assert "`labels` has dtype <U3, but labels must be integers" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_report_on_damaged_files(tmp_path, capsys, reference):
    import shutil

    for name, damage in (("seeds.npz", b"not an archive"), ("config.json", b"{broken")):
        copy = tmp_path / name
        shutil.copytree(reference, copy)
        (copy / name).write_bytes(damage)
        assert main(["report", str(copy)]) == 2
        assert re.search(rf"{name}' is damaged", capsys.readouterr().err)


def test_unwritable_out_is_a_clear_error(tmp_path, capsys, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied")

    monkeypatch.setattr(files.os, "makedirs", refuse)
    assert main(["compare", "--out", str(tmp_path / "ro" / "run"), "--config", _config_file(tmp_path)]) == 2
    assert (
        "cannot be created (Permission denied); choose a directory you can write to"
        in capsys.readouterr().err
    )


@pytest.mark.wrong_types
def test_int_key_is_refused():
    with pytest.raises(ValueError, match=r"`key` must be a JAX PRNG key, e.g. jax.random.key\(0\)"):
        ft.AdaptedReLUNet.random(0, 2, 2)


def test_relative_paths_in_a_config_file_resolve_from_its_folder(tmp_path, monkeypatch):
    folder = tmp_path / "project"
    folder.mkdir()
    np.savez(folder / "mine.npz", x=np.random.default_rng(0).normal(size=(6, 2)), labels=np.arange(6) % 2)
    settings = {k: v for k, v in TINY.items() if k not in ("points", "clusters")}
    (folder / "c.json").write_text(json.dumps({**settings, "data": "mine.npz"}))
    monkeypatch.chdir(tmp_path)
    args = build_parser().parse_args(["compare", "--out", "x", "--config", "project/c.json"])
    config = resolve_config(args)
    assert config.data == str(folder / "mine.npz")


def test_demo_messages_name_its_flags(capsys):
    assert main(["demo", "--points", "2", "--clusters", "3"]) == 2
    assert "--points (2) must be >= --clusters (3)" in capsys.readouterr().err
    assert main(["demo", "--t1", "inf"]) == 2
    assert "--t1 must be a finite positive time" in capsys.readouterr().err
    for seed in ("-1", str(2**64)):  # 2^64 overflowed inside jax.random.key
        assert main(["demo", "--seed", seed]) == 2
        assert f"--seed must be in 0..4294967295, got {seed}" in capsys.readouterr().err


# ---------------------------------------------------------------- what a person sees


def test_help_documents_every_setting_with_its_default_and_version(capsys):
    with pytest.raises(SystemExit):
        main(["compare", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for field in dataclasses.fields(CompareConfig):
        flag = "--" + field.name.replace("_", "-")
        assert flag in text, flag
        if field.name in DEVICE_CHOSEN:
            cpu, accelerator = DEVICE_DEFAULTS["cpu"][field.name], DEVICE_DEFAULTS["accelerator"][field.name]
            assert f"(default: from the device: {cpu} on a CPU, {accelerator} on a GPU or TPU)" in text
        else:
            assert f"(default: {field.default})" in text, field.name
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.strip() == f"flowtrunc {ft.__version__}"


def test_progress_shows_compilation_then_an_eta(tmp_path, capsys):
    assert run_compare(CompareConfig(**TINY), str(tmp_path / "run"), progress=True)
    err = capsys.readouterr().err
    assert "compiling the comparison program if its settings are new" in err
    assert "first chunk (incl. compiling) in" in err and "8/8 seeds, ETA" in err


def test_summary_json_describes_every_key_and_the_console_shows_worst_seeds(reference, capsys):
    summary = json.loads(pathlib.Path(os.path.join(reference, "summary.json")).read_text())
    assert set(summary["descriptions"]) == set(summary) == set(DESCRIPTIONS)
    assert summary["versions"]["jax"] == jax.__version__ and summary["data_sha256"] is None
    assert summary["wall_time_s"] > 0
    metrics = _metrics(reference)
    worst = int(np.argmax(metrics["threshold_error"]))
    assert summary["worst"]["threshold_error"] == {
        "value": float(metrics["threshold_error"][worst]),
        "seed": worst,
    }
    assert main(["report", reference]) == 0
    out = capsys.readouterr().out
    assert "8 of 8 seeds ok" in out and f"({worst})" in out and "worst (seed)" in out


def _labels(fig):
    return [(ax.get_xlabel(), ax.get_ylabel()) for ax in fig.axes]


def test_figures_have_units_residuals_and_every_coordinate(reference):
    import matplotlib

    matplotlib.use("Agg")
    config, origin, metrics, trajectories = load_run(reference)
    summary = json.loads(pathlib.Path(os.path.join(reference, "summary.json")).read_text())
    drawn = dict(figures(config, metrics, trajectories, summary))
    assert set(drawn) == {"errors.png", "thresholds.png", "cost.png", "truncation.png", "plane.png"}
    assert os.path.isfile(os.path.join(reference, "figures", "truncation.gif"))
    every = [
        label for fig in drawn.values() for ax in fig.axes for label in (ax.get_xlabel(), ax.get_ylabel())
    ]
    labelled = [ax for fig in drawn.values() for ax in fig.axes if ax.get_visible() and ax.axison]
    assert all(ax.get_xlabel() or ax.get_ylabel() for ax in labelled)
    assert any("flow time" in label for label in every) and any("input units" in label for label in every)
    # thresholds: 2 seeds × 2 coordinates, each an overlay and a residual panel
    thresholds = drawn["thresholds.png"]
    assert len(thresholds.axes) == 2 * 2 * 2
    assert sum(ax.get_ylabel() == "train − flow [input units]" for ax in thresholds.axes) == 4
    overlay = thresholds.axes[0]
    assert len(overlay.lines) >= 12 + 2  # one line per data coordinate, plus flow and training
    assert overlay.lines[0].get_xdata()[0] == 0 and overlay.lines[0].get_xdata()[-1] == 1  # across the axis
    assert drawn["cost.png"].axes[0].get_yscale() == "log" and len(drawn["cost.png"].axes) == 2
    plane = drawn["plane.png"]
    assert all(ax.get_aspect() == 1.0 for ax in plane.axes)
    for fig in drawn.values():  # legends sit outside the axes
        assert all(ax.get_legend() is None for ax in fig.axes)


@pytest.mark.slow  # compiles programs of its own: 78 s on 2 cores (tests/README.md)
def test_figures_on_four_dimensional_data_and_failures(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    rng = np.random.default_rng(4)
    path = tmp_path / "d4.npz"
    np.savez(path, x=rng.normal(size=(16, 5)), labels=np.arange(16) % 2)
    out = str(tmp_path / "run")
    assert run_compare(CompareConfig(**{**TINY, "data": str(path)}), out, progress=False)
    config, origin, metrics, trajectories = load_run(out)
    metrics["train_result"][0] = 4  # mark the first kept seed failed
    summary = json.loads(pathlib.Path(os.path.join(out, "summary.json")).read_text())
    drawn = dict(figures(config, metrics, trajectories, summary))
    assert "plane.png" not in drawn
    thresholds = drawn["thresholds.png"]
    assert len(thresholds.axes) == 2 * 4 * 2  # 4 of the 5 coordinates, stated in the title
    assert "coordinates 0–3 of 5 shown" in thresholds.get_suptitle()
    assert "FAILED (training diverged)" in thresholds.axes[0].get_title()
    assert thresholds.axes[0].title.get_color() == "red"
    assert len(drawn["truncation.png"].axes) == 2 * 4  # counts and the twin rate axis
    assert "1 failed seeds excluded" in drawn["errors.png"].get_suptitle()
    metrics["flow_result"][:] = 3
    summary["failures"] = [dict(part="flow", seeds=8, what="the state became NaN", fix="check the data")]
    notice = dict(figures(config, metrics, trajectories, summary))["errors.png"]
    assert "0 of 8 seeds succeeded" in notice.get_suptitle()
    assert "No seed succeeded" in notice.axes[0].texts[0].get_text()


@pytest.mark.slow  # compiles programs of its own: 59 s on 2 cores (tests/README.md)
def test_one_compiled_program_serves_every_chunk(tmp_path, monkeypatch):
    """Chunks 3, 3, 1 (a short last chunk) and the trajectories of the first: one trace."""
    from flowtrunc.internal import comparison as compare_module

    traces = []
    original = compare_module.compare_seed
    monkeypatch.setattr(compare_module, "compare_seed", lambda *a, **k: traces.append(1) or original(*a, **k))
    config = CompareConfig(**{**TINY, "seeds": 7, "chunk_size": 3})
    assert run_compare(config, str(tmp_path / "run"), progress=False)
    assert len(traces) == 1


@pytest.mark.parametrize(
    "bounds, expected",
    [
        ([0.005, 0.008], r"lower --lr \(now 0.01\) below 0.005, the smallest stability bound"),
        # raw iris: the start allowed lr = 0.01 (bound 0.0341), training diverged later
        (
            [0.0341],
            r"lower --lr \(now 0.01\), e.g. to 0.001: these seeds' stability bound at the start allowed it",
        ),
        (None, r"lower --lr \(now 0.01\), e.g. to 0.001"),
    ],
)
def test_the_learning_rate_advice_follows_from_the_failing_seeds(bounds, expected):
    from flowtrunc import RESULTS, CompareConfig
    from flowtrunc.internal import failure_fix

    fix = failure_fix("training", RESULTS.diverged, CompareConfig(lr=0.01), bounds, None)
    assert re.search(expected, fix), fix
    assert "below 0.0341" not in fix


def test_summary_json_states_inf_and_nan(tmp_path):
    path = str(tmp_path / "summary.json")
    files.write_json(path, {"a": float("inf"), "b": [float("nan"), 1.5], "c": {"d": np.float64(-np.inf)}})
    assert json.loads(pathlib.Path(path).read_text()) == {"a": "inf", "b": ["nan", 1.5], "c": {"d": "-inf"}}


def test_a_figure_that_cannot_be_drawn_is_named_and_the_run_kept(tmp_path, reference, monkeypatch, capsys):
    import shutil

    from flowtrunc.internal import report

    out = str(tmp_path / "copy")
    shutil.copytree(reference, out)
    shutil.rmtree(os.path.join(out, "figures"))

    def cannot(*args, **kwargs):  # what all-identical points did to the plane figure
        raise ValueError("figure size must be positive finite not (nan, 4.8)")

    monkeypatch.setattr(report, "_plane", cannot)
    summary = report.write_report(out)
    err = capsys.readouterr().err
    assert "figure plane.png was not drawn: ValueError: figure size must be positive finite" in err
    assert summary["ok_seeds"] == 8 and os.path.isfile(os.path.join(out, "summary.json"))
    assert {"errors.png", "thresholds.png", "truncation.gif"} <= set(os.listdir(os.path.join(out, "figures")))
    assert "plane.png" not in os.listdir(os.path.join(out, "figures"))


def test_a_full_disk_while_figures_are_written_names_the_file(tmp_path, reference, monkeypatch):
    import shutil

    import matplotlib.figure

    from flowtrunc.internal import report

    out = str(tmp_path / "copy")
    shutil.copytree(reference, out)

    def full(self, path, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", full)
    with pytest.raises(
        files.OutputError,
        match=r"could not write the figure .*errors.png.*the disk is full.*flowtrunc report",
    ):
        report.write_report(out)


@pytest.mark.slow  # a shape of its own: one more compiled comparison
def test_training_that_leaves_its_stability_bound_mid_run_is_unstable(tmp_path, capsys):
    """The new user's problem shape (24 points in M = 10, depth 2) with lr between the
    bound at the start and the bound along the run: on these seeds the flow's κ = Γ n/N
    rises as points are truncated, so 2/κ falls below lr after t = 0 while 2/λ_max at
    t = 0 allowed it. Such seeds must be `unstable` with when, and the fix must name a bound
    below the current lr; seeds whose bound stays above lr stay ok. (The user's exact
    settings gave a start bound of 0.26, which the built-in scenario does not reproduce.)"""
    out = str(tmp_path / "run")
    flags = "--dim 10 --points 24 --depth 2 --lr 1.25 --t1 5 --seeds 4 --chunk-size 4 --saves 4"
    main(["compare", "--out", out, *flags.split()])
    captured = capsys.readouterr()
    metrics = _metrics(out)
    left = metrics["train_result"] == 5  # RESULTS.unstable
    assert left.any(), captured.out
    assert np.all(metrics["stability_bound"][left] > 1.25)  # the start allowed lr
    assert np.all(metrics["stability_bound_run"][left] < 1.25)
    assert np.all((metrics["unstable_from"][left] > 0) & (metrics["unstable_from"][left] <= 5.0))
    assert np.all(metrics["stability_bound_run"][~left] >= 1.25)
    summary = json.loads(pathlib.Path(os.path.join(out, "summary.json")).read_text())
    fix = next(f["fix"] for f in summary["failures"] if f["code"] == "unstable")
    assert float(re.search(r"below ([0-9.e-]+)", fix)[1]) < 1.25, fix


def test_keep_above_the_chunk_size_is_said(tmp_path, capsys):
    config = CompareConfig(**{**TINY, "keep": 6})  # chunks of 4 seeds
    assert not run_compare(config, str(tmp_path / "run"), max_chunks=0)
    assert "keeping the trajectories of 4 seeds, not --keep 6" in capsys.readouterr().err
    assert not run_compare(CompareConfig(**TINY), str(tmp_path / "other"), max_chunks=0)
    assert "keeping the trajectories" not in capsys.readouterr().err


def test_report_on_an_unfinished_sweep_says_so(tmp_path, capsys):
    from flowtrunc.internal import SWEEP

    (tmp_path / "points" / "0000").mkdir(parents=True)
    (tmp_path / SWEEP).write_text(json.dumps({"grid": {"lr": [0.01, 0.02, 0.04]}}))
    (tmp_path / "points" / "0000" / "summary.json").write_text("{}")
    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "is unfinished: 2 of 3 points have no results yet (points 1, 2)" in err and "--resume" in err
