"""Naive float64 reference implementation ("oracle") of the ONNX RNN, GRU and LSTM operators.

Written for reading, not for speed: plain Python loops over batch rows and time steps,
one small numpy vector operation per equation. It has exactly the batch-first API of
``edgernn.functional``::

    Y, Y_h      = rnn(X, W, R, Wb=None, Rb=None, h0=None, lengths=None, direction="forward",
                      activations=None, activation_alpha=None, activation_beta=None, clip=None)
    Y, Y_h      = gru(..., linear_before_reset=True, ...)
    Y, Y_h, Y_c = lstm(X, W, R, Wb=None, Rb=None, h0=None, c0=None, P=None, lengths=None,
                       direction="forward", input_forget=False, ...)

    X (B,T,I); W (D,G*H,I); R (D,G*H,H); Wb, Rb (D,G*H); h0, c0 (B,D,H); P (D,3H); lengths (B,)
    Y (B,T,D,H); Y_h, Y_c (B,D,H); D = 2 for "bidirectional", else 1.

Everything is computed in float64 and returned as float64.

Semantics (the ONNX operator definitions, opset 14+, plus what onnxruntime does where
ONNX is silent):

* Gate order: LSTM i,o,f,c; GRU z,r,h; peepholes P in order i,o,f.
* ``lengths``: steps ``t >= lengths[b]`` output zeros and leave the state unchanged. The
  reverse direction runs backwards over the valid part ``[0, lengths[b])`` only, starting from
  the initial state at ``t = lengths[b]-1``; its outputs are stored in the original time order.
  ``Y_h`` (and ``Y_c``) is the state after the last processed step, i.e. the initial state when
  ``lengths[b] == 0``.  (onnxruntime returns zeros for ``Y_h``/``Y_c`` of a length-0 row
  instead.  See ``tests/onnx_util.py``.)
* ``clip``: every gate pre-activation (after adding biases and peephole terms) is clipped to
  ``[-clip, clip]`` before its activation function.  The LSTM cell state fed to ``h`` is *not*
  clipped (it is not a gate pre-activation; onnxruntime does not clip it either).
* ``input_forget`` (coupled input/forget gates): ``f = 1 - i``, as onnxruntime computes it; the
  forget-gate weights, biases and peephole are then unused.
* Activations: a list of ONNX names, per direction (RNN 1, GRU 2 = (f, g), LSTM 3 = (f, g, h));
  bidirectional needs twice as many (forward direction's first).  Names are case-insensitive.
* ``activation_alpha`` / ``activation_beta``: flat lists consumed in the order of the activation
  list (all directions), each value going to the next activation that *uses* an alpha (resp. a
  beta); activations past the end of the list get the default of the corresponding ONNX operator
  (``ACTIVATION_DEFAULTS``).  This is how onnxruntime's LSTM and GRU read them.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "ACTIVATION_DEFAULTS",
    "ACTIVATION_NAMES",
    "DEFAULT_ACTIVATIONS",
    "activation",
    "resolve_activations",
    "rnn",
    "gru",
    "lstm",
    "forward_trace",
]

# ---------------------------------------------------------------------------------------------
# Activation functions
# ---------------------------------------------------------------------------------------------

# name (lower case) -> (default alpha or None if unused, default beta or None if unused).
# Defaults are those of the ONNX operator of the same name (Affine and ScaledTanh are the old
# experimental ONNX operators).  NB: onnxruntime's RNN/GRU/LSTM kernels use 0.0 instead of these
# defaults for Affine, ThresholdedRelu and ScaledTanh (and its RNN uses 0.0 for every activation),
# so an ONNX file should always carry explicit activation_alpha/activation_beta.
ACTIVATION_DEFAULTS: dict[str, tuple[float | None, float | None]] = {
    "relu": (None, None),
    "tanh": (None, None),
    "sigmoid": (None, None),
    "affine": (1.0, 0.0),  # alpha*x + beta
    "leakyrelu": (0.01, None),  # x if x >= 0 else alpha*x
    "thresholdedrelu": (1.0, None),  # x if x > alpha else 0
    "scaledtanh": (1.0, 1.0),  # alpha*tanh(beta*x)
    "hardsigmoid": (0.2, 0.5),  # min(max(alpha*x + beta, 0), 1)
    "elu": (1.0, None),  # x if x >= 0 else alpha*(exp(x) - 1)
    "softsign": (None, None),  # x/(1 + |x|)
    "softplus": (None, None),  # log(1 + exp(x))
}

# Canonical ONNX spelling of each name.
ACTIVATION_NAMES = {
    n.lower(): n
    for n in (
        "Relu",
        "Tanh",
        "Sigmoid",
        "Affine",
        "LeakyRelu",
        "ThresholdedRelu",
        "ScaledTanh",
        "HardSigmoid",
        "Elu",
        "Softsign",
        "Softplus",
    )
}

# Default activations per direction (ONNX): RNN f=Tanh; GRU f=Sigmoid, g=Tanh;
# LSTM f=Sigmoid, g=Tanh, h=Tanh.
DEFAULT_ACTIVATIONS = {
    "rnn": ["Tanh"],
    "gru": ["Sigmoid", "Tanh"],
    "lstm": ["Sigmoid", "Tanh", "Tanh"],
}

_NUM_GATES = {"rnn": 1, "gru": 3, "lstm": 4}


def _sigmoid(x):
    with np.errstate(over="ignore"):  # exp(-x) may overflow to inf for x << 0: 1/inf = 0 is right
        return 1.0 / (1.0 + np.exp(-x))


def activation(name: str, x, alpha: float | None = None, beta: float | None = None):
    """Apply the ONNX activation ``name`` (case-insensitive) elementwise to ``x`` (float64)."""
    key = name.lower()
    if key not in ACTIVATION_DEFAULTS:
        raise ValueError(f"unknown activation {name!r}")
    da, db = ACTIVATION_DEFAULTS[key]
    a = da if alpha is None else float(alpha)
    b = db if beta is None else float(beta)
    x = np.asarray(x, dtype=np.float64)
    if key == "relu":
        return np.maximum(x, 0.0)
    if key == "tanh":
        return np.tanh(x)
    if key == "sigmoid":
        return _sigmoid(x)
    if key == "affine":
        return a * x + b
    if key == "leakyrelu":
        return np.where(x >= 0.0, x, a * x)
    if key == "thresholdedrelu":
        return np.where(x > a, x, 0.0)
    if key == "scaledtanh":
        return a * np.tanh(b * x)
    if key == "hardsigmoid":
        return np.minimum(np.maximum(a * x + b, 0.0), 1.0)
    if key == "elu":
        with np.errstate(over="ignore"):
            return np.where(x >= 0.0, x, a * (np.exp(np.minimum(x, 0.0)) - 1.0))
    if key == "softsign":
        return x / (1.0 + np.abs(x))
    if key == "softplus":
        return np.logaddexp(0.0, x)  # = log(1 + exp(x)) without overflow
    raise AssertionError(key)  # pragma: no cover


def activation_kinks(name: str, alpha: float, beta: float) -> list[float]:
    """Points where activation ``name`` is not (twice) differentiable (for gradient checks)."""
    key = name.lower()
    if key in ("relu", "leakyrelu", "elu"):
        return [0.0]
    if key == "thresholdedrelu":
        return [alpha]
    if key == "hardsigmoid":
        return [-beta / alpha, (1.0 - beta) / alpha] if alpha != 0 else []
    if key == "softsign":
        return [0.0]  # second derivative jumps at 0 (first derivative is continuous)
    return []


def resolve_activations(cell: str, direction: str, activations=None, activation_alpha=None,
                        activation_beta=None) -> list[tuple[str, float | None, float | None]]:
    """Turn functional-style activation arguments into one ``(Name, alpha, beta)`` per slot.

    Returns a list of length ``n_act * D`` (n_act = 1, 2, 3 for rnn, gru, lstm).  Unused
    alphas/betas are ``None``.
    """
    if direction not in ("forward", "reverse", "bidirectional"):
        raise ValueError(f"unknown direction {direction!r}")
    D = 2 if direction == "bidirectional" else 1
    n_act = len(DEFAULT_ACTIVATIONS[cell])
    if activations is None:
        names = list(DEFAULT_ACTIVATIONS[cell]) * D
    else:
        names = [str(a) for a in activations]
    if len(names) != n_act * D:
        raise ValueError(f"activations: expected {n_act * D} names for {cell} {direction}, got {len(names)}")
    alphas = [] if activation_alpha is None else [float(v) for v in np.ravel(activation_alpha)]
    betas = [] if activation_beta is None else [float(v) for v in np.ravel(activation_beta)]
    out = []
    for name in names:
        key = name.lower()
        if key not in ACTIVATION_DEFAULTS:
            raise ValueError(f"activations: unknown activation {name!r}")
        da, db = ACTIVATION_DEFAULTS[key]
        a = b = None
        if da is not None:  # this activation uses alpha: take the next one, else the default
            a = alphas.pop(0) if alphas else da
        if db is not None:
            b = betas.pop(0) if betas else db
        out.append((ACTIVATION_NAMES[key], a, b))
    return out


# ---------------------------------------------------------------------------------------------
# Argument handling
# ---------------------------------------------------------------------------------------------


def _prepare(cell, X, W, R, Wb, Rb, h0, c0, P, lengths, direction):
    """Cast to float64, fill in the optional inputs with zeros / full lengths."""
    if direction not in ("forward", "reverse", "bidirectional"):
        raise ValueError(f"unknown direction {direction!r}")
    X = np.asarray(X, dtype=np.float64)
    W = np.asarray(W, dtype=np.float64)
    R = np.asarray(R, dtype=np.float64)
    B, T, _ = X.shape
    D = 2 if direction == "bidirectional" else 1
    G = _NUM_GATES[cell]
    H = R.shape[-1]
    assert W.shape[:2] == (D, G * H) and R.shape == (D, G * H, H), (W.shape, R.shape)
    zeros_b = np.zeros((D, G * H))
    Wb = zeros_b if Wb is None else np.asarray(Wb, dtype=np.float64)
    Rb = zeros_b if Rb is None else np.asarray(Rb, dtype=np.float64)
    h0 = np.zeros((B, D, H)) if h0 is None else np.asarray(h0, dtype=np.float64)
    c0 = np.zeros((B, D, H)) if c0 is None else np.asarray(c0, dtype=np.float64)
    P = np.zeros((D, 3 * H)) if P is None else np.asarray(P, dtype=np.float64)
    if lengths is None:
        lengths = np.full(B, T, dtype=np.int64)
    else:
        lengths = np.asarray(lengths).astype(np.int64).reshape(B)
        assert np.all((lengths >= 0) & (lengths <= T)), lengths
    return X, W, R, Wb, Rb, h0, c0, P, lengths, D, H


def _clip(x, clip):
    """Gate pre-activation clip: bound to [-clip, clip]; ``clip=None`` means no clipping."""
    if clip is None:
        return x
    return np.minimum(np.maximum(x, -clip), clip)


def _time_steps(length: int, reverse: bool):
    """Time indices visited by one direction: the valid part only, backwards for reverse."""
    return range(length - 1, -1, -1) if reverse else range(length)


def _record(trace, kind, pre, act, clipped):
    """Store a pre-activation (before clipping) for gradient-check margin tests."""
    if trace is not None:
        trace.append({"kind": kind, "pre": np.array(pre, copy=True), "act": act, "clipped": clipped})


# ---------------------------------------------------------------------------------------------
# The three cells, one time step each, for one batch row and one direction
# ---------------------------------------------------------------------------------------------


def _rnn_step(x, h_prev, W, R, Wb, Rb, acts, clip, trace):
    """Ht = f(Xt*(Wi^T) + Ht-1*(Ri^T) + Wbi + Rbi)."""
    (f,) = acts
    pre = W @ x + R @ h_prev + Wb + Rb
    _record(trace, "i", pre, f, True)
    return activation(f[0], _clip(pre, clip), f[1], f[2])


def _gru_step(x, h_prev, W, R, Wb, Rb, acts, clip, linear_before_reset, trace):
    """ONNX GRU (default f=Sigmoid, g=Tanh)::

        zt = f(Xt*(Wz^T) + Ht-1*(Rz^T) + Wbz + Rbz)
        rt = f(Xt*(Wr^T) + Ht-1*(Rr^T) + Wbr + Rbr)
        ht = g(Xt*(Wh^T) + (rt (.) Ht-1)*(Rh^T) + Rbh + Wbh)   # linear_before_reset = 0
        ht = g(Xt*(Wh^T) + (rt (.) (Ht-1*(Rh^T) + Rbh)) + Wbh) # linear_before_reset != 0
        Ht = (1 - zt) (.) ht + zt (.) Ht-1
    """
    f, g = acts
    H = h_prev.shape[0]
    Wz, Wr, Wh = W[:H], W[H : 2 * H], W[2 * H :]
    Rz, Rr, Rh = R[:H], R[H : 2 * H], R[2 * H :]
    Wbz, Wbr, Wbh = Wb[:H], Wb[H : 2 * H], Wb[2 * H :]
    Rbz, Rbr, Rbh = Rb[:H], Rb[H : 2 * H], Rb[2 * H :]

    # update gate z
    pre_z = Wz @ x + Rz @ h_prev + Wbz + Rbz
    _record(trace, "z", pre_z, f, True)
    z = activation(f[0], _clip(pre_z, clip), f[1], f[2])

    # reset gate r
    pre_r = Wr @ x + Rr @ h_prev + Wbr + Rbr
    _record(trace, "r", pre_r, f, True)
    r = activation(f[0], _clip(pre_r, clip), f[1], f[2])

    # hidden (candidate) gate h
    if linear_before_reset:
        pre_h = Wh @ x + r * (Rh @ h_prev + Rbh) + Wbh
    else:
        pre_h = Wh @ x + Rh @ (r * h_prev) + Rbh + Wbh
    _record(trace, "h", pre_h, g, True)
    hh = activation(g[0], _clip(pre_h, clip), g[1], g[2])

    # new hidden state
    return (1.0 - z) * hh + z * h_prev


def _lstm_step(x, h_prev, c_prev, W, R, Wb, Rb, P, acts, clip, input_forget, trace):
    """ONNX LSTM (default f=Sigmoid, g=Tanh, h=Tanh)::

        it = f(Xt*(Wi^T) + Ht-1*(Ri^T) + Pi (.) Ct-1 + Wbi + Rbi)
        ft = f(Xt*(Wf^T) + Ht-1*(Rf^T) + Pf (.) Ct-1 + Wbf + Rbf)   # 1 - it if input_forget
        ct = g(Xt*(Wc^T) + Ht-1*(Rc^T) + Wbc + Rbc)
        Ct = ft (.) Ct-1 + it (.) ct
        ot = f(Xt*(Wo^T) + Ht-1*(Ro^T) + Po (.) Ct + Wbo + Rbo)     # output peephole: NEW Ct
        Ht = ot (.) h(Ct)
    """
    f, g, h = acts
    H = h_prev.shape[0]
    # gate order i, o, f, c
    Wi, Wo, Wf, Wc = W[:H], W[H : 2 * H], W[2 * H : 3 * H], W[3 * H :]
    Ri, Ro, Rf, Rc = R[:H], R[H : 2 * H], R[2 * H : 3 * H], R[3 * H :]
    Wbi, Wbo, Wbf, Wbc = Wb[:H], Wb[H : 2 * H], Wb[2 * H : 3 * H], Wb[3 * H :]
    Rbi, Rbo, Rbf, Rbc = Rb[:H], Rb[H : 2 * H], Rb[2 * H : 3 * H], Rb[3 * H :]
    # peephole order i, o, f
    Pi, Po, Pf = P[:H], P[H : 2 * H], P[2 * H :]

    # input gate (peephole on the previous cell state)
    pre_i = Wi @ x + Ri @ h_prev + Pi * c_prev + Wbi + Rbi
    _record(trace, "i", pre_i, f, True)
    i = activation(f[0], _clip(pre_i, clip), f[1], f[2])

    # forget gate
    if input_forget:
        ft = 1.0 - i  # coupled input and forget gates
    else:
        pre_f = Wf @ x + Rf @ h_prev + Pf * c_prev + Wbf + Rbf
        _record(trace, "f", pre_f, f, True)
        ft = activation(f[0], _clip(pre_f, clip), f[1], f[2])

    # cell candidate
    pre_c = Wc @ x + Rc @ h_prev + Wbc + Rbc
    _record(trace, "c", pre_c, g, True)
    ct = activation(g[0], _clip(pre_c, clip), g[1], g[2])

    # new cell state
    C = ft * c_prev + i * ct

    # output gate (peephole on the NEW cell state)
    pre_o = Wo @ x + Ro @ h_prev + Po * C + Wbo + Rbo
    _record(trace, "o", pre_o, f, True)
    o = activation(f[0], _clip(pre_o, clip), f[1], f[2])

    # new hidden state (the cell state is not clipped)
    _record(trace, "C", C, h, False)
    Hn = o * activation(h[0], C, h[1], h[2])
    return Hn, C


# ---------------------------------------------------------------------------------------------
# Driver: loop over directions, batch rows and (valid) time steps
# ---------------------------------------------------------------------------------------------


def _run(cell, X, W, R, Wb=None, Rb=None, h0=None, c0=None, P=None, lengths=None,
         direction="forward", activations=None, activation_alpha=None, activation_beta=None,
         clip=None, input_forget=False, linear_before_reset=True, trace=None):
    X, W, R, Wb, Rb, h0, c0, P, lengths, D, H = _prepare(
        cell, X, W, R, Wb, Rb, h0, c0, P, lengths, direction
    )
    acts = resolve_activations(cell, direction, activations, activation_alpha, activation_beta)
    n_act = len(DEFAULT_ACTIVATIONS[cell])
    clip = None if clip is None else float(clip)
    B, T, _ = X.shape

    Y = np.zeros((B, T, D, H))  # padded steps stay zero
    Y_h = np.zeros((B, D, H))
    Y_c = np.zeros((B, D, H))
    for d in range(D):
        reverse = direction == "reverse" or d == 1
        acts_d = acts[d * n_act : (d + 1) * n_act]
        for b in range(B):
            h = h0[b, d].copy()
            c = c0[b, d].copy()
            for t in _time_steps(int(lengths[b]), reverse):
                x = X[b, t]
                if cell == "rnn":
                    h = _rnn_step(x, h, W[d], R[d], Wb[d], Rb[d], acts_d, clip, trace)
                elif cell == "gru":
                    h = _gru_step(x, h, W[d], R[d], Wb[d], Rb[d], acts_d, clip,
                                  linear_before_reset, trace)
                else:
                    h, c = _lstm_step(x, h, c, W[d], R[d], Wb[d], Rb[d], P[d], acts_d, clip,
                                      input_forget, trace)
                Y[b, t, d] = h
            # state after the last processed step (= initial state when lengths[b] == 0)
            Y_h[b, d] = h
            Y_c[b, d] = c
    if cell == "lstm":
        return Y, Y_h, Y_c
    return Y, Y_h


def _no_train(train):
    if train:
        raise NotImplementedError("tests/naive.py is a forward-only oracle (train=True unsupported)")


def rnn(X, W, R, Wb=None, Rb=None, h0=None, lengths=None, direction="forward", activations=None,
        activation_alpha=None, activation_beta=None, clip=None, train=False):
    """Naive ONNX RNN. Returns ``Y (B,T,D,H), Y_h (B,D,H)`` in float64."""
    _no_train(train)
    return _run("rnn", X, W, R, Wb, Rb, h0, None, None, lengths, direction, activations,
                activation_alpha, activation_beta, clip)


def gru(X, W, R, Wb=None, Rb=None, h0=None, lengths=None, direction="forward",
        linear_before_reset=True, activations=None, activation_alpha=None, activation_beta=None,
        clip=None, train=False):
    """Naive ONNX GRU. Returns ``Y (B,T,D,H), Y_h (B,D,H)`` in float64."""
    _no_train(train)
    return _run("gru", X, W, R, Wb, Rb, h0, None, None, lengths, direction, activations,
                activation_alpha, activation_beta, clip, linear_before_reset=linear_before_reset)


def lstm(X, W, R, Wb=None, Rb=None, h0=None, c0=None, P=None, lengths=None, direction="forward",
         input_forget=False, activations=None, activation_alpha=None, activation_beta=None,
         clip=None, train=False):
    """Naive ONNX LSTM. Returns ``Y (B,T,D,H), Y_h (B,D,H), Y_c (B,D,H)`` in float64."""
    _no_train(train)
    return _run("lstm", X, W, R, Wb, Rb, h0, c0, P, lengths, direction, activations,
                activation_alpha, activation_beta, clip, input_forget=input_forget)


def forward_trace(cell: str, **kwargs) -> list[dict]:
    """Run the oracle and return every pre-activation it computed (before clipping).

    Each entry: ``{"kind": gate letter, "pre": values, "act": (Name, alpha, beta),
    "clipped": whether ``clip`` applies}``.  Used by the gradient tests to keep pre-activations
    away from the clip boundary and from activation kinks.
    """
    trace: list[dict] = []
    kwargs = dict(kwargs)
    kwargs.pop("train", None)
    _run(cell, trace=trace, **kwargs)
    return trace


def min_kink_distance(trace: list[dict], clip: float | None) -> float:
    """Smallest distance of any traced pre-activation to a non-differentiable point."""
    best = np.inf
    for e in trace:
        pre = e["pre"]
        name, a, b = e["act"]
        points = list(activation_kinks(name, a, b))
        if clip is not None and e["clipped"]:
            # the activation sees the clipped value; its kinks only matter inside [-clip, clip]
            points = [p for p in points if -clip < p < clip] + [-clip, clip]
        for p in points:
            best = min(best, float(np.min(np.abs(pre - p))))
    return best


# ---------------------------------------------------------------------------------------------
# Random test cases (shared by the test modules)
# ---------------------------------------------------------------------------------------------

# Activation pools per slot.  Gate activations (f) are kept to [0, 1]-valued functions in the
# default pools; g and h take any ONNX activation.
ALL_ACTIVATIONS = list(ACTIVATION_NAMES.values())
GATE_ACTIVATIONS = ["Sigmoid", "HardSigmoid"]


def random_case(cell: str, seed: int, *, B=None, T=None, H=None, I=None, direction=None,
                lengths="random", min_length=0, h0=True, biases=True, peephole=None,
                input_forget=None, clip=None, linear_before_reset=None, activations="random",
                alpha_beta="random", scale=0.6, pools=None) -> dict:
    """Random keyword arguments for ``naive.<cell>`` / ``edgernn.functional.<cell>``.

    Sizes default to random values in 1..4 (so B=1, T=1, H=1, I=1 all occur).  ``lengths``:
    "random" (differing across the batch, including 0 (if ``min_length`` is 0) and T when
    B >= 2), None, or an explicit array.  ``activations``: "random", None or a list;
    ``alpha_beta``: "random" (explicit or None), "explicit", or None.  ``peephole``,
    ``input_forget``, ``clip`` (a float), ``linear_before_reset``: None picks at random.
    """
    rng = np.random.default_rng(seed)
    B = int(rng.integers(1, 5)) if B is None else B
    T = int(rng.integers(1, 5)) if T is None else T
    H = int(rng.integers(1, 5)) if H is None else H
    I = int(rng.integers(1, 5)) if I is None else I
    if direction is None:
        direction = ["forward", "reverse", "bidirectional"][int(rng.integers(3))]
    D = 2 if direction == "bidirectional" else 1
    G = _NUM_GATES[cell]

    def rnd(*shape, s=scale):
        return s * rng.standard_normal(shape)

    kw: dict = {"X": rnd(B, T, I, s=1.0), "W": rnd(D, G * H, I), "R": rnd(D, G * H, H)}
    if biases:
        kw["Wb"] = rnd(D, G * H, s=0.5)
        kw["Rb"] = rnd(D, G * H, s=0.5)
    if h0:
        kw["h0"] = rnd(B, D, H, s=0.8)
        if cell == "lstm":
            kw["c0"] = rnd(B, D, H, s=0.8)
    if isinstance(lengths, str) and lengths == "random":
        ln = rng.integers(min_length, T + 1, size=B)
        if B >= 2:
            ln[0] = T
            ln[1] = min_length
        rng.shuffle(ln)
        kw["lengths"] = ln.astype(np.int64)
    elif lengths is not None:
        kw["lengths"] = np.asarray(lengths, dtype=np.int64)
    kw["direction"] = direction

    if cell == "lstm":
        if peephole is None:
            peephole = bool(rng.integers(2))
        if peephole:
            kw["P"] = rnd(D, 3 * H)
        kw["input_forget"] = bool(rng.integers(2)) if input_forget is None else bool(input_forget)
    if cell == "gru":
        lbr = bool(rng.integers(2)) if linear_before_reset is None else bool(linear_before_reset)
        kw["linear_before_reset"] = lbr
    if clip is not None:
        kw["clip"] = float(clip)

    if isinstance(activations, str) and activations == "random":
        if pools is None:
            pools = {"rnn": [ALL_ACTIVATIONS], "gru": [GATE_ACTIVATIONS, ALL_ACTIVATIONS],
                     "lstm": [GATE_ACTIVATIONS, ALL_ACTIVATIONS, ALL_ACTIVATIONS]}[cell]
        acts = [p[int(rng.integers(len(p)))] for _ in range(D) for p in pools]
        kw["activations"] = acts
    elif activations is not None:
        kw["activations"] = list(activations)

    if alpha_beta is not None:
        explicit = alpha_beta == "explicit" or (alpha_beta == "random" and bool(rng.integers(2)))
        if explicit:
            slots = resolve_activations(cell, direction, kw.get("activations"))
            na = sum(s[1] is not None for s in slots)
            nb = sum(s[2] is not None for s in slots)
            if na:
                kw["activation_alpha"] = [float(v) for v in rng.uniform(0.3, 1.5, na)]
            if nb:
                kw["activation_beta"] = [float(v) for v in rng.uniform(0.2, 0.8, nb)]
    return kw


# ---------------------------------------------------------------------------------------------
# PyTorch reference (nn.RNN / nn.GRU / nn.LSTM with weights copied from ONNX layout)
# ---------------------------------------------------------------------------------------------

# torch gate block k takes ONNX gate block TORCH_FROM_ONNX[cell][k]:
# LSTM torch i,f,g,o <- ONNX i(0),o(1),f(2),c(3); GRU torch r,z,n <- ONNX z(0),r(1),h(2).
TORCH_FROM_ONNX = {"rnn": [0], "gru": [1, 0, 2], "lstm": [0, 2, 3, 1]}


def torch_row_index(cell: str, H: int) -> np.ndarray:
    """Row index so that ``W_torch = W_onnx[idx]`` for one direction's (G*H, .) matrix."""
    return np.concatenate([np.arange(k * H, (k + 1) * H) for k in TORCH_FROM_ONNX[cell]])


