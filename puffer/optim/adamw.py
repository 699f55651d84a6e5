"""AdamW as torch.optim.AdamW: Adam with decoupled weight decay `p *= 1 - lr * weight_decay` before the step.

State as `puffer.optim.adam`.
"""

from __future__ import annotations

from typing import Any

from puffer.optim.adam import Params, adam_update
from puffer.optim.adam import init as init


def update(be: Any, params: Params, grads: Params, state: Params, lr: Any, beta1: Any = 0.9, beta2: Any = 0.999,
           eps: Any = 1e-8, weight_decay: Any = 0.01) -> tuple[Params, Params]:
    """One AdamW step (torch's default weight_decay 0.01); `lr` a 0-d array."""
    return adam_update(be, params, grads, state, lr, beta1, beta2, eps, weight_decay, True, "adamw")
