"""Optimizers with Keras' update rules and defaults: SGD, RMSprop, Adam, AdamW.

All take ``clipnorm`` (each gradient's L2 norm clipped separately, as Keras),
``global_clipnorm`` (all gradients scaled together) and ``clipvalue`` (elementwise).
``learning_rate`` is a float or a schedule: a callable ``step -> lr`` (``step`` counts
updates from 0, as Keras schedules). Per-epoch schedules: ``callbacks.LearningRateScheduler``.

Updates are done in place on the parameter arrays. Optimizer state (moments) is not saved
with a model.
"""

from __future__ import annotations

import numpy as np

from ._config import jit

__all__ = ["Optimizer", "SGD", "RMSprop", "Adam", "AdamW", "get"]


class Optimizer:
    """Base class. Subclasses implement ``_update(i, p, g, lr)`` for parameter number ``i``."""

    def __init__(self, learning_rate=0.001, clipnorm=None, clipvalue=None, global_clipnorm=None):
        if sum(c is not None for c in (clipnorm, global_clipnorm)) > 1:
            raise ValueError("give at most one of clipnorm and global_clipnorm")
        for nm, v in (("clipnorm", clipnorm), ("clipvalue", clipvalue), ("global_clipnorm", global_clipnorm)):
            if v is not None and not v > 0:
                raise ValueError(f"{nm} must be > 0, got {v}")
        self.learning_rate = learning_rate
        self.clipnorm = clipnorm
        self.clipvalue = clipvalue
        self.global_clipnorm = global_clipnorm
        self.iterations = 0
        self._slots = {}

    def current_learning_rate(self):
        lr = self.learning_rate
        return float(lr(self.iterations) if callable(lr) else lr)

    def reset(self):
        """Forget the moment estimates and the step count."""
        self.iterations = 0
        self._slots = {}

    def _slot(self, name, i, p):
        key = (name, i)
        s = self._slots.get(key)
        if s is None or s.shape != p.shape or s.dtype != p.dtype:
            s = self._slots[key] = np.zeros_like(p)
        return s

    def clip(self, grads, sq_norms=None):
        """Return clipped gradients (new arrays where clipping applies)."""
        if self.clipvalue is not None:
            grads = [np.clip(g, -self.clipvalue, self.clipvalue) for g in grads]
            sq_norms = None
        if self.clipnorm is not None:
            out = []
            for k, g in enumerate(grads):
                n = np.sqrt(sq_norms[k] if sq_norms is not None else float(np.vdot(g, g)))
                out.append(g * (self.clipnorm / n) if n > self.clipnorm else g)
            grads = out
        if self.global_clipnorm is not None:
            total = np.sqrt(sum(sq_norms) if sq_norms is not None else sum(float(np.vdot(g, g)) for g in grads))
            if total > self.global_clipnorm:
                grads = [g * (self.global_clipnorm / total) for g in grads]
        return grads

    def apply(self, params, grads, sq_norms=None):
        """One update of ``params`` (list of arrays, changed in place) with ``grads``.

        ``sq_norms`` (squared L2 norm of each gradient) may be passed when already computed.
        """
        grads = self.clip(grads, sq_norms)
        lr = self.current_learning_rate()
        for i, (p, g) in enumerate(zip(params, grads, strict=True)):
            self._update(i, p, g, lr)
        self.iterations += 1

    def _update(self, i, p, g, lr):
        raise NotImplementedError

    def get_config(self):
        lr = self.learning_rate
        return {"learning_rate": None if callable(lr) else float(lr), "clipnorm": self.clipnorm,
                "clipvalue": self.clipvalue, "global_clipnorm": self.global_clipnorm}


class SGD(Optimizer):
    """Stochastic gradient descent, Keras rule: ``v = momentum v - lr g``; ``p += v``
    (Nesterov: ``p += momentum v - lr g``). Defaults lr 0.01, momentum 0."""

    def __init__(self, learning_rate=0.01, momentum=0.0, nesterov=False, **kwargs):
        super().__init__(learning_rate, **kwargs)
        self.momentum = float(momentum)
        self.nesterov = bool(nesterov)

    def _update(self, i, p, g, lr):
        if self.momentum == 0.0:
            p -= p.dtype.type(lr) * g
            return
        v = self._slot("v", i, p)
        v *= self.momentum
        v -= p.dtype.type(lr) * g
        if self.nesterov:
            p += self.momentum * v - p.dtype.type(lr) * g
        else:
            p += v

    def get_config(self):
        return {**super().get_config(), "momentum": self.momentum, "nesterov": self.nesterov}


