"""Time-major jitted loops for one direction of RNN, GRU and LSTM: forward and BPTT.

Conventions (all arrays C-contiguous, one dtype per call):
- ``G`` (T, B, gates*H): the input projection X @ W.T plus the foldable biases, computed by
  one matrix product before the loop (in ``functional``).
- ``lengths`` (B,) int64: steps t >= lengths[b] output zero and hold the state.
- Reverse directions are handled by ``functional`` by reversing each sequence's valid part
  before the call, so every kernel here runs forwards in time.
- With ``train`` the kernels keep what BPTT needs: pre-activations ``A`` (before clip),
  gate outputs ``Gt``, states ``Hs``/``Cs`` (T+1, B, H) with the initial state at index 0.
  Without it those buffers have a leading dimension of 1 and are overwritten each step.
- Nothing is allocated inside the time loop; scratch buffers are made once per call.
- Weight gradients are NOT accumulated here: the backward kernels return the gate
  gradients ``dA`` (T, B, gates*H) and ``functional`` turns them into dW, dR, dWb, dRb with
  one matrix product each.
"""

from __future__ import annotations

import numpy as np

from ._activations import act_vec, dact1
from ._config import jit

@jit
def matmul(A, Wn, Wt, out):
    """out (M, N) = A (M, K) @ Wt (K, N), where Wn (N, K) is the same matrix transposed.

    One row (batch 1, the streaming case): four dot products at a time over rows of Wn,
    which beats a BLAS call at these sizes (measured: 64x256 0.82 us vs 0.87 us, 16x64
    0.13 us vs 0.15 us). Several rows: BLAS through np.dot.
    """
    M, K = A.shape
    N = Wn.shape[0]
    if M == 1:
        n = 0
        while n + 4 <= N:
            s0 = A.dtype.type(0.0)
            s1 = s0
            s2 = s0
            s3 = s0
            for k in range(K):
                a = A[0, k]
                s0 += a * Wn[n, k]
                s1 += a * Wn[n + 1, k]
                s2 += a * Wn[n + 2, k]
                s3 += a * Wn[n + 3, k]
            out[0, n] = s0
            out[0, n + 1] = s1
            out[0, n + 2] = s2
            out[0, n + 3] = s3
            n += 4
        while n < N:
            s = A.dtype.type(0.0)
            for k in range(K):
                s += A[0, k] * Wn[n, k]
            out[0, n] = s
            n += 1
    else:
        np.dot(A, Wt, out)


@jit(inline="always")
def clamp(x, clip):
    if clip > 0.0:
        return min(max(x, -clip), clip)
    return x


@jit(inline="always")
def inside(x, clip):
    """1 where the clip does not cut the pre-activation (its gradient passes), else 0."""
    if clip > 0.0 and (x > clip or x < -clip):
        return 0.0
    return 1.0


# ----------------------------------------------------------------------------------------
# RNN:  H_t = f(X_t W^T + H_{t-1} R^T + Wb + Rb)
# ----------------------------------------------------------------------------------------
@jit
def rnn_forward(G, R, RT, h0, lengths, code, alpha, beta, clip, train, Y, h, A, Gt, Hs):
    T, B, H = G.shape
    h[:] = h0
    rec = np.empty((B, H), G.dtype)  # (B, H)
    tmp = np.empty(H, G.dtype)
    for t in range(T):
        k = t if train else 0
        if train:
            Hs[t] = h
        matmul(h, R, RT, rec)
        for b in range(B):
            if t >= lengths[b]:
                continue
            for j in range(H):
                a = G[t, b, j] + rec[b, j]
                A[k, b, j] = a
                tmp[j] = clamp(a, clip)
            act_vec(code, tmp, Gt[k, b], alpha, beta)
            for j in range(H):
                h[b, j] = Gt[k, b, j]
                Y[t, b, j] = h[b, j]
    if train:
        Hs[T] = h


