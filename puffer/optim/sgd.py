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
    new_params, new_state = {}, {"step": state["step"] + 1.0}
    for k, p in params.items():
        dt = p.dtype
        g = grads[k]
        if not is_zero(weight_decay):
            g = g + hyper(be, weight_decay, dt) * p
        buf = state[f"buf/{k}"]
        if not is_zero(momentum):
            mu = hyper(be, momentum, dt)
            buf = xp.where(first, g, mu * buf + (1.0 - hyper(be, dampening, dt)) * g)
            g = g + mu * buf if nesterov else buf
        new_params[k] = p - hyper(be, lr, dt) * g
        new_state[f"buf/{k}"] = buf
    return new_params, new_state
