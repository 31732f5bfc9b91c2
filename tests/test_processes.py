"""Multi-process runs (JAX distributed over gloo on CPU): two real processes on this machine."""

import json
import os
import socket
import time

import numpy as np
import pytest
from helpers import TINY, cli_process


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def _cli(args):
    return cli_process(args, {"JAX_PLATFORMS": "cpu"})


@pytest.mark.slow
def test_two_processes_equal_one(tmp_path, tiny_run):
    config = tmp_path / "c.json"
    config.write_text(json.dumps(TINY))
    out = tmp_path / "two"
    port = _free_port()
    runs = [
        _cli(
            [
                "compare",
                "--out",
                str(out),
                "--config",
                str(config),
                "--coordinator",
                f"localhost:{port}",
                "--num-processes",
                "2",
                "--process-id",
                str(pid),
            ]
        )
        for pid in (0, 1)
    ]
    results = [run.communicate(timeout=600) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], results
    assert "2 device(s)" in results[0][1] and "8 of 8 seeds ok" in results[0][0]
    assert "process 0 wrote the results" in results[1][1]
    _assert_same_seeds(out / "seeds.npz", os.path.join(tiny_run, "seeds.npz"))


def test_unreachable_coordinator_is_a_clear_error_after_a_bounded_wait(tmp_path):
    began = time.monotonic()
    run = _cli(
        [
            "compare",
            "--out",
            str(tmp_path / "run"),
            "--coordinator",
            f"localhost:{_free_port()}",
            "--num-processes",
            "2",
            "--process-id",
            "1",
            "--connect-timeout",
            "2",
        ]
    )
    _, err = run.communicate(timeout=120)
    assert run.returncode == 2
    assert "no coordinator answered at localhost:" in err and "within 2 s" in err
    assert time.monotonic() - began < 60
    assert not (tmp_path / "run").exists()


def _launch(out, config, port, pid):
    flags = ["--coordinator", f"localhost:{port}", "--num-processes", "2", "--process-id", str(pid)]
    return _cli(["compare", "--out", str(out), "--config", str(config), *flags])


def _assert_same_seeds(path_a, path_b):
    """Equal up to the last bits of sharded reductions. `stability_bound` = 2/λ_max (and
    `stability_bound_run`, at most that) is compared as λ_max, with an absolute round-off
    floor: where nothing is truncated yet the Hessian is 0 up to round-off and 2/λ is
    noise of size 1/eps."""
    with np.load(path_a) as a, np.load(path_b) as b:
        assert a.files == b.files
        for key in b.files:
            x, y = a[key], b[key]
            if key in ("stability_bound", "stability_bound_run"):
                x, y, floor = 2 / x, 2 / y, 1e-12
            else:
                floor = 1e-14
            np.testing.assert_allclose(x, y, rtol=1e-9, atol=floor, err_msg=key)


@pytest.mark.slow
def test_killing_one_process_then_resuming_gives_the_same_results(tmp_path):
    """SIGKILL process 1 once chunks exist: process 0 stops by itself (JAX's heartbeat
    timeout; bounded wait), the finished chunks stay, and `--resume` with another process
    count (one) completes the run with the results of an uninterrupted run."""
    import signal

    from flowtrunc import CompareConfig
    from flowtrunc.internal import run_compare

    settings = {**TINY, "seeds": 24}
    config = tmp_path / "c.json"
    config.write_text(json.dumps(settings))
    out = tmp_path / "run"
    runs = [_launch(out, config, port, pid) for port in [_free_port()] for pid in (0, 1)]
    deadline = time.monotonic() + 300
    while not list((out / "chunks").glob("seeds_*.npz")) and time.monotonic() < deadline:
        assert runs[0].poll() is None, runs[0].communicate()
        time.sleep(0.2)
    runs[1].send_signal(signal.SIGKILL)
    runs[1].communicate()
    runs[0].communicate(timeout=300)  # JAX ends the survivor after missed heartbeats
    assert runs[0].returncode != 0
    done = sorted(p.name for p in (out / "chunks").glob("seeds_*.npz"))
    assert 0 < len(done) < settings["seeds"] // settings["chunk_size"], done
    assert not (out / "seeds.npz").exists()

    resumed = _cli(["compare", "--out", str(out), "--config", str(config), "--resume"])
    stdout, stderr = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, stderr
    assert "24 of 24 seeds ok" in stdout
    reference = tmp_path / "reference"
    assert run_compare(CompareConfig(**settings), str(reference), progress=False)
    _assert_same_seeds(out / "seeds.npz", reference / "seeds.npz")


@pytest.mark.slow
def test_a_sweep_over_two_processes_equals_one(tmp_path):
    """`flowtrunc sweep` joins a multi-process run like `compare`: process 0 writes the
    table, process 1 computes its share of every point."""
    from flowtrunc import CompareConfig
    from flowtrunc.internal import read_table, run_sweep

    config = tmp_path / "c.json"
    config.write_text(json.dumps({**TINY, "sweep": {"separation": [1.0, 2.5]}}))
    out, port = tmp_path / "two", _free_port()
    flags = ["--coordinator", f"localhost:{port}", "--num-processes", "2"]
    runs = [
        _cli(["sweep", "--out", str(out), "--config", str(config), *flags, "--process-id", str(pid)])
        for pid in (0, 1)
    ]
    results = [run.communicate(timeout=600) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], results
    assert "process 0 wrote the sweep" in results[1][1]
    one = tmp_path / "one"
    assert run_sweep(CompareConfig(**TINY), {"separation": [1.0, 2.5]}, str(one), progress=False)
    two_table, one_table = read_table(str(out)), read_table(str(one))
    assert two_table.keys() == one_table.keys()
    for key, column in one_table.items():
        if column.dtype.kind == "f":
            np.testing.assert_allclose(two_table[key], column, rtol=1e-9, atol=1e-12, err_msg=key)
        else:
            assert list(two_table[key]) == list(column), key
