"""Measuring tools of ``combonet bench``: timers, the matmul peak, peak memory, the load of
other processes, a busy process to compete with, and the error between two runs.

Peak memory: CPU -- the peak resident set size of the process during one call minus the
resident size just before it (Linux ``/proc/self/clear_refs`` resets the peak; freed heap
memory is returned with ``malloc_trim`` first); CUDA -- ``torch.cuda.max_memory_allocated``
above the memory allocated before the call.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import math
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..threads import OtherLoad


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device) -> float:
    """Wall seconds of ``fn()``, the device's queue drained before and after."""
    sync(device)
    t0 = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - t0


def matmul_peak(bsz: int, n_units: int, device: torch.device, dtype: torch.dtype,
                trial_s: float = 0.05, trials: int = 7) -> float:
    """Best measured GFLOP/s of ``torch.mm`` (B x N) @ (N x N) ``out=`` in a loop: the
    FLOP-bound rate of the recurrence's largest per-step product."""
    a = torch.randn(bsz, n_units, device=device, dtype=dtype)
    b = torch.randn(n_units, n_units, device=device, dtype=dtype) / math.sqrt(n_units)
    out = torch.empty(bsz, n_units, device=device, dtype=dtype)
    flops = 2.0 * bsz * n_units * n_units

    def loop(reps: int) -> float:
        return timed(lambda: [torch.mm(a, b.T, out=out) for _ in range(reps)], device)

    reps = 1
    while reps < 4096 and loop(reps) < trial_s:
        reps *= 2
    return max(reps * flops / loop(reps) / 1e9 for _ in range(trials))


def _rss_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def _release_memory() -> None:
    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # glibc only
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def peak_memory_mb(fn: Callable[[], Any], device: torch.device) -> tuple[float | None, float]:
    """``(peak memory of fn() in MB above what was in use before it, its run time in s)``;
    the memory is ``None`` where it cannot be read (module docstring)."""
    _release_memory()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        base = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        t = timed(fn, device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20, t
    base = _rss_kb("VmRSS")
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak resident set size (VmHWM) to the current size
    except OSError:
        base = None
    t = timed(fn, device)
    hwm = _rss_kb("VmHWM")
    return (None if base is None or hwm is None else (hwm - base) / 1024), t


def cpu_name() -> str:
    """The processor's model name (Linux ``/proc/cpuinfo``), else ``platform`` 's guess."""
    import platform

    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def git_state() -> dict[str, Any]:
    """``{"commit": HEAD, "worktree_dirty": bool}`` of the checkout this package runs from
    (both None outside a git checkout): which code a recorded measurement ran."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[3]
    try:
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain",
                                "--untracked-files=no"], capture_output=True, text=True,
                               timeout=10, check=True).stdout.strip() != ""
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "worktree_dirty": None}
    return {"commit": head, "worktree_dirty": dirty}


def max_rel_err(got: Sequence[torch.Tensor], want: Sequence[torch.Tensor]) -> float:
    """``max_i max|got_i - want_i| / max|want_i|`` over the tensors (normwise, per tensor;
    absolute where ``want_i`` is zero); 0.0 for empty lists."""
    err = 0.0
    for a, b in zip(got, want, strict=True):
        diff = float((a.double() - b.double()).abs().max()) if a.numel() else 0.0
        scale = float(b.abs().max()) if b.numel() else 0.0
        err = max(err, diff / scale if scale > 0 else diff)
    return err


# -- the load of other processes --------------------------------------------------------------
#: How much of the machine other processes used while a block ran (``.share`` of all CPUs,
#: ``.cores`` in CPUs' worth; ``None`` where ``/proc/stat`` is missing). Above ~0.1 of the
#: machine, timings and the FLOP-bound fraction are pessimistic.
CompetingLoad = OtherLoad


_SPIN = "while True:\n    pass\n"


class BusyProcess:
    """A child Python process spinning on one core for the duration of the ``with`` block
    (the "another job uses one of the cores" condition); stopped, by its own pid, on exit."""

    def __enter__(self) -> BusyProcess:
        self.proc = subprocess.Popen([sys.executable, "-c", _SPIN],
                                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        time.sleep(0.05)  # let it reach its loop
        return self

    def __exit__(self, *exc: object) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