@jit
def rnn_backward(R, RT, lengths, code, alpha, beta, clip, dY, dh, A, Gt, dA):
    """dh (B, H) enters as dL/dH_T and leaves as dL/dH_0. Fills dA (T, B, H)."""
    T, B, H = dY.shape
    rec = np.empty((B, H), dY.dtype)
    for t in range(T - 1, -1, -1):
        for b in range(B):
            if t >= lengths[b]:
                continue  # dA stays zero, dh passes through the held state
            for j in range(H):
                x = A[t, b, j]
                g = dh[b, j] + dY[t, b, j]
                dA[t, b, j] = g * dact1(code, clamp(x, clip), Gt[t, b, j], alpha, beta) * inside(x, clip)
        matmul(dA[t], RT, R, rec)  # (B, H) @ (H, H)
        for b in range(B):
            if t < lengths[b]:
                for j in range(H):
                    dh[b, j] = rec[b, j]


# ----------------------------------------------------------------------------------------
# GRU (ONNX): z = f(Xz + H Rz + b), r = f(Xr + H Rr + b)
#   lbr=0: h~ = g(Xh + (r*H) Rh + Rbh + Wbh)      lbr=1: h~ = g(Xh + r*(H Rh + Rbh) + Wbh)
#   H_t = (1 - z) * h~ + z * H_{t-1}
# G holds X W^T + Wb + Rb_zr (+ Rbh when lbr=0). RH keeps (H Rh + Rbh) for lbr=1, r*H for lbr=0.
# ----------------------------------------------------------------------------------------
@jit
def gru_forward(G, Rzr, RzrT, Rh, RhT, Rbh, h0, lengths, codes, alphas, betas, clip, lbr, train,
                Y, h, A, Gt, Hs, RH):
    T, B, G3 = G.shape
    H = G3 // 3
    h[:] = h0
    rec_zr = np.empty((B, 2 * H), G.dtype)  # (B, 2H)
    rec_h = np.empty((B, H), G.dtype)  # (B, H)
    rh = np.empty((B, H), G.dtype)  # (B, H): r*H (lbr=0)
    tmp = np.empty(2 * H, G.dtype)
    fc, gc = codes[0], codes[1]
    for t in range(T):
        k = t if train else 0
        if train:
            Hs[t] = h
        matmul(h, Rzr, RzrT, rec_zr)
        if lbr:
            matmul(h, Rh, RhT, rec_h)
        for b in range(B):
            if t >= lengths[b]:
                continue
            for j in range(2 * H):
                a = G[t, b, j] + rec_zr[b, j]
                A[k, b, j] = a
                tmp[j] = clamp(a, clip)
            act_vec(fc, tmp, Gt[k, b, : 2 * H], alphas[0], betas[0])
            for j in range(H):
                rh[b, j] = Gt[k, b, H + j] * h[b, j]
        if not lbr:
            matmul(rh, Rh, RhT, rec_h)
        for b in range(B):
            if t >= lengths[b]:
                continue
            for j in range(H):
                r = Gt[k, b, H + j]
                if lbr:
                    rr = rec_h[b, j] + Rbh[j]
                    a = G[t, b, 2 * H + j] + r * rr
                else:
                    rr = rh[b, j]
                    a = G[t, b, 2 * H + j] + rec_h[b, j]
                if train:
                    RH[t, b, j] = rr
                A[k, b, 2 * H + j] = a
                tmp[j] = clamp(a, clip)
            act_vec(gc, tmp[:H], Gt[k, b, 2 * H:], alphas[1], betas[1])
            for j in range(H):
                z = Gt[k, b, j]
                h[b, j] = (1.0 - z) * Gt[k, b, 2 * H + j] + z * h[b, j]
                Y[t, b, j] = h[b, j]
    if train:
        Hs[T] = h