def torch_reference(cell: str, kw: dict, gY=None, gH=None, gC=None):
    """Run PyTorch (float64) on functional-style arguments ``kw``.

    Supported: default activations (RNN: Tanh or Relu), any direction, biases, h0/c0, lengths
    >= 1 (through packed sequences).  GRU is PyTorch's, i.e. ``linear_before_reset=True``.
    Returns ``(outputs, grads)``: outputs batch-first like ``edgernn.functional``; grads (only
    if ``gY`` is given) a dict in ONNX layout for X, W, R, Wb, Rb, h0[, c0] of the loss
    ``sum(Y*gY) + sum(Y_h*gH) [+ sum(Y_c*gC)]``.
    """
    import torch

    X = np.asarray(kw["X"], dtype=np.float64)
    W, R = np.asarray(kw["W"], np.float64), np.asarray(kw["R"], np.float64)
    B, T, I = X.shape
    D, GH, H = R.shape
    direction = kw.get("direction", "forward")
    assert direction != "reverse", "PyTorch has no reverse-only RNN"
    assert kw.get("P") is None and not kw.get("input_forget") and kw.get("clip") is None
    if cell == "gru":
        assert kw.get("linear_before_reset", True)
    idx = torch_row_index(cell, H)
    zeros = np.zeros((D, GH))
    Wb = zeros if kw.get("Wb") is None else np.asarray(kw["Wb"], np.float64)
    Rb = zeros if kw.get("Rb") is None else np.asarray(kw["Rb"], np.float64)
    if cell == "rnn":
        acts = [a.lower() for a in (kw.get("activations") or ["Tanh"] * D)]
        assert len(set(acts)) == 1 and acts[0] in ("tanh", "relu")
        mod = torch.nn.RNN(I, H, batch_first=True, bidirectional=D == 2, nonlinearity=acts[0])
    else:
        assert kw.get("activations") is None
        mod = {"gru": torch.nn.GRU, "lstm": torch.nn.LSTM}[cell](I, H, batch_first=True, bidirectional=D == 2)
    mod = mod.double()
    with torch.no_grad():
        for d in range(D):
            sfx = "_l0" + ("_reverse" if d == 1 else "")
            getattr(mod, "weight_ih" + sfx).copy_(torch.from_numpy(W[d][idx]))
            getattr(mod, "weight_hh" + sfx).copy_(torch.from_numpy(R[d][idx]))
            getattr(mod, "bias_ih" + sfx).copy_(torch.from_numpy(Wb[d][idx]))
            getattr(mod, "bias_hh" + sfx).copy_(torch.from_numpy(Rb[d][idx]))
    xt = torch.from_numpy(X.copy()).requires_grad_(True)
    h0 = kw.get("h0")
    h0t = torch.from_numpy(np.zeros((D, B, H)) if h0 is None else np.transpose(h0, (1, 0, 2)).copy())
    h0t.requires_grad_(True)
    state = h0t
    c0t = None
    if cell == "lstm":
        c0 = kw.get("c0")
        c0t = torch.from_numpy(np.zeros((D, B, H)) if c0 is None else np.transpose(c0, (1, 0, 2)).copy())
        c0t.requires_grad_(True)
        state = (h0t, c0t)
    lengths = kw.get("lengths")
    if lengths is not None:
        packed = torch.nn.utils.rnn.pack_padded_sequence(xt, torch.as_tensor(np.asarray(lengths)),
                                                         batch_first=True, enforce_sorted=False)
        out, st = mod(packed, state)
        out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=T)
    else:
        out, st = mod(xt, state)
    Y = out.reshape(B, T, D, H)
    hn = (st[0] if cell == "lstm" else st).permute(1, 0, 2)
    outs = [Y, hn] + ([st[1].permute(1, 0, 2)] if cell == "lstm" else [])
    np_outs = tuple(o.detach().numpy().copy() for o in outs)
    if gY is None:
        return np_outs, None
    loss = (Y * torch.from_numpy(np.asarray(gY, np.float64))).sum()
    if gH is not None:
        loss = loss + (hn * torch.from_numpy(np.asarray(gH, np.float64))).sum()
    if cell == "lstm" and gC is not None:
        loss = loss + (outs[2] * torch.from_numpy(np.asarray(gC, np.float64))).sum()
    loss.backward()
    grads = {"X": xt.grad.numpy().copy(), "W": np.zeros_like(W), "R": np.zeros_like(R),
             "Wb": np.zeros((D, GH)), "Rb": np.zeros((D, GH)),
             "h0": h0t.grad.numpy().transpose(1, 0, 2).copy()}
    if cell == "lstm":
        grads["c0"] = c0t.grad.numpy().transpose(1, 0, 2).copy()
    for d in range(D):
        sfx = "_l0" + ("_reverse" if d == 1 else "")
        grads["W"][d][idx] = getattr(mod, "weight_ih" + sfx).grad.numpy()
        grads["R"][d][idx] = getattr(mod, "weight_hh" + sfx).grad.numpy()
        grads["Wb"][d][idx] = getattr(mod, "bias_ih" + sfx).grad.numpy()
        grads["Rb"][d][idx] = getattr(mod, "bias_hh" + sfx).grad.numpy()
    return np_outs, grads


