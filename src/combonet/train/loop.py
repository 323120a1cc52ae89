"""The training loop: train, validate and test every epoch; choose the model on validation only.

Files in the run directory (only rank 0 writes):

* ``config.json``   resolved config, fingerprint, data meta (incl. the permutation), parameters;
* ``checkpoint.pt`` last completed epoch (model/optimizer/scheduler, RNG states, history);
* ``best.pt``       weights of the epoch with the best validation accuracy;
* ``metrics.jsonl`` one JSON line per epoch (train/val/test loss and accuracy, lr, time, and
  the certificate's margin and verdict for combo nets);
* ``summary.json``, ``certificate.json`` (final weights), ``learning_curve.png``.

The test split is evaluated and logged every epoch but never used for any decision.
"""

from __future__ import annotations

import functools
import gc
import json
import math
import os
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..models.registry import build_model, count_parameters, is_combo
from . import checkpoint as ckpt
from . import distributed as ddp
from .config import TrainConfig

#: The loss; a module attribute so that tests can inject a failure.
loss_function: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy

METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
CONFIG = "config.json"
CERTIFICATE = "certificate.json"
CURVE = "learning_curve.png"


class TrainingDiverged(RuntimeError):
    """The loss or the weights became NaN/inf."""


@dataclass
class RunResult:
    """What :func:`train` returns: where the run lives, how it ended and its summary."""

    run_dir: Path
    status: str
    exit_code: int
    summary: dict[str, Any] = field(default_factory=dict)
    message: str = ""


# -- pieces --------------------------------------------------------------------------------
def lr_factor(epoch: int, *, schedule: str, epochs: int, step_size: int, gamma: float) -> float:
    """Learning-rate multiplier after ``epoch`` completed epochs (a pure function of the config,
    so a resumed run follows the same schedule)."""
    if schedule == "step":
        return gamma ** (epoch // step_size)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(epoch, epochs) / epochs))
    return 1.0


def make_optimizer(cfg: TrainConfig, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    """Adam (default), SGD with momentum, or RMSprop."""
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                               weight_decay=cfg.weight_decay)
    if cfg.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr=cfg.lr, momentum=cfg.momentum,
                                   weight_decay=cfg.weight_decay)
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def make_scheduler(cfg: TrainConfig, opt: torch.optim.Optimizer
                   ) -> torch.optim.lr_scheduler.LambdaLR:
    """``LambdaLR`` over :func:`lr_factor` (its state dict holds only numbers)."""
    fn = functools.partial(lr_factor, schedule=cfg.schedule, epochs=cfg.epochs,
                           step_size=cfg.lr_step_size, gamma=cfg.lr_gamma)
    return torch.optim.lr_scheduler.LambdaLR(opt, fn)


def load_data(cfg: TrainConfig, permutation: list[int] | None = None) -> Any:
    """The task's train/val/test splits (``permutation`` reuses a saved one)."""
    from ..data import load_task

    return load_task(cfg.task, cfg.data_dir, val_fraction=cfg.val_fraction, seed=cfg.seed,
                     permutation_seed=cfg.permutation_seed, permutation=permutation,
                     limit_train=cfg.limit_train, limit_test=cfg.limit_test)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _finite(x: float) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def evaluate(model: nn.Module, ds: Any, batch_size: int, device: torch.device,
             info: ddp.DistInfo | None = None) -> tuple[float, float]:
    """Mean cross-entropy and accuracy on ``ds`` (sharded over ranks, then all-reduced)."""
    info = info or ddp.DistInfo(device=device)
    model.eval()
    n = len(ds)
    idx = torch.arange(info.rank, n, info.world)
    loss_sum, correct = 0.0, 0.0
    with torch.no_grad():
        for start in range(0, len(idx), batch_size):
            sel = idx[start:start + batch_size]
            x, y = ds.inputs[sel].to(device), ds.labels[sel].to(device)
            logits = model(x)
            loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
            correct += float((logits.argmax(1) == y).sum())
    loss_sum, correct = ddp.all_reduce_sum([loss_sum, correct], info)
    return loss_sum / max(n, 1), correct / max(n, 1)


