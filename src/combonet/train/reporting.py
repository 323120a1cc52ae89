"""What a user sees of a training run: :func:`~combonet.train.train` itself prints nothing.

The trainer calls a :class:`Reporter` at a few events (on rank 0 only). The command line
attaches a :class:`ConsoleReporter` (progress bar or step lines, one line per epoch, the final
report and certificate) and a :class:`CurvePlotter` (``learning_curve.png``); a library user
attaches what they like, or nothing.
"""

from __future__ import annotations

import io
import math
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO


@dataclass
class RunStart:
    """What is known when the first epoch begins."""

    run_dir: Path
    config: Any
    parameters: dict[str, Any]
    start_epoch: int
    resumed: bool
    init_from: dict[str, Any] | None = None


class Reporter:
    """Receives a run's events; this base class ignores them all."""

    def start(self, run: RunStart) -> None:
        """The run directory is claimed, the model built (and restored when resuming)."""

    def epoch_start(self, epoch: int, epochs: int, steps: int) -> None:
        """Epoch ``epoch`` of ``epochs`` begins; it has ``steps`` optimisation steps."""

    def step(self, epoch: int, step: int, steps: int, loss: float, accuracy: float) -> None:
        """After optimisation step ``step``: the running mean loss and accuracy of the epoch."""

    def epoch_end(self, record: dict[str, Any]) -> None:
        """Epoch finished: its ``metrics.jsonl`` record (saved before this call)."""

    def end(self, result: Any) -> None:
        """The run ended (:class:`~combonet.train.RunResult`: finished or diverged)."""


class Reporters(Reporter):
    """Several reporters, called in order."""

    def __init__(self, reporters: Sequence[Reporter]) -> None:
        self.reporters = list(reporters)

    def start(self, run: RunStart) -> None:
        for r in self.reporters:
            r.start(run)

    def epoch_start(self, epoch: int, epochs: int, steps: int) -> None:
        for r in self.reporters:
            r.epoch_start(epoch, epochs, steps)

    def step(self, epoch: int, step: int, steps: int, loss: float, accuracy: float) -> None:
        for r in self.reporters:
            r.step(epoch, step, steps, loss, accuracy)

    def epoch_end(self, record: dict[str, Any]) -> None:
        for r in self.reporters:
            r.epoch_end(record)

    def end(self, result: Any) -> None:
        for r in self.reporters:
            r.end(result)


def pct(x: float | None) -> str:
    return "  n/a" if x is None else f"{100 * x:5.2f}%"


