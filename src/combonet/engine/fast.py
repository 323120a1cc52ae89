"""The fast recurrence engine: a snapshot's map with a hand-written BPTT, one backward per map.

Forward, per step (rows of ``y`` are samples; :mod:`combonet.snapshot` defines the tensors)::

    h = phi(y) W_a^T                     one bmm over the diagonal blocks of W_a
    cayley: z = b * y + h + d;  y+ = z C^T        (one mm)
    euler:  y+ = y A_e^T + h + d                  (one addmm)
    none:   y+ = b * y + h + d                    (no coupling)

States go into one preallocated ``(steps + 1, batch, N)`` buffer (``out=`` everywhere, no
per-step autograd graph). Backward, with ``e = dLoss/dy_{k+1}`` and ``ez = dLoss/dz_k`` (which
is also the gradient of the drive ``d_k`` and of ``h_k``; ``g`` stays the slope bound), per
step only the state recursion::

    cayley: ez = e C;   dy_k = b * ez + (ez W_a) * phi'(y_k)
    euler:  ez = e;     dy_k = e A_e + (e W_a) * phi'(y_k)
    none:   ez = e;     dy_k = b * e + (e W_a) * phi'(y_k)

and then ONE product per weight over all ``steps * batch`` rows: ``dW_a = EZ^T phi(Y)`` (one
bmm over blocks), ``dC = E^T Z`` or ``dA_e = E^T Y``, ``db = sum(EZ * Y)``. Autograd outside
handles ``C = cayley(K)``, eq. 3, masks, time constants and the change of coordinates.

Memory (T steps, one unit = batch * N floats): forward keeps the states (T + 1) and, for cayley
with a trainable ``C``, the pre-coupling states ``Z`` (T); backward adds ``E`` / ``EZ`` (T each
where needed) and ``phi(Y)`` (reusing ``E`` for cayley). Saved tensors are never written, so
``retain_graph=True`` works. Device-agnostic (only torch ops with ``out=``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch.autograd.function import once_differentiable

from ..activations import Activation

#: Steps per chunk when ``phi`` is applied to many stored states at once (bounds temporaries).
CHUNK_STEPS = 64

Decay = torch.Tensor | float


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


def times_slope(act: Activation, upstream: torch.Tensor, x: torch.Tensor,
                out: torch.Tensor) -> None:
    """``out = upstream * phi'(x)``; one fused kernel for ReLU (two for tanh)."""
    if act.fn is torch.relu:
        torch.ops.aten.threshold_backward.grad_input(upstream, x, 0, grad_input=out)
    elif act.fn is torch.tanh:
        torch.ops.aten.tanh_backward.grad_input(upstream, torch.tanh(x), grad_input=out)
    else:
        torch.mul(upstream, act.slope(x), out=out)


def add_decay(dst: torch.Tensor, x: torch.Tensor, decay: Decay) -> None:
    """``dst += b * x`` with ``b`` a float (uniform) or a per-unit vector."""
    if isinstance(decay, float):
        if decay != 0:
            dst.add_(x, alpha=decay)
    else:
        dst.addcmul_(x, decay)


