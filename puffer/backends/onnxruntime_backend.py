"""onnxruntime: the inference backend for exported policies and for compiled forward code.

Eager operations run on numpy (the reference namespace); `compile(f)` traces `f` through the
recording `onnx` backend once per input signature and runs the graph with onnxruntime, so any
forward-only code written against `be` (e.g. `CheckpointPolicy`'s step) runs on onnxruntime.
Exported `.onnx` policies open with `puffer.deploy.Policy.load` (the layer above the backends).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import array_api_compat.numpy as numpy_xp
import numpy as np

from puffer.backends.numpy_backend import NumpyBackend
from puffer.errors import BackendUnavailableError, ExportError
from puffer.tree import flatten, unflatten


class OnnxruntimeBackend(NumpyBackend):
    """Forward-only: numpy eagerly, onnxruntime for `compile`d functions and exported policies."""

    name = "onnxruntime"
    can_train = False

    def __init__(self, device: str = "cpu"):
        super().__init__(device)
        # while `compile` traces, code closed over this backend must record instead of computing
        self._tracer: Any = None

    @property
    def xp(self) -> Any:  # type: ignore[override]
        return numpy_xp if self._tracer is None else self._tracer.xp

    def _eager_or_traced(name: str) -> Callable:  # noqa: N805 - a decorator factory used in the class body
        def method(self: OnnxruntimeBackend, *args: Any, **kwargs: Any) -> Any:
            target = super() if self._tracer is None else self._tracer
            return getattr(target, name)(*args, **kwargs)

        method.__name__ = name
        method.__doc__ = f"`{name}` on numpy, or recorded while `compile` traces."
        return method

    asarray = _eager_or_traced("asarray")
    is_array = _eager_or_traced("is_array")
    log_softmax = _eager_or_traced("log_softmax")
    softmax = _eager_or_traced("softmax")
    sigmoid = _eager_or_traced("sigmoid")
    relu = _eager_or_traced("relu")
    erf = _eager_or_traced("erf")
    del _eager_or_traced

    def compile(self, f: Callable, donate: Sequence[int] = ()) -> Callable:
        """`f` traced to ONNX per input signature (shapes and dtypes) and run by onnxruntime."""
        sessions: dict[Any, tuple[Any, Any]] = {}

        def run(*args: Any) -> Any:
            leaves, spec = flatten(args)
            arrays = [np.asarray(x) for x in leaves]
            key = (spec, tuple((a.dtype.str, a.shape) for a in arrays))
            if key not in sessions:
                sessions[key] = self._build(f, spec, arrays)
            session, out_spec = sessions[key]
            outs = session.run(None, {f"in{i}": a for i, a in enumerate(arrays)})
            return unflatten(out_spec, outs)

        return run


    def _build(self, f: Callable, spec: Any, arrays: list[np.ndarray]) -> tuple[Any, Any]:
        """An onnxruntime session running `f` on inputs shaped like `arrays`, and the spec of its outputs."""
        try:
            import onnxruntime as ort

            from puffer.backends.onnx_backend import OnnxBackend
        except ImportError as e:
            raise BackendUnavailableError(f"onnxruntime's compile traces through onnx, which is missing ({e}); "
                                          "pip install 'puffer-rl[onnx]'") from e
        tracer = OnnxBackend()
        self._tracer = tracer
        try:
            with tracer.trace():
                syms = [tracer.input(f"in{i}", a.dtype, a.shape) for i, a in enumerate(arrays)]
                out_leaves, out_spec = flatten(f(*unflatten(spec, syms)))
                for j, leaf in enumerate(out_leaves):
                    if not tracer.is_array(leaf):
                        raise ExportError(f"a compiled function must return arrays, output {j} is "
                                          f"{type(leaf).__name__}")
                    tracer.output(f"out{j}", leaf)
                model = tracer.model("puffer_compiled")
        finally:
            self._tracer = None
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.log_severity_level = 3
        return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"]), out_spec
