"""numpy: the forward-only reference backend every other backend is checked against."""

from __future__ import annotations

import math

import array_api_compat.numpy as xp_numpy
import numpy as np

from puffer.backends.base import Array, Backend


class NumpyBackend(Backend):
    """Reference backend: array-api-compat's numpy namespace, no gradients."""

    name = "numpy"
    can_train = False
    xp = xp_numpy
    array_type = (np.ndarray, np.generic)  # numpy returns scalars, not 0-d arrays, from 0-d operations

    def _is_native_dtype(self, dtype) -> bool:
        return isinstance(dtype, np.dtype) or dtype in (np.float32, np.float64, np.int32, np.int64, np.bool_)

    def asarray(self, x, dtype=None) -> Array:
        return np.asarray(x, dtype=dtype)

    def erf(self, x: Array) -> Array:
        # math.erf is exact to double precision; the reference must be more exact than the backends
        return np.vectorize(math.erf, otypes=[x.dtype])(x) if x.size else x.copy()
