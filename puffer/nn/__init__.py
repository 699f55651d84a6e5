"""Neural-network layers as pure functions over flat `dict[str, array]` parameters, written once against `be`.

Each layer module has `init(be, seed, <sizes...>, prefix="") -> params` (numpy-computed, identical on
every backend; `be=None` returns numpy arrays) and `apply(be, params, x, ..., prefix="")`.
"""

from puffer.nn import (
    attention,
    distributions,
    embedding,
    gru,
    init,
    layer_norm,
    linear,
    lstm,
    mlp,
)

__all__ = ["attention", "distributions", "embedding", "gru", "init", "layer_norm", "linear", "lstm", "mlp"]