# ----------------------------------------------------------------------------------------
# Cells without an ONNX operator: one step each, and one driver for all of them.
# ----------------------------------------------------------------------------------------
def indrnn_step(x, s, p, d, acts):
    """IndRNN: h = act(W x + u * h_prev + b). ``s``: dict of states; returns (y, new states)."""
    b = 0.0 if p.get("b") is None else p["b"][d]
    h = activation(acts[0], p["W"][d] @ x + p["u"][d] * s["h"] + b)
    return h, {"h": h}


def jordan_step(x, s, p, d, acts):
    """Jordan: h = act(W x + U y_prev + b), y = out_act(V h + c); the state is y."""
    b = 0.0 if p.get("b") is None else p["b"][d]
    c = 0.0 if p.get("c") is None else p["c"][d]
    h = activation(acts[0], p["W"][d] @ x + p["U"][d] @ s["y"] + b)
    y = activation(acts[1], p["V"][d] @ h + c)
    return y, {"y": y}


def sru_step(x, s, p, d, acts, highway_scale=1.0):
    """SRU: f, r = sigmoid(W_{f,r} x + v_{f,r} * c_prev + b_{f,r}); c = f c_prev + (1-f) W x;
    h = r g(c) + (1-r) x', x' = W_h x (W with 4H rows) or highway_scale * x (3H rows)."""
    H = p["v"].shape[1] // 2
    W = p["W"][d]
    b = np.zeros(2 * H) if p.get("b") is None else p["b"][d]
    vf, vr = p["v"][d][:H], p["v"][d][H:]
    c_prev = s["c"]
    x_tilde = W[:H] @ x
    f = 1.0 / (1.0 + np.exp(-(W[H:2 * H] @ x + vf * c_prev + b[:H])))
    r = 1.0 / (1.0 + np.exp(-(W[2 * H:3 * H] @ x + vr * c_prev + b[H:])))
    c = f * c_prev + (1.0 - f) * x_tilde
    x_prime = W[3 * H:] @ x if W.shape[0] == 4 * H else highway_scale * x
    h = r * activation(acts[0], c) + (1.0 - r) * x_prime
    return h, {"h": h, "c": c}



