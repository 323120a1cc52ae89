"""Bad inputs, kills and misuse tried as a user would, and what combonet does with each.

Every case runs the real command line (``combonet.cli.main``, in this process) in a scratch
folder, on a tiny trained run (2x8 Sparse Combo Net, 2 epochs on permuted digits).
``tests/test_bad_inputs.py`` runs every case and checks its exit status, its one-line message
and that nothing was lost; run this file to regenerate the table in ``docs/bad-inputs.md``::

    .venv/bin/python tests/bad_inputs.py docs/bad-inputs.md
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import pickle
import shlex
import shutil
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from combonet.cli import main
from combonet.train import (
    RunDir,
    loop,
    rundir,
)
from combonet.train import checkpoint as ckpt
from data_files import write_fake_cifar, write_fake_mnist, write_gzip_bomb

TINY = ["--task", "pdigits", "--limit-train", "120", "--limit-test", "50",
        "--val-fraction", "0.25", "--modules", "2", "--units", "8", "--density", "0.2",
        "--magnitude", "1", "--batch-size", "30", "--threads", "1", "--quiet"]
BASE = "base"  # the trained run every case copies (relative to the workspace)


@dataclass
class Outcome:
    code: int
    line: str  # the first line of what the user sees (stderr, or stdout for `stream="out"`)
    err: str
    out: str
    seconds: float = 0.0


class Workspace:
    """A scratch folder (the current directory while cases run) with one trained run."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.held: list[Any] = []

    @contextlib.contextmanager
    def inside(self) -> Iterator[None]:
        old = os.getcwd()
        os.chdir(self.root)
        try:
            yield
        finally:
            os.chdir(old)

    def trained(self) -> Path:
        if not Path(BASE, "summary.json").exists():
            outcome = run_cli(["train", *TINY, "--epochs", "2", "--out-dir", BASE])
            assert outcome.code == 0, outcome.err
        return Path(BASE)

    def copy(self, name: str) -> Path:
        self.trained()
        shutil.copytree(BASE, name)
        return Path(name)


def run_cli(argv: list[str]) -> Outcome:
    """``combonet ARGV`` in this process: exit status, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    t0 = time.time()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as stop:  # argparse
            code = int(stop.code or 0)
    text = err.getvalue().strip()
    return Outcome(code, text.splitlines()[0] if text else "", err.getvalue(), out.getvalue(),
                   time.time() - t0)


@dataclass
class Case:
    """One bad input: how to make it, what must happen."""

    id: str
    item: str  # the item of issue 11 (or "more")
    what: str  # the bad input, in words (markdown)
    code: int  # expected exit status
    expect: str  # part of the message
    argv: Callable[[Workspace], list[str]] | None = None
    patch: Callable[[], Any] | None = None  # a context manager around the command
    check: Callable[[Workspace, Outcome], None] | None = None  # nothing lost, it works
    stream: str = "err"
    custom: Callable[[Workspace], Outcome] | None = None
    covered_by: str | None = None  # run by that test instead (slow here)

    def run(self, ws: Workspace) -> Outcome:
        t0 = time.time()
        if self.custom is not None:
            outcome = self.custom(ws)
        else:
            argv = self.argv(ws)
            with self.patch() if self.patch is not None else contextlib.nullcontext():
                outcome = run_cli(argv)
            if self.stream == "out":
                outcome.line = outcome.out.strip().splitlines()[0] if outcome.out.strip() else ""
        outcome.seconds = time.time() - t0
        return outcome

    def verify(self, ws: Workspace, outcome: Outcome) -> None:
        """The expectations: exit status, message, one line, and the case's own check."""
        assert outcome.code == self.code, (self.id, outcome.code, outcome.err, outcome.out)
        assert self.expect in outcome.line, (self.id, outcome.line)
        if self.stream == "err" and self.custom is None and self.code != 0:
            lines = outcome.err.strip().splitlines()
            assert len(lines) == 1 and "Traceback" not in outcome.err, (self.id, outcome.err)
            assert "weights_only=False" not in outcome.err
        if self.check is not None:
            self.check(ws, outcome)


