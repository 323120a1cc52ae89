"""The fast recurrence engine: the maps of ``discretise`` with a hand-written BPTT.

Forward, per step (``alpha = dt / tau``, rows of ``x`` are samples, DESIGN.md §1-2)::

    h = alpha phi(x) W^T                 one bmm over the diagonal blocks of W
    euler:  x+ = x A^T + h + alpha u     A = (1 - alpha) I + alpha L   (one addmm)
    cayley: z  = (1 - alpha) x + h + alpha u;  x+ = z C^T               (one mm)
    plain (L is None): x+ = (1 - alpha) x + h + alpha u

``A`` / ``C`` and the scaled blocks are built once per forward pass, states go into one
preallocated ``(steps + 1, batch, N)`` buffer (``out=`` everywhere, no per-step autograd graph).

Backward (:class:`Recurrence`), per step only the state-gradient recursion, with
``g = dLoss/dx_{k+1}`` and ``gh = dLoss/dh`` (the gradient of the drive ``u_k`` too)::

    euler:  gh = alpha g;        dx_k = g A + (alpha g W) * phi'(x_k)
    cayley: gh = alpha g C;      dx_k = (1 - alpha)/alpha gh + (gh W) * phi'(x_k)

(two matmuls + elementwise). The weight gradients are then ONE product each over all
``steps * batch`` rows: ``dW_i = GH_i^T Phi_i`` (one bmm over blocks), ``dC = G^T Z`` (cayley)
or ``dL = alpha G^T X`` (euler). Autograd outside handles ``C = cayley(L)``, eq. 3, masks, SVD.

Memory (T steps, one unit = batch * N floats): forward keeps the states (T + 1) and, for
cayley with a trainable ``C``, the pre-coupling states ``Z`` (T); backward adds ``G`` (T) and
the drive gradient (T, cayley only); ``phi(X)`` reuses ``G`` (cayley) or takes one more unit
(euler). Saved tensors are never written, so ``retain_graph=True`` works.

Device-agnostic (only torch ops with ``out=``); it has only been run on CPU here.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.autograd.function import once_differentiable

from ..activations import Activation

#: Steps per chunk when ``phi`` is applied to many stored states at once (bounds temporaries).
CHUNK_STEPS = 64

MODES = ("plain", "euler", "cayley")


def blockview(t: torch.Tensor, p: int) -> torch.Tensor:
    """``(batch, N)`` -> ``(p, batch, n)`` view (no copy) of the ``p`` diagonal blocks' units."""
    return t.view(t.shape[0], p, t.shape[1] // p).transpose(0, 1)


def activate_all(act: Activation, src: torch.Tensor, dst: torch.Tensor) -> None:
    """``dst = phi(src)`` for many stored states: in place for ReLU / tanh, else in chunks of
    ``CHUNK_STEPS`` along the leading (time) axis (bounded temporaries)."""
    if act.fn is torch.relu or act.fn is torch.tanh:
        activate(act, src, dst)
        return
    for c in range(0, src.shape[0], CHUNK_STEPS):
        dst[c:c + CHUNK_STEPS].copy_(act.fn(src[c:c + CHUNK_STEPS]))


def activate(act: Activation, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """``phi(x)``, into ``out`` for ReLU / tanh (no allocation), else a new tensor."""
    if act.fn is torch.relu:
        return torch.clamp_min(x, 0, out=out)
    if act.fn is torch.tanh:
        return torch.tanh(x, out=out)
    return act.fn(x)


def times_slope(act: Activation, grad: torch.Tensor, x: torch.Tensor,
                out: torch.Tensor) -> None:
    """``out = grad * phi'(x)``; one fused kernel for ReLU (two for tanh)."""
    if act.fn is torch.relu:
        torch.ops.aten.threshold_backward.grad_input(grad, x, 0, grad_input=out)
    elif act.fn is torch.tanh:
        torch.ops.aten.tanh_backward.grad_input(grad, torch.tanh(x), grad_input=out)
    else:
        torch.mul(grad, act.slope(x), out=out)


def recurrence_forward(drive: torch.Tensor, x0: torch.Tensor, blocks: torch.Tensor,
                       kmat: torch.Tensor | None, alpha: float, mode: str, act: Activation,
                       states: torch.Tensor, zbuf: torch.Tensor | None = None) -> torch.Tensor:
    """Run the map over ``drive`` (batch, steps, N) into ``states``; return the last state.

    ``blocks`` (p, n, n) are the diagonal blocks of ``W`` (``W[None]`` when dense), ``kmat`` is
    ``L`` (euler) or ``C`` (cayley). ``states`` is ``(steps + 1, batch, N)`` (all states are
    kept) or ``(2, batch, N)`` (a ring: only the last state is kept). ``zbuf`` (steps, batch, N)
    receives the cayley pre-coupling states for the backward pass.
    """
    bsz, steps, n_units = drive.shape
    p, n = blocks.shape[0], n_units // blocks.shape[0]
    awt = (alpha * blocks).transpose(1, 2)  # alpha W_i^T, built once
    if mode == "euler":
        eye = torch.eye(n_units, dtype=kmat.dtype, device=kmat.device)
        kt = ((1 - alpha) * eye + alpha * kmat).T  # A^T
    elif mode == "cayley":
        kt = kmat.T  # C^T
    hbuf = drive.new_empty(p, bsz, n)
    hview = hbuf.transpose(0, 1)  # (batch, p, n) view of alpha phi(x) W^T
    sbuf = drive.new_empty(bsz, n_units)
    sblocks = blockview(sbuf, p)
    tmp = drive.new_empty(bsz, n_units)
    # Per-step views, made once: x_k (batch, N) and its (batch, p, n) split, u_k, z_k.
    ring = states.shape[0] == 2 and steps > 1
    xs, x3 = states.unbind(0), states.view(-1, bsz, p, n).unbind(0)
    us = drive.view(bsz, steps, p, n).unbind(1)
    zs = zbuf.unbind(0) if zbuf is not None else None
    xs[0].copy_(x0)
    for k in range(steps):
        i, j = (k & 1, (k + 1) & 1) if ring else (k, k + 1)
        x, xn = xs[i], xs[j]
        s = activate(act, x, sbuf)
        torch.bmm(sblocks if s is sbuf else blockview(s, p), awt, out=hbuf)
        if mode == "cayley":
            z = zs[k] if zs is not None else tmp
            torch.add(hview, us[k], alpha=alpha, out=z.view(bsz, p, n))
            z.add_(x, alpha=1 - alpha)
            torch.mm(z, kt, out=xn)
        elif mode == "euler":
            torch.add(hview, us[k], alpha=alpha, out=tmp.view(bsz, p, n))
            torch.addmm(tmp, x, kt, out=xn)
        else:
            torch.add(hview, us[k], alpha=alpha, out=x3[j])
            xn.add_(x, alpha=1 - alpha)
    return xs[steps & 1 if ring else steps]


class Recurrence(torch.autograd.Function):
    """``states = map^T(x0; drive, W, K)`` with a hand-written backward (module docstring).

    Inputs: ``drive`` (batch, steps, N), ``x0`` (batch, N), ``blocks`` (p, n, n), ``kmat``
    (N, N) or ``None``; returns (steps, batch, N) when ``all_states`` else (batch, N).
    """

    @staticmethod
    def forward(ctx: Any, drive: torch.Tensor, x0: torch.Tensor, blocks: torch.Tensor,
                kmat: torch.Tensor | None, alpha: float, mode: str, act: Activation,
                all_states: bool) -> torch.Tensor:
        bsz, steps, n_units = drive.shape
        states = drive.new_empty(steps + 1, bsz, n_units)
        need_k = mode != "plain" and ctx.needs_input_grad[3]
        zbuf = drive.new_empty(steps, bsz, n_units) if mode == "cayley" and need_k else None
        last = recurrence_forward(drive, x0, blocks, kmat, alpha, mode, act, states, zbuf)
        ctx.save_for_backward(states, zbuf, blocks, kmat)
        ctx.alpha, ctx.mode, ctx.act, ctx.all_states = alpha, mode, act, all_states
        return states[1:] if all_states else last

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: torch.Tensor):
        states, zbuf, blocks, kmat = ctx.saved_tensors
        alpha, mode, act, all_states = ctx.alpha, ctx.mode, ctx.act, ctx.all_states
        need_u, need_x0, need_w, need_k = ctx.needs_input_grad[:4]
        need_k = need_k and mode != "plain"
        steps, bsz, n_units = states.shape[0] - 1, states.shape[1], states.shape[2]
        p, n = blocks.shape[0], n_units // blocks.shape[0]
        shape3 = (bsz, p, n)

        # g_{k+1} = dLoss/dx_{k+1} for k = 0..T-1 (kept for dL / dC, else only two rows).
        keep_g = need_k or (mode != "cayley" and (need_u or need_w))
        gbuf = states.new_empty(steps if keep_g else 2, bsz, n_units)
        # gh_k = dLoss/dh_k = dLoss/du_k: for euler/plain alpha * g (scaled at the end).
        if mode == "cayley":
            keep_gh = need_u or need_w
            ghbuf = states.new_empty(steps if keep_gh else 1, bsz, n_units)
            akmat = alpha * kmat
        if mode == "euler":
            eye = torch.eye(n_units, dtype=kmat.dtype, device=kmat.device)
            amat = (1 - alpha) * eye + alpha * kmat  # A
        wmat = blocks if mode == "cayley" else alpha * blocks
        gx0 = states.new_empty(bsz, n_units)
        sbuf = states.new_empty(p, bsz, n)
        sview = sbuf.transpose(0, 1)
        tmp = states.new_empty(bsz, n_units)
        c_cay = (1 - alpha) / alpha

        def rows_of(buf: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
            """Per-step views of ``buf``: (batch, N) rows and their (p, batch, n) blocks."""
            return (list(buf.unbind(0)),
                    list(buf.view(-1, bsz, p, n).transpose(1, 2).unbind(0)))

        def slot(views: list[torch.Tensor], k: int) -> torch.Tensor:
            return views[k] if len(views) == steps else views[k % len(views)]

        x3 = states.view(-1, bsz, p, n).unbind(0)
        g_rows, g_blocks = rows_of(gbuf)
        if mode == "cayley":
            gh_rows, gh_blocks = rows_of(ghbuf)
        go = grad_out.unbind(0) if all_states else None
        slot(g_rows, steps - 1).copy_(go[steps - 1] if all_states else grad_out)
        for k in range(steps - 1, -1, -1):
            g, x = slot(g_rows, k), x3[k]
            dst = slot(g_rows, k - 1) if k > 0 else gx0
            if mode == "cayley":
                gh = slot(gh_rows, k)
                torch.mm(g, akmat, out=gh)  # alpha g C
                torch.bmm(slot(gh_blocks, k), wmat, out=sbuf)
                times_slope(act, sview, x, dst.view(shape3))
                if c_cay != 0:
                    dst.add_(gh, alpha=c_cay)
            elif mode == "euler":
                torch.bmm(slot(g_blocks, k), wmat, out=sbuf)  # alpha g W
                times_slope(act, sview, x, tmp.view(shape3))
                torch.addmm(tmp, g, amat, out=dst)
            else:
                torch.bmm(slot(g_blocks, k), wmat, out=sbuf)
                times_slope(act, sview, x, dst.view(shape3))
                dst.add_(g, alpha=1 - alpha)
            if all_states and k > 0:
                dst.add_(go[k - 1])

        rows = steps * bsz
        xprev = states[:-1]
        gh_all = ghbuf if mode == "cayley" else gbuf  # euler/plain: gh = alpha g
        grad_k = grad_w = None
        if need_k and mode == "cayley":
            grad_k = gbuf.view(rows, n_units).T @ zbuf.view(rows, n_units)  # dC = G^T Z
        elif need_k:
            grad_k = alpha * (gbuf.view(rows, n_units).T @ xprev.view(rows, n_units))
        if need_w:
            # phi(x_k) for all steps (into G once dC is done, else a new buffer), one bmm.
            free = mode == "cayley" and gbuf.shape[0] == steps
            phi = gbuf if free else torch.empty_like(xprev)
            activate_all(act, xprev, phi)
            gh2 = gh_all.view(rows, p, -1).permute(1, 2, 0)
            grad_w = torch.bmm(gh2, phi.view(rows, p, -1).transpose(0, 1))
            if mode != "cayley":
                grad_w.mul_(alpha)
            del phi
        grad_u = None
        if need_u:
            if mode != "cayley":
                gh_all.mul_(alpha)
            grad_u = gh_all.transpose(0, 1)
        return grad_u, gx0 if need_x0 else None, grad_w, grad_k, None, None, None, None
