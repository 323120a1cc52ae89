"""The training loop: train, validate and test every epoch; choose the model on validation only.

:func:`train` prints nothing: what a user sees comes from the reporter passed in
(:mod:`.reporting`; the command line attaches one). The files of a run and their integrity are
:class:`~combonet.train.rundir.RunDir`'s job. The loss and the accuracy are arguments:
``loss_fn(outputs, targets) -> scalar tensor`` (the mean over what the batch holds) and
``metric_fn(outputs, targets) -> (correct, count)``; the epoch's loss is the mean of the batch
losses weighted by ``count``, its accuracy ``sum(correct) / sum(count)``. The defaults are
cross-entropy and top-1 accuracy of one label per sequence.

The test split is evaluated and logged every epoch but never used for any decision.

Trial tasks (``neurogym:ID``, ``synthetic[:K]``; :mod:`combonet.data.trials`) run through the
same loop: fresh seeded training trials every epoch, targets packed per step, the masked
per-step loss and NeuroGym's performance measure as ``loss_fn``/``metric_fn`` (the data's own
unless given), and validation/test scored per task (:func:`evaluate_split`; the epoch records
gain ``val_per_task``/``test_per_task``).
"""

from __future__ import annotations

import contextlib
import functools
import gc
import math
import random
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .._validate import positive_int
from ..models.registry import build_model, count_parameters, is_combo, model_spec
from . import distributed as ddp
from .checkpoint import FORMAT, CheckpointError, rng_state, set_rng_state
from .config import INIT_FROM_FIELDS, TrainConfig
from .reporting import Reporter, RunStart
from .rundir import (
    BEST,
    CHECKPOINT,
    CONFIG,
    RunDir,
    RunDirError,
    RunDirWriteError,
    config_differences,
    load_state,
)

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
MetricFn = Callable[[torch.Tensor, torch.Tensor], tuple[float, float]]


class TrainingDiverged(RuntimeError):
    """The loss or the weights became NaN/inf."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C during a run: where it lives and whether ``--resume`` can continue it."""

    def __init__(self, run_dir: Path | None, resumable: bool) -> None:
        super().__init__(str(run_dir))
        self.run_dir = run_dir
        self.resumable = resumable

    def hint(self) -> str:
        """One line: the command that continues the run, or why there is none."""
        if self.run_dir is not None and self.resumable:
            return ("interrupted; continue with: combonet train --resume --out-dir "
                    f"{shlex.quote(str(self.run_dir))}")
        return "interrupted before the run's first checkpoint; nothing was kept"


@dataclass
class RunResult:
    """What :func:`train` returns: where the run lives, how it ended and its records."""

    run_dir: Path
    status: str
    exit_code: int
    summary: dict[str, Any] = field(default_factory=dict)
    message: str = ""
    certificate: dict[str, Any] | None = None
    history: list[dict[str, Any]] = field(default_factory=list)