def fastrnn_step(x, s, p, d, acts):
    """FastRNN: h~ = act(W x + U h_prev + b), h = sigmoid(alpha) h~ + sigmoid(beta) h_prev."""
    b = 0.0 if p.get("b") is None else p["b"][d]
    alpha = _sigmoid(-3.0 if p.get("alpha") is None else p["alpha"][d, 0])
    beta = _sigmoid(3.0 if p.get("beta") is None else p["beta"][d, 0])
    c = activation(acts[0], p["W"][d] @ x + p["U"][d] @ s["h"] + b)
    h = alpha * c + beta * s["h"]
    return h, {"h": h}
def fastgrnn_step(x, s, p, d, acts):
    """FastGRNN: z = gate(W x + U h_prev + bz), h~ = update(W x + U h_prev + bh),
    h = (sigmoid(zeta) (1 - z) + sigmoid(nu)) h~ + z h_prev."""
    bz = 0.0 if p.get("bz") is None else p["bz"][d]
    bh = 0.0 if p.get("bh") is None else p["bh"][d]
    zeta = _sigmoid(1.0 if p.get("zeta") is None else p["zeta"][d, 0])
    nu = _sigmoid(-4.0 if p.get("nu") is None else p["nu"][d, 0])
    a = p["W"][d] @ x + p["U"][d] @ s["h"]
    z = activation(acts[0], a + bz)
    c = activation(acts[1], a + bh)
    h = (zeta * (1.0 - z) + nu) * c + z * s["h"]
    return h, {"h": h}