def recurrence_forward(drive: torch.Tensor, x0: torch.Tensor, blocks: torch.Tensor,
                       kmat: torch.Tensor | None, decay: Decay, mode: str, act: Activation,
                       states: torch.Tensor, zbuf: torch.Tensor | None = None,
                       factors: tuple[torch.Tensor, ...] | None = None) -> torch.Tensor:
    """Run the map over ``drive`` (batch, steps, N) into ``states``; return the last state.

    ``blocks`` (p, n, n) are the diagonal blocks of ``W_a``, ``kmat`` is ``C`` (cayley) or
    ``A_e`` (euler), ``decay`` is ``b``. ``states`` is ``(steps + 1, batch, N)`` (all states
    kept) or ``(2, batch, N)`` (a ring: only the last state is kept). ``zbuf`` (steps, batch, N)
    receives the cayley pre-coupling states for the backward pass. ``lowrank`` runs
    ``y+ = z + (z H) X^T`` with ``factors = (X, H)``, ``H = Y G^T`` (two products per step).
    """
    bsz, steps, n_units = drive.shape
    p, n = blocks.shape[0], n_units // blocks.shape[0]
    wt = blocks.transpose(1, 2)  # W_a,i^T
    kt = kmat.T if kmat is not None else None
    if mode == "lowrank":  # factors = (X, H) with H = Y G^T, so that C^T = I + H X^T
        fx, fh = factors
        fxt = fx.T
        t2 = drive.new_empty(bsz, fx.shape[1])
    hbuf = drive.new_empty(p, bsz, n)
    hview = hbuf.transpose(0, 1)  # (batch, p, n) view of h
    sbuf = drive.new_empty(bsz, n_units)
    sblocks = blockview(sbuf, p)
    tmp = drive.new_empty(bsz, n_units)
    # Per-step views, made once: y_k (batch, N) and its (batch, p, n) split, d_k, z_k.
    ring = states.shape[0] == 2 and steps > 1
    xs, x3 = states.unbind(0), states.view(-1, bsz, p, n).unbind(0)
    us = drive.view(bsz, steps, p, n).unbind(1)
    zs = zbuf.unbind(0) if zbuf is not None else None
    xs[0].copy_(x0)
    for k in range(steps):
        i, j = (k & 1, (k + 1) & 1) if ring else (k, k + 1)
        x, xn = xs[i], xs[j]
        s = activate(act, x, sbuf)
        torch.bmm(sblocks if s is sbuf else blockview(s, p), wt, out=hbuf)
        if mode == "cayley":
            z = zs[k] if zs is not None else tmp
            torch.add(hview, us[k], out=z.view(bsz, p, n))
            add_decay(z, x, decay)
            torch.mm(z, kt, out=xn)
        elif mode == "lowrank":
            z = zs[k] if zs is not None else tmp
            torch.add(hview, us[k], out=z.view(bsz, p, n))
            add_decay(z, x, decay)
            torch.mm(z, fh, out=t2)
            torch.addmm(z, t2, fxt, out=xn)
        elif mode == "euler":
            torch.add(hview, us[k], out=tmp.view(bsz, p, n))
            torch.addmm(tmp, x, kt, out=xn)
        else:
            torch.add(hview, us[k], out=x3[j])
            add_decay(xn, x, decay)
    return xs[steps & 1 if ring else steps]