# -- pieces --------------------------------------------------------------------------------
def cross_entropy(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """The default loss: mean cross-entropy of one label per sequence."""
    return F.cross_entropy(outputs, targets)


def accuracy(outputs: torch.Tensor, targets: torch.Tensor) -> tuple[float, float]:
    """The default metric: ``(correct, count)`` of top-1 predictions."""
    return float((outputs.argmax(-1) == targets).sum()), float(targets.numel())


def lr_factor(epoch: int, *, schedule: str, epochs: int, step_size: int, gamma: float) -> float:
    """Learning-rate multiplier after ``epoch`` completed epochs (a pure function of the config,
    so a resumed run follows the same schedule)."""
    if schedule == "step":
        return gamma ** (epoch // step_size)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(epoch, epochs) / epochs))
    return 1.0


def make_optimizer(cfg: TrainConfig, params: list[nn.Parameter]) -> torch.optim.Optimizer:
    """Adam (default), SGD with momentum, or RMSprop (:data:`~.config.OPTIMIZERS`)."""
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
    """The task's train/val/test splits (``permutation`` reuses a saved one); for a trial task
    a :class:`~combonet.data.trials.TrialData` (fresh training trials every epoch)."""
    from ..data import is_trial_task, load_task

    if is_trial_task(cfg.task):
        from ..data.trials import load_trial_data

        return load_trial_data(cfg.task, seed=cfg.seed, epoch_trials=cfg.epoch_trials,
                               val_trials=cfg.val_trials, test_trials=cfg.test_trials,
                               other_weight=cfg.other_weight)
    return load_task(cfg.task, cfg.data_dir, val_fraction=cfg.val_fraction, seed=cfg.seed,
                     permutation_seed=cfg.permutation_seed, permutation=permutation,
                     limit_train=cfg.limit_train, limit_test=cfg.limit_test)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def evaluate(model: nn.Module, ds: Any, batch_size: int, device: torch.device,
             info: ddp.DistInfo | None = None, *, loss_fn: LossFn = cross_entropy,
             metric_fn: MetricFn = accuracy) -> tuple[float, float]:
    """Mean loss and accuracy on ``ds`` (sharded over ranks, then all-reduced).

    The same forward pass as training, without autograd (``torch.inference_mode``); a combo
    net's snapshot (``W``, ``L``, the Cayley matrix: one ``N x N`` solve) is built once per call
    instead of once per batch, as the weights do not change while evaluating
    (benchmarks/README.md, "Time outside training steps")."""
    positive_int("batch_size", batch_size)
    info = info or ddp.DistInfo(device=device)
    model.eval()
    idx = torch.arange(info.rank, len(ds), info.world)
    loss_sum, correct, count = 0.0, 0.0, 0.0
    hold = getattr(model, "one_snapshot", None)  # combo nets: one snapshot for all batches
    with torch.inference_mode(), \
            (hold() if hold is not None and len(idx) > batch_size else contextlib.nullcontext()):
        for start in range(0, len(idx), batch_size):
            sel = idx[start:start + batch_size]
            x, y = ds.inputs[sel].to(device), ds.labels[sel].to(device)
            out = model(x)
            c, n = metric_fn(out, y)
            loss_sum += float(loss_fn(out, y)) * n
            correct += c
            count += n
    loss_sum, correct, count = ddp.all_reduce_sum([loss_sum, correct, count], info)
    return loss_sum / max(count, 1), correct / max(count, 1)


def evaluate_split(model: nn.Module, data: Any, split: str, batch_size: int,
                   device: torch.device, info: ddp.DistInfo | None = None, *,
                   loss_fn: LossFn | None = None, metric_fn: MetricFn | None = None
                   ) -> tuple[float, float, dict[str, float] | None]:
    """Loss, accuracy and (trial tasks) accuracy per task of ``model`` on ``data.<split>``.

    Sequence tasks: :func:`evaluate` with ``loss_fn``/``metric_fn`` (per task: None). Trial
    tasks: :func:`~combonet.models.perstep.evaluate_trials` (the masked per-step loss weighted
    by ``data.<split>.other_weight``, NeuroGym's performance measure, per task), every rank on
    every trial (the sets are small)."""
    ds = getattr(data, split)
    if not getattr(data, "per_step", False):
        fns = {"loss_fn": loss_fn or cross_entropy, "metric_fn": metric_fn or accuracy}
        loss, acc = evaluate(model, ds, batch_size, device, info, **fns)
        return loss, acc, None
    from ..models.perstep import evaluate_trials

    positive_int("batch_size", batch_size)
    loss, perf = evaluate_trials(model, ds.on(device), batch_size=batch_size,
                                 other_weight=ds.other_weight)
    return loss, perf.accuracy, dict(perf.per_task)


def certificate_of(model: nn.Module, max_dt: bool = True) -> Any:
    """``certify`` of a combo net's network with the step and map it runs (None otherwise);
    ``max_dt=False`` skips the search for the largest covered step (per-epoch checks)."""
    if not is_combo(model):
        return None
    from ..certificate import certify

    return certify(model.network, dt=model.dt, method=model.method, max_dt=max_dt)


def _params_finite(model: nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in model.parameters())


# -- the loop ------------------------------------------------------------------------------
class Trainer:
    """One run, fully set up by the constructor: the run directory claimed (and locked), data
    loaded, model built (restored on ``resume``, or initialised from ``cfg.init_from``),
    optimiser, schedule and loader ready. :meth:`loop` trains; :meth:`close` releases."""

    def __init__(self, cfg: TrainConfig, *, resume: bool = False,
                 reporter: Reporter | None = None, loss_fn: LossFn | None = None,
                 metric_fn: MetricFn | None = None) -> None:
        self.cfg = cfg.validate()
        self.resume = resume
        self.reporter = reporter if reporter is not None else Reporter()
        self.loss_fn = loss_fn
        self.metric_fn = metric_fn
        self.info = ddp.setup(cfg.device)
        self.t0 = time.time()
        self.rundir: RunDir | None = None
        self.created_dir = False
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None
        self.start_epoch = 0
        self.prior_time = 0.0
        self.init_from: dict[str, Any] | None = None
        self.last_certificate: tuple[int, Any] | None = None
        self.certificate: dict[str, Any] | None = None
        self.net: nn.Module | None = None
        self.threads_used: int | None = None
        self.per_step = False  # a trial task (set when the data is loaded)
        try:
            self._set_threads()
            self._check_batch()
            saved = None
            if resume:  # refuse an incompatible checkpoint before loading any data
                self.rundir = self._claim(existing=True)
                saved = self._saved_state()
            source = self._source_weights() if cfg.init_from and not resume else None
            self.data = load_data(cfg)
            self.per_step = bool(getattr(self.data, "per_step", False))
            # the task's own loss and metric unless given (per-step: masked loss, NeuroGym's
            # performance measure; else cross-entropy and top-1 accuracy)
            if self.loss_fn is None:
                self.loss_fn = self.data.loss_fn if self.per_step else cross_entropy
            if self.metric_fn is None:
                self.metric_fn = self.data.metric_fn if self.per_step else accuracy
            seed_everything(cfg.seed)
            model = build_model(cfg, self.data.features, self.data.num_classes)
            if source is not None:
                load_state(model, source["model"], Path(cfg.init_from) / CHECKPOINT)
            self.model = model.to(self.info.device)
            self._set_threads(self.model)
            self.params = count_parameters(self.model)
            self.trainable = [p for p in self.model.parameters() if p.requires_grad]
            self.optimizer = make_optimizer(cfg, self.trainable)
            self.scheduler = make_scheduler(cfg, self.optimizer)
            if saved is not None:
                self._restore(saved)
            if not resume:  # every refusal from bad input came before this: nothing written
                self.rundir = self._claim(existing=False)
            self._write_start()
            self.net = ddp.wrap(self.model, self.info)
            self.sampler, self.loader = self._make_loader()
        except BaseException:
            self._abandon()
            raise

    # setup --------------------------------------------------------------------------------
    @property
    def run_dir(self) -> Path:
        if self.rundir is None:
            raise RunDirError("internal error: the run directory is not claimed yet")
        return self.rundir.path

    def _set_threads(self, model: nn.Module | None = None) -> None:
        """A given ``--threads`` count at once; ``auto`` (the default) by the rule of
        :mod:`combonet.threads` once the model is built (1 until then), per process."""
        from .. import threads

        cfg, info = self.cfg, self.info
        if threads.parse_threads(cfg.threads) is not None:
            if model is None:
                torch.set_num_threads(int(cfg.threads))
            return
        if model is None:
            torch.set_num_threads(1)
            return
        net = getattr(model, "network", None)
        units = net.n if net is not None else int(getattr(cfg, "hidden", 1))
        cores = max(1, threads.available_cores() // info.world)
        self.threads_used = threads.apply_threads(
            "auto", units=units, batch=max(1, cfg.batch_size // info.world), cores=cores,
            rank=threads.running_rank(model))

    def _check_batch(self) -> None:
        if self.cfg.batch_size % self.info.world:
            raise ValueError(
                f"batch_size={self.cfg.batch_size} (the global batch) must be divisible by the "
                f"number of processes ({self.info.world})"
            )

    def _claim(self, *, existing: bool) -> RunDir:
        """Rank 0 claims (locks) the directory; every rank learns its path or the refusal."""
        cfg, info = self.cfg, self.info
        if existing and cfg.out_dir is None:
            raise RunDirError("--resume needs --out-dir RUN_DIR (the run to continue)")
        rundir, error = None, None
        if info.is_main:
            try:
                if cfg.out_dir is None:
                    rundir = RunDir.unique("runs", f"{cfg.task}-{cfg.model}")
                    self.created_dir = True
                else:
                    rundir = RunDir(cfg.out_dir)
                    self.created_dir = not existing and not rundir.path.exists()
                if existing:
                    rundir.claim_existing()
                else:
                    rundir.claim_new()
            except Exception as err:
                error = err
                if cfg.out_dir is None and rundir is not None:
                    rundir.abandon(created=True)
        path, text = ddp.broadcast_object(
            (None if rundir is None else str(rundir.path), None if error is None else str(error)),
            info)
        if error is not None:
            raise error
        if text is not None:
            raise RunDirError(text)
        return rundir if rundir is not None else RunDir(path)

    def _saved_state(self) -> dict[str, Any]:
        """The verified last checkpoint, refused when it is from other settings (``epochs``
        included under the cosine schedule) or already past ``epochs``."""
        rundir, cfg = self.rundir, self.cfg
        path = rundir.file(CHECKPOINT)
        data = rundir.load_checkpoint(CHECKPOINT)
        if data.get("fingerprint") != cfg.fingerprint():
            detail, diffs = config_differences(data, cfg, ("checkpoint", "now"))
            hint = "use the same settings to resume, or a new --out-dir"
            if "epochs" in diffs:
                hint = ("the cosine schedule depends on epochs, so a run cannot be resumed "
                        "with other epochs; to train longer, start a new run from its final "
                        f"weights: combonet train --init-from {shlex.quote(str(rundir.path))} "
                        "--epochs N")
            raise CheckpointError(f"checkpoint {path} was written by a different "
                                  f"configuration: {detail}; {hint}")
        if data["epoch"] > cfg.epochs:
            raise RunDirError(f"cannot resume with epochs={cfg.epochs}: {rundir.path} has "
                              f"already completed {data['epoch']} epochs")
        if data["epoch"] == cfg.epochs and rundir.status() == "finished":
            more = ("" if cfg.schedule == "cosine" else "resume with a larger --epochs, or ")
            raise RunDirError(f"{rundir.path} has already finished its {cfg.epochs} epochs; "
                              f"nothing to resume (to train longer, {more}start a new run from "
                              f"its weights: combonet train --init-from "
                              f"{shlex.quote(str(rundir.path))} --epochs N)")
        return data

    def _source_weights(self) -> dict[str, Any]:
        """The verified final weights of the finished run ``cfg.init_from``."""
        cfg = self.cfg
        source = RunDir(cfg.init_from)
        record = source.record()
        if not source.is_finished():
            status = source.status() or "not finished"
            raise RunDirError(f"--init-from {source.path}: that run is {status}; start from a "
                              "finished run (continue an unfinished one with --resume)")
        src_cfg = source.config(record)
        keep = [*INIT_FROM_FIELDS, *sorted(model_spec(cfg.model).flags)]
        diffs = [k for k in keep if getattr(src_cfg, k) != getattr(cfg, k)]
        if diffs:
            detail = ", ".join(f"{k}={getattr(src_cfg, k)!r} (source) vs {getattr(cfg, k)!r} "
                               "(now)" for k in diffs)
            raise RunDirError(f"--init-from {source.path} keeps the source run's model and "
                              f"data: {detail}")
        data = source.load_checkpoint(CHECKPOINT)
        if data.get("fingerprint") != src_cfg.fingerprint():
            detail, _ = config_differences(data, src_cfg, (CHECKPOINT, CONFIG))
            raise CheckpointError(f"{source.file(CHECKPOINT)} was written by a different "
                                  f"configuration than its config.json: {detail}")
        self.init_from = {"run_dir": str(source.path), "weights": "final",
                          "epoch": int(data["epoch"]), "fingerprint": data["fingerprint"],
                          "sha256": source.verified_digest(CHECKPOINT)}
        return data

    def _restore(self, data: dict[str, Any]) -> None:
        self.model.load_state_dict(data["model"])
        self.optimizer.load_state_dict(data["optimizer"])
        self.scheduler.load_state_dict(data["scheduler"])
        self.start_epoch = int(data["epoch"])
        self.history = list(data["history"])
        self.best = data["best"]
        self.prior_time = float(data.get("wall_time", 0.0))
        set_rng_state(data["rng"])

    def _write_start(self) -> None:
        """``config.json`` and ``metrics.jsonl``; a new run also its epoch-0 checkpoint (the
        initial weights and RNG state), so ``--resume`` works from the first epoch on."""
        if not self.info.is_main:
            return
        self.rundir.write_config(self.config_record())
        self.rundir.write_metrics(self.history)
        if not self.resume:
            self._save(0)

    def _abandon(self) -> None:
        """After a failed construction: undo a new run that never got a checkpoint; release."""
        if self.rundir is not None:
            if not self.resume and self.info.is_main:
                self.rundir.abandon(self.created_dir)
            self.rundir.release()
        self.net = None
        ddp.teardown(self.info)

    def close(self) -> None:
        """Drop the DDP wrapper, leave the process group the wrapper uses, release the lock."""
        self.net = None
        gc.collect()
        ddp.teardown(self.info)
        if self.rundir is not None:
            self.rundir.release()

    def _make_loader(self) -> tuple[Any, Any]:
        from torch.utils.data.distributed import DistributedSampler

        from ..data import make_loader

        cfg, info = self.cfg, self.info
        sampler = DistributedSampler(self.data.train, num_replicas=info.world, rank=info.rank,
                                     shuffle=True, seed=cfg.seed)
        if self.per_step:  # fresh trials every epoch (train_epoch), batches trimmed
            from torch.utils.data import DataLoader

            from ..data.trials import collate_trials

            generator = torch.Generator().manual_seed(cfg.seed)
            loader = DataLoader(self.data.train, batch_size=cfg.batch_size // info.world,
                                sampler=sampler, collate_fn=collate_trials, num_workers=0,
                                generator=generator)
            return sampler, loader
        loader = make_loader(self.data.train, cfg.batch_size // info.world, shuffle=False,
                             seed=cfg.seed, sampler=sampler)
        return sampler, loader

    def config_record(self) -> dict[str, Any]:
        from .. import __version__

        record = {"config": self.cfg.to_dict(), "fingerprint": self.cfg.fingerprint(),
                  "data": self.data.meta, "parameters": self.params,
                  "init_from": self.init_from, "world_size": self.info.world,
                  "combonet_version": __version__, "torch_version": torch.__version__}
        area_map = getattr(self.model, "area_map", None)
        if area_map is not None:  # where every area and pathway lives (for people)
            record["area_map"] = area_map.to_dict()
        return record

    # epochs -------------------------------------------------------------------------------
    def train_epoch(self, epoch: int) -> tuple[float, float]:
        cfg, info = self.cfg, self.info
        self.net.train()
        self.sampler.set_epoch(epoch)
        if self.per_step:
            self.data.new_epoch(epoch)  # this epoch's fresh trials (seed and epoch decide)
        steps = len(self.loader)
        if info.is_main:
            self.reporter.epoch_start(epoch, cfg.epochs, steps)
        loss_sum, correct, count = 0.0, 0.0, 0.0
        for step, (x, y) in enumerate(self.loader, 1):
            x, y = x.to(info.device), y.to(info.device)
            self.optimizer.zero_grad(set_to_none=True)
            out = self.net(x)
            loss = self.loss_fn(out, y)
            if ddp.any_rank(not bool(torch.isfinite(loss)), info):
                value = float(loss.detach())
                raise TrainingDiverged(f"the training loss became {value} at epoch {epoch}, "
                                       f"step {step}")
            loss.backward()
            if cfg.grad_clip is not None:
                nn.utils.clip_grad_norm_(self.trainable, cfg.grad_clip)
            self.optimizer.step()
            c, n = self.metric_fn(out.detach(), y)
            loss_sum += float(loss.detach()) * n
            correct += c
            count += n
            if info.is_main:
                self.reporter.step(epoch, step, steps, loss_sum / max(count, 1),
                                   correct / max(count, 1))
        loss_sum, correct, count = ddp.all_reduce_sum([loss_sum, correct, count], info)
        return loss_sum / max(count, 1), correct / max(count, 1)

    def run_epoch(self, epoch: int) -> dict[str, Any]:
        cfg, info = self.cfg, self.info
        t = time.time()
        lr = self.optimizer.param_groups[0]["lr"]
        train_loss, train_acc = self.train_epoch(epoch)
        t_train = time.time()
        if ddp.any_rank(not _params_finite(self.model), info):
            raise TrainingDiverged(f"the weights became NaN/inf in epoch {epoch}")
        self.scheduler.step()
        bs = max(256, cfg.batch_size)
        fns = {"loss_fn": self.loss_fn, "metric_fn": self.metric_fn}
        val_loss, val_acc, val_tasks = evaluate_split(self.model, self.data, "val", bs,
                                                      info.device, info, **fns)
        test_loss = test_acc = test_tasks = None
        # the test split is never used for a decision; by default it is evaluated only where
        # it is reported: at every new best validation epoch and at the last epoch
        if cfg.eval_test == "every" or epoch == cfg.epochs or \
                self._improved({"val_acc": val_acc, "val_loss": _finite(val_loss)}):
            test_loss, test_acc, test_tasks = evaluate_split(self.model, self.data, "test", bs,
                                                             info.device, info, **fns)
        t_eval = time.time()
        record: dict[str, Any] = {
            "epoch": epoch, "train_loss": _finite(train_loss), "train_acc": train_acc,
            "val_loss": _finite(val_loss), "val_acc": val_acc,
            "test_loss": None if test_loss is None else _finite(test_loss),
            "test_acc": test_acc, "lr": lr,
        }
        if self.per_step:  # NeuroGym's performance per task (validation; test where run)
            record["val_per_task"], record["test_per_task"] = val_tasks, test_tasks
        if is_combo(self.model):
            record["certified"], record["margin"] = None, None
            due = cfg.certify_every and (epoch % cfg.certify_every == 0 or epoch == cfg.epochs)
            if due and info.is_main:
                cert = certificate_of(self.model, max_dt=False)
                self.last_certificate = (epoch, cert)
                record["certified"], record["margin"] = cert.certified, _finite(cert.margin)
        end = time.time()
        # where an epoch's time goes (train steps, validation + test, certificate)
        record["time_train"], record["time_eval"] = t_train - t, t_eval - t_train
        record["time_certify"] = end - t_eval
        record["time"] = end - t
        return record

    def _save(self, epoch: int) -> None:
        if not self.info.is_main:
            return
        wall = self.prior_time + (time.time() - self.t0)
        state = {
            "format": FORMAT, "epoch": epoch, "fingerprint": self.cfg.fingerprint(),
            "config": self.cfg.to_dict(), "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "best": self.best, "history": self.history, "rng": rng_state(),
            "wall_time": wall,
        }
        self.rundir.save_checkpoint(CHECKPOINT, state)

    def _save_best(self, epoch: int) -> None:
        if self.info.is_main:
            self.rundir.save_checkpoint(BEST, {
                "format": FORMAT, "epoch": epoch, "fingerprint": self.cfg.fingerprint(),
                "config": self.cfg.to_dict(), "model": self.model.state_dict()})

    def _improved(self, rec: dict[str, Any]) -> bool:
        if self.best is None:
            return True
        if rec["val_acc"] != self.best["val_acc"]:
            return rec["val_acc"] > self.best["val_acc"]
        return (rec["val_loss"] or math.inf) < (self.best["val_loss"] or math.inf)

    def begin(self) -> None:
        """Tell the reporter the run starts (what :meth:`loop` does first)."""
        if self.info.is_main:
            self.reporter.start(RunStart(self.run_dir, self.cfg, self.params, self.start_epoch,
                                         self.resume, self.init_from))

    def next_epoch(self) -> int | None:
        """The epoch :meth:`advance` trains next, or ``None`` when all are done."""
        done = self.history[-1]["epoch"] if self.history else self.start_epoch
        return done + 1 if done < self.cfg.epochs else None

    def advance(self) -> dict[str, Any]:
        """Train, evaluate and certify one epoch, then save its checkpoint (and ``best.pt`` at a
        new best validation accuracy); returns the epoch's record. Raises
        :class:`TrainingDiverged` when the loss or the weights stop being finite."""
        epoch = self.next_epoch()
        if epoch is None:
            raise RuntimeError(f"all {self.cfg.epochs} epochs are done")
        rec = self.run_epoch(epoch)
        self.history.append(rec)
        t_save = time.time()
        if self._improved(rec):
            self.best = {k: rec[k] for k in ("epoch", "val_acc", "val_loss", "test_acc")}
            self._save_best(epoch)
        self._save(epoch)
        rec["time_save"] = time.time() - t_save  # in metrics.jsonl (not the checkpoint)
        if self.info.is_main:
            self.rundir.append_metrics(rec)
            self.reporter.epoch_end(rec)
        return rec

    def loop(self) -> RunResult:
        """Train the remaining epochs; returns the result (finished or diverged)."""
        info = self.info
        self.begin()
        try:
            while self.next_epoch() is not None:
                self.advance()
            ddp.barrier(info)
            result = self.finish("finished")
        except TrainingDiverged as err:
            result = self.diverged(err)
        if info.is_main:
            self.reporter.end(result)
        return result

    def diverged(self, err: TrainingDiverged) -> RunResult:
        """End the run after a divergence (the summary says what is kept)."""
        return self.finish("diverged", f"{err}; stopping. {self._kept()}. Lower --lr or set "
                           "--grad-clip.")

    def _kept(self) -> str:
        """What is left on disk after a divergence: the last *verified, finite* checkpoint."""
        if not self.info.is_main:
            return ""
        try:
            epoch = int(self.rundir.load_checkpoint(CHECKPOINT)["epoch"])
        except (CheckpointError, RunDirError) as bad:
            return f"no good checkpoint is kept ({bad})"
        what = " = the initial weights" if epoch == 0 else ""
        return f"the last good checkpoint (epoch {epoch}{what}) is kept in {self.run_dir}"

    # the end ------------------------------------------------------------------------------
    def finish(self, status: str, message: str = "") -> RunResult:
        summary: dict[str, Any] = {}
        if self.info.is_main:
            summary = self.write_summary(status, message)
        code = 0 if status in ("finished", "stopped") else 1
        return RunResult(self.run_dir, status, code, summary, message, self.certificate,
                         list(self.history))

    def write_summary(self, status: str, message: str) -> dict[str, Any]:
        final = self.history[-1] if self.history else None
        best = None
        if self.best is not None:
            best = next(r for r in self.history if r["epoch"] == self.best["epoch"])
        cert = None
        if status in ("finished", "stopped") and is_combo(self.model):
            c = certificate_of(self.model)  # the final one, with the largest covered step
            cert = c.to_dict()
            self.rundir.write_certificate(cert)
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
            "config": self.cfg.to_dict(), "data": self.data.meta, "init_from": self.init_from,
        }
        self.rundir.write_summary(summary)
        self.certificate = cert
        return summary


def train(cfg: TrainConfig, *, resume: bool = False, reporter: Reporter | None = None,
          loss_fn: LossFn | None = None, metric_fn: MetricFn | None = None) -> RunResult:
    """Run (or resume) one training run; see :mod:`.rundir` for the files it writes.

    Prints nothing (pass a ``reporter``). Ctrl-C raises :class:`TrainingInterrupted` (a
    ``KeyboardInterrupt``) naming the run directory; a failed write (full disk) raises
    :class:`~.rundir.RunDirWriteError` with the command that continues the run."""
    try:
        trainer = Trainer(cfg, resume=resume, reporter=reporter, loss_fn=loss_fn,
                          metric_fn=metric_fn)
    except KeyboardInterrupt:
        where = Path(cfg.out_dir) if resume and cfg.out_dir is not None else None
        raise TrainingInterrupted(where, resumable=where is not None) from None
    try:
        result = trainer.loop()
        # Ranks leave together: none tears the group down while rank 0 still writes its files.
        ddp.barrier(trainer.info)
        return result
    except KeyboardInterrupt:
        raise TrainingInterrupted(trainer.run_dir, trainer.rundir.has_checkpoint()) from None
    except RunDirWriteError as err:
        raise RunDirWriteError(f"{err}; make room, then continue with: combonet train --resume "
                               f"--out-dir {shlex.quote(str(trainer.run_dir))}") from None
    finally:
        trainer.close()


__all__ = ["LossFn", "MetricFn", "RunResult", "Trainer", "TrainingDiverged",
           "TrainingInterrupted", "accuracy", "certificate_of", "cross_entropy", "evaluate",
           "evaluate_split", "load_data", "lr_factor", "make_optimizer", "make_scheduler",
           "train"]