# -- helpers that build bad inputs -------------------------------------------------------------
def flip(path: Path, count: int = 64) -> None:
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    data[mid:mid + count] = bytes(b ^ 0xFF for b in data[mid:mid + count])
    path.write_bytes(bytes(data))


def forge(run: Path, name: str, payload: bytes) -> None:
    """Replace checkpoint ``name`` and update the manifest, as someone who knows the format
    would (the checksum passes; the content checks must catch it)."""
    (run / name).write_bytes(payload)
    man = json.loads((run / "manifest.json").read_text())
    man["files"][name] = {"sha256": hashlib.sha256(payload).hexdigest(),
                          "bytes": len(payload), "epoch": 2}
    (run / "manifest.json").write_text(json.dumps(man))


def edited_best(run: Path, edit: Callable[[dict], None]) -> None:
    data = torch.load(run / "best.pt", weights_only=True)
    edit(data)
    forge(run, "best.pt", ckpt.to_bytes(data))


class _Payload:
    def __reduce__(self) -> tuple:
        return (os.system, ("touch PWNED",))


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(Path(folder).iterdir()) if p.is_file()}


def unchanged(folder: str, before: dict[str, dict[str, bytes]]) -> Callable:
    def check(ws: Workspace, outcome: Outcome) -> None:
        assert snapshot(Path(folder)) == before[folder], f"{folder} changed"
    return check


def absent(folder: str) -> Callable:
    def check(ws: Workspace, outcome: Outcome) -> None:
        assert not Path(folder).exists(), f"{folder} was created"
    return check


def mnist_folder(name: str, key: str) -> Path:
    folder = Path(name)
    write_fake_mnist(folder, n_train=60, n_test=20, gz=True)
    for p in folder.glob(f"{key}*"):
        p.unlink()
    return folder


_BEFORE: dict[str, dict[str, bytes]] = {}


def _keep(folder: Path) -> Path:
    _BEFORE[str(folder)] = snapshot(folder)
    return folder


# -- the cases ---------------------------------------------------------------------------------
def _busy(ws: Workspace) -> list[str]:
    from filelock import FileLock

    Path("busy").mkdir()
    lock = FileLock("busy/.combonet.lock", timeout=0)
    lock.acquire()  # as a running `combonet train --out-dir busy` holds it
    ws.held.append(lock)
    return ["train", *TINY, "--epochs", "1", "--out-dir", "busy"]


def _release(ws: Workspace, outcome: Outcome) -> None:
    assert os.listdir("busy") == [".combonet.lock"]
    while ws.held:
        ws.held.pop().release()


def _same_second(ws: Workspace) -> Outcome:
    with mock.patch.object(rundir.time, "strftime", lambda fmt: "20260101-120000"):
        a = run_cli(["train", *TINY, "--epochs", "1"])
        b = run_cli(["train", *TINY, "--epochs", "1"])
    dirs = [o.out.split("run directory: ", 1)[1].split()[0] for o in (a, b)]
    assert dirs[0] != dirs[1] and all(Path(d, "summary.json").exists() for d in dirs)
    return Outcome(max(a.code, b.code), f"two run directories: {dirs[0]} and {dirs[1]}", "",
                   "")


def _user_folder(ws: Workspace) -> list[str]:
    Path("mine").mkdir()
    Path("mine/config.json").write_text('{"my": "settings"}\n')
    Path("mine/summary.json").write_text('{"my": "notes"}\n')
    _keep(Path("mine"))
    return ["train", *TINY, "--out-dir", "mine"]


def _no_checkpoint(name: str) -> Callable[[Workspace], Path]:
    def make(ws: Workspace) -> Path:
        run = ws.copy(name)
        (run / "checkpoint.pt").unlink()
        return _keep(run)
    return make