def qrnn_step(x, s, p, d, acts):
    """QRNN, window k and pooling read off the shapes (W (G*H, k*I), c (H,)): the convolution
    over [x_{t-k+1}, ..., x_t] (zeros before the start; kept in s["xs"]), then
    c = f c_prev + (1 - f) z (ifo: + i z), h = o c (f pooling: h = c)."""
    H, I = s["c"].size, x.size
    W = p["W"][d]
    G, k = W.shape[0] // H, W.shape[1] // I
    xs = s.get("xs", [np.zeros(I)] * (k - 1)) + [x]  # the last k inputs, oldest first
    b = 0.0 if p.get("b") is None else p["b"][d]
    a = W @ np.concatenate(xs) + b
    z = np.tanh(a[:H])
    f = 1 / (1 + np.exp(-a[H: 2 * H]))
    if G == 4:  # ifo
        c = f * s["c"] + 1 / (1 + np.exp(-a[3 * H:])) * z
    else:
        c = f * s["c"] + (1 - f) * z
    h = c if G == 2 else 1 / (1 + np.exp(-a[2 * H: 3 * H])) * c
    return h, {"h": h, "c": c, "xs": xs[1:]}


def janet_step(x, s, p, d, acts, beta=1.0):
    """JANET: s = W_f x + U_f h + b_f, c = sigmoid(s) h + (1 - sigmoid(s - beta)) tanh(W_c x + U_c h + b_c);
    the new state and the output are c."""
    H = s["h"].shape[0]
    b = np.zeros(2 * H) if p.get("b") is None else p["b"][d]
    a = p["W"][d] @ x + p["U"][d] @ s["h"] + b
    sf, sc = a[:H], a[H:]
    sigmoid = lambda v: 1.0 / (1.0 + np.exp(-v))  # noqa: E731
    h = sigmoid(sf) * s["h"] + (1.0 - sigmoid(sf - beta)) * np.tanh(sc)
    return h, {"h": h}


