"""How many intra-op threads torch uses: ``--threads auto`` (the default rule) or a number.

The rule (``auto``) gives each thread at least :data:`WORK_PER_THREAD` multiply-adds of the
recurrence's per-step coupling products (:func:`step_work`): ``batch x N x N`` for a dense
coupling (the product ``z C^T``, DESIGN.md §1-2), ``4 x batch x N x r`` for a rank-``r``
coupling run factored (``(z H) X^T`` with ``k = 2r`` columns: two ``batch x N x k``
products), and never more threads than there are cores left free by other processes::

    threads = clamp(step_work // WORK_PER_THREAD, 1, free cores)
    step_work = batch * N^2  (dense)   or   batch * N * 4r  (rank r, cayley)
    free cores = cores available to this process - CPUs' worth used by other processes
                 (rounded to the nearest core, at least 1)

Below the work threshold a split costs more in thread wake-ups and barriers than it saves;
and a thread whose core another process holds stalls every step's barrier (measured with
``combonet bench --threads-sweep``: benchmarks/README.md, "Threads"). The cores available
come from ``os.sched_getaffinity(0)`` (what ``taskset``, cgroup cpusets and batch schedulers
leave to this process; ``os.cpu_count()`` where that is missing); the other processes' use
from ``/proc/stat`` over a short window (:func:`other_busy_cores`), or over any stretch the
caller measured with :class:`OtherLoad` (e.g. the last epoch).
"""

from __future__ import annotations

import os
import time

import torch

#: Multiply-adds of the per-step coupling products (:func:`step_work`) per thread below which
#: another thread does not pay (benchmarks/README.md, "Threads").
WORK_PER_THREAD = 16 * 2**20
#: Window of :func:`other_busy_cores` when :func:`apply_threads` measures it, seconds.
LOAD_WINDOW_S = 0.25