def _file_out_dir(ws: Workspace) -> list[str]:
    Path("notes.txt").write_text("my notes\n")
    return ["train", *TINY, "--out-dir", "notes.txt"]


def _stepped(ws: Workspace) -> list[str]:
    outcome = run_cli(["train", *TINY, "--schedule", "step", "--epochs", "2", "--out-dir",
                       "stepped"])
    assert outcome.code == 0, outcome.err
    _keep(Path("stepped"))
    return ["train", "--resume", "--out-dir", "stepped", "--epochs", "1"]


def _init_from_check(ws: Workspace, outcome: Outcome) -> None:
    record = json.loads(Path("longer/config.json").read_text())
    assert record["config"]["init_from"] == "cos-longer"
    assert record["init_from"]["epoch"] == 2 and len(record["init_from"]["sha256"]) == 64


def _bomb(ws: Workspace) -> list[str]:
    folder = mnist_folder("bomb", "train-labels-idx1-ubyte")
    write_gzip_bomb(folder / "train-labels-idx1-ubyte.gz", struct.pack(">II", 2049, 60_000),
                    7_840_000_000)
    return ["train", "--task", "smnist", "--data-dir", "bomb", "--out-dir", "bomb-run"]


def _sparse_labels(ws: Workspace) -> list[str]:
    folder = mnist_folder("sparse", "train-labels-idx1-ubyte")
    path = folder / "train-labels-idx1-ubyte"
    path.write_bytes(struct.pack(">II", 2049, 60_000))
    os.truncate(path, 20 << 30)  # 20 GiB, sparse: no disk used
    return ["train", "--task", "smnist", "--data-dir", "sparse", "--out-dir", "sparse-run"]


def _sparse_cifar(ws: Workspace) -> list[str]:
    write_fake_cifar("cifar", per_batch=10, n_batches=1, n_test=10)
    os.truncate("cifar/data_batch_1.bin", 3073 * 7_000_000)  # 21.5 GB, sparse
    return ["train", "--task", "scifar10", "--data-dir", "cifar", "--out-dir", "cifar-run"]


def _dev_zero(ws: Workspace) -> list[str]:
    folder = mnist_folder("zero", "train-labels-idx1-ubyte")
    (folder / "train-labels-idx1-ubyte").symlink_to("/dev/zero")
    return ["train", "--task", "smnist", "--data-dir", "zero", "--out-dir", "zero-run"]


def _fifo(ws: Workspace) -> list[str]:
    folder = mnist_folder("fifo", "t10k-images-idx3-ubyte")
    os.mkfifo(folder / "t10k-images-idx3-ubyte")
    return ["train", "--task", "smnist", "--data-dir", "fifo", "--out-dir", "fifo-run"]


def _flipped(name: str, which: str) -> Callable[[Workspace], Path]:
    def make(ws: Workspace) -> Path:
        run = ws.copy(name)
        flip(run / which)
        return _keep(run)
    return make


def _other_config(ws: Workspace) -> list[str]:
    run = ws.copy("mixed")
    rec = json.loads((run / "config.json").read_text())
    rec["config"]["units"] = 4  # the config.json of another run (4 units per module)
    (run / "config.json").write_text(json.dumps(rec))
    return ["evaluate", "mixed"]


def _malicious(ws: Workspace) -> list[str]:
    run = ws.copy("evil")
    forge(run, "best.pt", pickle.dumps({"format": ckpt.FORMAT, "model": _Payload()}))
    return ["evaluate", "evil"]


def _nan(ws: Workspace) -> list[str]:
    run = ws.copy("nan")

    def poison(data: dict) -> None:
        key = next(k for k, v in data["model"].items() if v.is_floating_point())
        data["model"][key] = torch.full_like(data["model"][key], float("nan"))

    edited_best(run, poison)
    return ["evaluate", "nan"]