class _Rows:
    """Per-step views of a ``(steps or 1 or 2, batch, N)`` buffer: rows and (p, batch, n)."""

    def __init__(self, buf: torch.Tensor, steps: int, p: int) -> None:
        bsz, n_units = buf.shape[1], buf.shape[2]
        self.buf, self.steps = buf, steps
        self.rows = list(buf.unbind(0))
        self.blocks = list(buf.view(-1, bsz, p, n_units // p).transpose(1, 2).unbind(0))

    def row(self, k: int) -> torch.Tensor:
        return self.rows[k % len(self.rows)]

    def block(self, k: int) -> torch.Tensor:
        return self.blocks[k % len(self.blocks)]


class _Workspace:
    """What every backward pass sets up: sizes, the per-step state views ``y_k`` as
    (batch, p, n), a (p, batch, n) buffer for ``e W_a`` and the gradient of ``y_0``."""

    def __init__(self, states: torch.Tensor, blocks: torch.Tensor) -> None:
        steps, self.bsz, self.n_units = states.shape
        self.steps = steps - 1
        self.p = blocks.shape[0]
        self.shape3 = (self.bsz, self.p, self.n_units // self.p)
        self.states3 = states.view(-1, *self.shape3).unbind(0)
        self.sbuf = states.new_empty(self.p, self.bsz, self.n_units // self.p)
        self.sview = self.sbuf.transpose(0, 1)
        self.gx0 = states.new_empty(self.bsz, self.n_units)

    def through_modules(self, upstream: _Rows, k: int, blocks: torch.Tensor, act: Activation,
                        decay: Decay, dst: torch.Tensor) -> None:
        """``dst = (ez W_a) * phi'(y_k) + b * ez`` for ``ez = upstream.row(k)``: the gradient
        through step ``k``'s module map ``z = b * y + W_a phi(y) + d``."""
        torch.bmm(upstream.block(k), blocks, out=self.sbuf)
        times_slope(act, self.sview, self.states3[k], dst.view(self.shape3))
        add_decay(dst, upstream.row(k), decay)

    def rows(self, states: torch.Tensor, keep: bool) -> _Rows:
        """Per-step rows of a new buffer: all ``steps`` when ``keep``, else a ring of two."""
        return _Rows(states.new_empty(self.steps if keep else 2, self.bsz, self.n_units),
                     self.steps, self.p)


def _weight_grad(upstream: torch.Tensor, phi: torch.Tensor, p: int) -> torch.Tensor:
    """``dW_a,i = sum over steps and samples of upstream_i^T phi_i`` for every block (one bmm)."""
    rows = upstream.shape[0] * upstream.shape[1]
    up = upstream.reshape(rows, p, -1).permute(1, 2, 0)
    return torch.bmm(up, phi.reshape(rows, p, -1).transpose(0, 1))


def _seed(grad_out: torch.Tensor, all_states: bool, dst: torch.Tensor, steps: int) -> list:
    """Put ``dLoss/dy_T`` into ``dst``; return the per-step output gradients (or [])."""
    go = list(grad_out.unbind(0)) if all_states else []
    dst.copy_(go[steps - 1] if all_states else grad_out)
    return go


def _backward_cayley(ctx: Any, grad_out: torch.Tensor) -> tuple:
    states, zbuf, blocks, kmat, decay_t = ctx.saved_tensors
    decay = ctx.uniform if ctx.uniform is not None else decay_t
    need_u, need_x0, need_w, need_k, need_b = ctx.needs_input_grad[:5]
    ws = _Workspace(states, blocks)
    grads = ws.rows(states, need_k)
    grads_z = _Rows(states.new_empty(ws.steps if (need_u or need_w or need_b) else 1, ws.bsz,
                                     ws.n_units), ws.steps, ws.p)
    go = _seed(grad_out, ctx.all_states, grads.row(ws.steps - 1), ws.steps)
    for k in range(ws.steps - 1, -1, -1):
        gz_k = grads_z.row(k)
        torch.mm(grads.row(k), kmat, out=gz_k)  # ez = e C
        dst = grads.row(k - 1) if k > 0 else ws.gx0
        ws.through_modules(grads_z, k, blocks, ctx.act, decay, dst)
        if ctx.all_states and k > 0:
            dst.add_(go[k - 1])
    rows, prev = ws.steps * ws.bsz, states[:-1]
    grad_k = grad_w = grad_b = None
    if need_k:  # dC = E^T Z
        grad_k = grads.buf.view(rows, ws.n_units).T @ zbuf.view(rows, ws.n_units)
    if need_b:
        grad_b = (grads_z.buf * prev).sum((0, 1))
    if need_w:  # phi(Y) into E once dC is done (same shape), else a new buffer
        phi = grads.buf if grads.buf.shape[0] == ws.steps else torch.empty_like(prev)
        activate_all(ctx.act, prev, phi)
        grad_w = _weight_grad(grads_z.buf, phi, ws.p)
        del phi
    grad_u = grads_z.buf.transpose(0, 1) if need_u else None
    return grad_u, ws.gx0 if need_x0 else None, grad_w, grad_k, grad_b


def _backward_euler(ctx: Any, grad_out: torch.Tensor) -> tuple:
    states, _, blocks, kmat, _ = ctx.saved_tensors
    need_u, need_x0, need_w, need_k, _ = ctx.needs_input_grad[:5]
    ws = _Workspace(states, blocks)
    grads = ws.rows(states, need_k or need_u or need_w)
    tmp = states.new_empty(ws.bsz, ws.n_units)
    go = _seed(grad_out, ctx.all_states, grads.row(ws.steps - 1), ws.steps)
    for k in range(ws.steps - 1, -1, -1):
        dst = grads.row(k - 1) if k > 0 else ws.gx0
        torch.bmm(grads.block(k), blocks, out=ws.sbuf)  # e W_a
        times_slope(ctx.act, ws.sview, ws.states3[k], tmp.view(ws.shape3))
        torch.addmm(tmp, grads.row(k), kmat, out=dst)  # + e A_e
        if ctx.all_states and k > 0:
            dst.add_(go[k - 1])
    rows, prev = ws.steps * ws.bsz, states[:-1]
    grad_k = grad_w = None
    if need_k:  # dA_e = E^T Y
        grad_k = grads.buf.view(rows, ws.n_units).T @ prev.reshape(rows, ws.n_units)
    if need_w:
        phi = torch.empty_like(prev)
        activate_all(ctx.act, prev, phi)
        grad_w = _weight_grad(grads.buf, phi, ws.p)
        del phi
    grad_u = grads.buf.transpose(0, 1) if need_u else None
    return grad_u, ws.gx0 if need_x0 else None, grad_w, grad_k, None


def _backward_none(ctx: Any, grad_out: torch.Tensor) -> tuple:
    states, _, blocks, _, decay_t = ctx.saved_tensors
    decay = ctx.uniform if ctx.uniform is not None else decay_t
    need_u, need_x0, need_w, _, need_b = ctx.needs_input_grad[:5]
    ws = _Workspace(states, blocks)
    grads = ws.rows(states, need_u or need_w or need_b)
    go = _seed(grad_out, ctx.all_states, grads.row(ws.steps - 1), ws.steps)
    for k in range(ws.steps - 1, -1, -1):
        dst = grads.row(k - 1) if k > 0 else ws.gx0
        ws.through_modules(grads, k, blocks, ctx.act, decay, dst)
        if ctx.all_states and k > 0:
            dst.add_(go[k - 1])
    prev = states[:-1]
    grad_w = grad_b = None
    if need_b:
        grad_b = (grads.buf * prev).sum((0, 1))
    if need_w:
        phi = torch.empty_like(prev)
        activate_all(ctx.act, prev, phi)
        grad_w = _weight_grad(grads.buf, phi, ws.p)
        del phi
    grad_u = grads.buf.transpose(0, 1) if need_u else None
    return grad_u, ws.gx0 if need_x0 else None, grad_w, None, grad_b


def _backward_lowrank(ctx: Any, grad_out: torch.Tensor) -> tuple:
    """``y+ = z C^T`` with ``C^T = I + H X^T``, ``H = Y G^T``, kept factored: per step
    ``ez = e + (e X) H^T`` (``O(N r)``); at the end ``dX = E^T (Z H)``, ``dH = Z^T (E X)``,
    then ``dY = dH G`` and ``dG = dH^T Y``."""
    states, zbuf, blocks, fx, fg, fy, fh, decay_t = ctx.saved_tensors
    decay = ctx.uniform if ctx.uniform is not None else decay_t
    need_u, need_x0, need_w, need_x, need_g, need_y, need_b = ctx.needs_input_grad[:7]
    ws = _Workspace(states, blocks)
    k2 = fx.shape[1]
    grads = ws.rows(states, need_x)
    grads_z = _Rows(states.new_empty(ws.steps if (need_u or need_w or need_b) else 1, ws.bsz,
                                     ws.n_units), ws.steps, ws.p)
    ex = states.new_empty(ws.steps if (need_g or need_y) else 1, ws.bsz, k2)
    fht = fh.T
    go = _seed(grad_out, ctx.all_states, grads.row(ws.steps - 1), ws.steps)
    for k in range(ws.steps - 1, -1, -1):
        e, gz_k, ex_k = grads.row(k), grads_z.row(k), ex[k % ex.shape[0]]
        torch.mm(e, fx, out=ex_k)
        torch.addmm(e, ex_k, fht, out=gz_k)  # ez = e C
        dst = grads.row(k - 1) if k > 0 else ws.gx0
        ws.through_modules(grads_z, k, blocks, ctx.act, decay, dst)
        if ctx.all_states and k > 0:
            dst.add_(go[k - 1])
    rows, prev = ws.steps * ws.bsz, states[:-1]
    grad_x = grad_g = grad_y = grad_w = grad_b = None
    if need_x or need_g or need_y:
        z2 = zbuf.view(rows, ws.n_units)
        if need_x:
            grad_x = grads.buf.view(rows, ws.n_units).T @ (z2 @ fh)
        if need_g or need_y:
            grad_h = z2.T @ ex.view(rows, k2)
            grad_y = grad_h @ fg if need_y else None
            grad_g = grad_h.T @ fy if need_g else None
    if need_b:
        grad_b = (grads_z.buf * prev).sum((0, 1))
    if need_w:
        phi = grads.buf if grads.buf.shape[0] == ws.steps else torch.empty_like(prev)
        activate_all(ctx.act, prev, phi)
        grad_w = _weight_grad(grads_z.buf, phi, ws.p)
        del phi
    grad_u = grads_z.buf.transpose(0, 1) if need_u else None
    return grad_u, ws.gx0 if need_x0 else None, grad_w, grad_x, grad_g, grad_y, grad_b


BACKWARD = {"cayley": _backward_cayley, "euler": _backward_euler, "none": _backward_none}


class Recurrence(torch.autograd.Function):
    """``states = map^T(y0; drive, W_a, K, b)`` with a hand-written backward per map.

    Inputs: ``drive`` (batch, steps, N), ``x0`` (batch, N), ``blocks`` (p, n, n), ``kmat``
    (N, N) or ``None``, ``decay`` (N,); ``uniform`` is ``b`` as a float when it is the same for
    every unit (faster). Returns (steps, batch, N) when ``all_states`` else (batch, N).
    """

    @staticmethod
    def forward(ctx: Any, drive: torch.Tensor, x0: torch.Tensor, blocks: torch.Tensor,
                kmat: torch.Tensor | None, decay: torch.Tensor, uniform: float | None,
                mode: str, act: Activation, all_states: bool) -> torch.Tensor:
        bsz, steps, n_units = drive.shape
        states = drive.new_empty(steps + 1, bsz, n_units)
        need_k = mode == "cayley" and ctx.needs_input_grad[3]
        zbuf = drive.new_empty(steps, bsz, n_units) if need_k else None
        dec = uniform if uniform is not None else decay
        last = recurrence_forward(drive, x0, blocks, kmat, dec, mode, act, states, zbuf)
        ctx.save_for_backward(states, zbuf, blocks, kmat, decay)
        ctx.uniform, ctx.mode, ctx.act, ctx.all_states = uniform, mode, act, all_states
        return states[1:] if all_states else last

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: torch.Tensor):
        grads = BACKWARD[ctx.mode](ctx, grad_out)
        return (*grads, None, None, None, None)


class LowRankRecurrence(torch.autograd.Function):
    """:class:`Recurrence` for the cayley map with a low-rank coupling, ``C = I + X G Y^T``
    never formed. Inputs: ``drive``, ``x0``, ``blocks``, ``X`` (N, k), ``G`` (k, k), ``Y``
    (N, k), ``decay``, then ``uniform``, ``act``, ``all_states``."""

    @staticmethod
    def forward(ctx: Any, drive: torch.Tensor, x0: torch.Tensor, blocks: torch.Tensor,
                fx: torch.Tensor, fg: torch.Tensor, fy: torch.Tensor, decay: torch.Tensor,
                uniform: float | None, act: Activation, all_states: bool) -> torch.Tensor:
        bsz, steps, n_units = drive.shape
        states = drive.new_empty(steps + 1, bsz, n_units)
        need = any(ctx.needs_input_grad[3:6])
        zbuf = drive.new_empty(steps, bsz, n_units) if need else None
        dec = uniform if uniform is not None else decay
        fh = fy @ fg.T
        last = recurrence_forward(drive, x0, blocks, None, dec, "lowrank", act, states, zbuf,
                                  (fx, fh))
        ctx.save_for_backward(states, zbuf, blocks, fx, fg, fy, fh, decay)
        ctx.uniform, ctx.act, ctx.all_states = uniform, act, all_states
        return states[1:] if all_states else last

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_out: torch.Tensor):
        return (*_backward_lowrank(ctx, grad_out), None, None, None)
