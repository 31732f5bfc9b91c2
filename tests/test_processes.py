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
    with np.load(out / "seeds.npz") as two, np.load(os.path.join(tiny_run, "seeds.npz")) as one:
        assert two.files == one.files
        for key in one.files:  # sharded reductions may differ in the last bits
            np.testing.assert_allclose(two[key], one[key], rtol=1e-9, atol=1e-14, err_msg=key)


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