def _no_model(ws: Workspace) -> list[str]:
    run = ws.copy("nomodel")
    edited_best(run, lambda data: data.pop("model"))
    return ["evaluate", "nomodel"]


def _config_json(name: str, text: bytes) -> Callable[[Workspace], list[str]]:
    def make(ws: Workspace) -> list[str]:
        run = ws.copy(name)
        (run / "config.json").write_bytes(text)
        return ["evaluate", name]
    return make


@contextlib.contextmanager
def _full_disk() -> Iterator[None]:
    real = ckpt._write_file
    count = {"n": 0}

    def write(path: Path, fh: Any, data: bytes) -> None:
        if path.name == "checkpoint.pt":
            count["n"] += 1
            if count["n"] == 2:  # epoch 0 was written; the disk is full at epoch 1
                fh.write(data[:4096])
                raise OSError(errno.ENOSPC, "No space left on device")
        real(path, fh, data)

    with mock.patch.object(ckpt, "_write_file", write):
        yield


def _full_disk_check(ws: Workspace, outcome: Outcome) -> None:
    assert not [p for p in os.listdir("full") if p.endswith(".tmp")]
    assert RunDir("full").load_checkpoint()["epoch"] == 0
    assert run_cli(["train", "--resume", "--out-dir", "full"]).code == 0  # after freeing space


@contextlib.contextmanager
def _ctrl_c() -> Iterator[None]:
    def interrupted(self: Any, epoch: int) -> Any:
        raise KeyboardInterrupt

    with mock.patch.object(loop.Trainer, "train_epoch", interrupted):
        yield


def _resume_as_told(ws: Workspace, outcome: Outcome) -> None:
    argv = shlex.split(outcome.line.split("continue with: ", 1)[1])
    assert argv[:2] == ["combonet", "train"]
    assert run_cli(argv[1:]).code == 0


def _orphan(ws: Workspace) -> list[str]:
    run = ws.copy("orphan")
    (run / "summary.json").unlink()  # the crash came before the run's end was written
    (run / ".checkpoint.pt.k9x2ab.tmp").write_bytes(b"half a checkpoint")
    return ["train", "--resume", "--out-dir", "orphan"]


def _orphan_gone(ws: Workspace, outcome: Outcome) -> None:
    assert not [p for p in os.listdir("orphan") if p.endswith(".tmp")]


def _modes(ws: Workspace) -> Outcome:
    run = ws.trained()
    mask = ckpt.current_umask()
    modes = {p.name: p.stat().st_mode & 0o777 for p in run.iterdir()}
    want = 0o666 & ~mask
    bad = {k: oct(v) for k, v in modes.items() if v != want}
    assert not bad, bad
    return Outcome(0, f"every file of a run has mode {want:04o} (umask {mask:03o}): "
                   f"{', '.join(sorted(modes))}", "", "")


def _help(ws: Workspace) -> Outcome:
    outcome = run_cli(["--help"])
    text = " ".join(outcome.out.split())
    start = text.index("train a model")
    return Outcome(outcome.code, text[start:text.index(")", text.index("epochs", start)) + 1],
                   "", outcome.out)


def _dt_help(ws: Workspace) -> Outcome:
    outcome = run_cli(["train", "--help"])
    text = " ".join(outcome.out.split())
    start = text.index("--dt DT step")
    return Outcome(outcome.code, text[start:text.index("(default: 0.1)", start) + 14], "",
                   outcome.out)


