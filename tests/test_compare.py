"""The comparison engine and the `flowtrunc compare` / `report` commands."""

import json
import os
import signal
import time

import numpy as np
import pytest
from helpers import TINY
from helpers import cli_process as _cli

from flowtrunc import CompareConfig, compare
from flowtrunc.internal import DESCRIPTIONS, main, run_compare

SUMMARY_KEYS = set(DESCRIPTIONS)


def _metrics(out_dir):
    with np.load(os.path.join(out_dir, "seeds.npz")) as archive:
        return {key: archive[key] for key in archive.files}


def _assert_same(a, b, rtol=0.0, atol=0.0):
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_allclose(a[key], b[key], rtol=rtol, atol=atol, err_msg=key)


@pytest.mark.slow  # compiles programs of its own: 62 s on 2 cores (tests/README.md)
def test_cli_end_to_end(tmp_path, capsys):
    config = tmp_path / "c.json"
    config.write_text(json.dumps(TINY))
    out = tmp_path / "run"
    assert main(["compare", "--out", str(out), "--config", str(config), "--mode", "unconstrained"]) == 0
    files = set(os.listdir(out))
    assert {"config.json", "summary.json", "seeds.npz", "trajectories.npz", "figures", "chunks"} <= files
    assert sorted(os.listdir(out / "figures")) == sorted(
        ["thresholds.png", "cost.png", "errors.png", "truncation.png", "plane.png", "truncation.gif"]
    )
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary) == SUMMARY_KEYS
    assert summary["seeds"] == 8 and summary["mode"] == "unconstrained"
    assert summary["drift"]["q50"] > 1e-4  # unconstrained training drifts
    saved = json.loads((out / "config.json").read_text())
    assert saved.pop("provenance")["versions"]["jax"] == __import__("jax").__version__
    assert saved == CompareConfig.from_dict({**TINY, "mode": "unconstrained"}).on_device().to_dict()
    metrics = _metrics(out)
    assert list(metrics["seed"]) == list(range(8))
    assert "8 of 8 seeds ok" in capsys.readouterr().out
    os.remove(out / "figures" / "cost.png")
    assert main(["report", str(out)]) == 0 and os.path.isfile(out / "figures" / "cost.png")


@pytest.mark.slow  # compiles programs of its own: 22 s on 2 cores (tests/README.md)
def test_resume_after_interruption_gives_identical_results(tmp_path, tiny_run):
    config = CompareConfig(**TINY)
    whole, part = tiny_run, str(tmp_path / "part")
    assert not run_compare(config, part, max_chunks=1, progress=False)
    assert os.listdir(os.path.join(part, "chunks")) == ["seeds_00000000-00000004.npz"]
    assert not os.path.exists(os.path.join(part, "seeds.npz"))
    assert run_compare(config, part, resume=True, progress=False)
    _assert_same(_metrics(whole), _metrics(part))


@pytest.mark.slow  # compiles programs of its own: 43 s on 2 cores (tests/README.md)
def test_results_do_not_depend_on_chunk_size(tmp_path):
    small = compare(CompareConfig(**{**TINY, "chunk_size": 4}))[0]
    large = compare(CompareConfig(**{**TINY, "chunk_size": 8}))[0]
    _assert_same(small, large, rtol=1e-12)


@pytest.mark.slow
def test_results_identical_on_one_and_four_devices(tmp_path):
    config = tmp_path / "c.json"
    config.write_text(json.dumps({**TINY, "chunk_size": 3}))
    runs = {}
    for devices in (1, 4):
        out = str(tmp_path / f"d{devices}")
        flags = f"--xla_force_host_platform_device_count={devices}"
        process = _cli(["compare", "--out", out, "--config", str(config)], {"XLA_FLAGS": flags})
        _, err = process.communicate(timeout=600)
        assert process.returncode == 0, err
        assert f"{devices} device(s)" in err
        runs[devices] = _metrics(out)
    # summation order may differ across devices: float tolerance, and an absolute floor
    # for metrics that are zero up to roundoff (adapted drift ~ 1e-16)
    _assert_same(runs[1], runs[4], rtol=1e-9, atol=1e-14)


@pytest.mark.slow
def test_killed_process_resumes_to_identical_results(tmp_path):
    settings = {**TINY, "seeds": 64}  # 16 chunks: the kill lands mid-run
    config = tmp_path / "c.json"
    config.write_text(json.dumps(settings))
    out = tmp_path / "killed"
    process = _cli(["compare", "--out", str(out), "--config", str(config)])
    deadline = time.time() + 300
    while not (out / "chunks" / "seeds_00000000-00000004.npz").exists():
        assert time.time() < deadline and process.poll() is None
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.communicate()  # reaps it and closes its pipes (an unclosed pipe warns at collection)
    done = len([name for name in os.listdir(out / "chunks") if name.endswith(".npz")])
    assert 1 <= done < 16 and not (out / "seeds.npz").exists()
    assert (out / ".lock").exists()  # left by the killed process, taken over on resume
    resumed = _cli(["compare", "--out", str(out), "--config", str(config), "--resume"])
    _, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err
    reference = tmp_path / "reference"
    assert run_compare(CompareConfig(**settings), str(reference), progress=False)
    _assert_same(_metrics(out), _metrics(reference))


