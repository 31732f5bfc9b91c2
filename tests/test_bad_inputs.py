"""The new user's battery of unusual inputs, one line a case: what is given, the exit code,
and the message that must name the problem and its fix. Every case is refused before
anything is written (the run folder must not exist afterwards)."""

import json
import os

import numpy as np
import pytest
from helpers import TINY

from flowtrunc import CompareConfig, load_npz
from flowtrunc.internal import OutputError, load_metrics, main, run_fingerprint


def _data(tmp_path, name="d.npz", x=None, labels=None, **extra):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(12, 2)) if x is None else x
    labels = np.arange(len(x)) % 2 if labels is None else labels
    path = tmp_path / name
    np.savez(path, x=x, labels=labels, **extra)
    return str(path)


def _tiny_flags(**changes):
    settings = {key: value for key, value in {**TINY, **changes}.items() if value is not None}
    return [item for key, value in settings.items() for item in (f"--{key.replace('_', '-')}", str(value))]


# (id, builder(tmp_path) -> argv after `compare --out OUT`, expected message)
CASES = [
    (
        "labels-huge",
        lambda t: ["--data", _data(t, labels=np.array([0, 2 * 10**12] * 6))],
        "numpy.unique(labels, return_inverse=True)",
    ),
    (
        "labels-sparse",
        lambda t: ["--data", _data(t, labels=np.array([0, 10**6, 2 * 10**6] * 4))],
        "numpy.unique(labels, return_inverse=True)",
    ),
    (
        "labels-negative",
        lambda t: ["--data", _data(t, labels=np.array([-1, 0] * 6))],
        "must be the integers 0..Q-1",
    ),
    (
        "x-overflows-float32",
        lambda t: ["--data", _data(t, x=np.full((12, 2), 1e40)), "--precision", "32"],
        "beyond the largest float32",
    ),
    ("x-nan", lambda t: ["--data", _data(t, x=np.full((12, 2), np.nan))], "contains 24 NaN or inf"),
    ("x-objects", lambda t: ["--data", _data(t, x=np.array([[1, "a"]] * 12, dtype=object))], "object arrays"),
    ("data-is-a-directory", lambda t: ["--data", str(t)], "is a directory"),
    ("data-fixes-points", lambda t: ["--data", _data(t), "--points", "10"], "drop --points"),
    (
        "config-key-next-to-data",
        lambda t: ["--config", _config(t, {"data": _data(t), "dim": 3})],
        "drop --dim",
    ),
    ("seeds-beyond-any-machine", lambda t: ["--seeds", "1000000000000"], "more than one run can hold"),
]


def _config(tmp_path, values):
    path = tmp_path / "c.json"
    path.write_text(json.dumps(values))
    return str(path)