def _kill_9(ws: Workspace) -> Outcome:
    """A real kill -9 in epoch 2, then --resume; compared with the uninterrupted run."""
    ws.trained()
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "combonet", "train", *TINY, "--epochs", "2", "--out-dir",
           "killed"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while proc.poll() is None and time.time() < deadline:
        try:
            if json.loads(Path("killed/manifest.json").read_text())["files"][
                    "checkpoint.pt"]["epoch"] >= 1:
                break
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    assert proc.returncode == -9
    done = RunDir("killed").load_checkpoint()["epoch"]
    resumed = run_cli(["train", "--resume", "--out-dir", "killed"])
    a = torch.load(Path(BASE, "checkpoint.pt"), weights_only=True)["model"]
    b = torch.load(Path("killed", "checkpoint.pt"), weights_only=True)["model"]
    same = all(torch.equal(v, b[k]) for k, v in a.items())
    assert same
    return Outcome(resumed.code, f"killed after epoch {done}; --resume finished the run with "
                   "final weights bit-identical to the uninterrupted run", resumed.err,
                   resumed.out)


def _combonet_train(*extra: str, out: str = "x") -> Callable[[Workspace], list[str]]:
    return lambda ws: ["train", *TINY, *extra, "--out-dir", out]


CASES: list[Case] = [
    # 1. two runs, one directory
    Case("busy", "1", "`train --out-dir D` while another `combonet train` runs in `D`", 2,
         "is in use by another combonet process", argv=_busy, check=_release),
    Case("same-second", "1", "two runs started in the same second with no `--out-dir`", 0,
         "two run directories", custom=_same_second),
    Case("user-folder", "1", "`--out-dir` is the user's folder holding their own "
         "`config.json` and `summary.json`", 2, "is not empty (config.json, summary.json) and "
         "is not a combonet run", argv=_user_folder, check=unchanged("mine", _BEFORE)),
    Case("deleted-ckpt", "1", "new run into a run whose `checkpoint.pt` was deleted", 2,
         "already holds a run", argv=lambda ws: ["train", *TINY, "--out-dir",
                                                 str(_no_checkpoint("nockpt")(ws))],
         check=unchanged("nockpt", _BEFORE)),
    Case("deleted-ckpt-resume", "1", "`--resume` of a run whose `checkpoint.pt` was deleted",
         2, "cannot resume: nockpt2/checkpoint.pt does not exist",
         argv=lambda ws: ["train", "--resume", "--out-dir", str(_no_checkpoint("nockpt2")(ws))],
         check=unchanged("nockpt2", _BEFORE)),
    Case("out-dir-file", "1", "`--out-dir` is an existing file", 2,
         "--out-dir notes.txt is a file, not a directory", argv=_file_out_dir,
         check=lambda ws, o: Path("notes.txt").read_text() == "my notes\n"),
    # 2. resume with other epochs
    Case("resume-epochs", "2", "`--resume` of a 2-epoch cosine run with `--epochs 4`", 2,
         "epochs=2 (checkpoint) vs 4 (now)",
         argv=lambda ws: ["train", "--resume", "--out-dir", str(_keep(ws.copy("cos"))),
                          "--epochs", "4"], check=unchanged("cos", _BEFORE)),
    Case("resume-fewer", "2", "`--resume` with fewer epochs than completed (step schedule)",
         2, "cannot resume with epochs=1: stepped has already completed 2 epochs",
         argv=_stepped, check=unchanged("stepped", _BEFORE)),
    Case("init-from", "2", "to train longer: `train --init-from RUN --epochs 2 --out-dir NEW` "
         "(a new run from RUN's final weights, recorded in NEW's config)", 0,
         "run directory: longer",
         argv=lambda ws: ["train", "--init-from", str(ws.copy("cos-longer")), "--epochs", "2",
                          "--out-dir", "longer"], stream="out", check=_init_from_check),
    # 3. memory bombs, files that are not files
    Case("gzip-bomb", "3", "MNIST labels `.gz` of 7.6 MB that inflates to 7.84 GB (header: "
         "60,000 labels)", 2, "but it decompresses to more (trailing data)", argv=_bomb,
         check=absent("bomb-run")),
    Case("sparse-idx", "3", "sparse 20 GB MNIST labels file with a valid 60,000-label header",
         2, "got 21474836480 (trailing data)", argv=_sparse_labels, check=absent("sparse-run")),
    Case("sparse-cifar", "3", "sparse 21.5 GB CIFAR-10 batch (a whole number of records)", 2,
         "holds 7000000 records, more than the 10000 of a CIFAR-10 batch", argv=_sparse_cifar,
         check=absent("cifar-run")),
    Case("dev-zero", "3, 5", "MNIST labels file is a symlink to `/dev/zero`", 2,
         "not a regular file: it is a character device (a symbolic link to /dev/zero)",
         argv=_dev_zero),
    Case("fifo", "3", "MNIST images file is a FIFO (reading would block forever)", 2,
         "not a regular file: it is a FIFO", argv=_fifo),
    # 4. corrupted or mismatched checkpoints
    Case("flipped-best", "4", "64 flipped bytes inside `best.pt`, then `evaluate`", 2,
         "flipped/best.pt fails its SHA-256 check against manifest.json",
         argv=lambda ws: ["evaluate", str(_flipped("flipped", "best.pt")(ws))]),
    Case("flipped-best-certify", "4", "the same, then `certify --weights best`", 2,
         "best.pt fails its SHA-256 check",
         argv=lambda ws: ["certify", str(_flipped("flipped2", "best.pt")(ws)), "--weights",
                          "best"]),
    Case("flipped-ckpt-resume", "4", "64 flipped bytes inside `checkpoint.pt`, then "
         "`--resume`", 2, "checkpoint.pt fails its SHA-256 check",
         argv=lambda ws: ["train", "--resume", "--out-dir",
                          str(_flipped("flipped3", "checkpoint.pt")(ws))],
         check=unchanged("flipped3", _BEFORE)),
    Case("other-config", "4", "weights of one run next to the `config.json` of another "
         "(4 units instead of 8)", 2, "was written by a different configuration than "
         "mixed/config.json: units=8 (best.pt) vs 4 (config.json)", argv=_other_config),
    Case("malicious", "4", "`best.pt` replaced by a pickle that runs `touch PWNED` (manifest "
         "forged to match)", 2, "holds objects other than tensors and plain containers",
         argv=_malicious, check=lambda ws, o: not Path("PWNED").exists()),
    Case("nan-weights", "4", "`best.pt` with NaN weights (manifest forged to match)", 2,
         "holds NaN or inf values", argv=_nan),
    # 5. wrong answers or tracebacks
    Case("eval-batch-neg", "5", "`evaluate RUN --batch-size -3` (printed 0.00 %)", 2,
         "--batch-size must be an integer >= 1, got -3",
         argv=lambda ws: ["evaluate", str(ws.trained()), "--batch-size", "-3"]),
    Case("eval-batch-zero", "5", "`evaluate RUN --batch-size 0`", 2,
         "--batch-size must be an integer >= 1, got 0",
         argv=lambda ws: ["evaluate", str(ws.trained()), "--batch-size", "0"]),
    Case("lr-huge", "5", "`train --lr 1e300`", 2, "lr must be a finite number > 0 and <= "
         "3.40282e+38, got 1e+300", argv=_combonet_train("--lr", "1e300", out="lr"),
         check=absent("lr")),
    Case("enospc", "5", "the disk fills up while a checkpoint is written (simulated ENOSPC)",
         1, "No space left on device (ENOSPC); the previous checkpoint.pt is kept",
         argv=_combonet_train("--epochs", "2", out="full"), patch=_full_disk,
         check=_full_disk_check),
    Case("no-model", "5", "a checkpoint without `model` (manifest forged to match)", 2,
         "is incomplete: it has no 'model' entry", argv=_no_model),
    Case("config-no-data", "5", "`config.json` without `data`", 2, "has no 'data' entry",
         argv=_config_json("nodata", b'{"config": {}, "fingerprint": "x"}')),
    Case("config-list", "5", "`config.json` holding a list", 2,
         "must hold a JSON object (the run record), got a list",
         argv=_config_json("listcfg", b"[1, 2, 3]\n")),
    Case("eval-threads", "5", "`evaluate RUN --threads -2`", 2,
         "--threads must be an integer in [1, 1024], got -2",
         argv=lambda ws: ["evaluate", str(ws.trained()), "--threads", "-2"]),
    Case("seed-overflow", "5", "`train --seed 99999999999999999999`", 2,
         "seed must be an integer in [0, 4294967295], got 99999999999999999999",
         argv=_combonet_train("--seed", "99999999999999999999", out="seed"),
         check=absent("seed")),
    Case("magnitude-1e6", "5", "`train --magnitude 1e6` (the demo's 16x16 modules)", 2,
         "magnitude=1e+06, has no diagonal metric representable in float64",
         argv=lambda ws: ["train", "--magnitude", "1e6", "--out-dir", "mag6"],
         check=absent("mag6")),
    Case("magnitude-1e308", "5", "`train --magnitude 1e308`", 2,
         "magnitude must be a finite number > 0 and <= 3.40282e+38, got 1e+308",
         argv=lambda ws: ["train", "--magnitude", "1e308", "--out-dir", "mag308"]),
    Case("config-not-utf8", "5", "`--config` file with non-UTF-8 bytes", 2,
         "is not UTF-8 text (byte 0xff at offset 8)",
         argv=lambda ws: (Path("latin.yaml").write_bytes(b"lr: 0.1\n\xff: 1\n"),
                          ["train", "--config", "latin.yaml"])[1]),
    Case("ctrl-c", "5", "Ctrl-C in epoch 1 (the hint printed `RUN_DIR`, and its command "
         "failed in epoch 1)", 130, "interrupted; continue with: combonet train --resume "
         "--out-dir ctrlc", argv=_combonet_train("--epochs", "2", out="ctrlc"), patch=_ctrl_c,
         check=_resume_as_told),
    Case("hopeless", "5", "hopeless Theorem-1 search: 1 module of 256 units, density 0.5, "
         "magnitude 3 (took 129 s to fail)", 2, "cannot satisfy Theorem 1",
         argv=lambda ws: ["train", "--modules", "1", "--units", "256", "--density", "0.5",
                          "--magnitude", "3", "--out-dir", "hopeless"]),
    Case("orphan-tmp", "5", "a crash's orphan `.checkpoint.pt.XXXX.tmp` in the run, then "
         "`--resume`", 0, "run directory: orphan", argv=_orphan, stream="out",
         check=_orphan_gone),
    Case("modes", "5", "file modes of a run (were 0600)", 0, "every file of a run has mode",
         custom=_modes),
    Case("yaml-duplicate", "5", "`--config` YAML with `lr` given twice", 2,
         "duplicate key 'lr' on lines 1 and 3",
         argv=lambda ws: (Path("dup.yaml").write_text("lr: 0.1\nepochs: 2\nlr: 0.2\n"),
                          ["train", "--config", "dup.yaml"])[1]),
    Case("baseline-combo-flag", "5", "`train --model gru --density 0.1` (a combo-only flag "
         "for a baseline)", 2, "--density does not apply to model 'gru'",
         argv=lambda ws: ["train", "--model", "gru", "--density", "0.1", "--out-dir", "gru"],
         check=absent("gru")),
    Case("help-default", "5", "`combonet --help`: what `combonet train` trains by default "
         "(said MNIST-1D)", 0, "permuted sklearn digits (pdigits)", custom=_help),
    Case("help-dt", "5", "`combonet train --help`: the `--dt` entry (said Euler)", 0,
         "the default map is cayley", custom=_dt_help),
    Case("kill-9", "keep", "`kill -9` in epoch 2, then `--resume`", 0, "bit-identical",
         custom=_kill_9, covered_by="tests/test_train.py::test_kill_9_then_resume_is_bit_"
         "identical"),
    # more
    Case("threads-huge", "more", "`train --threads 100000` (torch crashed at exit)", 2,
         "threads must be an integer in [1, 1024], got 100000",
         argv=_combonet_train("--threads", "100000", out="thr")),
    Case("config-fifo", "more", "`--config` is a FIFO", 2,
         "config file pipe.yaml is not a regular file (a FIFO)",
         argv=lambda ws: (os.mkfifo("pipe.yaml"), ["train", "--config", "pipe.yaml"])[1]),
    Case("momentum-adam", "more", "`train --momentum 0.5` with the default optimizer (adam)",
         2, "--momentum does not apply to optimizer 'adam' (only to sgd, rmsprop)",
         argv=lambda ws: ["train", "--momentum", "0.5"]),
    Case("resume-and-init", "more", "`--resume` and `--init-from` together", 2,
         "give one of them",
         argv=lambda ws: ["train", "--resume", "--out-dir", "a", "--init-from", "b"]),
    Case("init-unfinished", "more", "`--init-from` a run that did not finish", 2,
         "that run is not finished",
         argv=lambda ws: (ws.copy("unfinished").joinpath("summary.json").unlink(),
                          ["train", "--init-from", "unfinished", "--out-dir", "u2"])[1]),
]


