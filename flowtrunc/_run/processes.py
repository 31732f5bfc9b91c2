"""Joining a JAX multi-process run, and the one-line notices about devices (a GPU build
without a GPU, a platform that is not there) in place of JAX's tracebacks."""

import logging
import os
import sys


def join_processes(args) -> None:
    """Joins a JAX multi-process run when asked: `--coordinator`, `--num-processes`,
    `--process-id`, or `--distributed` alone (JAX detects SLURM, Open MPI and the like).
    On CPU the processes talk through gloo."""
    given = [args.coordinator, args.num_processes, args.process_id]
    if not args.distributed and all(value is None for value in given):
        check_platform()
        return
    check_process_flags(args.num_processes, args.process_id)
    if args.coordinator is not None and args.process_id not in (None, 0):
        _wait_for_coordinator(args.coordinator, args.connect_timeout)
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(
            coordinator_address=args.coordinator,
            num_processes=args.num_processes,
            process_id=args.process_id,
            initialization_timeout=args.connect_timeout,
        )
    except Exception as error:  # JAX raises RuntimeError/ValueError/XlaRuntimeError here
        raise ValueError(
            f"could not join the multi-process run (coordinator {args.coordinator or 'auto-detected'}, "
            f"waited up to {args.connect_timeout} s): {str(error).splitlines()[0][:300]}. Check "
            "--coordinator HOST:PORT, --num-processes and --process-id, and that process 0 runs."
        ) from None
    check_platform()  # only now: jax.distributed.initialize must come before any device use


def check_process_flags(num_processes, process_id) -> None:
    """`--num-processes` at least 1 and `--process-id` in 0..N-1, before anything starts."""
    if num_processes is not None and num_processes < 1:
        raise ValueError(f"--num-processes must be at least 1, got {num_processes}.")
    if process_id is not None and process_id < 0:
        raise ValueError(f"--process-id must be 0 or more, got {process_id}.")
    if None not in (num_processes, process_id) and process_id >= num_processes:
        raise ValueError(
            f"--process-id {process_id} is out of range for --num-processes {num_processes}: "
            f"number the processes 0..{num_processes - 1}."
        )


def _wait_for_coordinator(address: str, timeout: float) -> None:
    """Waits until process 0's coordinator accepts connections (JAX itself aborts the
    process with a stack trace when it cannot register in time)."""
    import socket
    import time

    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"--coordinator {address!r} must be HOST:PORT, e.g. localhost:12345.")
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((host, int(port)), timeout=1.0).close()
            return
        except OSError as error:
            if time.monotonic() > deadline:
                raise ValueError(
                    f"no coordinator answered at {address} within {timeout} s ({error.strerror or error}); "
                    "start process 0 (--process-id 0) with the same --coordinator first, or raise "
                    "--connect-timeout."
                ) from None
            time.sleep(0.5)


def gpu_fallback_notice(backend: str, installed: list[str]) -> str | None:
    """One line when a GPU build of JAX (`installed`: its plugin packages) is present but
    JAX runs on `backend` 'cpu' (no GPU visible): the run goes on, on the CPU."""
    if backend != "cpu" or not installed:
        return None
    return (
        f"flowtrunc: note: a GPU build of JAX is installed ({', '.join(installed)}) but no GPU is "
        "visible; running on the CPU (set JAX_PLATFORMS=cpu to silence this note)."
    )


def _gpu_plugins() -> list[str]:
    """JAX's GPU plugin packages installed here (the `cuda12`/`cuda13` extras bring them)."""
    import importlib.metadata

    names = {dist.metadata["Name"] or "" for dist in importlib.metadata.distributions()}
    return sorted(n for n in names if n.lower().replace("_", "-").startswith(("jax-cuda", "jax-rocm")))


class _PluginErrorFilter(logging.Filter):
    """Drops JAX's multi-line "Jax plugin configuration error" traceback (a CUDA plugin
    that finds no driver); `print_device_notice` says it in one line instead."""

    def filter(self, record):
        return not str(record.msg).startswith("Jax plugin configuration error")


def quiet_gpu_plugin_without_gpu() -> None:
    """Before JAX looks for devices: a GPU plugin installed on a host with no NVIDIA
    device node would log a traceback while JAX falls back to the CPU."""
    if any(os.path.exists(d) for d in ("/dev/nvidia0", "/dev/nvidiactl", "/dev/dxg")):
        return
    if _gpu_plugins():
        logging.getLogger("jax._src.xla_bridge").addFilter(_PluginErrorFilter())


def print_device_notice() -> None:
    import jax

    if os.environ.get("JAX_PLATFORMS", "").strip().lower() == "cpu":
        return
    notice = gpu_fallback_notice(jax.default_backend(), _gpu_plugins())
    if notice:
        print(notice, file=sys.stderr)


def check_platform() -> None:
    """JAX can start the platform it was asked for (`JAX_PLATFORMS`); else one line naming
    it and the way out, instead of JAX's AssertionError from backend selection."""
    import jax

    try:
        jax.devices()
    except Exception as error:  # RuntimeError or AssertionError, by JAX version
        asked = os.environ.get("JAX_PLATFORMS") or jax.config.jax_platforms or "(default)"
        reason = str(error).splitlines()[0][:200] if str(error) else "no such device here"
        raise ValueError(
            f"JAX cannot start the platform asked for (JAX_PLATFORMS={asked}): {reason}. Unset "
            "JAX_PLATFORMS (JAX then uses the best device present) or set JAX_PLATFORMS=cpu; a GPU "
            'run needs a visible GPU and `pip install "jax[cuda12]"`.'
        ) from None


def set_process_precision(bits: int) -> None:
    """The command's precision for the whole process, before JAX computes anything (the
    command owns its process; the library itself never changes JAX's configuration)."""
    import jax

    jax.config.update("jax_enable_x64", bits == 64)