@pytest.mark.slow  # convergence orders / large N: many compiled programs
def test_default_scenario_agrees_to_order_lr():
    """On the default scenario (few seeds), the threshold error of adapted training
    against the flow halves with lr, as measured in the training tests."""
    errors = []
    for lr in (0.01, 0.005):
        metrics, _ = compare(CompareConfig(seeds=8, chunk_size=8, lr=lr))
        assert np.all(metrics["flow_result"] == 0) and np.all(metrics["train_result"] == 0)
        errors.append(np.median(metrics["threshold_error"]))
        assert np.mean(metrics["collapsed_flow"] > 0) >= 0.5  # collapse is visible
    assert errors[0] < 5e-3 and 0.4 < errors[1] / errors[0] < 0.6, errors


@pytest.mark.slow  # compiles programs of its own: 52 s on 2 cores (tests/README.md)
def test_user_dataset(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(20, 3))
    labels = np.arange(20) % 2
    path = tmp_path / "mine.npz"
    np.savez(path, x=x, labels=labels)
    metrics, trajectories = compare(CompareConfig(**{**TINY, "data": str(path)}))
    assert trajectories["u"].shape == (2, 20, 3) and np.all(metrics["flow_result"] == 0)
    # the same data for every seed, different nets
    assert np.allclose(trajectories["u"][0] @ trajectories["frame"][0], x)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--mode", "unconstrained", "--freeze-weights"], "contradicts `freeze_weights`"),
        (["--lr", "0.03"], "must be an integer multiple of `saves`"),
        (["--seeds", "0"], "`seeds` must be a positive int"),
        (["--data", "DATA", "--dim", "3"], "--data fixes the dimension"),
        (["--data", "MISSING"], "does not exist"),
        (["--data", "BAD"], "lacks array"),
        (["--config", "UNKNOWN"], r"unknown config key\(s\) \['speed'\]"),
        (["--config", "MISSING"], "--config .* does not exist"),
    ],
)
def test_cli_rejects_bad_options(tmp_path, capsys, argv, message):
    good = tmp_path / "good.npz"
    np.savez(good, x=np.zeros((4, 2)), labels=np.array([0, 1, 0, 1]))
    bad = tmp_path / "bad.npz"
    np.savez(bad, x=np.zeros((4, 2)))
    unknown = tmp_path / "unknown.json"
    unknown.write_text(json.dumps({"speed": 3}))
    names = {"DATA": good, "BAD": bad, "MISSING": tmp_path / "nope", "UNKNOWN": unknown}
    argv = [str(names.get(a, a)) for a in argv]
    out = tmp_path / "out"
    assert main(["compare", "--out", str(out), *argv]) == 2
    assert __import__("re").search(message, capsys.readouterr().err)
    assert not out.exists()  # nothing written


def test_directories_are_never_overwritten(tmp_path, capsys):
    config = tmp_path / "c.json"
    config.write_text(json.dumps(TINY))
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    assert main(["compare", "--out", str(other), "--config", str(config)]) == 2
    assert "holds something else" in capsys.readouterr().err
    assert os.listdir(other) == ["notes.txt"]
    run = tmp_path / "run"
    assert main(["compare", "--out", str(run), "--config", str(config)]) == 0
    before = (run / "seeds.npz").read_bytes()
    assert main(["compare", "--out", str(run), "--config", str(config)]) == 2
    assert "pass --resume" in capsys.readouterr().err
    assert main(["compare", "--out", str(run), "--config", str(config), "--resume", "--lr", "0.01"]) == 2
    assert "made with another config (lr: saved 0.02 vs now 0.01" in capsys.readouterr().err
    assert (run / "seeds.npz").read_bytes() == before
    assert main(["compare", "--out", str(tmp_path / "none"), "--resume"]) == 2
    assert "no run to resume" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "none")]) == 2
    assert "holds no finished run" in capsys.readouterr().err


def test_empty_out_is_refused_and_nothing_is_written(tmp_path, capsys, monkeypatch):
    """`--out ""` (an unset shell variable) once wrote into the working directory."""
    config = tmp_path / "c.json"
    config.write_text(json.dumps(TINY))
    work = tmp_path / "work"
    work.mkdir()
    (work / "summary.json").write_text("a user's file")
    monkeypatch.chdir(work)
    for out in ("", "   "):
        assert main(["compare", "--out", out, "--config", str(config)]) == 2
        assert "is empty (an unset shell variable?)" in capsys.readouterr().err
    assert sorted(os.listdir(work)) == ["summary.json"]
    assert (work / "summary.json").read_text() == "a user's file"


@pytest.mark.slow  # compiles programs of its own (two precisions): 26 s on 2 cores (tests/README.md)
def test_compare_leaves_jax_configuration_as_it_found_it():
    """The library switches x64 for its own computation only: float32 in an x64 process,
    float64 in a process without x64, and JAX's setting unchanged afterwards."""
    import jax

    assert jax.config.jax_enable_x64  # the test process (conftest)
    metrics, _ = compare(CompareConfig(**{**TINY, "precision": 32, "seeds": 2}))
    assert metrics["threshold_error"].dtype == np.float32
    assert jax.config.jax_enable_x64
    if hasattr(jax, "enable_x64"):
        enable_x64 = jax.enable_x64
    else:
        from jax.experimental import enable_x64
    with enable_x64(False):
        metrics, _ = compare(CompareConfig(**{**TINY, "precision": 64, "seeds": 2}))
        assert not jax.config.jax_enable_x64
    assert metrics["threshold_error"].dtype == np.float64
    assert jax.config.jax_enable_x64
