"""Optimizers as pure functions over flat parameter dicts, written once against `be`.

`opt.init(be, params) -> state`, `opt.update(be, params, grads, state, lr, **hyper) -> (params, state)`
for `opt` in sgd, adam, adamw; `lr` and any hyperparameter that changes between calls are 0-d arrays.
"""

from puffer.optim import adam, adamw, schedules, sgd
from puffer.optim.clip import clip_by_global_norm
from puffer.optim.schedules import cosine, linear

__all__ = ["adam", "adamw", "clip_by_global_norm", "cosine", "linear", "schedules", "sgd"]