@pytest.mark.parametrize("build, message", [case[1:] for case in CASES], ids=[case[0] for case in CASES])
def test_bad_input_is_one_clear_message_and_writes_nothing(tmp_path, capsys, build, message):
    out = tmp_path / "run"
    assert main(["compare", "--out", str(out), *build(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not out.exists()


def test_a_config_read_through_a_pipe(tmp_path, capsys):
    """`--config <(echo ...)`: a readable file that is not a regular file."""
    read, write = os.pipe()
    os.write(write, json.dumps({"seeds": -1}).encode())
    os.close(write)
    out = tmp_path / "run"
    assert main(["compare", "--out", str(out), "--config", f"/dev/fd/{read}"]) == 2
    assert "`seeds` must be a positive int" in capsys.readouterr().err
    os.close(read)


def test_sweep_refuses_a_grid_the_data_fix(tmp_path, capsys):
    out = tmp_path / "sweep"
    assert main(["sweep", "--out", str(out), "--data", _data(tmp_path), "--grid", "points=10,20"]) == 2
    assert "fixes the dimension, point count and classes" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.int64])
def test_any_numeric_data_is_cast_to_the_run_precision(tmp_path, dtype):
    x = (np.random.default_rng(1).normal(size=(12, 2)) * 4).astype(dtype)
    data = load_npz(_data(tmp_path, x=x), dtype=np.float64)
    assert data.x.dtype == np.float64
    np.testing.assert_array_equal(data.x, x.astype(np.float64))


@pytest.mark.slow  # a whole run with its own compiled program (about a minute here)
def test_float16_data_runs_and_the_header_says_it_was_cast(tmp_path, capsys):
    x = np.random.default_rng(2).normal(size=(12, 2)).astype(np.float16)
    out = tmp_path / "run"
    argv = ["compare", "--out", str(out), "--data", _data(tmp_path, x=x)]
    argv += _tiny_flags(points=None, clusters=None)
    assert main(argv) == 0
    assert "(data x: float16 cast to float64)" in capsys.readouterr().err


# ---------------------------------------------------------------- chunks that are not this run's


def _fake_run(tmp_path, chunks, fingerprint="own"):
    """A run folder holding `chunks` (seed ranges) with this run's fingerprint (or another)."""
    out = tmp_path / "run"
    (out / "chunks").mkdir(parents=True)
    config = CompareConfig(**TINY).on_device()
    (out / "config.json").write_text(json.dumps({**config.to_dict(), "provenance": {"data_sha256": None}}))
    stamp = run_fingerprint(str(out)) if fingerprint == "own" else fingerprint
    for start, stop in chunks:
        arrays = {"seed": np.arange(start, stop), "drift": np.zeros(stop - start)}
        if stamp is not None:
            arrays["fingerprint"] = np.asarray(stamp)
        np.savez(out / "chunks" / f"seeds_{start:08d}-{stop:08d}.npz", **arrays)
    return str(out)


@pytest.mark.parametrize(
    "chunks, fingerprint, message",
    [
        ([(0, 4), (2, 6)], "own", "hold overlapping seeds"),
        ([(0, 4)], "another", "computed with other settings or data"),
        ([(0, 4)], None, "no fingerprint"),
        ([(0, 4), (4, 12)], "own", "outside this run's 0..7"),
    ],
    ids=["overlap", "other-settings", "no-fingerprint", "outside-the-run"],
)
def test_chunks_of_another_run_are_named_not_mixed_in(tmp_path, chunks, fingerprint, message):
    out = _fake_run(tmp_path, chunks, fingerprint)
    with pytest.raises(OutputError, match=message):
        load_metrics(out)


def test_own_chunks_load_and_names_hold_large_seed_counts(tmp_path):
    from flowtrunc.internal import chunk_name, finished_ranges

    out = _fake_run(tmp_path, [(0, 4), (4, 8)])
    metrics, _ = load_metrics(out)
    np.testing.assert_array_equal(metrics["seed"], np.arange(8))
    big = chunk_name(99_999_996, 100_000_000)
    (tmp_path / "run" / "chunks" / big).write_bytes(b"")
    assert finished_ranges(out)[-1] == (99_999_996, 100_000_000)


def test_report_on_a_run_without_chunks_says_so(tmp_path, capsys):
    out = _fake_run(tmp_path, [])
    assert main(["report", out]) == 2
    assert "holds no finished run" in capsys.readouterr().err


def test_a_resume_refuses_a_chunk_of_other_settings_before_computing(tmp_path, capsys):
    out = _fake_run(tmp_path, [(0, 4)], fingerprint="another")
    argv = ["compare", "--out", out, "--resume", *_tiny_flags()]
    assert main(argv) == 2
    assert "computed with other settings or data" in capsys.readouterr().err
    assert not os.path.exists(os.path.join(out, "seeds.npz"))
    # the lock was released: nothing else left behind
    assert not os.path.exists(os.path.join(out, ".lock"))


def test_a_platform_that_is_not_there_is_one_line_with_the_way_out(tmp_path):
    """`JAX_PLATFORMS=cuda` on a host without a GPU: JAX's AssertionError from backend
    selection becomes one line naming the platform and the fix; nothing is written."""
    from helpers import cli_process

    out = tmp_path / "run"
    process = cli_process(
        ["compare", "--out", str(out)], env_extra={"JAX_PLATFORMS": "definitely_not_a_platform"}
    )
    _, err = process.communicate(timeout=120)
    assert process.returncode == 2, err
    assert "JAX cannot start the platform asked for (JAX_PLATFORMS=definitely_not_a_platform)" in err
    assert "set JAX_PLATFORMS=cpu" in err and "Traceback" not in err
    assert not out.exists()


@pytest.mark.slow  # compiles programs of its own: 66 s on 2 cores (tests/README.md)
def test_invalid_inputs_under_jit_get_a_failing_result_code_never_success():
    """Checks that need concrete arrays cannot raise under jit/vmap: the seed gets
    `invalid_input` (with its message), and the other seeds of a batch are untouched."""
    import equinox as eqx
    import jax
    import jax.numpy as jnp
    from helpers import problem

    import flowtrunc as ft

    invalid = ft.RESULTS.invalid_input
    net, data = problem(jax.random.key(0))
    ts = jnp.linspace(0.0, 2.0, 5)
    by_ts = jax.jit(lambda ts: ft.solve_effective(net, data, ts=ts).result)
    assert int(by_ts(ts)) == 0
    for bad in (ts[::-1], ts.at[2].set(jnp.nan), ts - 1.0):
        assert int(by_ts(bad)) == invalid
    events = jax.jit(lambda ts: ft.solve_effective(net, data, ts=ts, solver=ft.EventLoop()).result)
    assert int(events(ts[::-1])) == invalid
    nets = eqx.filter_vmap(lambda k: problem(k)[0])(jax.random.split(jax.random.key(1), 3))
    nets = eqx.tree_at(lambda n: n.scales, nets, nets.scales.at[1, 0, 0].set(-0.5))  # seed 1 only
    results = eqx.filter_jit(eqx.filter_vmap(lambda n: ft.end_state(n, data).result))(nets)
    assert [int(r) for r in results] == [0, invalid, 0]
    skewed = eqx.tree_at(lambda n: n.frame, net, net.frame * 1.1)
    assert int(eqx.filter_jit(lambda n: ft.solve_frozen_exact(n, data, ts=ts).result)(skewed)) == invalid
    assert "call the function once outside jit" in ft.describe(jnp.asarray(invalid))[0]
    # training with a negative scale said "diverged; lower the learning rate"
    negative = eqx.tree_at(lambda n: n.scales, net, net.scales.at[0, 0].set(-0.5))
    trained = eqx.filter_jit(lambda n: ft.train(n, data, lr=0.01, steps=4, save_every=4).result)
    assert int(trained(negative)) == invalid and int(trained(net)) == 0


def test_trajectories_of_other_settings_are_named_not_mixed_in(tmp_path):
    from flowtrunc.internal import check_chunks

    out = _fake_run(tmp_path, [(0, 4)])
    np.savez(tmp_path / "run" / "trajectories.npz", ts=np.zeros(3), fingerprint=np.asarray("another"))
    with pytest.raises(OutputError, match=r"trajectories.npz' was computed with other settings"):
        check_chunks(out)
    np.savez(
        tmp_path / "run" / "trajectories.npz", ts=np.zeros(3), fingerprint=np.asarray(run_fingerprint(out))
    )
    assert check_chunks(out) == [(0, 4)]