@jit
def gru_backward(Rzr, RzrT, Rh, RhT, lengths, codes, alphas, betas, clip, lbr, dY, dh, A, Gt, Hs, RH, dA, dRec):
    """Fills dA (T, B, 3H) (gradient of the gate pre-activations that meet X W^T) and
    dRec (T, B, 3H) (gradient of the recurrent products: H Rzr^T, and H Rh^T + Rbh or (r*H) Rh^T)."""
    T, B, H = dY.shape
    fc, gc = codes[0], codes[1]
    s_zr = np.empty((B, 2 * H), dY.dtype)
    s_h = np.empty((B, H), dY.dtype)
    back_zr = np.empty((B, H), dY.dtype)
    back_h = np.empty((B, H), dY.dtype)
    direct = np.empty((B, H), dY.dtype)
    for t in range(T - 1, -1, -1):
        for b in range(B):
            if t >= lengths[b]:
                for j in range(2 * H):
                    s_zr[b, j] = 0.0
                for j in range(H):
                    s_h[b, j] = 0.0
                continue
            for j in range(H):
                g = dh[b, j] + dY[t, b, j]
                z = Gt[t, b, j]
                hh = Gt[t, b, 2 * H + j]
                hp = Hs[t, b, j]
                xz = A[t, b, j]
                xh = A[t, b, 2 * H + j]
                daz = g * (hp - hh) * dact1(fc, clamp(xz, clip), z, alphas[0], betas[0]) * inside(xz, clip)
                dah = g * (1.0 - z) * dact1(gc, clamp(xh, clip), hh, alphas[1], betas[1]) * inside(xh, clip)
                dA[t, b, j] = daz
                dA[t, b, 2 * H + j] = dah
                direct[b, j] = g * z
                s_zr[b, j] = daz
                if lbr:
                    s_h[b, j] = dah * Gt[t, b, H + j]  # d(H Rh^T + Rbh)
                else:
                    s_h[b, j] = dah  # d((r*H) Rh^T)
        matmul(s_h, RhT, Rh, back_h)  # (B, H) @ (H, H)
        for b in range(B):
            if t >= lengths[b]:
                continue
            for j in range(H):
                r = Gt[t, b, H + j]
                xr = A[t, b, H + j]
                if lbr:
                    dr = dA[t, b, 2 * H + j] * RH[t, b, j]
                else:
                    dr = back_h[b, j] * Hs[t, b, j]  # d(r*H)/dr
                    direct[b, j] += back_h[b, j] * r
                dar = dr * dact1(fc, clamp(xr, clip), r, alphas[0], betas[0]) * inside(xr, clip)
                dA[t, b, H + j] = dar
                s_zr[b, H + j] = dar
            for j in range(2 * H):
                dRec[t, b, j] = s_zr[b, j]
            for j in range(H):
                dRec[t, b, 2 * H + j] = s_h[b, j]
        matmul(s_zr, RzrT, Rzr, back_zr)  # (B, 2H) @ (2H, H)
        for b in range(B):
            if t >= lengths[b]:
                continue
            for j in range(H):
                dh[b, j] = direct[b, j] + back_zr[b, j] + (back_h[b, j] if lbr else 0.0)