class ConsoleReporter(Reporter):
    """Progress (a tqdm bar on a terminal, else a line every ``log_interval`` steps), one line
    per epoch and the final report. ``quiet`` keeps only the final report (and, for a run that
    diverged, the one-line error ``PROG: error: ...`` on ``err``)."""

    def __init__(self, *, quiet: bool = False, log_interval: int = 100,
                 out: TextIO | None = None, err: TextIO | None = None,
                 prog: str = "combonet train") -> None:
        self.quiet = quiet
        self.prog = prog
        self.log_interval = log_interval
        self.out = out if out is not None else sys.stdout
        self.err = err if err is not None else sys.stderr
        self.epochs = 0
        self.bar: Any = None

    def _print(self, *parts: Any) -> None:
        print(*parts, file=self.out, flush=True)

    def start(self, run: RunStart) -> None:
        self.epochs = run.config.epochs
        if self.quiet:
            return
        if run.resumed:
            self._print(f"resuming {run.run_dir} after epoch {run.start_epoch}")
        elif run.init_from is not None:
            self._print(f"starting {run.run_dir} from the final weights (epoch "
                        f"{run.init_from['epoch']}) of {run.init_from['run_dir']}")

    def epoch_start(self, epoch: int, epochs: int, steps: int) -> None:
        if self.quiet or not self.err.isatty():
            return
        from tqdm import tqdm

        self.bar = tqdm(total=steps, desc=f"epoch {epoch}/{epochs}", leave=False,
                        file=self.err)

    def step(self, epoch: int, step: int, steps: int, loss: float, accuracy: float) -> None:
        if self.quiet:
            return
        due = self.log_interval and step % self.log_interval == 0
        if self.bar is not None:
            self.bar.update(1)
            if due:
                self.bar.set_postfix(loss=f"{loss:.4f}", acc=f"{accuracy:.3f}")
        elif due:
            self._print(f"  epoch {epoch} step {step}/{steps} loss {loss:.4f} "
                        f"acc {accuracy:.4f}")

    def _close_bar(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def epoch_end(self, record: dict[str, Any]) -> None:
        self._close_bar()
        if self.quiet:
            return
        cert = ""
        if record.get("margin") is not None:
            cert = (f"  margin {record['margin']:.4f} "
                    f"{'certified' if record['certified'] else 'NOT certified'}")
        self._print(
            f"epoch {record['epoch']:3d}/{self.epochs}  train {record['train_loss'] or 0:.4f} "
            f"{pct(record['train_acc'])}  val {record['val_loss'] or math.nan:.4f} "
            f"{pct(record['val_acc'])}  test {pct(record['test_acc'])}  lr {record['lr']:.2e}"
            f"{cert}  {record['time']:.1f}s")

    def end(self, result: Any) -> None:
        self._close_bar()
        if result.status != "finished":
            print(f"{self.prog}: error: {result.message}", file=self.err, flush=True)
            return
        s = result.summary
        best, final = s["best"], s["final"]
        self._print(f"run directory: {result.run_dir}")
        self._print(f"parameters: {s['parameters']['total']:,} trainable")
        if best is not None:
            self._print(f"best validation epoch {best['epoch']}: val acc "
                        f"{pct(best['val_acc'])}, test acc {pct(best['test_acc'])}")
        if final is not None:
            self._print(f"final epoch {final['epoch']}: test acc {pct(final['test_acc'])} "
                        f"(wall time {s['wall_time_s']:.1f}s)")
        if result.certificate is not None:
            from ..certificate import Certificate

            self._print("certificate of the final weights:")
            for line in Certificate.from_dict(result.certificate).summary().splitlines():
                self._print(f"  {line}")


class CurvePlotter(Reporter):
    """Writes ``learning_curve.png`` (loss and accuracy per epoch) into the run directory."""

    def end(self, result: Any) -> None:
        if not result.history:
            return
        from .rundir import CURVE, RunDir

        title = f"{result.summary['config']['model']} on {result.summary['config']['task']}"
        try:
            RunDir(result.run_dir).write_bytes(CURVE, plot_curves(result.history, title))
        except OSError as err:  # the run itself is complete: a missing figure is no failure
            print(f"warning: {CURVE} was not written ({' '.join(str(err).split())}); the run "
                  "is complete", file=sys.stderr, flush=True)


def plot_curves(history: list[dict[str, Any]], title: str = "") -> bytes:
    """PNG bytes: loss and accuracy per epoch for the train, validation and test splits."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    epochs = [r["epoch"] for r in history]
    fig, (ax_l, ax_a) = plt.subplots(1, 2, figsize=(10, 4))
    for split in ("train", "val", "test"):
        loss = [np.nan if r[f"{split}_loss"] is None else r[f"{split}_loss"] for r in history]
        ax_l.plot(epochs, loss, marker=".", label=split)
        acc = [np.nan if r[f"{split}_acc"] is None else 100 * r[f"{split}_acc"] for r in history]
        ax_a.plot(epochs, acc, marker=".", label=split)
    ax_l.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_a.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for ax in (ax_l, ax_a):
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    return buf.getvalue()


__all__ = ["ConsoleReporter", "CurvePlotter", "Reporter", "Reporters", "RunStart",
           "plot_curves"]
