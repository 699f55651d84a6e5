"""Adam as torch.optim.Adam: bias-corrected moments, eps added after sqrt(v_hat), L2 decay in the gradient.

State: `{"step": 0-d float32, "m/<k>": ..., "v/<k>": ...}` for every parameter k.
"""

from __future__ import annotations

from typing import Any

from puffer.optim._common import check_keys, hyper, is_zero, step0, zeros_like_state

Params = dict[str, Any]


def init(be: Any, params: Params) -> Params:
    """Step 0 and zero first and second moments."""
    return {"step": step0(be), **zeros_like_state(be, params, "m"), **zeros_like_state(be, params, "v")}


def adam_update(be: Any, params: Params, grads: Params, state: Params, lr: Any, beta1: Any, beta2: Any,
                eps: Any, weight_decay: Any, decoupled: bool, name: str) -> tuple[Params, Params]:
    """The update shared by Adam (`decoupled=False`: L2 in the gradient) and AdamW (decoupled decay)."""
    check_keys(name, params, grads)
    xp = be.xp
    step = state["step"] + 1.0
    decay = not is_zero(weight_decay)
    scalars: dict[Any, tuple] = {}  # per dtype: the scalar terms are computed once, not once per parameter
    new_params, new_state = {}, {"step": step}
    for k, p in params.items():
        if p.dtype not in scalars:
            dt = p.dtype
            b1, b2, lr_ = hyper(be, beta1, dt), hyper(be, beta2, dt), hyper(be, lr, dt)
            # bias corrections in the parameter's dtype, as torch computes them in double for float64
            t = xp.astype(step, dt)
            bc1, bc2 = 1.0 - b1 ** t, 1.0 - b2 ** t
            wd = hyper(be, weight_decay, dt) if decay else 0.0
            scalars[dt] = (b1, b2, lr_ / bc1, 1.0 / xp.sqrt(bc2), hyper(be, eps, dt), lr_ * wd if decay else 0.0, wd)
        b1, b2, step_size, inv_sqrt_bc2, eps_, lr_wd, wd = scalars[p.dtype]
        g = grads[k]
        if decay:
            if decoupled:
                p = p * (1.0 - lr_wd)
            else:
                g = g + wd * p
        m = b1 * state[f"m/{k}"] + (1.0 - b1) * g
        v = b2 * state[f"v/{k}"] + (1.0 - b2) * (g * g)
        new_params[k] = p - step_size * m / (xp.sqrt(v) * inv_sqrt_bc2 + eps_)
        new_state[f"m/{k}"], new_state[f"v/{k}"] = m, v
    return new_params, new_state


def update(be: Any, params: Params, grads: Params, state: Params, lr: Any, beta1: Any = 0.9, beta2: Any = 0.999,
           eps: Any = 1e-8, weight_decay: Any = 0.0) -> tuple[Params, Params]:
    """One Adam step; `lr` (and any hyperparameter that changes between calls) a 0-d array."""
    return adam_update(be, params, grads, state, lr, beta1, beta2, eps, weight_decay, False, "adam")
