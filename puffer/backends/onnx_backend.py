"""onnx: a recording backend whose arrays are symbolic values that emit ONNX nodes.

Code written against `be.xp` runs once on `Sym` values inside `be.trace()`; every operation appends
a node to the current graph, so the same single-source policy forward that trains on torch, JAX or
tinygrad becomes an ONNX model. Shapes are tracked as Python ints, with symbolic dimensions (the
batch) reported as `None` in `.shape`, as the array API specifies for unknown sizes.

Values cannot flow back to Python: `bool(x)`, `float(x)`, `len(x)` on a symbolic axis, or any op
this tracer does not implement raise `ExportError` naming the op and the caller's file:line.

A trace targets one opset (`be.trace(opset=17)`): ops whose signature changed between opsets are
emitted in the target's form (ReduceMax/Min/Mean/Prod take `axes` as an attribute before 18, as an
input from 18), and an op that the target opset does not have yet raises `ExportError` naming the op,
the opset it needs and the call site. The model declares the lowest IR version its opset needs, so
a runtime that supports the opset loads it whatever the installed `onnx` package would default to.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import math
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from puffer.backends.base import Backend
from puffer.errors import ExportError

# opset 17 (IR version 8) loads on onnxruntime >= 1.12 (measured: the oldest Python wheels, onnxruntime-node
# and -web 1.12.1); opset 18 needs 1.14. README "Export and deployment" records the measurements
DEFAULT_OPSET = 17
# from 13 on, Squeeze/Unsqueeze/ReduceSum take axes as an input and Softmax works on one axis, the forms
# this tracer emits; older opsets would need a second lowering of those ops
MIN_OPSET = 13
# first opset in which each of these ops takes `axes` as an input instead of an attribute
_AXES_INPUT_SINCE = {"ReduceSum": 13, "ReduceMax": 18, "ReduceMin": 18, "ReduceMean": 18, "ReduceProd": 18}
Dim = int | str
_INT64_MAX = np.iinfo(np.int64).max
_INT64_MIN = np.iinfo(np.int64).min
# frames in these files are the tracer's own machinery; the call site reported is the first frame outside them
_INTERNAL = (os.path.abspath(__file__), os.path.abspath(os.path.join(os.path.dirname(__file__), "base.py")))


def call_site() -> str:
    """`file:line` of the innermost caller outside the backend machinery (the user's code)."""
    frame = sys._getframe(1)
    while frame is not None and os.path.abspath(frame.f_code.co_filename) in _INTERNAL:
        frame = frame.f_back
    if frame is None:
        return "<unknown>"
    return f"{frame.f_code.co_filename}:{frame.f_lineno}"


def unsupported(op: str, why: str = "") -> ExportError:
    """The error for an op the tracer cannot export, naming the op and the user's call site."""
    hint = f": {why}" if why else ""
    return ExportError(f"the ONNX exporter does not support {op} (called at {call_site()}){hint}")


def _onnx_dtype(dtype: np.dtype) -> int:
    return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


@functools.cache
def _first_opsets() -> dict[str, int]:
    """The opset in which each default-domain ONNX op first appeared."""
    first: dict[str, int] = {}
    for schema in onnx.defs.get_all_schemas_with_history():
        if schema.domain in ("", "ai.onnx"):
            first[schema.name] = min(first.get(schema.name, schema.since_version), schema.since_version)
    return first


def check_opset(opset: int) -> int:
    """`opset` if this tracer can target it, else an `ExportError` saying which opsets it can."""
    newest = onnx.defs.onnx_opset_version()
    if isinstance(opset, bool) or not isinstance(opset, (int, np.integer)):
        raise ExportError(f"the target opset must be an integer, got {opset!r}")
    if opset < MIN_OPSET:
        raise ExportError(f"opset {opset} is older than the exporter supports: it emits ops in their opset-"
                          f"{MIN_OPSET} form (Squeeze, Unsqueeze and ReduceSum with an axes input); pass opset "
                          f">= {MIN_OPSET} (default {DEFAULT_OPSET})")
    if opset > newest:
        raise ExportError(f"opset {opset} is newer than the installed onnx {onnx.__version__} knows (up to "
                          f"{newest})")
    return int(opset)


class Graph:
    """Nodes, initializers, inputs and outputs of one trace, which targets one opset."""

    def __init__(self, opset: int = DEFAULT_OPSET) -> None:
        self.opset = check_opset(opset)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []
        self._ids = itertools.count()
        self._consts: dict[tuple, str] = {}
        self._names: set[str] = set()

    def fresh(self, hint: str) -> str:
        """A new unique value name."""
        return f"{hint}_{next(self._ids)}"

    def node(self, op: str, inputs: Sequence[str], n_out: int = 1, **attrs: Any) -> list[str]:
        """Append a node; returns its output names. An op newer than the target opset is an `ExportError`."""
        needs = _first_opsets().get(op)
        if needs is None:
            raise ExportError(f"{op} is not an ONNX operator the installed onnx {onnx.__version__} knows "
                              f"(called at {call_site()})")
        if needs > self.opset:
            raise ExportError(f"{op} needs opset {needs}, but this export targets opset {self.opset} (called at "
                              f"{call_site()}); pass opset >= {needs} (puffer export --opset {needs})")
        outs = [self.fresh(op) for _ in range(n_out)]
        # a unique node name: onnxruntime 1.20.0's GatherSliceToSplitFusion names the nodes it makes after the
        # nodes it fuses and refuses the model ("two nodes with same node name") when those are all unnamed
        self.nodes.append(helper.make_node(op, list(inputs), outs, name=outs[0], **attrs))
        return outs

    def const(self, value: np.ndarray) -> str:
        """An initializer holding `value` (deduplicated by dtype, shape and bytes)."""
        value = np.asarray(value, order="C")  # not ascontiguousarray, which turns 0-d into 1-d
        key = (value.dtype.str, value.shape, value.tobytes())
        if key not in self._consts:
            name = self.fresh("const")
            self.initializers.append(numpy_helper.from_array(value, name))
            self._consts[key] = name
        return self._consts[key]

    def named_initializer(self, name: str, value: np.ndarray) -> str:
        """A named initializer (a parameter), kept under its own name."""
        if name in self._names:
            raise ExportError(f"two graph values are both named {name!r}")
        self._names.add(name)
        self.initializers.append(numpy_helper.from_array(np.asarray(value, order="C"), name))
        return name


class Sym:
    """A symbolic array: a value name in a graph, with a numpy dtype and a shape of ints or symbolic names."""

    __array_ufunc__ = None  # numpy operands defer to Sym's reflected operators instead of building object arrays
    __array_priority__ = 1000

    def __init__(self, be: OnnxBackend, graph: Graph, name: str, dtype: Any, dims: Sequence[Dim]):
        self.be, self.graph, self.name = be, graph, name
        self.dtype = np.dtype(dtype)
        self.dims = tuple(dims)

    # ---- metadata ---------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int | None, ...]:
        """The shape, with None for symbolic dimensions (array API convention)."""
        return tuple(d if isinstance(d, int) else None for d in self.dims)

    @property
    def ndim(self) -> int:
        return len(self.dims)

    @property
    def size(self) -> int | None:
        return None if any(isinstance(d, str) for d in self.dims) else math.prod(self.dims)

    @property
    def device(self) -> str:
        return "cpu"

    @property
    def T(self) -> Sym:
        return self.be.xp.permute_dims(self, tuple(reversed(range(self.ndim))))

    @property
    def mT(self) -> Sym:
        return self.be.xp.matrix_transpose(self)

    def __repr__(self) -> str:
        return f"Sym({self.name}, {self.dtype}, {self.dims})"

    # ---- values cannot reach Python ---------------------------------------------------------
    def _host(self, what: str) -> ExportError:
        return unsupported(what, "a traced value is symbolic and cannot be read in Python; data-dependent Python "
                                 "control flow does not export (use xp.where)")

    def __bool__(self) -> bool:
        raise self._host("bool(array)")

    def __float__(self) -> float:
        raise self._host("float(array)")

    def __int__(self) -> int:
        raise self._host("int(array)")

    def __index__(self) -> int:
        raise self._host("using an array as a Python index")

    def __array__(self, *args: Any, **kwargs: Any) -> np.ndarray:
        raise self._host("converting an array to numpy")

    def __len__(self) -> int:
        if not self.dims or isinstance(self.dims[0], str):
            raise unsupported("len(array)", "the leading axis is the symbolic batch dimension")
        return self.dims[0]

    def __iter__(self) -> Iterator[Sym]:
        return (self[i] for i in range(len(self)))

    def __setitem__(self, key: Any, value: Any) -> None:
        raise unsupported("item assignment (x[...] = v)", "build the array with xp.where or xp.concat instead")

    def __hash__(self) -> int:
        return id(self)

    # ---- operators --------------------------------------------------------------------------
    def __add__(self, o): return self.be.xp.add(self, o)
    def __radd__(self, o): return self.be.xp.add(o, self)
    def __sub__(self, o): return self.be.xp.subtract(self, o)
    def __rsub__(self, o): return self.be.xp.subtract(o, self)
    def __mul__(self, o): return self.be.xp.multiply(self, o)
    def __rmul__(self, o): return self.be.xp.multiply(o, self)
    def __truediv__(self, o): return self.be.xp.divide(self, o)
    def __rtruediv__(self, o): return self.be.xp.divide(o, self)
    def __floordiv__(self, o): return self.be.xp.floor_divide(self, o)
    def __rfloordiv__(self, o): return self.be.xp.floor_divide(o, self)
    def __mod__(self, o): return self.be.xp.remainder(self, o)
    def __rmod__(self, o): return self.be.xp.remainder(o, self)
    def __pow__(self, o): return self.be.xp.pow(self, o)
    def __rpow__(self, o): return self.be.xp.pow(o, self)
    def __matmul__(self, o): return self.be.xp.matmul(self, o)
    def __rmatmul__(self, o): return self.be.xp.matmul(o, self)
    def __neg__(self): return self.be.xp.negative(self)
    def __pos__(self): return self
    def __abs__(self): return self.be.xp.abs(self)
    def __invert__(self): return self.be.xp.bitwise_invert(self)
    def __and__(self, o): return self.be.xp.bitwise_and(self, o)
    def __rand__(self, o): return self.be.xp.bitwise_and(o, self)
    def __or__(self, o): return self.be.xp.bitwise_or(self, o)
    def __ror__(self, o): return self.be.xp.bitwise_or(o, self)
    def __xor__(self, o): return self.be.xp.bitwise_xor(self, o)
    def __rxor__(self, o): return self.be.xp.bitwise_xor(o, self)
    def __lt__(self, o): return self.be.xp.less(self, o)
    def __le__(self, o): return self.be.xp.less_equal(self, o)
    def __gt__(self, o): return self.be.xp.greater(self, o)
    def __ge__(self, o): return self.be.xp.greater_equal(self, o)
    def __eq__(self, o): return self.be.xp.equal(self, o)  # type: ignore[override]
    def __ne__(self, o): return self.be.xp.not_equal(self, o)  # type: ignore[override]

    def __getitem__(self, key: Any) -> Sym:
        return self.be.xp._getitem(self, key)


def _broadcast(a: Sequence[Dim], b: Sequence[Dim]) -> tuple[Dim, ...]:
    n = max(len(a), len(b))
    a = (1,) * (n - len(a)) + tuple(a)
    b = (1,) * (n - len(b)) + tuple(b)
    out: list[Dim] = []
    for x, y in zip(a, b):
        if x == 1:
            out.append(y)
        elif y == 1 or x == y:
            out.append(x)
        elif isinstance(x, str):
            out.append(y)
        elif isinstance(y, str):
            out.append(x)
        else:
            raise ExportError(f"shapes {tuple(a)} and {tuple(b)} do not broadcast (at {call_site()})")
    return tuple(out)


def _axis(axis: int, ndim: int) -> int:
    if not -ndim <= axis < max(ndim, 1):
        raise ExportError(f"axis {axis} is out of range for an array of {ndim} dimensions (at {call_site()})")
    return axis % ndim if ndim else 0


_UNARY = {
    "abs": "Abs", "acos": "Acos", "acosh": "Acosh", "asin": "Asin", "asinh": "Asinh", "atan": "Atan",
    "atanh": "Atanh", "ceil": "Ceil", "cos": "Cos", "cosh": "Cosh", "exp": "Exp", "floor": "Floor",
    "log": "Log", "negative": "Neg", "round": "Round", "sign": "Sign", "sin": "Sin", "sinh": "Sinh",
    "sqrt": "Sqrt", "tan": "Tan", "tanh": "Tanh", "isnan": "IsNaN", "isinf": "IsInf", "logical_not": "Not",
    "reciprocal": "Reciprocal",
}
_BINARY = {
    "add": "Add", "subtract": "Sub", "multiply": "Mul", "divide": "Div", "maximum": "Max", "minimum": "Min",
    "equal": "Equal", "less": "Less", "less_equal": "LessOrEqual", "greater": "Greater",
    "greater_equal": "GreaterOrEqual", "logical_and": "And", "logical_or": "Or", "logical_xor": "Xor",
}
_COMPARISONS = {"equal", "not_equal", "less", "less_equal", "greater", "greater_equal"}
_LOGICAL = {"logical_and", "logical_or", "logical_xor"}
_REDUCE = {"sum": "ReduceSum", "prod": "ReduceProd", "max": "ReduceMax", "min": "ReduceMin", "mean": "ReduceMean"}


class OnnxNamespace:
    """The array-API namespace of the recording backend: each function appends ONNX nodes."""

    float32, float64, float16 = np.dtype("float32"), np.dtype("float64"), np.dtype("float16")
    int8, int16, int32, int64 = np.dtype("int8"), np.dtype("int16"), np.dtype("int32"), np.dtype("int64")
    uint8, uint16, uint32, uint64 = np.dtype("uint8"), np.dtype("uint16"), np.dtype("uint32"), np.dtype("uint64")
    bool = np.dtype("bool")
    e, pi, inf, nan, newaxis = math.e, math.pi, math.inf, math.nan, None

    def __init__(self, be: OnnxBackend):
        self._be = be

    def __getattr__(self, name: str) -> Any:
        # reached only for names the namespace does not define: the array API op has no exporter
        if name.startswith("__"):
            raise AttributeError(name)
        raise unsupported(f"xp.{name}")

    # ---- plumbing ---------------------------------------------------------------------------
    @property
    def linalg(self) -> Any:
        return _Unsupported("xp.linalg")

    @property
    def fft(self) -> Any:
        return _Unsupported("xp.fft")

    def _graph(self, *xs: Any) -> Graph:
        for x in xs:
            if isinstance(x, Sym):
                return x.graph
        return self._be.graph

    def _sym(self, name: str, dtype: Any, dims: Sequence[Dim], graph: Graph) -> Sym:
        return Sym(self._be, graph, name, dtype, dims)

    def _op(self, op: str, inputs: Sequence[Sym | str], dtype: Any, dims: Sequence[Dim], **attrs: Any) -> Sym:
        g = self._graph(*inputs)
        names = [x.name if isinstance(x, Sym) else x for x in inputs]
        return self._sym(g.node(op, names, **attrs)[0], dtype, dims, g)

    def _const(self, value: Any, dtype: Any = None, graph: Graph | None = None) -> Sym:
        arr = np.asarray(value, dtype=dtype)
        g = graph or self._be.graph
        return self._sym(g.const(arr), arr.dtype, arr.shape, g)

    def _ints(self, values: Sequence[int], graph: Graph) -> str:
        return graph.const(np.asarray(values, dtype=np.int64))

    def _lift(self, x: Any, like: Sym | None, graph: Graph) -> Sym:
        """A Sym from `x`: itself, or a constant (Python scalars take `like`'s dtype, as the array API says)."""
        if isinstance(x, Sym):
            if x.graph is not graph:
                raise ExportError(f"arrays from two different traces were combined (at {call_site()})")
            return x
        if isinstance(x, (bool, int, float)) and not isinstance(x, np.generic):
            if like is None:
                dt = np.dtype("bool") if isinstance(x, bool) else np.dtype("int64" if isinstance(x, int) else "float32")
            elif isinstance(x, float) and like.dtype.kind in "biu":
                dt = np.dtype("float32")
            elif isinstance(x, int) and not isinstance(x, bool) and like.dtype.kind == "b":
                dt = np.dtype("int64")
            else:
                dt = like.dtype
            return self._const(x, dt, graph)
        if isinstance(x, (np.ndarray, np.generic, list, tuple)):
            return self._const(np.asarray(x), None, graph)
        raise ExportError(f"cannot use a {type(x).__name__} as an array in an exported function (at {call_site()})")

    def _cast(self, x: Sym, dtype: Any) -> Sym:
        dtype = np.dtype(dtype)
        if x.dtype == dtype:
            return x
        return self._op("Cast", [x], dtype, x.dims, to=_onnx_dtype(dtype))

    def _pair(self, a: Any, b: Any) -> tuple[Sym, Sym]:
        g = self._graph(a, b)
        like = a if isinstance(a, Sym) else b if isinstance(b, Sym) else None
        a, b = self._lift(a, like, g), self._lift(b, like, g)
        if a.dtype != b.dtype:
            dt = np.result_type(a.dtype, b.dtype)
            a, b = self._cast(a, dt), self._cast(b, dt)
        return a, b

    def _binary(self, name: str, a: Any, b: Any) -> Sym:
        a, b = self._pair(a, b)
        if name in _LOGICAL:
            a, b = self._cast(a, self.bool), self._cast(b, self.bool)
        dims = _broadcast(a.dims, b.dims)
        if name == "not_equal":
            return self.logical_not(self._op("Equal", [a, b], self.bool, dims))
        dtype = self.bool if name in _COMPARISONS or name in _LOGICAL else a.dtype
        return self._op(_BINARY[name], [a, b], dtype, dims)

    def _unary(self, name: str, x: Any) -> Sym:
        x = self._lift(x, None, self._graph(x))
        dtype = self.bool if name in ("isnan", "isinf", "logical_not") else x.dtype
        if name == "logical_not":
            x = self._cast(x, self.bool)
        return self._op(_UNARY[name], [x], dtype, x.dims)

    # ---- elementwise ------------------------------------------------------------------------
    def add(self, a: Any, b: Any) -> Sym: return self._binary("add", a, b)
    def subtract(self, a: Any, b: Any) -> Sym: return self._binary("subtract", a, b)
    def multiply(self, a: Any, b: Any) -> Sym: return self._binary("multiply", a, b)
    def divide(self, a: Any, b: Any) -> Sym: return self._binary("divide", a, b)
    def maximum(self, a: Any, b: Any) -> Sym: return self._binary("maximum", a, b)
    def minimum(self, a: Any, b: Any) -> Sym: return self._binary("minimum", a, b)
    def equal(self, a: Any, b: Any) -> Sym: return self._binary("equal", a, b)
    def not_equal(self, a: Any, b: Any) -> Sym: return self._binary("not_equal", a, b)
    def less(self, a: Any, b: Any) -> Sym: return self._binary("less", a, b)
    def less_equal(self, a: Any, b: Any) -> Sym: return self._binary("less_equal", a, b)
    def greater(self, a: Any, b: Any) -> Sym: return self._binary("greater", a, b)
    def greater_equal(self, a: Any, b: Any) -> Sym: return self._binary("greater_equal", a, b)
    def logical_and(self, a: Any, b: Any) -> Sym: return self._binary("logical_and", a, b)
    def logical_or(self, a: Any, b: Any) -> Sym: return self._binary("logical_or", a, b)
    def logical_xor(self, a: Any, b: Any) -> Sym: return self._binary("logical_xor", a, b)

    def abs(self, x: Any) -> Sym: return self._unary("abs", x)
    def acos(self, x: Any) -> Sym: return self._unary("acos", x)
    def acosh(self, x: Any) -> Sym: return self._unary("acosh", x)
    def asin(self, x: Any) -> Sym: return self._unary("asin", x)
    def asinh(self, x: Any) -> Sym: return self._unary("asinh", x)
    def atan(self, x: Any) -> Sym: return self._unary("atan", x)
    def atanh(self, x: Any) -> Sym: return self._unary("atanh", x)
    def ceil(self, x: Any) -> Sym: return self._unary("ceil", x)
    def cos(self, x: Any) -> Sym: return self._unary("cos", x)
    def cosh(self, x: Any) -> Sym: return self._unary("cosh", x)
    def exp(self, x: Any) -> Sym: return self._unary("exp", x)
    def floor(self, x: Any) -> Sym: return self._unary("floor", x)
    def log(self, x: Any) -> Sym: return self._unary("log", x)
    def negative(self, x: Any) -> Sym: return self._unary("negative", x)
    def round(self, x: Any) -> Sym: return self._unary("round", x)
    def sign(self, x: Any) -> Sym: return self._unary("sign", x)
    def sin(self, x: Any) -> Sym: return self._unary("sin", x)
    def sinh(self, x: Any) -> Sym: return self._unary("sinh", x)
    def sqrt(self, x: Any) -> Sym: return self._unary("sqrt", x)
    def tan(self, x: Any) -> Sym: return self._unary("tan", x)
    def tanh(self, x: Any) -> Sym: return self._unary("tanh", x)
    def isnan(self, x: Any) -> Sym: return self._unary("isnan", x)
    def isinf(self, x: Any) -> Sym: return self._unary("isinf", x)
    def logical_not(self, x: Any) -> Sym: return self._unary("logical_not", x)
    def reciprocal(self, x: Any) -> Sym: return self._unary("reciprocal", x)

    def _bitwise(self, name: str, a: Any, b: Any) -> Sym:
        a, b = self._pair(a, b)
        if a.dtype.kind == "b":  # on booleans the array API's bitwise ops are the logical ones
            return self._binary(f"logical_{name}", a, b)
        if a.dtype.kind not in "iu":
            raise unsupported(f"xp.bitwise_{name} on {a.dtype}", "bitwise ops take integer or boolean arrays")
        return self._op(f"Bitwise{name.capitalize()}", [a, b], a.dtype, _broadcast(a.dims, b.dims))

    def bitwise_and(self, a: Any, b: Any) -> Sym: return self._bitwise("and", a, b)
    def bitwise_or(self, a: Any, b: Any) -> Sym: return self._bitwise("or", a, b)
    def bitwise_xor(self, a: Any, b: Any) -> Sym: return self._bitwise("xor", a, b)

    def bitwise_invert(self, x: Any) -> Sym:
        x = self._lift(x, None, self._graph(x))
        if x.dtype.kind == "b":
            return self.logical_not(x)
        if x.dtype.kind not in "iu":
            raise unsupported(f"xp.bitwise_invert on {x.dtype}", "bitwise ops take integer or boolean arrays")
        return self._op("BitwiseNot", [x], x.dtype, x.dims)

    def positive(self, x: Sym) -> Sym:
        return x

    def isfinite(self, x: Sym) -> Sym:
        return self.logical_not(self.logical_or(self.isnan(x), self.isinf(x)))

    def square(self, x: Sym) -> Sym:
        return x * x

    def log1p(self, x: Sym) -> Sym:
        # ONNX has no Log1p; log(1 + x) loses relative precision only below float eps, where both are ~x
        return self.log(1.0 + x)

    def expm1(self, x: Sym) -> Sym:
        return self.exp(x) - 1.0

    def log2(self, x: Sym) -> Sym:
        return self.log(x) * (1.0 / math.log(2.0))

    def log10(self, x: Sym) -> Sym:
        return self.log(x) * (1.0 / math.log(10.0))

    def logaddexp(self, a: Any, b: Any) -> Sym:
        m = self.maximum(a, b)
        return m + self.log1p(self.exp(-self.abs(a - b)))

    def pow(self, a: Any, b: Any) -> Sym:
        if isinstance(a, Sym) and not isinstance(b, Sym) and np.ndim(b) == 0 and float(b) == 2.0:
            return a * a  # exact, as every framework computes x**2
        a, b = self._pair(a, b)
        return self._op("Pow", [a, b], a.dtype, _broadcast(a.dims, b.dims))

    def floor_divide(self, a: Any, b: Any) -> Sym:
        a, b = self._pair(a, b)
        if a.dtype.kind != "f":
            raise unsupported("integer floor_divide", "ONNX Div truncates integers toward zero; use floats")
        return self.floor(a / b)

    def remainder(self, a: Any, b: Any) -> Sym:
        a, b = self._pair(a, b)
        if a.dtype.kind == "f":
            return a - self.floor(a / b) * b
        return self._op("Mod", [a, b], a.dtype, _broadcast(a.dims, b.dims), fmod=0)

    def clip(self, x: Sym, min: Any = None, max: Any = None) -> Sym:
        if min is not None:
            x = self.maximum(x, min)
        if max is not None:
            x = self.minimum(x, max)
        return x

    def where(self, cond: Any, a: Any, b: Any) -> Sym:
        g = self._graph(cond, a, b)
        cond = self._cast(self._lift(cond, None, g), self.bool)
        a, b = self._pair(a, b)
        return self._op("Where", [cond, a, b], a.dtype, _broadcast(cond.dims, _broadcast(a.dims, b.dims)))

    def astype(self, x: Any, dtype: Any, copy: bool = True) -> Sym:
        return self._cast(self._lift(x, None, self._graph(x)), dtype)

    # ---- creation ---------------------------------------------------------------------------
    def asarray(self, x: Any, dtype: Any = None, copy: Any = None, device: Any = None) -> Sym:
        if isinstance(x, Sym):
            return x if dtype is None else self._cast(x, dtype)
        return self._const(np.asarray(x, dtype=None if dtype is None else np.dtype(dtype)))

    def _concrete(self, shape: Any, what: str) -> tuple[int, ...]:
        shape = (shape,) if isinstance(shape, int) else tuple(shape)
        if any(not isinstance(d, (int, np.integer)) for d in shape):
            raise unsupported(f"{what} with a symbolic shape {shape}", f"use xp.{what}_like(x) on a traced array")
        return tuple(int(d) for d in shape)

    def zeros(self, shape: Any, dtype: Any = None, device: Any = None) -> Sym:
        return self._const(np.zeros(self._concrete(shape, "zeros"), dtype or np.float32))

    def ones(self, shape: Any, dtype: Any = None, device: Any = None) -> Sym:
        return self._const(np.ones(self._concrete(shape, "ones"), dtype or np.float32))

    def full(self, shape: Any, fill_value: Any, dtype: Any = None, device: Any = None) -> Sym:
        dtype = dtype or (np.float32 if isinstance(fill_value, float) else None)
        return self._const(np.full(self._concrete(shape, "full"), fill_value, dtype))

    def full_like(self, x: Sym, fill_value: Any, dtype: Any = None, device: Any = None) -> Sym:
        dtype = np.dtype(dtype or x.dtype)
        value = numpy_helper.from_array(np.asarray([fill_value], dtype=dtype))
        shape = self._op("Shape", [x], self.int64, (x.ndim,))
        return self._op("ConstantOfShape", [shape], dtype, x.dims, value=value)

    def zeros_like(self, x: Sym, dtype: Any = None, device: Any = None) -> Sym:
        return self.full_like(x, 0, dtype)

    def ones_like(self, x: Sym, dtype: Any = None, device: Any = None) -> Sym:
        return self.full_like(x, 1, dtype)

    def empty_like(self, x: Sym, dtype: Any = None, device: Any = None) -> Sym:
        return self.full_like(x, 0, dtype)

    def arange(self, start: Any, stop: Any = None, step: Any = 1, dtype: Any = None, device: Any = None) -> Sym:
        if any(isinstance(v, Sym) for v in (start, stop, step)):
            raise unsupported("xp.arange with traced bounds")
        return self._const(np.arange(start, stop, step, dtype=dtype) if stop is not None
                           else np.arange(start, dtype=dtype))

    def eye(self, n: int, m: int | None = None, k: int = 0, dtype: Any = None, device: Any = None) -> Sym:
        return self._const(np.eye(n, m, k, dtype=dtype or np.float32))

    def linspace(self, start: float, stop: float, num: int, dtype: Any = None, device: Any = None,
                 endpoint: bool = True) -> Sym:
        return self._const(np.linspace(start, stop, num, endpoint=endpoint, dtype=dtype or np.float32))

    # ---- data type functions ----------------------------------------------------------------
    def isdtype(self, dtype: Any, kind: Any) -> bool:
        import array_api_compat.numpy as npx

        return npx.isdtype(np.dtype(dtype), kind)

    def result_type(self, *xs: Any) -> np.dtype:
        return np.result_type(*[x.dtype if isinstance(x, Sym) else x for x in xs])

    def finfo(self, dtype: Any) -> Any:
        return np.finfo(dtype)

    def iinfo(self, dtype: Any) -> Any:
        return np.iinfo(dtype)

    # ---- linear algebra ---------------------------------------------------------------------
    def matmul(self, a: Any, b: Any) -> Sym:
        a, b = self._pair(a, b)
        if a.ndim == 0 or b.ndim == 0:
            raise ExportError(f"matmul needs arrays of at least 1 dimension (at {call_site()})")
        ad = (1,) + a.dims if a.ndim == 1 else a.dims
        bd = b.dims + (1,) if b.ndim == 1 else b.dims
        batch = _broadcast(ad[:-2], bd[:-2])
        dims = batch + ((ad[-2],) if a.ndim > 1 else ()) + ((bd[-1],) if b.ndim > 1 else ())
        return self._op("MatMul", [a, b], a.dtype, dims)

    def matrix_transpose(self, x: Sym) -> Sym:
        perm = list(range(x.ndim))
        perm[-2:] = perm[-2:][::-1]
        return self.permute_dims(x, tuple(perm))

    def vecdot(self, a: Any, b: Any, axis: int = -1) -> Sym:
        return self.sum(a * b, axis=axis)

    # ---- manipulation -----------------------------------------------------------------------
    def permute_dims(self, x: Sym, axes: Sequence[int]) -> Sym:
        axes = [_axis(a, x.ndim) for a in axes]
        return self._op("Transpose", [x], x.dtype, tuple(x.dims[a] for a in axes), perm=axes)

    def moveaxis(self, x: Sym, source: int, destination: int) -> Sym:
        order = [a for a in range(x.ndim) if a != _axis(source, x.ndim)]
        order.insert(_axis(destination, x.ndim), _axis(source, x.ndim))
        return self.permute_dims(x, order)

    def expand_dims(self, x: Sym, axis: int = 0) -> Sym:
        ax = _axis(axis, x.ndim + 1)
        dims = x.dims[:ax] + (1,) + x.dims[ax:]
        return self._op("Unsqueeze", [x.name, self._ints([ax], x.graph)], x.dtype, dims)

    def squeeze(self, x: Sym, axis: int | Sequence[int]) -> Sym:
        axes = sorted(_axis(a, x.ndim) for a in ((axis,) if isinstance(axis, int) else axis))
        for a in axes:
            if x.dims[a] != 1:
                raise ExportError(f"cannot squeeze axis {a} of size {x.shape[a]} (at {call_site()})")
        dims = tuple(d for i, d in enumerate(x.dims) if i not in axes)
        return self._op("Squeeze", [x.name, self._ints(axes, x.graph)], x.dtype, dims)

    def reshape(self, x: Sym, shape: Sequence[int], copy: Any = None) -> Sym:
        shape = tuple(-1 if d is None else int(d) for d in shape)
        symbolic = [d for d in x.dims if isinstance(d, str)]
        if symbolic and -1 not in shape:
            raise unsupported(f"xp.reshape of a batch-sized array to the fixed shape {shape}",
                              "keep the batch axis as -1")
        if shape.count(-1) > 1:
            raise ExportError(f"reshape to {shape}: at most one dimension may be -1 (at {call_site()})")
        known = math.prod(d for d in shape if d != -1)
        if -1 in shape:
            rest = x.size // known if x.size is not None else (symbolic[0] if len(symbolic) == 1 else "reshaped")
            dims = tuple(rest if d == -1 else d for d in shape)
        else:
            dims = shape
        # allowzero=0: a 0 copies the input dimension; puffer never reshapes to empty axes
        return self._op("Reshape", [x.name, self._ints(shape, x.graph)], x.dtype, dims)

    def broadcast_to(self, x: Sym, shape: Sequence[int]) -> Sym:
        shape = self._concrete(shape, "broadcast_to")
        return self._op("Expand", [x.name, self._ints(shape, x.graph)], x.dtype, _broadcast(x.dims, shape))

    def concat(self, arrays: Sequence[Sym], axis: int | None = 0) -> Sym:
        g = self._graph(*arrays)
        like = next(a for a in arrays if isinstance(a, Sym))
        xs = [self._lift(a, like, g) for a in arrays]
        dt = np.result_type(*[a.dtype for a in xs])
        xs = [self._cast(a, dt) for a in xs]
        if axis is None:
            xs, axis = [self.reshape(a, (-1,)) for a in xs], 0
        ax = _axis(axis, xs[0].ndim)
        total: Dim = 0
        for a in xs:
            total = a.dims[ax] if isinstance(a.dims[ax], str) or isinstance(total, str) else total + a.dims[ax]
        dims = xs[0].dims[:ax] + (total,) + xs[0].dims[ax + 1:]
        for a in xs[1:]:
            dims = _broadcast(dims[:ax] + (1,) + dims[ax + 1:], a.dims[:ax] + (1,) + a.dims[ax + 1:])[:ax] + (
                total,) + dims[ax + 1:]
        return self._op("Concat", xs, dt, dims, axis=ax)

    def stack(self, arrays: Sequence[Sym], axis: int = 0) -> Sym:
        ax = _axis(axis, arrays[0].ndim + 1)
        return self.concat([self.expand_dims(a, axis=ax) for a in arrays], axis=ax)

    def flip(self, x: Sym, axis: int | Sequence[int] | None = None) -> Sym:
        axes = range(x.ndim) if axis is None else (axis,) if isinstance(axis, int) else axis
        axes = [_axis(a, x.ndim) for a in axes]
        g = x.graph
        ins = [x.name, self._ints([-1] * len(axes), g), self._ints([_INT64_MIN] * len(axes), g),
               self._ints(axes, g), self._ints([-1] * len(axes), g)]
        return self._op("Slice", ins, x.dtype, x.dims)

    def tile(self, x: Sym, repetitions: Sequence[int]) -> Sym:
        reps = self._concrete(repetitions, "tile")
        if len(reps) < x.ndim:
            reps = (1,) * (x.ndim - len(reps)) + reps
        elif len(reps) > x.ndim:
            x = self.reshape(x, (1,) * (len(reps) - x.ndim) + tuple(-1 if d is None else d for d in x.shape))
        dims = tuple(d * r if isinstance(d, int) else (d if r == 1 else f"{d}x{r}") for d, r in zip(x.dims, reps))
        return self._op("Tile", [x.name, self._ints(reps, x.graph)], x.dtype, dims)

    # ---- indexing ---------------------------------------------------------------------------
    def take(self, x: Sym, indices: Any, axis: int | None = None) -> Sym:
        if axis is None:
            x, axis = self.reshape(x, (-1,)), 0
        idx = self._cast(self._lift(indices, None, x.graph), self.int64)
        ax = _axis(axis, x.ndim)
        return self._op("Gather", [x, idx], x.dtype, x.dims[:ax] + idx.dims + x.dims[ax + 1:], axis=ax)

    def take_along_axis(self, x: Sym, indices: Any, axis: int = -1) -> Sym:
        idx = self._cast(self._lift(indices, None, x.graph), self.int64)
        ax = _axis(axis, x.ndim)
        return self._op("GatherElements", [x, idx], x.dtype, idx.dims, axis=ax)

    def _getitem(self, x: Sym, key: Any) -> Sym:
        key = key if isinstance(key, tuple) else (key,)
        if any(isinstance(k, Sym) for k in key):
            arrays = [k for k in key if isinstance(k, Sym)]
            rest = [k for k in key if not isinstance(k, Sym)]
            if len(arrays) > 1 or any(k is not Ellipsis and k != slice(None) for k in rest):
                raise unsupported("mixing an array index with other indices", "use xp.take")
            if arrays[0].dtype == self.bool:
                raise unsupported("boolean mask indexing", "its result has a data-dependent shape; use xp.where")
            pos = next(i for i, k in enumerate(key) if k is arrays[0])
            ell = [i for i, k in enumerate(key) if k is Ellipsis]
            axis = pos if not ell or ell[0] > pos else pos - len(key)
            return self.take(x, arrays[0], axis=axis)
        n_ell = sum(k is Ellipsis for k in key)
        if n_ell > 1:
            raise ExportError(f"an index may hold one Ellipsis, got {key} (at {call_site()})")
        used = sum(k is not None and k is not Ellipsis for k in key)
        if used > x.ndim:
            raise ExportError(f"too many indices {key} for an array of {x.ndim} dimensions (at {call_site()})")
        if n_ell:
            i = key.index(Ellipsis)
            key = key[:i] + (slice(None),) * (x.ndim - used) + key[i + 1:]
        else:
            key = key + (slice(None),) * (x.ndim - used)
        starts, ends, axes, steps, dims = [], [], [], [], list(x.dims)
        gathers, out_keys, axis = [], [], 0
        for k in key:
            if k is None:
                out_keys.append(None)
                continue
            if isinstance(k, (int, np.integer)):
                k = int(k)
                d = x.dims[axis]
                if isinstance(d, int) and not -d <= k < d:
                    raise ExportError(f"index {k} is out of bounds for axis {axis} of size {d} (at {call_site()})")
                gathers.append((axis, k))
            elif isinstance(k, slice):
                out_keys.append(axis)
                if k != slice(None):
                    step = 1 if k.step is None else int(k.step)
                    lo, hi = (0, _INT64_MAX) if step > 0 else (-1, _INT64_MIN)
                    start = lo if k.start is None else int(k.start)
                    stop = hi if k.stop is None else int(k.stop)
                    starts.append(start), ends.append(stop), axes.append(axis), steps.append(step)
                    d = x.dims[axis]
                    dims[axis] = len(range(d)[k]) if isinstance(d, int) else f"{d}_sliced"
            else:
                raise unsupported(f"indexing with a {type(k).__name__}")
            axis += 1
        g = x.graph
        if axes:
            x = self._op("Slice", [x.name, self._ints(starts, g), self._ints(ends, g), self._ints(axes, g),
                                   self._ints(steps, g)], x.dtype, dims)
        for ax, k in sorted(gathers, reverse=True):  # innermost first, so outer axis numbers stay valid
            dims_after = x.dims[:ax] + x.dims[ax + 1:]
            x = self._op("Gather", [x.name, g.const(np.asarray(k, np.int64))], x.dtype, dims_after, axis=ax)
        new_axes = [i for i, k in enumerate(out_keys) if k is None]
        if new_axes:
            dims = list(x.dims)
            for i in new_axes:
                dims.insert(i, 1)
            x = self._op("Unsqueeze", [x.name, self._ints(new_axes, g)], x.dtype, tuple(dims))
        return x

    # ---- reductions -------------------------------------------------------------------------
    def _axes(self, x: Sym, axis: Any) -> list[int]:
        if axis is None:
            return list(range(x.ndim))
        return sorted(_axis(a, x.ndim) for a in ((axis,) if isinstance(axis, int) else axis))

    def _reduce(self, name: str, x: Sym, axis: Any, keepdims: bool, dtype: Any = None) -> Sym:
        if x.dtype == self.bool:
            x = self._cast(x, self.int64)
        if dtype is not None:
            x = self._cast(x, dtype)
        axes = self._axes(x, axis)
        dims = tuple(1 if i in axes else d for i, d in enumerate(x.dims) if keepdims or i not in axes)
        op = _REDUCE[name]
        if x.graph.opset >= _AXES_INPUT_SINCE[op]:
            return self._op(op, [x.name, self._ints(axes, x.graph)], x.dtype, dims, keepdims=int(keepdims))
        # the attribute form; no axes at all (a 0-d input) reduces over every axis, as an empty axes input does
        attrs = {"axes": axes} if axes else {}
        return self._op(op, [x.name], x.dtype, dims, keepdims=int(keepdims), **attrs)

    def sum(self, x: Sym, axis: Any = None, dtype: Any = None, keepdims: bool = False) -> Sym:
        return self._reduce("sum", x, axis, keepdims, dtype)

    def prod(self, x: Sym, axis: Any = None, dtype: Any = None, keepdims: bool = False) -> Sym:
        return self._reduce("prod", x, axis, keepdims, dtype)

    def max(self, x: Sym, axis: Any = None, keepdims: bool = False) -> Sym:
        return self._reduce("max", x, axis, keepdims)

    def min(self, x: Sym, axis: Any = None, keepdims: bool = False) -> Sym:
        return self._reduce("min", x, axis, keepdims)

    def mean(self, x: Sym, axis: Any = None, keepdims: bool = False) -> Sym:
        return self._reduce("mean", x, axis, keepdims)

    def var(self, x: Sym, axis: Any = None, correction: float = 0.0, keepdims: bool = False) -> Sym:
        axes = self._axes(x, axis)
        n = [x.dims[a] for a in axes]
        if any(isinstance(d, str) for d in n):
            raise unsupported("xp.var over the symbolic batch axis")
        d = x - self.mean(x, axis=axis, keepdims=True)
        return self.sum(d * d, axis=axis, keepdims=keepdims) / float(math.prod(n) - correction)

    def std(self, x: Sym, axis: Any = None, correction: float = 0.0, keepdims: bool = False) -> Sym:
        return self.sqrt(self.var(x, axis=axis, correction=correction, keepdims=keepdims))

    def any(self, x: Sym, axis: Any = None, keepdims: bool = False) -> Sym:
        return self._reduce("max", self._cast(x, self.int32), axis, keepdims) > 0

    def all(self, x: Sym, axis: Any = None, keepdims: bool = False) -> Sym:
        return self._reduce("min", self._cast(x, self.int32), axis, keepdims) > 0

    def _arg(self, op: str, x: Sym, axis: int | None, keepdims: bool) -> Sym:
        if axis is None:
            x, axis = self.reshape(x, (-1,)), 0
        ax = _axis(axis, x.ndim)
        dims = tuple(1 if i == ax else d for i, d in enumerate(x.dims) if keepdims or i != ax)
        return self._op(op, [x], self.int64, dims, axis=ax, keepdims=int(keepdims))

    def argmax(self, x: Sym, axis: int | None = None, keepdims: bool = False) -> Sym:
        return self._arg("ArgMax", x, axis, keepdims)

    def argmin(self, x: Sym, axis: int | None = None, keepdims: bool = False) -> Sym:
        return self._arg("ArgMin", x, axis, keepdims)

    def cumulative_sum(self, x: Sym, axis: int | None = None, dtype: Any = None,
                       include_initial: bool = False) -> Sym:
        if axis is None:
            if x.ndim != 1:
                raise ExportError(f"cumulative_sum needs an axis for {x.ndim}-d arrays (at {call_site()})")
            axis = 0
        if dtype is not None:
            x = self._cast(x, dtype)
        ax = _axis(axis, x.ndim)
        out = self._op("CumSum", [x.name, x.graph.const(np.asarray(ax, np.int64))], x.dtype, x.dims)
        if include_initial:
            zero = self.zeros_like(x[(slice(None),) * ax + (slice(0, 1),)])
            out = self.concat([zero, out], axis=ax)
        return out


class _Unsupported:
    """A sub-namespace (xp.linalg, xp.fft) none of whose functions export."""

    def __init__(self, prefix: str):
        self._prefix = prefix

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        raise unsupported(f"{self._prefix}.{name}")


class OnnxBackend(Backend):
    """Records array-API code into an ONNX graph: `with be.trace(): ...` then `be.model(outputs)`."""

    name = "onnx"
    can_train = False
    array_type = Sym

    def __init__(self, device: str = "cpu"):
        super().__init__(device)
        self.xp = OnnxNamespace(self)
        self._graph: Graph | None = None

    @property
    def graph(self) -> Graph:
        """The graph being recorded (an error outside `trace()`)."""
        if self._graph is None:
            raise ExportError(f"the onnx backend records only inside `with be.trace():` (at {call_site()})")
        return self._graph

    @contextlib.contextmanager
    def trace(self, opset: int = DEFAULT_OPSET) -> Iterator[Graph]:
        """Record a fresh graph of ops from `opset` for the duration of the block."""
        previous, self._graph = self._graph, Graph(opset)
        try:
            yield self._graph
        finally:
            self._graph = previous

    def input(self, name: str, dtype: Any, shape: Sequence[Dim]) -> Sym:
        """A graph input; string dimensions are symbolic (e.g. "batch")."""
        g = self.graph
        if name in g._names:
            raise ExportError(f"two graph values are both named {name!r}")
        g._names.add(name)
        g.inputs.append(helper.make_tensor_value_info(name, _onnx_dtype(dtype), list(shape)))
        return Sym(self, g, name, dtype, shape)

    def param(self, name: str, value: np.ndarray) -> Sym:
        """A named initializer holding a parameter."""
        value = np.asarray(value)
        return Sym(self, self.graph, self.graph.named_initializer(name, value), value.dtype, value.shape)

    def output(self, name: str, x: Sym) -> None:
        """Mark `x` as the graph output called `name`."""
        g = self.graph
        if not isinstance(x, Sym) or x.graph is not g:
            raise ExportError(f"output {name!r} is not a value of this trace: {x!r}")
        if name in g._names:
            raise ExportError(f"two graph values are both named {name!r}")
        g._names.add(name)
        g.nodes.append(helper.make_node("Identity", [x.name], [name], name=name))
        g.outputs.append(helper.make_tensor_value_info(name, _onnx_dtype(x.dtype), list(x.dims)))

    def model(self, graph_name: str = "puffer", doc: str = "") -> onnx.ModelProto:
        """The recorded graph as an ONNX model of the trace's opset and the lowest IR version it needs."""
        g = self.graph
        graph = helper.make_graph(g.nodes, graph_name, g.inputs, g.outputs, g.initializers, doc_string=doc)
        opsets = [helper.make_opsetid("", g.opset)]
        # not the installed onnx's newest IR version: runtimes refuse IR versions newer than they know
        ir_version = helper.find_min_ir_version_for(opsets)
        return helper.make_model(graph, opset_imports=opsets, ir_version=ir_version, producer_name="puffer")

    # ---- numpy in/out -----------------------------------------------------------------------
    def _is_native_dtype(self, dtype: Any) -> bool:
        return isinstance(dtype, np.dtype)

    def asarray(self, x: Any, dtype: Any = None) -> Sym:
        return self.xp.asarray(x, dtype=None if dtype is None else np.dtype(dtype))

    def to_numpy(self, x: Any) -> np.ndarray:
        raise unsupported("be.to_numpy", "a traced value has no data until the model runs")

    # ---- extras with native ONNX ops --------------------------------------------------------
    def log_softmax(self, x: Sym, axis: int = -1) -> Sym:
        return self.xp._op("LogSoftmax", [x], x.dtype, x.dims, axis=_axis(axis, x.ndim))

    def softmax(self, x: Sym, axis: int = -1) -> Sym:
        return self.xp._op("Softmax", [x], x.dtype, x.dims, axis=_axis(axis, x.ndim))

    def sigmoid(self, x: Sym) -> Sym:
        return self.xp._op("Sigmoid", [x], x.dtype, x.dims)

    def relu(self, x: Sym) -> Sym:
        return self.xp._op("Relu", [x], x.dtype, x.dims)

    def erf(self, x: Sym) -> Sym:
        return self.xp._op("Erf", [x], x.dtype, x.dims)

    # ---- no randomness or compilation inside a graph ----------------------------------------
    def compile(self, f: Callable, donate: Sequence[int] = ()) -> Callable:
        return f

    def key(self, seed: int) -> Any:
        raise unsupported("be.key", "exported graphs take noise as an input; they contain no random ops")

    def uniform(self, key: Any, shape: Sequence[int], dtype: Any = None) -> Sym:
        raise unsupported("be.uniform", "exported graphs take noise as an input; they contain no random ops")

    def normal(self, key: Any, shape: Sequence[int], dtype: Any = None) -> Sym:
        raise unsupported("be.normal", "exported graphs take noise as an input; they contain no random ops")