class RMSprop(Optimizer):
    """RMSprop, Keras rule and defaults (lr 0.001, rho 0.9, epsilon 1e-7):
    ``v = rho v + (1 - rho) g^2``; ``p -= lr g / sqrt(v + eps)`` (optional momentum, centered)."""

    def __init__(self, learning_rate=0.001, rho=0.9, momentum=0.0, epsilon=1e-7, centered=False, **kwargs):
        super().__init__(learning_rate, **kwargs)
        self.rho = float(rho)
        self.momentum = float(momentum)
        self.epsilon = float(epsilon)
        self.centered = bool(centered)

    def _update(self, i, p, g, lr):
        v = self._slot("v", i, p)
        v *= self.rho
        v += (1.0 - self.rho) * (g * g)
        denom = v
        if self.centered:
            a = self._slot("a", i, p)
            a *= self.rho
            a += (1.0 - self.rho) * g
            denom = v - a * a
        step = g * (p.dtype.type(lr) / np.sqrt(denom + self.epsilon))
        if self.momentum > 0.0:
            m = self._slot("m", i, p)
            m *= self.momentum
            m += step
            step = m
        p -= step

    def get_config(self):
        return {**super().get_config(), "rho": self.rho, "momentum": self.momentum,
                "epsilon": self.epsilon, "centered": self.centered}


class Adam(Optimizer):
    """Adam, Keras rule and defaults (lr 0.001, beta_1 0.9, beta_2 0.999, epsilon 1e-7):
    ``p -= lr sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)``."""

    def __init__(self, learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7, amsgrad=False, **kwargs):
        super().__init__(learning_rate, **kwargs)
        self.beta_1 = float(beta_1)
        self.beta_2 = float(beta_2)
        self.epsilon = float(epsilon)
        self.amsgrad = bool(amsgrad)

    def _update(self, i, p, g, lr):
        t = self.iterations + 1
        alpha = lr * np.sqrt(1.0 - self.beta_2 ** t) / (1.0 - self.beta_1 ** t)
        m = self._slot("m", i, p)
        v = self._slot("v", i, p)
        if (not self.amsgrad and g.shape == p.shape == m.shape == v.shape and p.flags.c_contiguous
                and g.flags.c_contiguous and g.dtype == p.dtype == m.dtype == v.dtype):
            # one pass over the four arrays instead of ten numpy passes (same operations, same order)
            dt = p.dtype.type
            _adam_step(p.reshape(-1), g.reshape(-1), m.reshape(-1), v.reshape(-1), dt(1.0 - self.beta_1),
                       dt(1.0 - self.beta_2), dt(alpha), dt(self.epsilon))
            return
        m += (1.0 - self.beta_1) * (g - m)
        v += (1.0 - self.beta_2) * (g * g - v)
        if self.amsgrad:
            vh = self._slot("vhat", i, p)
            np.maximum(vh, v, out=vh)
            v = vh
        p -= p.dtype.type(alpha) * m / (np.sqrt(v) + self.epsilon)

    def get_config(self):
        return {**super().get_config(), "beta_1": self.beta_1, "beta_2": self.beta_2,
                "epsilon": self.epsilon, "amsgrad": self.amsgrad}


class AdamW(Adam):
    """Adam with decoupled weight decay (Keras: ``p -= lr * weight_decay * p`` before the Adam
    step; default weight_decay 0.004)."""

    def __init__(self, learning_rate=0.001, weight_decay=0.004, **kwargs):
        super().__init__(learning_rate, **kwargs)
        self.weight_decay = float(weight_decay)

    def _update(self, i, p, g, lr):
        p -= p.dtype.type(lr * self.weight_decay) * p
        super()._update(i, p, g, lr)

    def get_config(self):
        return {**super().get_config(), "weight_decay": self.weight_decay}


_REGISTRY = {"sgd": SGD, "rmsprop": RMSprop, "adam": Adam, "adamw": AdamW}


def get(optimizer):
    """An ``Optimizer`` from a name (``"sgd"``, ``"rmsprop"``, ``"adam"``, ``"adamw"``) or an instance."""
    if isinstance(optimizer, Optimizer):
        return optimizer
    if isinstance(optimizer, str) and optimizer.lower() in _REGISTRY:
        return _REGISTRY[optimizer.lower()]()
    raise ValueError(f"unknown optimizer {optimizer!r}; known: {sorted(_REGISTRY)} or an Optimizer instance")


def serialize(opt):
    return {"class_name": type(opt).__name__, "config": opt.get_config()}


def deserialize(spec):
    classes = {c.__name__: c for c in _REGISTRY.values()}
    if spec.get("class_name") not in classes:
        raise ValueError(f"unknown optimizer class {spec.get('class_name')!r}")
    cfg = {k: v for k, v in spec.get("config", {}).items() if v is not None or k != "learning_rate"}
    return classes[spec["class_name"]](**cfg)


@jit
def _adam_step(p, g, m, v, c1, c2, alpha, eps):
    """Adam's update of one parameter, in place: m += c1 (g - m); v += c2 (g^2 - v);
    p -= alpha m / (sqrt(v) + eps). All arrays 1-D, C-contiguous, of one dtype and size
    (checked by the caller: nothing here checks bounds)."""
    for k in range(p.shape[0]):
        gk = g[k]
        mk = m[k] + c1 * (gk - m[k])
        vk = v[k] + c2 * (gk * gk - v[k])
        m[k] = mk
        v[k] = vk
        p[k] -= alpha * mk / (np.sqrt(vk) + eps)