# ----------------------------------------------------------------------------------------
# LSTM (ONNX, gates i,o,f,c):
#   i = f(Xi + H Ri + Pi*C + b)   f = f(Xf + H Rf + Pf*C + b)  (or f = 1 - i with input_forget)
#   c~ = g(Xc + H Rc + b)         C_t = f*C + i*c~
#   o = f(Xo + H Ro + Po*C_t + b) H_t = o * h(C_t)
# ----------------------------------------------------------------------------------------
@jit
def lstm_forward(G, R, RT, P, h0, c0, lengths, codes, alphas, betas, clip, input_forget, peep, train,
                 Y, h, c, A, Gt, Hs, Cs, Hc):
    T, B, G4 = G.shape
    H = G4 // 4
    h[:] = h0
    c[:] = c0
    rec = np.empty((B, G4), G.dtype)  # (B, 4H)
    tmp = np.empty(G4, G.dtype)
    hcv = np.empty(H, G.dtype)
    fc, gc, hc = codes[0], codes[1], codes[2]
    for t in range(T):
        k = t if train else 0
        if train:
            Hs[t] = h
            Cs[t] = c
        matmul(h, R, RT, rec)
        for b in range(B):
            if t >= lengths[b]:
                continue
            a = A[k, b]
            gt = Gt[k, b]
            for j in range(G4):
                a[j] = G[t, b, j] + rec[b, j]
            if peep:
                for j in range(H):
                    a[j] += P[j] * c[b, j]
                    a[2 * H + j] += P[2 * H + j] * c[b, j]
            for j in range(G4):
                tmp[j] = clamp(a[j], clip)
            act_vec(fc, tmp[:H], gt[:H], alphas[0], betas[0])  # i
            if input_forget:
                for j in range(H):
                    gt[2 * H + j] = 1.0 - gt[j]
            else:
                act_vec(fc, tmp[2 * H: 3 * H], gt[2 * H: 3 * H], alphas[0], betas[0])  # f
            act_vec(gc, tmp[3 * H:], gt[3 * H:], alphas[1], betas[1])  # c~
            for j in range(H):
                c[b, j] = gt[2 * H + j] * c[b, j] + gt[j] * gt[3 * H + j]
            if peep:
                for j in range(H):
                    a[H + j] += P[H + j] * c[b, j]
            for j in range(H):
                tmp[H + j] = clamp(a[H + j], clip)
            act_vec(fc, tmp[H: 2 * H], gt[H: 2 * H], alphas[0], betas[0])  # o
            act_vec(hc, c[b], hcv, alphas[2], betas[2])  # h(C_t)
            for j in range(H):
                h[b, j] = gt[H + j] * hcv[j]
                Y[t, b, j] = h[b, j]
                if train:
                    Hc[t, b, j] = hcv[j]
    if train:
        Hs[T] = h
        Cs[T] = c


@jit
def lstm_backward(R, RT, P, lengths, codes, alphas, betas, clip, input_forget, peep,
                  dY, dh, dc, A, Gt, Hs, Cs, Hc, dA, dP):
    """dh, dc (B, H) enter as dL/dH_T, dL/dC_T and leave as dL/dH_0, dL/dC_0.
    Fills dA (T, B, 4H) and accumulates dP (3H,)."""
    T, B, H = dY.shape
    fc, gc, hc = codes[0], codes[1], codes[2]
    rec = np.empty((B, H), dY.dtype)
    for t in range(T - 1, -1, -1):
        for b in range(B):
            if t >= lengths[b]:
                continue
            for j in range(H):
                g = dh[b, j] + dY[t, b, j]
                i = Gt[t, b, j]
                o = Gt[t, b, H + j]
                f = Gt[t, b, 2 * H + j]
                cc = Gt[t, b, 3 * H + j]
                cp = Cs[t, b, j]
                cn = Cs[t + 1, b, j]
                hcv = Hc[t, b, j]
                xi = A[t, b, j]
                xo = A[t, b, H + j]
                xf = A[t, b, 2 * H + j]
                xc = A[t, b, 3 * H + j]
                dao = g * hcv * dact1(fc, clamp(xo, clip), o, alphas[0], betas[0]) * inside(xo, clip)
                dcn = dc[b, j] + g * o * dact1(hc, cn, hcv, alphas[2], betas[2])
                if peep:
                    dcn += dao * P[H + j]
                    dP[H + j] += dao * cn
                dac = dcn * i * dact1(gc, clamp(xc, clip), cc, alphas[1], betas[1]) * inside(xc, clip)
                di = dcn * cc
                if input_forget:
                    di -= dcn * cp
                    daf = 0.0
                else:
                    daf = dcn * cp * dact1(fc, clamp(xf, clip), f, alphas[0], betas[0]) * inside(xf, clip)
                dai = di * dact1(fc, clamp(xi, clip), i, alphas[0], betas[0]) * inside(xi, clip)
                dcp = dcn * f
                if peep:
                    dcp += dai * P[j] + daf * P[2 * H + j]
                    dP[j] += dai * cp
                    dP[2 * H + j] += daf * cp
                dc[b, j] = dcp
                dA[t, b, j] = dai
                dA[t, b, H + j] = dao
                dA[t, b, 2 * H + j] = daf
                dA[t, b, 3 * H + j] = dac
        matmul(dA[t], RT, R, rec)  # (B, 4H) @ (4H, H)
        for b in range(B):
            if t < lengths[b]:
                for j in range(H):
                    dh[b, j] = rec[b, j]