NAIVE_STEPS = {  # one line per cell
    "indrnn": indrnn_step,
    "jordan": jordan_step,
    "sru": sru_step,
    "fastrnn": fastrnn_step,
    "fastgrnn": fastgrnn_step,
    "qrnn": qrnn_step,
    "janet": janet_step,
}


def cell_run(cell, X, params, init, widths, O, lengths=None, direction="forward", acts=("Tanh", "Tanh")):
    """Naive driver for the steps above, float64.

    ``init``: initial state per name, (B, D, width) or None (zeros); ``widths``: {name: width};
    ``O``: output size. Returns Y (B, T, D, O) and the final states {name: (B, D, width)}.
    Same conventions as the ONNX cells: padded steps output zero and hold the state, the
    reverse direction runs backwards over each sequence's valid part.
    """
    step = NAIVE_STEPS[cell]
    X = np.asarray(X, np.float64)
    p = {k: (None if v is None else np.asarray(v, np.float64)) for k, v in params.items()}
    B, T, _ = X.shape
    D = 2 if direction == "bidirectional" else 1
    L = np.full(B, T) if lengths is None else np.asarray(lengths)
    Y = np.zeros((B, T, D, O))
    fin = {n: np.zeros((B, D, w)) for n, w in widths.items()}
    for d in range(D):
        reverse = direction == "reverse" or d == 1
        for b in range(B):
            s = {n: (np.zeros(w) if init.get(n) is None else np.asarray(init[n][b, d], np.float64))
                 for n, w in widths.items()}
            for t in _time_steps(int(L[b]), reverse):
                y, s = step(X[b, t], s, p, d, acts)
                Y[b, t, d] = y
            for n in widths:
                fin[n][b, d] = s[n]
    return Y, fin
