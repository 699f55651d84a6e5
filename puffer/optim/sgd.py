"""SGD as torch.optim.SGD: optional L2 weight decay, momentum with dampening, Nesterov.

State: `{"step": 0-d float32, "buf/<k>": ...}`; the momentum buffer starts as the first gradient,
as in torch.
"""

from __future__ import annotations

from typing import Any

from puffer.optim._common import check_keys, hyper, is_zero, step0, zeros_like_state

Params = dict[str, Any]


def init(be: Any, params: Params) -> Params:
    """Step 0 and zero momentum buffers."""
    return {"step": step0(be), **zeros_like_state(be, params, "buf")}


def update(be: Any, params: Params, grads: Params, state: Params, lr: Any, momentum: Any = 0.0,
           dampening: Any = 0.0, nesterov: bool = False, weight_decay: Any = 0.0) -> tuple[Params, Params]:
    """One SGD step; `lr` (and any hyperparameter that changes between calls) a 0-d array."""
    check_keys("sgd", params, grads)
    xp = be.xp
    first = state["step"] == 0.0
    decay, use_momentum = not is_zero(weight_decay), not is_zero(momentum)
    scalars: dict[Any, tuple] = {}  # per dtype, computed once rather than once per parameter
    new_params, new_state = {}, {"step": state["step"] + 1.0}
    for k, p in params.items():
        if p.dtype not in scalars:
            dt = p.dtype
            scalars[dt] = (hyper(be, lr, dt), hyper(be, weight_decay, dt) if decay else 0.0,
                           hyper(be, momentum, dt), 1.0 - hyper(be, dampening, dt) if use_momentum else 1.0)
        lr_, wd, mu, undamped = scalars[p.dtype]
        g = grads[k]
        if decay:
            g = g + wd * p
        buf = state[f"buf/{k}"]
        if use_momentum:
            buf = xp.where(first, g, mu * buf + undamped * g)
            g = g + mu * buf if nesterov else buf
        new_params[k] = p - lr_ * g
        new_state[f"buf/{k}"] = buf
    return new_params, new_state