def certificate_of(model: nn.Module) -> Any:
    """``certify`` of a combo net's network with the step and map it runs (None otherwise)."""
    if not is_combo(model):
        return None
    from ..certificate import certify

    return certify(model.network, dt=model.dt, method=model.method)


def load_weights(model: nn.Module, path: Path) -> dict[str, Any]:
    """Load ``checkpoint.pt``/``best.pt`` weights into ``model``; return the file's contents."""
    data = ckpt.load(path)
    model.load_state_dict(data["model"])
    return data


def _params_finite(model: nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


def _default_run_dir(cfg: TrainConfig) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path("runs") / f"{cfg.task}-{cfg.model}-{stamp}"


def _pct(x: float | None) -> str:
    return "  n/a" if x is None else f"{100 * x:5.2f}%"


def _say(info: ddp.DistInfo, *parts: Any) -> None:
    if info.is_main:
        print(*parts, flush=True)


# -- the loop ------------------------------------------------------------------------------
class Trainer:
    """One run: set up data, model and optimiser, resume if asked, then loop over epochs."""

    def __init__(self, cfg: TrainConfig, *, resume: bool = False) -> None:
        self.cfg = cfg.validate()
        self.resume = resume
        self.info = ddp.setup(cfg.device)
        self.t0 = time.time()

    # setup --------------------------------------------------------------------------------
    def _threads(self) -> None:
        cfg, info = self.cfg, self.info
        if cfg.threads is not None:
            torch.set_num_threads(cfg.threads)
        elif info.enabled and info.device.type == "cpu":
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // info.world))

    def _run_dir(self) -> Path:
        cfg = self.cfg
        if self.resume and cfg.out_dir is None:
            raise ValueError("--resume needs --out-dir RUN_DIR (the run to continue)")
        run_dir = Path(cfg.out_dir) if cfg.out_dir is not None else _default_run_dir(cfg)
        run_dir = Path(str(ddp.broadcast_object(str(run_dir), self.info)))
        has_ckpt = (run_dir / ckpt.CHECKPOINT).is_file()
        if self.resume and not has_ckpt:
            raise ValueError(f"cannot resume: {run_dir / ckpt.CHECKPOINT} does not exist")
        if not self.resume and has_ckpt:
            raise ValueError(
                f"{run_dir} already holds a run; pass --resume to continue it or choose "
                "another --out-dir"
            )
        return run_dir

    def setup(self) -> None:
        cfg, info = self.cfg, self.info
        self._threads()
        if cfg.batch_size % info.world:
            raise ValueError(
                f"batch_size={cfg.batch_size} (the global batch) must be divisible by the "
                f"number of processes ({info.world})"
            )
        self.run_dir = self._run_dir()
        saved = None
        if self.resume:  # refuse an incompatible checkpoint before loading any data
            path = self.run_dir / ckpt.CHECKPOINT
            saved = ckpt.load(path)
            ckpt.check_compatible(saved, cfg.to_dict(), cfg.fingerprint(), path)
        self.data = load_data(cfg)
        seed_everything(cfg.seed)
        model = build_model(cfg, self.data.features, self.data.num_classes)
        self.model = model.to(info.device)
        self.params = count_parameters(self.model)
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = make_optimizer(cfg, trainable)
        self.scheduler = make_scheduler(cfg, self.optimizer)
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None
        self.start_epoch = 0
        self.prior_time = 0.0
        if saved is not None:
            self._restore(saved)
        if info.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            ckpt.atomic_write_json(self.run_dir / CONFIG, self.config_record())
            lines = "".join(json.dumps(r) + "\n" for r in self.history)
            ckpt.atomic_write_text(self.run_dir / METRICS, lines)
        self.net: nn.Module = ddp.wrap(self.model, info)
        self._make_loader()

    def close(self) -> None:
        """Drop the DDP wrapper, then leave the process group the wrapper uses."""
        self.__dict__.pop("net", None)
        gc.collect()
        ddp.teardown(self.info)

    def _make_loader(self) -> None:
        from torch.utils.data.distributed import DistributedSampler

        from ..data import make_loader

        cfg, info = self.cfg, self.info
        self.sampler = DistributedSampler(self.data.train, num_replicas=info.world,
                                          rank=info.rank, shuffle=True, seed=cfg.seed)
        self.loader = make_loader(self.data.train, cfg.batch_size // info.world, shuffle=False,
                                  seed=cfg.seed, sampler=self.sampler)

    def config_record(self) -> dict[str, Any]:
        from .. import __version__

        return {"config": self.cfg.to_dict(), "fingerprint": self.cfg.fingerprint(),
                "data": self.data.meta, "parameters": self.params,
                "world_size": self.info.world, "combonet_version": __version__,
                "torch_version": torch.__version__}

    def _restore(self, data: dict[str, Any]) -> None:
        self.model.load_state_dict(data["model"])
        self.optimizer.load_state_dict(data["optimizer"])
        self.scheduler.load_state_dict(data["scheduler"])
        self.start_epoch = int(data["epoch"])
        self.history = list(data["history"])
        self.best = data["best"]
        self.prior_time = float(data.get("wall_time", 0.0))
        ckpt.set_rng_state(data["rng"])
        _say(self.info, f"resuming {self.run_dir} after epoch {self.start_epoch}")

    # epochs -------------------------------------------------------------------------------
    def train_epoch(self, epoch: int) -> tuple[float, float]:
        from tqdm import tqdm

        cfg, info = self.cfg, self.info
        self.net.train()
        self.sampler.set_epoch(epoch)
        show = info.is_main and not cfg.quiet
        bar = tqdm(total=len(self.loader), desc=f"epoch {epoch}/{cfg.epochs}", leave=False,
                   disable=not (show and sys.stderr.isatty()), file=sys.stderr)
        loss_sum, correct, count = 0.0, 0.0, 0.0
        params = [p for p in self.model.parameters() if p.requires_grad]
        for step, (x, y) in enumerate(self.loader, 1):
            x, y = x.to(info.device), y.to(info.device)
            self.optimizer.zero_grad(set_to_none=True)
            logits = self.net(x)
            loss = loss_function(logits, y)
            if ddp.any_rank(not bool(torch.isfinite(loss)), info):
                bar.close()
                value = float(loss.detach())
                raise TrainingDiverged(f"the training loss became {value} at epoch {epoch}, "
                                       f"step {step}")
            loss.backward()
            if cfg.grad_clip is not None:
                nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            self.optimizer.step()
            n = y.shape[0]
            loss_sum += float(loss.detach()) * n
            correct += float((logits.detach().argmax(1) == y).sum())
            count += n
            bar.update(1)
            if cfg.log_interval and step % cfg.log_interval == 0:
                bar.set_postfix(loss=f"{loss_sum / count:.4f}", acc=f"{correct / count:.3f}")
                if show and bar.disable:
                    print(f"  epoch {epoch} step {step}/{len(self.loader)} "
                          f"loss {loss_sum / count:.4f} acc {correct / count:.4f}", flush=True)
        bar.close()
        loss_sum, correct, count = ddp.all_reduce_sum([loss_sum, correct, count], info)
        return loss_sum / max(count, 1), correct / max(count, 1)

    def run_epoch(self, epoch: int) -> dict[str, Any]:
        cfg, info = self.cfg, self.info
        t = time.time()
        lr = self.optimizer.param_groups[0]["lr"]
        train_loss, train_acc = self.train_epoch(epoch)
        if ddp.any_rank(not _params_finite(self.model), info):
            raise TrainingDiverged(f"the weights became NaN/inf in epoch {epoch}")
        self.scheduler.step()
        bs = max(256, cfg.batch_size)
        val_loss, val_acc = evaluate(self.model, self.data.val, bs, info.device, info)
        test_loss, test_acc = evaluate(self.model, self.data.test, bs, info.device, info)
        record: dict[str, Any] = {
            "epoch": epoch, "train_loss": _finite(train_loss), "train_acc": train_acc,
            "val_loss": _finite(val_loss), "val_acc": val_acc,
            "test_loss": _finite(test_loss), "test_acc": test_acc, "lr": lr,
        }
        if is_combo(self.model):
            record["certified"], record["margin"] = None, None
            due = cfg.certify_every and (epoch % cfg.certify_every == 0 or epoch == cfg.epochs)
            if due and info.is_main:
                cert = certificate_of(self.model)
                self._last_cert = (epoch, cert)
                record["certified"], record["margin"] = cert.certified, _finite(cert.margin)
        record["time"] = time.time() - t
        return record

    def _save(self, epoch: int) -> None:
        if not self.info.is_main:
            return
        wall = self.prior_time + (time.time() - self.t0)
        state = {
            "format": ckpt.FORMAT, "epoch": epoch, "fingerprint": self.cfg.fingerprint(),
            "config": self.cfg.to_dict(), "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "best": self.best, "history": self.history, "rng": ckpt.rng_state(),
            "wall_time": wall,
        }
        ckpt.atomic_save(state, self.run_dir / ckpt.CHECKPOINT)

    def _save_best(self, epoch: int) -> None:
        if self.info.is_main:
            ckpt.atomic_save({"format": ckpt.FORMAT, "epoch": epoch,
                              "fingerprint": self.cfg.fingerprint(),
                              "config": self.cfg.to_dict(), "model": self.model.state_dict()},
                             self.run_dir / ckpt.BEST)

    def _improved(self, rec: dict[str, Any]) -> bool:
        if self.best is None:
            return True
        if rec["val_acc"] != self.best["val_acc"]:
            return rec["val_acc"] > self.best["val_acc"]
        return (rec["val_loss"] or math.inf) < (self.best["val_loss"] or math.inf)

    def _log(self, rec: dict[str, Any]) -> None:
        if not self.info.is_main or self.cfg.quiet:
            return
        cert = ""
        if rec.get("margin") is not None:
            cert = (f"  margin {rec['margin']:.4f} "
                    f"{'certified' if rec['certified'] else 'NOT certified'}")
        print(f"epoch {rec['epoch']:3d}/{self.cfg.epochs}  train {rec['train_loss'] or 0:.4f} "
              f"{_pct(rec['train_acc'])}  val {rec['val_loss'] or math.nan:.4f} "
              f"{_pct(rec['val_acc'])}  test {_pct(rec['test_acc'])}  lr {rec['lr']:.2e}"
              f"{cert}  {rec['time']:.1f}s", flush=True)

    def loop(self) -> RunResult:
        info = self.info
        for epoch in range(self.start_epoch + 1, self.cfg.epochs + 1):
            rec = self.run_epoch(epoch)
            self.history.append(rec)
            if self._improved(rec):
                self.best = {k: rec[k] for k in ("epoch", "val_acc", "val_loss", "test_acc")}
                self._save_best(epoch)
            self._save(epoch)
            if info.is_main:
                with open(self.run_dir / METRICS, "a") as fh:
                    fh.write(json.dumps(rec) + "\n")
            self._log(rec)
        ddp.barrier(info)
        return self.finish("finished")

    # the end ------------------------------------------------------------------------------
    def finish(self, status: str, message: str = "") -> RunResult:
        info = self.info
        summary: dict[str, Any] = {}
        if info.is_main:
            summary = self.write_summary(status, message)
        code = 0 if status == "finished" else 1
        return RunResult(self.run_dir, status, code, summary, message)

    def write_summary(self, status: str, message: str) -> dict[str, Any]:
        final = self.history[-1] if self.history else None
        best = None
        if self.best is not None:
            best = next(r for r in self.history if r["epoch"] == self.best["epoch"])
        cert = None
        if status == "finished" and is_combo(self.model):
            last = getattr(self, "_last_cert", None)
            done = self.history[-1]["epoch"] if self.history else None
            c = last[1] if last is not None and last[0] == done else certificate_of(self.model)
            cert = c.to_dict()
            ckpt.atomic_write_json(self.run_dir / CERTIFICATE, cert)
        summary = {
            "status": status, "message": message,
            "epochs_completed": len(self.history), "epochs": self.cfg.epochs,
            "final": final, "best": best,
            "best_epoch": None if best is None else best["epoch"],
            "parameters": self.params,
            "wall_time_s": self.prior_time + (time.time() - self.t0),
            "certificate": None if cert is None else {
                "certified": cert["certified"], "margin": _finite(cert["margin"]),
                "rate": cert["rate"], "discrete_factor": cert["discrete_factor"]},
            "world_size": self.info.world, "device": str(self.info.device),
            "config": self.cfg.to_dict(), "data": self.data.meta,
        }
        ckpt.atomic_write_json(self.run_dir / SUMMARY, summary)
        if self.history:
            plot_curves(self.history, self.run_dir / CURVE,
                        f"{self.cfg.model} on {self.cfg.task}")
        self.certificate = cert
        return summary


def plot_curves(history: list[dict[str, Any]], path: Path, title: str = "") -> None:
    """Loss and accuracy per epoch for the train, validation and test splits."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in history]
    fig, (ax_l, ax_a) = plt.subplots(1, 2, figsize=(10, 4))
    for split in ("train", "val", "test"):
        loss = [np.nan if r[f"{split}_loss"] is None else r[f"{split}_loss"] for r in history]
        ax_l.plot(epochs, loss, marker=".", label=split)
        ax_a.plot(epochs, [100 * r[f"{split}_acc"] for r in history], marker=".", label=split)
    ax_l.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    ax_a.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for ax in (ax_l, ax_a):
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)


def train(cfg: TrainConfig, *, resume: bool = False) -> RunResult:
    """Run (or resume) one training run; see the module docstring for the files it writes."""
    trainer = Trainer(cfg, resume=resume)
    try:
        trainer.setup()
        try:
            result = trainer.loop()
        except TrainingDiverged as err:
            last = trainer.history[-1]["epoch"] if trainer.history else None
            kept = (f"the last good checkpoint (epoch {last}) is kept in {trainer.run_dir}"
                    if last else "no epoch completed, so there is no checkpoint")
            msg = f"{err}; stopping. {kept}. Lower --lr or set --grad-clip."
            if trainer.info.is_main:
                print(f"combonet train: error: {msg}", file=sys.stderr, flush=True)
            result = trainer.finish("diverged", msg)
        if trainer.info.is_main and result.status == "finished":
            report(trainer, result)
        # Ranks leave together: none tears the group down while rank 0 still writes its files.
        ddp.barrier(trainer.info)
        return result
    finally:
        trainer.close()


def report(trainer: Trainer, result: RunResult) -> None:
    """Print the outcome: test accuracy (best-validation and final epoch) and the certificate."""
    s = result.summary
    best, final = s["best"], s["final"]
    print(f"run directory: {result.run_dir}")
    print(f"parameters: {s['parameters']['total']:,} trainable")
    print(f"best validation epoch {best['epoch']}: val acc {_pct(best['val_acc'])}, "
          f"test acc {_pct(best['test_acc'])}")
    print(f"final epoch {final['epoch']}: test acc {_pct(final['test_acc'])} "
          f"(wall time {s['wall_time_s']:.1f}s)")
    cert = getattr(trainer, "certificate", None)
    if cert is not None:
        from ..certificate import Certificate

        print("certificate of the final weights:")
        for line in Certificate.from_dict(cert).summary().splitlines():
            print(f"  {line}")


__all__ = ["CERTIFICATE", "CONFIG", "CURVE", "METRICS", "SUMMARY", "RunResult", "Trainer",
           "TrainingDiverged", "certificate_of", "evaluate", "load_data", "load_weights",
           "lr_factor", "make_optimizer", "make_scheduler", "plot_curves", "train"]