def render(rows: list[tuple[Case, Outcome]], wall: float) -> str:
    import platform

    from combonet.experiments._common import hardware

    hw = hardware()
    head = [
        "# Bad inputs, kills and misuse: what combonet does",
        "",
        "Each row was run through the real command line (`combonet.cli.main`, in one process, "
        "on a tiny trained run: 2x8 Sparse Combo Net, 2 epochs on permuted digits). The "
        "message column is the first line the user sees (stderr; stdout for successful "
        "commands), with the scratch folder's relative paths. The *item* column is the "
        "item of issue 11 the row reproduces. `tests/test_bad_inputs.py` runs every row and "
        "checks its exit status, its message, that it is one line, and that nothing was "
        "lost (files unchanged, nothing half-written, the run still resumes). Regenerate "
        "this page with",
        "",
        "    .venv/bin/python tests/bad_inputs.py docs/bad-inputs.md",
        "",
        f"Generated on {hw['cpu']} ({hw['cores']} cores, load {hw['load_avg_1min_at_start']} "
        f"at the start), Python {platform.python_version()}, torch {torch.__version__}; "
        f"{len(rows)} cases in {wall:.0f} s wall time (the seconds column includes starting "
        "the command in an already running Python, not the ~2-5 s of importing torch).",
        "",
        "| # | item | bad input | exit | what combonet says | s |",
        "|---|---|---|---|---|---|",
    ]
    body = []
    for i, (case, outcome) in enumerate(rows, 1):
        line = outcome.line.replace("|", "\\|")
        body.append(f"| {i} | {case.item} | {case.what} | {outcome.code} | `{line}` | "
                    f"{outcome.seconds:.1f} |")
    return "\n".join(head + body) + "\n"


def run_all(root: Path) -> tuple[list[tuple[Case, Outcome]], float]:
    ws = Workspace(root)
    t0 = time.time()
    rows = []
    with ws.inside():
        ws.trained()
        for case in CASES:
            outcome = case.run(ws)
            case.verify(ws, outcome)
            rows.append((case, outcome))
    return rows, time.time() - t0


if __name__ == "__main__":
    import tempfile

    torch.set_num_threads(1)
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else None
    with tempfile.TemporaryDirectory() as tmp:
        rows, wall = run_all(Path(tmp))
    text = render(rows, wall)
    if target is None:
        print(text)
    else:
        target.write_text(text)
        print(f"wrote {target} ({len(rows)} cases, {wall:.0f} s)")