def available_cores() -> int:
    """Cores this process may run on (``len(os.sched_getaffinity(0))``, else ``cpu_count``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not Linux
        return max(1, os.cpu_count() or 1)


def step_work(units: int, batch: int, rank: int | None = None) -> int:
    """Multiply-adds of the recurrence's per-step coupling products: ``batch * N^2`` for a
    dense coupling (``rank=None``), ``batch * N * 4 rank`` for a rank-``r`` coupling that the
    engine runs factored (``y+ = z + (z H) X^T``, ``H``, ``X`` of ``k = 2r`` columns; half of
    :func:`combonet.bench.flops.recurrence_flops`'s coupling FLOPs, which a test checks
    against torch's FLOP counter)."""
    if rank is None:
        return batch * units * units
    return batch * units * 4 * rank


def running_rank(model: object) -> int | None:
    """The coupling rank the engine runs for ``model`` (a :class:`SequenceClassifier` or
    anything with ``snapshot()``): ``r`` when its snapshot is the factored low-rank Cayley
    step (``k = 2r`` factor columns), else ``None`` (dense coupling, the Euler map, a
    lesioned low-rank coupling, or a model without a snapshot, e.g. a GRU). Pass it as
    ``rank=`` to :func:`resolve_threads` / :func:`apply_threads`."""
    snapshot = getattr(model, "snapshot", None)
    if snapshot is None:
        return None
    with torch.no_grad():
        snap = snapshot()
    if getattr(snap, "mode", None) != "lowrank" or snap.factors is None:
        return None
    return (int(snap.factors[0].shape[1]) + 1) // 2


# -- the load of other processes --------------------------------------------------------------
def machine_busy_seconds() -> float | None:
    """CPU seconds all processes have used since boot (Linux ``/proc/stat``), else None."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
        hz = os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, AttributeError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    guest = sum(fields[8:10])  # already counted in user / nice
    return (sum(fields) - idle - guest) / hz


def own_cpu_seconds() -> float:
    """CPU seconds this process (all its threads) has used, user + system."""
    t = os.times()
    return t.user + t.system


class OtherLoad:
    """CPUs' worth of time that OTHER processes used while the ``with`` block ran:
    ``cores`` (e.g. 0.9: one other process on almost a whole core) and ``share`` (of all the
    machine's CPUs); both ``None`` where ``/proc/stat`` is missing."""

    def __enter__(self) -> OtherLoad:
        self.busy0, self.own0 = machine_busy_seconds(), own_cpu_seconds()
        self.t0 = time.perf_counter()
        self.cores: float | None = None
        self.share: float | None = None
        return self

    def __exit__(self, *exc: object) -> None:
        busy1 = machine_busy_seconds()
        wall = time.perf_counter() - self.t0
        if self.busy0 is None or busy1 is None or wall <= 0:
            return
        other = (busy1 - self.busy0) - (own_cpu_seconds() - self.own0)
        cpus = os.cpu_count() or 1
        self.cores = min(max(other / wall, 0.0), float(cpus))
        self.share = self.cores / cpus


def other_busy_cores(window_s: float = LOAD_WINDOW_S) -> float:
    """CPUs' worth used by other processes over the next ``window_s`` seconds (0.0 where it
    cannot be measured)."""
    with OtherLoad() as load:
        time.sleep(window_s)
    return load.cores or 0.0


# -- the rule ---------------------------------------------------------------------------------
def _count(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return value


def parse_threads(setting: int | str | None) -> int | None:
    """``None`` for ``auto`` (or ``None``), else the thread count as an int >= 1."""
    if setting is None:
        return None
    if isinstance(setting, str):
        text = setting.strip().lower()
        if text == "auto":
            return None
        if text.isdigit() and int(text) >= 1:
            return int(text)
    elif isinstance(setting, int) and not isinstance(setting, bool) and setting >= 1:
        return setting
    raise ValueError(f'threads must be "auto" or an integer >= 1, got {setting!r}')


def free_cores(cores: int, busy: float) -> int:
    """``cores`` less the ``busy`` CPUs' worth other processes use, rounded to the nearest
    core (a core half taken counts as taken), at least 1."""
    if not busy >= 0:
        raise ValueError(f"busy must be a number >= 0 (CPUs' worth used by other processes), "
                         f"got {busy!r}")
    return max(1, cores - int(busy + 0.5))


def resolve_threads(setting: int | str | None, *, units: int, batch: int,
                    cores: int | None = None, busy: float = 0.0,
                    rank: int | None = None) -> int:
    """The thread count for ``setting``: a number as given; ``"auto"`` / ``None`` by the rule
    of the module docstring for a network of ``units`` (N) units run on ``batch`` samples
    (with a factored coupling of rank ``rank``: :func:`running_rank`; ``None``: dense), with
    ``cores`` available (default :func:`available_cores`) of which other processes use
    ``busy`` CPUs' worth. Pure: measures nothing (see :func:`apply_threads`)."""
    fixed = parse_threads(setting)
    _count("units", units)
    _count("batch", batch)
    if rank is not None:
        _count("rank", rank)
    if fixed is not None:
        return fixed
    limit = free_cores(available_cores() if cores is None else _count("cores", cores), busy)
    return max(1, min(limit, step_work(units, batch, rank) // WORK_PER_THREAD))


def apply_threads(setting: int | str | None, *, units: int, batch: int,
                  cores: int | None = None, busy: float | None = None,
                  rank: int | None = None) -> int:
    """``torch.set_num_threads(resolve_threads(...))``; returns the count set. For ``auto``
    with ``busy=None`` the other processes' load is measured first (:func:`other_busy_cores`,
    a quarter of a second; only when the work would be split at all)."""
    if busy is None:
        busy = 0.0
        auto = parse_threads(setting) is None
        if auto and resolve_threads(setting, units=units, batch=batch, cores=cores,
                                    rank=rank) > 1:
            busy = other_busy_cores()
    n = resolve_threads(setting, units=units, batch=batch, cores=cores, busy=busy, rank=rank)
    torch.set_num_threads(n)
    return n


__all__ = ["LOAD_WINDOW_S", "WORK_PER_THREAD", "OtherLoad", "apply_threads", "available_cores",
           "free_cores", "machine_busy_seconds", "other_busy_cores", "own_cpu_seconds",
           "parse_threads", "resolve_threads", "running_rank", "step_work"]
