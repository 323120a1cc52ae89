"""Per-step cost of the module product ``phi(x) W^T`` for a block-diagonal sparse ``W``.

Alternatives (rows of ``x`` are samples, ``W = blockdiag(W_1..W_p)`` as the Sparse Combo Net
builds it; the dense coupling product ``x C^T`` is timed too, for scale):

* ``dense``: ``torch.mm(s, W^T)`` with the full N x N matrix (2 B N^2 FLOPs);
* ``bmm``: ``torch.bmm`` over the p diagonal blocks, on views of ``s`` (what the engine does,
  2 B N n FLOPs);
* ``csr``: ``torch.sparse.mm(W_csr, s^T)`` (2 B nnz FLOPs; the input needs a transposed copy
  and there is no gradient for a trainable ``W`` in this form);
* ``csr_right``: ``s @ W^T_csr`` (dense @ sparse).

Usage: ``python benchmarks/w_product.py [--threads 2] [--repeats 7]``; prints a table and JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import warnings

import torch

from combonet.models import sparse_combo_net


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--modules", type=int, default=16)
    ap.add_argument("--units", type=int, default=32)
    ap.add_argument("--density", type=float, default=0.033)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--calls", type=int, default=200, help="calls per timed repeat")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    model = sparse_combo_net(args.modules, args.units, density=args.density)
    dyn = model.network.dynamics()
    w, blocks, p = dyn.weight.detach(), dyn.blocks.detach(), args.modules
    bsz, n_units = args.batch, w.shape[0]
    c = torch.randn(n_units, n_units) / n_units**0.5
    s = torch.relu(torch.randn(bsz, n_units))
    out = torch.empty(bsz, n_units)
    hbuf = torch.empty(p, bsz, n_units // p)
    wt, bt = w.T.contiguous(), blocks.transpose(1, 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sparse CSR "beta" warning
        w_csr = w.to_sparse_csr()
        wt_csr = w.T.contiguous().to_sparse_csr()

    cands = {
        "coupling x C^T (dense, for scale)": lambda: torch.mm(s, c.T, out=out),
        "dense mm s W^T": lambda: torch.mm(s, wt, out=out),
        "bmm over blocks (engine)": lambda: torch.bmm(
            s.view(bsz, p, -1).transpose(0, 1), bt, out=hbuf),
        "csr: W_csr @ s^T": lambda: torch.sparse.mm(w_csr, s.T.contiguous()),
        "csr_right: s @ W^T_csr": lambda: torch.mm(s, wt_csr),
    }
    for f in cands.values():  # correctness of every alternative, then warm-up
        f()
    ref = s @ w.T
    torch.bmm(s.view(bsz, p, -1).transpose(0, 1), bt, out=hbuf)
    assert torch.allclose(hbuf.transpose(0, 1).reshape(bsz, -1), ref, atol=1e-5)
    assert torch.allclose(torch.sparse.mm(w_csr, s.T.contiguous()).T, ref, atol=1e-5)
    assert torch.allclose(torch.mm(s, wt_csr), ref, atol=1e-5)
    times: dict[str, list[float]] = {k: [] for k in cands}
    for _ in range(args.repeats):  # alternate the contenders
        for k, f in cands.items():
            t0 = time.perf_counter()
            for _ in range(args.calls):
                f()
            times[k].append((time.perf_counter() - t0) / args.calls * 1e6)
    med = {k: statistics.median(v) for k, v in times.items()}
    nnz = int((w != 0).sum())
    print(f"B={bsz} N={n_units} p={p} n={n_units // p} nnz(W)={nnz} "
          f"threads={torch.get_num_threads()}")
    for k, v in med.items():
        print(f"  {k:38s} {v:9.1f} us/call (median of {args.repeats})")
    print(json.dumps({"us_per_call": med, "nnz": nnz, "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
