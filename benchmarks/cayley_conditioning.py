"""``||C||_M - 1`` of the float32 Cayley coupling step against the metric's condition number.

For ``Feedback([SVDModule(8), SVDModule(8)])`` in float32 with ``log_phi`` spread so that the
metric ``P = Phi^2`` has condition numbers 1 ... 1e15, it reports the coupling step as the
engine runs it (running coordinates ``y = P^{1/2} x``, where the coupling is exactly
skew-symmetric) and, for comparison, the same step built in original coordinates from the float32
``L = B - M^{-1} B^T M`` (how combonet ran before the snapshot), each measured exactly in float64
in the metric. Run: ``python benchmarks/cayley_conditioning.py`` (seconds, any CPU).
"""

from __future__ import annotations

import torch

import combonet as cn


def network(spread: float, seed: int = 5) -> cn.Feedback:
    torch.manual_seed(seed)
    mods = [cn.SVDModule(8, seed=seed + i) for i in range(2)]
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in mods:
            m.log_phi.copy_(spread * (2 * torch.rand(8, generator=gen) - 1))
    return cn.Feedback(mods, seed=seed, init_scale=2.0)


def original_coordinates_norm(net: cn.Feedback, dt: float) -> float:
    """``||C||_M - 1`` for ``C = cayley(alpha L)`` built in float32 from the float32 ``L``."""
    with torch.no_grad():
        lmat = net.coupling()
        eye = torch.eye(net.n, dtype=lmat.dtype)
        c = torch.linalg.solve(eye - dt / 2 * lmat, eye + dt / 2 * lmat).double()
        r = net.metric().double().diagonal().sqrt()
        return float(torch.linalg.matrix_norm(c * (r[:, None] / r[None, :]), ord=2)) - 1


def main() -> None:
    dt = 0.1
    print("| metric condition number | running step: ||C||_M - 1 | original coordinates: "
          "||C||_M - 1 | certified |")
    print("|---|---|---|---|")
    for spread in (0.0, 1.8, 3.6, 5.3, 7.0, 9.0):
        net = network(spread)
        cert = cn.certify(net, dt=dt, method="cayley", max_dt=False)
        old = original_coordinates_norm(net, dt)
        print(f"| {cert.metric_condition_number:.1e} | {cert.coupling_norm - 1:.1e} | "
              f"{old:.1e} | {'yes' if cert.certified else 'no'} |")


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
