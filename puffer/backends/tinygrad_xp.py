"""An array-API namespace over `tinygrad.Tensor`.

Arrays are plain tinygrad Tensors, so Python operators work in algorithm code. The functions below
add what the standard asks and tinygrad spells differently: `axis`/`keepdims` names, int64 as the
default integer (sums, argmax, arange), float32 as the default float, and numerically careful
`log1p`, `expm1` and `erf`, which tinygrad lacks or approximates. Type promotion is tinygrad's own
JAX-style lattice (Python scalars are weak; int32 + float32 -> float32), which matches the JAX backend.

Creation functions (zeros, full, arange, eye, ...) return lazy broadcast constants with no device of
their own: they fuse into the kernels that use them and take those arrays' device, so their `device`
argument only exists for the standard's signature. `asarray` puts data on `device` (default: tinygrad's).

Measured against the standard's own suite (data-apis/array-api-tests; BENCHMARKS.md). Where tinygrad's
results differ from IEEE or the standard (NaN in comparisons, max/min and isnan; signed zeros; pow's
special cases; NaN/empty reductions) the functions here correct them, and the array-object members the
standard needs (`bool(x)`, boolean masks, `**`, `<=`, DLPack) are set on tinygrad.Tensor in one place,
`install_array_protocol` (called when a tinygrad backend is constructed). Data-dependent shapes (masks,
nonzero, unique_*) are computed on the host and refused inside `be.compile`, as are Python values of
arrays (CompileError).
"""

from __future__ import annotations

import builtins
import math
import operator
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
from tinygrad import Tensor, dtypes
from tinygrad.device import Device, canonicalize_device
from tinygrad.dtype import DType, _from_np_dtype, _to_np_dtype, least_upper_dtype
from tinygrad.uop.ops import Ops, UOp

from puffer.errors import CompileError

Array = Tensor
_pybool, _pyint, _pyfloat = builtins.bool, builtins.int, builtins.float

__array_api_version__ = "2023.12"

float16, float32, float64 = dtypes.float16, dtypes.float32, dtypes.float64
int8, int16, int32, int64 = dtypes.int8, dtypes.int16, dtypes.int32, dtypes.int64
uint8, uint16, uint32, uint64 = dtypes.uint8, dtypes.uint16, dtypes.uint32, dtypes.uint64
bool = dtypes.bool  # noqa: A001 -- the standard names the dtype `bool`; builtins.bool is _pybool here

e, pi, inf, nan = math.e, math.pi, math.inf, math.nan
newaxis = None

DEFAULT_FLOAT, DEFAULT_INT = float32, int64
_SIGNED = (int8, int16, int32, int64)
_UNSIGNED = (uint8, uint16, uint32, uint64)
_FLOATS = (float16, float32, float64)


# ---- dtypes and helpers --------------------------------------------------------------------------
def to_tinygrad_dtype(dtype: Any) -> DType | None:
    """A tinygrad DType from a DType, numpy dtype/type or name; None stays None."""
    if dtype is None or isinstance(dtype, DType):
        return dtype
    if dtype is _pybool:
        return bool
    if dtype is _pyint:
        return DEFAULT_INT
    if dtype is _pyfloat:
        return DEFAULT_FLOAT
    return _from_np_dtype(np.dtype(dtype))


def to_numpy_dtype(dtype: DType) -> np.dtype:
    """The numpy dtype holding a tinygrad DType."""
    return np.dtype(_to_np_dtype(dtype))


def _device(device: Any) -> str:
    return canonicalize_device(device if device is not None else Device.DEFAULT)


def _is_float(dt: DType) -> _pybool:
    return dtypes.is_float(dt)


def _strong(dt: DType) -> DType:
    # Python scalars are weakly typed in tinygrad; storage needs a concrete width
    return {dtypes.weakfloat: DEFAULT_FLOAT, dtypes.weakint: DEFAULT_INT}.get(dt, dt)


def _scalar_dtype(value: Any) -> DType:
    if isinstance(value, (_pybool, np.bool_)):
        return bool
    if isinstance(value, (_pyint, np.integer)):
        return DEFAULT_INT
    return DEFAULT_FLOAT


def _axes(x: Tensor, axis: int | Sequence[int] | None) -> tuple[int, ...]:
    nd = x.ndim
    if axis is None:
        return tuple(range(nd))
    axes = (axis,) if isinstance(axis, (_pyint, np.integer)) else tuple(axis)
    out = []
    for a in axes:
        if not -nd <= a < builtins.max(nd, 1):
            raise IndexError(f"axis {a} is out of bounds for an array of dimension {nd}")
        out.append(_pyint(a) % builtins.max(nd, 1))
    if len(set(out)) != len(out):
        raise ValueError(f"repeated axis in {axis}")
    return tuple(out)


def _sum_dtype(dt: DType) -> DType:
    if dt in _SIGNED or dt == bool:
        return int64
    if dt in _UNSIGNED:
        return uint64
    return dt


def _t(x: Any) -> Tensor:
    return x if isinstance(x, Tensor) else asarray(x)


# ---- creation --------------------------------------------------------------------------------------
_shape_args: dict[tuple[int, ...], UOp] = {}


def _empty_buffer(shape: tuple[int, ...], dtype: DType, device: str) -> Tensor:
    """A realized, uninitialized Tensor built straight from a new buffer (no kernel, no schedule)."""
    size = math.prod(shape)
    buf = UOp.new_buffer(device, size, dtype)
    uop = buf
    if shape != (size,):
        if shape not in _shape_args:
            _shape_args[shape] = buf.reshape(shape).src[1]
        uop = UOp(Ops.RESHAPE, dtype, (buf, _shape_args[shape]))
    buf.buffer.ensure_allocated()
    return Tensor(uop)


def from_numpy(x: np.ndarray, dtype: DType | None = None, device: Any = None) -> Tensor:
    """A realized Tensor holding a copy of `x`: one allocation and one memcpy, no kernel."""
    dtype = dtype or _from_np_dtype(x.dtype)
    device = _device(device)
    np_dt = to_numpy_dtype(dtype)
    if x.size == 0 or np_dt.itemsize != dtype.itemsize or not isinstance(device, str):
        return Tensor(np.array(x, dtype=np_dt), device=device, dtype=dtype).realize()
    out = _empty_buffer(tuple(x.shape), dtype, device)
    raw = out.uop.base.buffer
    allocator = raw.allocator
    if hasattr(allocator, "_as_buffer"):
        # host-visible memory: one strided copy with the cast folded in
        np.copyto(np.frombuffer(allocator._as_buffer(raw._buf), dtype=np_dt).reshape(x.shape), x, casting="unsafe")
    else:
        allocator._copyin(raw._buf, memoryview(np.ascontiguousarray(x, dtype=np_dt)).cast("B"))
    return out


def asarray(obj: Any, /, *, dtype: Any = None, device: Any = None, copy: _pybool | None = None) -> Tensor:
    """A Tensor from a Tensor, numpy array, Python scalar or nested sequence (numpy data is copied)."""
    dtype = to_tinygrad_dtype(dtype)
    if isinstance(obj, Tensor):
        out = obj if device is None else obj.to(_device(device))
        if dtype is not None and dtype != out.dtype:
            return out.cast(dtype)
        return out.clone() if copy else out
    if isinstance(obj, np.ndarray) or isinstance(obj, np.generic):
        return from_numpy(np.asarray(obj), dtype, device)
    if isinstance(obj, (list, tuple)) and obj and _holds_tensor(obj):
        # a sequence of arrays is stacked on the device (numpy cannot read Tensors, and stays out of compile)
        parts = [asarray(o, dtype=dtype, device=device) for o in obj]
        out = stack(parts)
        return out if dtype is None or out.dtype == dtype else out.cast(dtype)
    if dtype is None:
        arr = np.asarray(obj)
        if arr.dtype.kind == "f":
            dtype = DEFAULT_FLOAT
        elif arr.dtype.kind in "iu":
            dtype = DEFAULT_INT
        elif arr.dtype.kind == "b":
            dtype = bool
        else:
            raise TypeError(f"cannot make a tinygrad array from {type(obj).__name__} ({arr.dtype})")
    return from_numpy(np.asarray(obj, dtype=to_numpy_dtype(dtype)), dtype, device)


def _holds_tensor(obj: Any) -> _pybool:
    if isinstance(obj, Tensor):
        return True
    return isinstance(obj, (list, tuple)) and builtins.any(_holds_tensor(o) for o in obj)


def _shape(shape: int | Sequence[int]) -> tuple[int, ...]:
    return (shape,) if isinstance(shape, (_pyint, np.integer)) else tuple(_pyint(s) for s in shape)


def full(shape: int | Sequence[int], fill_value: Any, *, dtype: Any = None, device: Any = None) -> Tensor:
    """An array of `shape` filled with `fill_value` (a lazy constant: no buffer until used)."""
    dtype = to_tinygrad_dtype(dtype) or _scalar_dtype(fill_value)
    # buffer=False: a broadcast constant that fuses into whatever uses it (tinygrad's default materializes)
    return Tensor.full(_shape(shape), fill_value, dtype=dtype, buffer=False)


def zeros(shape: int | Sequence[int], *, dtype: Any = None, device: Any = None) -> Tensor:
    """An array of zeros (float32 unless `dtype`)."""
    return full(shape, 0, dtype=to_tinygrad_dtype(dtype) or DEFAULT_FLOAT, device=device)


def ones(shape: int | Sequence[int], *, dtype: Any = None, device: Any = None) -> Tensor:
    """An array of ones (float32 unless `dtype`)."""
    return full(shape, 1, dtype=to_tinygrad_dtype(dtype) or DEFAULT_FLOAT, device=device)


def empty(shape: int | Sequence[int], *, dtype: Any = None, device: Any = None) -> Tensor:
    """An array of `shape`; its values are zeros (cheaper than a buffer in tinygrad)."""
    return zeros(shape, dtype=dtype, device=device)


def full_like(x: Tensor, /, fill_value: Any, *, dtype: Any = None, device: Any = None) -> Tensor:
    """An array shaped like `x` filled with `fill_value`."""
    return full(x.shape, fill_value, dtype=to_tinygrad_dtype(dtype) or x.dtype, device=device or x.device)


def zeros_like(x: Tensor, /, *, dtype: Any = None, device: Any = None) -> Tensor:
    """Zeros shaped like `x`."""
    return full_like(x, 0, dtype=dtype, device=device)


def ones_like(x: Tensor, /, *, dtype: Any = None, device: Any = None) -> Tensor:
    """Ones shaped like `x`."""
    return full_like(x, 1, dtype=dtype, device=device)


def empty_like(x: Tensor, /, *, dtype: Any = None, device: Any = None) -> Tensor:
    """An array shaped like `x` (zeros)."""
    return zeros_like(x, dtype=dtype, device=device)


def arange(start: Any, /, stop: Any = None, step: Any = 1, *, dtype: Any = None, device: Any = None) -> Tensor:
    """Evenly spaced values in [start, stop); int64 for integer arguments, else float32."""
    if stop is None:
        start, stop = 0, start
    dtype = to_tinygrad_dtype(dtype)
    if dtype is None:
        floats = builtins.any(isinstance(v, (_pyfloat, np.floating)) for v in (start, stop, step))
        dtype = DEFAULT_FLOAT if floats else DEFAULT_INT
    n = builtins.max(0, math.ceil((stop - start) / step))
    if n == 0:
        return zeros((0,), dtype=dtype, device=device)
    idx = Tensor.arange(n, dtype=int64 if dtype in _SIGNED + _UNSIGNED else dtype)
    return (idx * step + start).cast(dtype) if (step, start) != (1, 0) else idx.cast(dtype)


def linspace(start: Any, stop: Any, /, num: int, *, dtype: Any = None, device: Any = None,
             endpoint: _pybool = True) -> Tensor:
    """`num` evenly spaced values from `start` to `stop` (inclusive if `endpoint`), computed in `dtype`."""
    dtype = to_tinygrad_dtype(dtype) or DEFAULT_FLOAT
    if num == 0:
        return zeros((0,), dtype=dtype, device=device)
    div = (num - 1) if endpoint else num
    if div == 0:
        return full((1,), start, dtype=dtype, device=device)
    i = Tensor.arange(num, dtype=dtype)
    out = start + i * ((stop - start) / div)
    return (i == num - 1).where(stop, out).cast(dtype) if endpoint else out.cast(dtype)


def eye(n_rows: int, n_cols: int | None = None, /, *, k: int = 0, dtype: Any = None, device: Any = None) -> Tensor:
    """A 2-D array with ones on the `k`-th diagonal."""
    n_cols = n_rows if n_cols is None else n_cols
    rows = Tensor.arange(n_rows).reshape(n_rows, 1)
    return (rows + k == Tensor.arange(n_cols).reshape(1, n_cols)).cast(
        to_tinygrad_dtype(dtype) or DEFAULT_FLOAT)


def tril(x: Tensor, /, *, k: int = 0) -> Tensor:
    """The lower triangle of the last two axes."""
    return x.tril(k)


def triu(x: Tensor, /, *, k: int = 0) -> Tensor:
    """The upper triangle of the last two axes."""
    return x.triu(k)


def meshgrid(*arrays: Tensor, indexing: str = "xy") -> list[Tensor]:
    """Coordinate grids from 1-D arrays."""
    return list(Tensor.meshgrid(*arrays, indexing=indexing)) if arrays else []


# ---- dtype functions ----------------------------------------------------------------------------------
def astype(x: Tensor, dtype: Any, /, *, copy: _pybool = True, device: Any = None) -> Tensor:
    """`x` cast to `dtype`."""
    dtype = to_tinygrad_dtype(dtype)
    out = x if device is None else x.to(_device(device))
    if out.dtype == dtype:
        return out.clone() if copy else out
    return out.cast(dtype)


def result_type(*arrays_and_dtypes: Any) -> DType:
    """The promoted dtype (tinygrad's JAX-style lattice; Python scalars are weak)."""
    ds = []
    for a in arrays_and_dtypes:
        if isinstance(a, Tensor):
            ds.append(a.dtype)
        elif isinstance(a, (_pybool, _pyint, _pyfloat)):
            ds.append(dtypes.from_py(a))
        else:
            ds.append(to_tinygrad_dtype(a))
    return _strong(least_upper_dtype(*ds))


def can_cast(from_: Any, to: Any, /) -> _pybool:
    """True if `from_` promotes to `to` without changing kind downwards."""
    src = from_.dtype if isinstance(from_, Tensor) else to_tinygrad_dtype(from_)
    dst = to_tinygrad_dtype(to)
    return least_upper_dtype(src, dst) == dst


def isdtype(dtype: DType, kind: Any) -> _pybool:
    """The standard's dtype-kind test ("bool", "signed integer", "real floating", "numeric", ...)."""
    if isinstance(kind, tuple):
        return builtins.any(isdtype(dtype, k) for k in kind)
    if isinstance(kind, DType):
        return dtype == kind
    kinds = {
        "bool": (bool,), "signed integer": _SIGNED, "unsigned integer": _UNSIGNED,
        "integral": _SIGNED + _UNSIGNED, "real floating": _FLOATS, "complex floating": (),
        "numeric": _SIGNED + _UNSIGNED + _FLOATS,
    }
    return dtype in kinds[kind]


class _Info:
    def __init__(self, info: Any, dtype: DType):
        for name in ("bits", "max", "min"):
            setattr(self, name, getattr(info, name))
        if hasattr(info, "eps"):
            self.eps, self.resolution = _pyfloat(info.eps), _pyfloat(info.resolution)
            self.smallest_normal = _pyfloat(info.smallest_normal)
            self.max, self.min = _pyfloat(info.max), _pyfloat(info.min)
        self.dtype = dtype

    def __repr__(self) -> str:
        return f"<info {self.dtype}: {vars(self)}>"


def finfo(type: Any, /) -> _Info:  # noqa: A002 -- the standard's parameter name
    """Machine limits of a floating dtype: bits, eps, max, min, smallest_normal, dtype."""
    dt = type.dtype if isinstance(type, Tensor) else to_tinygrad_dtype(type)
    return _Info(np.finfo(to_numpy_dtype(dt)), dt)


def iinfo(type: Any, /) -> _Info:  # noqa: A002
    """Machine limits of an integer dtype: bits, max, min, dtype."""
    dt = type.dtype if isinstance(type, Tensor) else to_tinygrad_dtype(type)
    return _Info(np.iinfo(to_numpy_dtype(dt)), dt)


class _NamespaceInfo:
    """The standard's inspection object (`xp.__array_namespace_info__()`)."""

    def capabilities(self) -> dict[str, Any]:
        """Boolean indexing and data-dependent shapes work eagerly (on the host), not inside `compile`."""
        return {"boolean indexing": True, "data-dependent shapes": True}

    def default_device(self) -> str:
        """tinygrad's default device."""
        return _device(None)

    def devices(self) -> list[str]:
        """The devices arrays can live on (the default one: tinygrad probes others lazily)."""
        return [_device(None)]

    def default_dtypes(self, *, device: Any = None) -> dict[str, DType]:
        """float32, int64 (also for indexing); no complex dtypes."""
        return {"real floating": DEFAULT_FLOAT, "integral": DEFAULT_INT, "indexing": DEFAULT_INT}

    def dtypes(self, *, device: Any = None, kind: Any = None) -> dict[str, DType]:
        """The supported dtypes of `kind` (all if None), by name."""
        # float16 exists (xp.float16) but is not one of the standard's dtypes
        every = {_DTYPE_NAMES[d]: d for d in (bool,) + _SIGNED + _UNSIGNED + (float32, float64)}
        return {n: d for n, d in every.items() if kind is None or isdtype(d, kind)}


_DTYPE_NAMES = {bool: "bool", int8: "int8", int16: "int16", int32: "int32", int64: "int64", uint8: "uint8",
                uint16: "uint16", uint32: "uint32", uint64: "uint64", float32: "float32", float64: "float64"}


def __array_namespace_info__() -> _NamespaceInfo:
    """The standard's inspection API."""
    return _NamespaceInfo()


# ---- elementwise ----------------------------------------------------------------------------------------
def add(x1: Any, x2: Any, /) -> Tensor:
    """x1 + x2."""
    return _t(x1) + x2


def subtract(x1: Any, x2: Any, /) -> Tensor:
    """x1 - x2."""
    return _t(x1) - x2


def multiply(x1: Any, x2: Any, /) -> Tensor:
    """x1 * x2."""
    return _t(x1) * x2


def divide(x1: Any, x2: Any, /) -> Tensor:
    """x1 / x2 (true division)."""
    return _t(x1) / x2


def floor_divide(x1: Any, x2: Any, /) -> Tensor:
    """floor(x1 / x2)."""
    return _t(x1) // x2


def remainder(x1: Any, x2: Any, /) -> Tensor:
    """x1 mod x2 with the sign of x2."""
    return _t(x1) % x2


def pow(x1: Any, x2: Any, /) -> Tensor:  # noqa: A001
    """x1 ** x2, with the standard's special cases (1 ** anything, (-1) ** inf, -0 ** odd integers)."""
    x1 = _t(x1)
    if x1.dtype in _SIGNED + _UNSIGNED and x1.dtype not in (int64, uint64) and isinstance(x2, Tensor) \
            and not _is_float(x2.dtype):
        # tinygrad 0.14's vectorized int32 pow does not compile (it assigns float4 to int4); int64 does
        return _tinygrad_pow(x1.cast(int64), x2.cast(int64)).cast(result_type(x1, x2))
    out = _tinygrad_pow(x1, x2)
    if not _is_float(out.dtype):
        return out
    # tinygrad computes pow as exp2(y log2 |x|) with sign fix-ups, which gets these cases wrong
    y = _t(x2) if isinstance(x2, Tensor) else x2
    y_odd = (y % 2).abs() == 1 if isinstance(y, Tensor) else (float(y).is_integer() and y % 2 == 1)
    neg_zero = (x1 == 0) & signbit(x1)
    ax1 = x1.abs()
    if isinstance(y, Tensor):
        out = (x1 == 1).where(1.0, out)  # 1 ** nan is 1
        out = ((ax1 == 1) & isinf(y)).where(1.0, out)
        out = (neg_zero & y_odd).where((y > 0).where(-0.0, -math.inf), out)
        out = (y == 0).where(1.0, out)  # nan ** 0 is 1
    else:
        # a Python exponent adds fix-ups only where it needs them (x ** 2 in a loss stays one op)
        if math.isnan(y):
            out = (x1 == 1).where(1.0, out)
        if math.isinf(y):
            out = (ax1 == 1).where(1.0, out)
        if y_odd:
            out = neg_zero.where(-0.0 if y > 0 else -math.inf, out)
        if y == 0:
            out = full_like(out, 1.0)
    return out.cast(result_type(x1, x2)) if out.dtype != result_type(x1, x2) else out


def negative(x: Tensor, /) -> Tensor:
    """-x."""
    return -x


def positive(x: Tensor, /) -> Tensor:
    """+x."""
    return x


def exp(x: Tensor, /) -> Tensor:
    """e ** x."""
    return x.exp()


def log(x: Tensor, /) -> Tensor:
    """Natural logarithm."""
    return x.log()


def log2(x: Tensor, /) -> Tensor:
    """Base-2 logarithm."""
    return x.log2()


def log10(x: Tensor, /) -> Tensor:
    """Base-10 logarithm."""
    return x.log10()


def _horner(z: Tensor, coefs: Sequence[float]) -> Tensor:
    acc = z * coefs[-1] + coefs[-2]
    for c in reversed(coefs[:-2]):
        acc = acc * z + c
    return acc


def _terms(x: Tensor, f32: int, f64: int) -> int:
    return f64 if x.dtype == float64 else f32


def log1p(x: Tensor, /) -> Tensor:
    """log(1 + x), accurate near 0.

    tinygrad folds (1 + x) - 1 into x, so Kahan's trick does not survive; near 0 use
    log1p(x) = 2 atanh(x / (2 + x)) as a short odd series in z = x / (2 + x) (|z| <= 1/6).
    """
    x = x if _is_float(x.dtype) else x.cast(DEFAULT_FLOAT)
    near = (x > -0.25) & (x < 0.4)
    z = x.clip(-0.25, 0.4)
    z = z / (z + 2.0)
    n = _terms(x, 6, 11)
    series = 2.0 * z * _horner(z * z, [1.0 / (2 * k + 1) for k in range(n)])
    return near.where(series, (x + 1.0).log())


def expm1(x: Tensor, /) -> Tensor:
    """exp(x) - 1, accurate near 0 (a Taylor series for |x| < 0.3)."""
    x = x if _is_float(x.dtype) else x.cast(DEFAULT_FLOAT)
    near = x.abs() < 0.3
    z = x.clip(-0.3, 0.3)
    n = _terms(x, 8, 14)
    series = z * _horner(z, [1.0 / math.factorial(k + 1) for k in range(n)])
    return near.where(series, x.exp() - 1.0)


def sqrt(x: Tensor, /) -> Tensor:
    """Square root."""
    return x.sqrt()


def square(x: Tensor, /) -> Tensor:
    """x * x."""
    return x * x


_SAME_WIDTH_INT = {float16: int16, float32: int32, float64: int64}


def abs(x: Tensor, /) -> Tensor:  # noqa: A001
    """|x|, with abs(-0.0) = +0.0 (tinygrad's keeps -0.0); a `where`, not bit tricks, so it differentiates."""
    out = x.abs()
    return (x == 0).where(0.0, out).cast(x.dtype) if _is_float(x.dtype) else out


def sign(x: Tensor, /) -> Tensor:
    """-1, 0 or 1 by the sign of x (NaN for NaN)."""
    out = x.sign()
    return isnan(x).where(math.nan, out) if _is_float(x.dtype) else out


def reciprocal(x: Tensor, /) -> Tensor:
    """1 / x."""
    return x.reciprocal()


def _unary(name: str, doc: str):
    def fn(x: Tensor, /) -> Tensor:
        return getattr(x, name)()

    fn.__doc__ = doc
    return fn


def _odd(name: str, doc: str):
    def fn(x: Tensor, /) -> Tensor:
        # f(-0) = -0 for these odd functions; tinygrad's formulas return +0 there
        out = getattr(x, name)()
        return (x == 0).where(x, out) if _is_float(x.dtype) else out

    fn.__doc__ = doc
    return fn


tanh = _odd("tanh", "Hyperbolic tangent (tinygrad's 2 sigmoid(2x) - 1: ~1e-7 absolute error).")
sin = _unary("sin", "Sine.")
cos = _unary("cos", "Cosine.")
tan = _unary("tan", "Tangent.")
asin = _odd("asin", "Inverse sine.")
acos = _unary("acos", "Inverse cosine.")
sinh = _odd("sinh", "Hyperbolic sine.")
cosh = _unary("cosh", "Hyperbolic cosine.")
atanh = _odd("atanh", "Inverse hyperbolic tangent.")


# tinygrad's isnan is `x != x`, which its graph rewriter folds to False when x is a computed expression
# (e.g. the NaN of max over a NaN); comparing the exponent and mantissa bits cannot be folded away
_INF_BITS = {float16: 0x7C00, float32: 0x7F800000, float64: 0x7FF0000000000000}


def _abs_bits(x: Tensor) -> Tensor:
    idt = _SAME_WIDTH_INT[x.dtype]
    return x.bitcast(idt).bitwise_and((1 << (8 * idt.itemsize - 1)) - 1)


def isnan(x: Tensor, /) -> Tensor:
    """True where x is NaN."""
    return _abs_bits(x) > _INF_BITS[x.dtype] if _is_float(x.dtype) else full_like(x, False, dtype=bool)


def isinf(x: Tensor, /) -> Tensor:
    """True where x is +-inf."""
    return _abs_bits(x) == _INF_BITS[x.dtype] if _is_float(x.dtype) else full_like(x, False, dtype=bool)


def isfinite(x: Tensor, /) -> Tensor:
    """True where x is neither NaN nor +-inf."""
    return _abs_bits(x) < _INF_BITS[x.dtype] if _is_float(x.dtype) else full_like(x, True, dtype=bool)


_atan = _odd("atan", "")


def atan(x: Tensor, /) -> Tensor:
    """Inverse tangent (+-pi/2 at +-inf, -0 at -0)."""
    out = _atan(x)
    return isinf(x).where(x.sign() * (math.pi / 2), out) if _is_float(x.dtype) else out


def asinh(x: Tensor, /) -> Tensor:
    """Inverse hyperbolic sine, computed as an odd function (tinygrad's is NaN at -inf and cancels for x < 0)."""
    if not _is_float(x.dtype):
        return x.asinh()
    out = x.abs().asinh()
    return (x == 0).where(x, (x < 0).where(-out, out))


def acosh(x: Tensor, /) -> Tensor:
    """Inverse hyperbolic cosine (NaN below 1)."""
    out = x.acosh()
    return (x < 1).where(math.nan, out) if _is_float(out.dtype) else out


def _with_sign_of(mag: Tensor, x: Tensor) -> Tensor:
    """`mag` with the sign bit of `x` (bitwise: also right for zeros, which arithmetic cannot sign)."""
    idt = _SAME_WIDTH_INT[x.dtype]
    sign_bit = x.bitcast(idt).bitwise_and(-(1 << (8 * idt.itemsize - 1)))
    return _abs_bits(mag).bitwise_or(sign_bit).bitcast(x.dtype)


def _int_identity(name: str, doc: str):
    def fn(x: Tensor, /) -> Tensor:
        # the standard returns integer inputs unchanged; a rounded float keeps x's sign (ceil(-0.5) is -0.0)
        return x if not _is_float(x.dtype) else _with_sign_of(getattr(x, name)(), x)

    fn.__doc__ = doc
    return fn


floor = _int_identity("floor", "Round down.")
ceil = _int_identity("ceil", "Round up.")
trunc = _int_identity("trunc", "Round toward zero.")
round = _int_identity("round", "Round half to even.")  # noqa: A001


def _nan_either(out: Tensor, x1: Tensor, x2: Any) -> Tensor:
    # tinygrad's maximum/minimum are comparisons, so max(1, nan) is 1; the standard propagates NaN
    if not _is_float(out.dtype):
        return out
    nan = isnan(x1) if _is_float(x1.dtype) else None
    if isinstance(x2, Tensor) and _is_float(x2.dtype):
        nan = isnan(x2) if nan is None else nan | isnan(x2)
    return out if nan is None else nan.where(math.nan, out)


def maximum(x1: Any, x2: Any, /) -> Tensor:
    """Elementwise maximum (NaN if either is NaN)."""
    x1 = _t(x1)
    return _nan_either(x1.maximum(x2), x1, x2)


def minimum(x1: Any, x2: Any, /) -> Tensor:
    """Elementwise minimum (NaN if either is NaN)."""
    x1 = _t(x1)
    return _nan_either(x1.minimum(x2), x1, x2)


def clip(x: Tensor, /, min: Any = None, max: Any = None) -> Tensor:  # noqa: A002
    """x limited to [min, max]; either bound may be None or an array; keeps x's dtype; NaN stays NaN."""
    out = x
    if min is not None:
        out = out.maximum(min)
    if max is not None:
        out = out.minimum(max)
    if _is_float(x.dtype):
        out = isnan(x).where(math.nan, out)
    return out if out.dtype == x.dtype else out.cast(x.dtype)


def where(condition: Tensor, x1: Any, x2: Any, /) -> Tensor:
    """x1 where condition else x2."""
    cond = condition if condition.dtype == bool else condition.cast(bool)
    return cond.where(x1, x2)


def logaddexp(x1: Any, x2: Any, /) -> Tensor:
    """log(exp(x1) + exp(x2)) without overflow."""
    a, b = _t(x1), x2
    m = a.maximum(b)
    return m + log1p((-(a - b).abs()).exp())


def copysign(x1: Any, x2: Any, /) -> Tensor:
    """|x1| with the sign of x2."""
    return _t(x1).copysign(x2)


def atan2(x1: Any, x2: Any, /) -> Tensor:
    """The angle of (x2, x1)."""
    y, x = _t(x1), _t(x2)
    base = (y / x).atan()
    return (x > 0).where(base, (x < 0).where(base + (y >= 0).where(math.pi, -math.pi),
                                              (y > 0).where(math.pi / 2, (y < 0).where(-math.pi / 2, 0.0))))


def equal(x1: Any, x2: Any, /) -> Tensor:
    """x1 == x2."""
    return _t(x1) == x2


def not_equal(x1: Any, x2: Any, /) -> Tensor:
    """x1 != x2."""
    return _t(x1) != x2


def less(x1: Any, x2: Any, /) -> Tensor:
    """x1 < x2."""
    return _t(x1) < x2


def _le(x1: Tensor, x2: Any) -> Tensor:
    # tinygrad computes x1 <= x2 as not (x2 < x1), which is True when either is NaN; a comparison has no
    # gradient, and detaching says so to tinygrad (which has no gradient rule for the OR of two comparisons)
    if _is_float(x1.dtype) or (isinstance(x2, Tensor) and _is_float(x2.dtype)) or isinstance(x2, _pyfloat):
        return ((x1 < x2) | (x1 == x2)).detach()
    return _tinygrad_le(x1, x2)


def _ge(x1: Tensor, x2: Any) -> Tensor:
    if _is_float(x1.dtype) or (isinstance(x2, Tensor) and _is_float(x2.dtype)) or isinstance(x2, _pyfloat):
        return ((x1 > x2) | (x1 == x2)).detach()
    return _tinygrad_ge(x1, x2)


def less_equal(x1: Any, x2: Any, /) -> Tensor:
    """x1 <= x2 (False where either is NaN)."""
    return _le(_t(x1), x2)


def greater(x1: Any, x2: Any, /) -> Tensor:
    """x1 > x2."""
    return _t(x1) > x2


def greater_equal(x1: Any, x2: Any, /) -> Tensor:
    """x1 >= x2 (False where either is NaN)."""
    return _ge(_t(x1), x2)


def _as_bool(x: Any) -> Tensor:
    x = _t(x)
    return x if x.dtype == bool else x != 0


def logical_and(x1: Any, x2: Any, /) -> Tensor:
    """x1 and x2."""
    return _as_bool(x1) & _as_bool(x2)


def logical_or(x1: Any, x2: Any, /) -> Tensor:
    """x1 or x2."""
    return _as_bool(x1) | _as_bool(x2)


def logical_xor(x1: Any, x2: Any, /) -> Tensor:
    """x1 xor x2."""
    return _as_bool(x1) ^ _as_bool(x2)


def logical_not(x: Any, /) -> Tensor:
    """not x."""
    return _as_bool(x).logical_not()


def bitwise_and(x1: Any, x2: Any, /) -> Tensor:
    """x1 & x2."""
    return _t(x1) & x2


def bitwise_or(x1: Any, x2: Any, /) -> Tensor:
    """x1 | x2."""
    return _t(x1) | x2


def bitwise_xor(x1: Any, x2: Any, /) -> Tensor:
    """x1 ^ x2."""
    return _t(x1) ^ x2


def bitwise_invert(x: Tensor, /) -> Tensor:
    """~x."""
    return ~x


def real(x: Tensor, /) -> Tensor:
    """The real part: `x` itself (tinygrad has no complex dtypes)."""
    return x


def imag(x: Tensor, /) -> Tensor:
    """The imaginary part: zeros (tinygrad has no complex dtypes)."""
    return zeros_like(x)


def conj(x: Tensor, /) -> Tensor:
    """The complex conjugate: `x` itself (tinygrad has no complex dtypes)."""
    return x


def bitwise_left_shift(x1: Any, x2: Any, /) -> Tensor:
    """x1 << x2; shifts of the bit width or more give 0 (C leaves them undefined)."""
    x1, x2 = _t(x1), _t(x2)
    dt = result_type(x1, x2)
    x1, x2 = x1.cast(dt), x2.cast(dt)
    return (x2 >= dt.itemsize * 8).where(0, x1 << x2.maximum(0)).cast(dt)


def bitwise_right_shift(x1: Any, x2: Any, /) -> Tensor:
    """x1 >> x2 (arithmetic); shifts of the bit width or more give 0 or -1 by the sign of x1."""
    x1, x2 = _t(x1), _t(x2)
    dt = result_type(x1, x2)
    x1, x2 = x1.cast(dt), x2.cast(dt)
    return (x2 >= dt.itemsize * 8).where((x1 < 0).where(-1, 0), x1 >> x2.maximum(0)).cast(dt)


def hypot(x1: Any, x2: Any, /) -> Tensor:
    """sqrt(x1**2 + x2**2) without overflow; inf if either is infinite (even with a NaN)."""
    a, b = _t(x1).abs(), _t(x2).abs()
    hi, lo = a.maximum(b), a.minimum(b)
    r = lo / (hi == 0).where(1.0, hi)
    out = hi * (1.0 + r * r).sqrt()
    out = (isnan(a) | isnan(b)).where(math.nan, out)
    return (isinf(a) | isinf(b)).where(math.inf, out)


def signbit(x: Tensor, /) -> Tensor:
    """True where the sign bit is set (also for -0.0 and negative NaNs)."""
    if not _is_float(x.dtype):
        return x < 0 if x.dtype in _SIGNED else full_like(x, False, dtype=bool)
    return x.bitcast(_SAME_WIDTH_INT[x.dtype]) < 0


# ---- reductions --------------------------------------------------------------------------------------------
def _keep_all(out: Tensor, x: Tensor, axis: Any, keepdims: _pybool) -> Tensor:
    # tinygrad drops keepdim when axis is None for arg-reductions
    return out.reshape((1,) * x.ndim) if keepdims and axis is None else out


def sum(x: Tensor, /, *, axis: Any = None, dtype: Any = None, keepdims: _pybool = False) -> Tensor:  # noqa: A001
    """Sum; integer and bool inputs accumulate in int64 (uint64 for unsigned), as the standard asks."""
    dtype = to_tinygrad_dtype(dtype) or _sum_dtype(x.dtype)
    return x.cast(dtype).sum(axis=_axes(x, axis), keepdim=keepdims)


def prod(x: Tensor, /, *, axis: Any = None, dtype: Any = None, keepdims: _pybool = False) -> Tensor:
    """Product, with the same accumulation dtype rule as `sum`."""
    dtype = to_tinygrad_dtype(dtype) or _sum_dtype(x.dtype)
    return x.cast(dtype).prod(axis=_axes(x, axis), keepdim=keepdims)


def _count(x: Tensor, axes: tuple[int, ...]) -> int:
    return math.prod(x.shape[a] for a in axes)


def mean(x: Tensor, /, *, axis: Any = None, keepdims: _pybool = False) -> Tensor:
    """Arithmetic mean; keeps a floating input's dtype; NaN over no elements."""
    axes = _axes(x, axis)
    n = _count(x, axes)
    out = x.sum(axis=axes, keepdim=keepdims)
    dt = x.dtype if _is_float(x.dtype) else DEFAULT_FLOAT
    return full(out.shape, math.nan, dtype=dt) if n == 0 else (out.cast(dt) / n).cast(dt)


def _nan_propagating(x: Tensor, out: Tensor, axes: tuple[int, ...], keepdims: _pybool) -> Tensor:
    # tinygrad's max/min compare, so a NaN loses to any number; the standard propagates it
    if not _is_float(x.dtype):
        return out
    return isnan(x).any(axis=axes, keepdim=keepdims).where(math.nan, out)


def max(x: Tensor, /, *, axis: Any = None, keepdims: _pybool = False) -> Tensor:  # noqa: A001
    """Maximum (NaN if any element is NaN)."""
    axes = _axes(x, axis)
    return _nan_propagating(x, x.max(axis=axes, keepdim=keepdims), axes, keepdims)


def min(x: Tensor, /, *, axis: Any = None, keepdims: _pybool = False) -> Tensor:  # noqa: A001
    """Minimum (NaN if any element is NaN)."""
    axes = _axes(x, axis)
    return _nan_propagating(x, x.min(axis=axes, keepdim=keepdims), axes, keepdims)


def var(x: Tensor, /, *, axis: Any = None, correction: float = 0.0, keepdims: _pybool = False) -> Tensor:
    """Variance with `correction` degrees of freedom removed (0 by default, as the standard says).

    NaN over no elements or when the degrees of freedom are not positive; NaNs propagate.
    """
    axes = _axes(x, axis)
    n = _count(x, axes)
    dt = x.dtype if _is_float(x.dtype) else DEFAULT_FLOAT
    shape = tuple(1 if i in axes else s for i, s in enumerate(x.shape)) if keepdims else \
        tuple(s for i, s in enumerate(x.shape) if i not in axes)
    if n == 0 or n - correction <= 0:
        return full(shape, math.nan, dtype=dt)
    xc = x.cast(dt)
    centered = xc - xc.sum(axis=axes, keepdim=True) / n
    out = ((centered * centered).sum(axis=axes, keepdim=keepdims) / (n - correction)).cast(dt)
    # any NaN or inf makes the variance NaN (inf - inf); said explicitly because tinygrad folds x - x to 0,
    # which is what `centered` becomes over one-element axes
    return isfinite(xc).logical_not().any(axis=axes, keepdim=keepdims).where(math.nan, out)


def std(x: Tensor, /, *, axis: Any = None, correction: float = 0.0, keepdims: _pybool = False) -> Tensor:
    """Standard deviation with `correction` (0 by default)."""
    return var(x, axis=axis, correction=correction, keepdims=keepdims).sqrt()


def argmax(x: Tensor, /, *, axis: int | None = None, keepdims: _pybool = False) -> Tensor:
    """Index of the first maximum, as int64."""
    out = x.argmax(axis=None if axis is None else _axes(x, axis)[0], keepdim=keepdims).cast(int64)
    return _keep_all(out, x, axis, keepdims)


def argmin(x: Tensor, /, *, axis: int | None = None, keepdims: _pybool = False) -> Tensor:
    """Index of the first minimum, as int64."""
    out = x.argmin(axis=None if axis is None else _axes(x, axis)[0], keepdim=keepdims).cast(int64)
    return _keep_all(out, x, axis, keepdims)


def any(x: Tensor, /, *, axis: Any = None, keepdims: _pybool = False) -> Tensor:  # noqa: A001
    """True if any element (along `axis`) is nonzero."""
    return _as_bool(x).any(axis=_axes(x, axis), keepdim=keepdims)


def all(x: Tensor, /, *, axis: Any = None, keepdims: _pybool = False) -> Tensor:  # noqa: A001
    """True if every element (along `axis`) is nonzero."""
    return _as_bool(x).all(axis=_axes(x, axis), keepdim=keepdims)


def _cumulative(x: Tensor, axis: int | None, dtype: DType, include_initial: _pybool, op: str, init: int) -> Tensor:
    if axis is None:
        if x.ndim > 1:
            raise ValueError("axis must be given for arrays of more than one dimension")
        axis = 0
    ax = _axes(x, axis)[0] if x.ndim else 0
    xc = x.cast(dtype)
    out = getattr(xc, op)(ax) if x.shape[ax] else xc
    if include_initial:
        pad = [(0, 0)] * x.ndim
        pad[ax] = (1, 0)
        out = out.pad(tuple(pad), value=init)
    return out


def cumulative_sum(x: Tensor, /, *, axis: int | None = None, dtype: Any = None,
                   include_initial: _pybool = False) -> Tensor:
    """Running sum along `axis`, with the dtype rule of `sum`."""
    dtype = to_tinygrad_dtype(dtype) or _sum_dtype(x.dtype)
    return _cumulative(x, axis, dtype, include_initial, "cumsum", 0)


def cumulative_prod(x: Tensor, /, *, axis: int | None = None, dtype: Any = None,
                    include_initial: _pybool = False) -> Tensor:
    """Running product along `axis`, with the dtype rule of `prod`."""
    dtype = to_tinygrad_dtype(dtype) or _sum_dtype(x.dtype)
    return _cumulative(x, axis, dtype, include_initial, "cumprod", 1)


# ---- linear algebra --------------------------------------------------------------------------------------------
def matmul(x1: Tensor, x2: Tensor, /) -> Tensor:
    """Matrix product with the standard's 1-D and batch broadcasting rules."""
    return x1 @ x2


def matrix_transpose(x: Tensor, /) -> Tensor:
    """Swap the last two axes."""
    return x.transpose(-1, -2)


def tensordot(x1: Tensor, x2: Tensor, /, *, axes: int | tuple[Sequence[int], Sequence[int]] = 2) -> Tensor:
    """Sum products over the last `axes` of x1 and first of x2 (or the given axis lists)."""
    if isinstance(axes, (_pyint, np.integer)):
        a1, a2 = list(range(x1.ndim - axes, x1.ndim)), list(range(axes))
    else:
        a1 = [a % x1.ndim for a in axes[0]]
        a2 = [a % x2.ndim for a in axes[1]]
    free1 = [i for i in range(x1.ndim) if i not in a1]
    free2 = [i for i in range(x2.ndim) if i not in a2]
    k = math.prod(x1.shape[i] for i in a1)
    left = x1.permute(free1 + a1).reshape(math.prod(x1.shape[i] for i in free1), k)
    right = x2.permute(a2 + free2).reshape(k, math.prod(x2.shape[i] for i in free2))
    return (left @ right).reshape(tuple(x1.shape[i] for i in free1) + tuple(x2.shape[i] for i in free2))


def vecdot(x1: Tensor, x2: Tensor, /, *, axis: int = -1) -> Tensor:
    """Dot product of vectors along `axis`, broadcasting the other axes."""
    return sum(x1 * x2, axis=axis)


def outer(x1: Tensor, x2: Tensor, /) -> Tensor:
    """Outer product of two vectors."""
    return x1.reshape(-1, 1) * x2.reshape(1, -1)


# ---- manipulation ----------------------------------------------------------------------------------------------
def reshape(x: Tensor, /, shape: Sequence[int], *, copy: _pybool | None = None) -> Tensor:
    """`x` with a new shape (one entry may be -1)."""
    return x.reshape(tuple(shape))


def concat(arrays: Sequence[Tensor], /, *, axis: int | None = 0) -> Tensor:
    """Join arrays along an existing axis (flattened first if axis is None)."""
    arrays = list(arrays)
    if axis is None:
        arrays, axis = [a.reshape(-1) for a in arrays], 0
    dt = result_type(*arrays)
    arrays = [a if a.dtype == dt else a.cast(dt) for a in arrays]
    if len(arrays) == 1:
        return arrays[0]
    return arrays[0].cat(*arrays[1:], dim=axis)


def stack(arrays: Sequence[Tensor], /, *, axis: int = 0) -> Tensor:
    """Join arrays along a new axis."""
    arrays = list(arrays)
    dt = result_type(*arrays)
    arrays = [a if a.dtype == dt else a.cast(dt) for a in arrays]
    return arrays[0].stack(*arrays[1:], dim=axis)


def expand_dims(x: Tensor, /, axis: int = 0) -> Tensor:
    """Insert a size-1 axis at `axis` (negative counts from the end of the result)."""
    if not -x.ndim - 1 <= axis <= x.ndim:
        raise IndexError(f"axis {axis} is out of bounds for the result of dimension {x.ndim + 1}")
    return x.unsqueeze(axis)


def squeeze(x: Tensor, /, axis: int | Sequence[int]) -> Tensor:
    """Remove size-1 axes; a named axis that is not size 1 is an error."""
    axes = _axes(x, axis)
    for a in axes:
        if x.shape[a] != 1:
            raise ValueError(f"cannot squeeze axis {a} of size {x.shape[a]}")
    return x.reshape(tuple(s for i, s in enumerate(x.shape) if i not in axes))


def permute_dims(x: Tensor, /, axes: Sequence[int]) -> Tensor:
    """Reorder the axes."""
    return x.permute(tuple(axes))


def moveaxis(x: Tensor, source: int | Sequence[int], destination: int | Sequence[int], /) -> Tensor:
    """Move axes to new positions."""
    src, dst = _axes(x, source), _axes(x, destination)
    order = [i for i in range(x.ndim) if i not in src]
    for d, s in sorted(zip(dst, src)):
        order.insert(d, s)
    return x.permute(tuple(order))


def swapaxes(x: Tensor, axis1: int, axis2: int, /) -> Tensor:
    """Exchange two axes."""
    return x.transpose(axis1, axis2)


def broadcast_to(x: Tensor, /, shape: Sequence[int]) -> Tensor:
    """`x` broadcast to `shape`."""
    shape = tuple(shape)
    np.broadcast_shapes(tuple(x.shape), shape)  # raises the standard's error for incompatible shapes
    if len(shape) > x.ndim:
        x = x.reshape((1,) * (len(shape) - x.ndim) + tuple(x.shape))
    return x.expand(shape)


def broadcast_arrays(*arrays: Tensor) -> list[Tensor]:
    """The arrays broadcast against each other."""
    shape = np.broadcast_shapes(*(tuple(a.shape) for a in arrays))
    return [broadcast_to(a, shape) for a in arrays]


def flip(x: Tensor, /, *, axis: int | Sequence[int] | None = None) -> Tensor:
    """Reverse the order of elements along `axis` (all axes if None)."""
    axes = _axes(x, axis)
    return x.flip(axes) if axes else x


def roll(x: Tensor, /, shift: int | Sequence[int], *, axis: int | Sequence[int] | None = None) -> Tensor:
    """Shift elements cyclically along `axis` (over the flattened array if None)."""
    if axis is None:
        return x.reshape(-1).roll(shift, 0).reshape(x.shape) if x.numel() else x
    axes = _axes(x, axis)
    shifts = (shift,) * len(axes) if isinstance(shift, (_pyint, np.integer)) else tuple(shift)
    return x.roll(shifts, axes) if x.numel() else x


def repeat(x: Tensor, repeats: int | Sequence[int] | Tensor, /, *, axis: int | None = None) -> Tensor:
    """Repeat each element `repeats` times along `axis` (numpy.repeat; flattened if axis is None)."""
    if axis is None:
        x, axis = x.reshape(-1), 0
    ax = _axes(x, axis)[0]
    if isinstance(repeats, (_pyint, np.integer)):
        return x.repeat_interleave(_pyint(repeats), dim=ax)
    # per-element counts give a data-dependent shape: resolved on the host (not inside `compile`)
    counts = repeats.numpy() if isinstance(repeats, Tensor) else np.asarray(repeats)
    idx = np.repeat(np.arange(x.shape[ax]), counts)
    return take(x, asarray(idx, device=x.device), axis=ax)


def tile(x: Tensor, repetitions: Sequence[int], /) -> Tensor:
    """numpy.tile: repeat the whole array along each axis."""
    reps = tuple(repetitions)
    nd = builtins.max(len(reps), x.ndim)
    reps = (1,) * (nd - len(reps)) + reps
    x = x.reshape((1,) * (nd - x.ndim) + tuple(x.shape))
    return x.repeat(reps)


def unstack(x: Tensor, /, *, axis: int = 0) -> tuple[Tensor, ...]:
    """Split into arrays along `axis`, dropping that axis."""
    ax = _axes(x, axis)[0]
    pre = (slice(None),) * ax
    return tuple(x[pre + (i,)] for i in range(x.shape[ax]))


# ---- indexing --------------------------------------------------------------------------------------------------
def _wrap_index(idx: Tensor, n: int) -> Tensor:
    idx = idx if isinstance(idx, Tensor) else asarray(idx)
    if idx.dtype not in _SIGNED + _UNSIGNED:
        idx = idx.cast(int64)
    return (idx < 0).where(idx + n, idx) if idx.dtype in _SIGNED else idx


def take(x: Tensor, indices: Tensor, /, *, axis: int | None = None) -> Tensor:
    """Elements of `x` at integer `indices` along `axis` (negative indices count from the end)."""
    if axis is None:
        if x.ndim != 1:
            raise ValueError("take needs axis for arrays of more than one dimension")
        axis = 0
    ax = _axes(x, axis)[0]
    return x[(slice(None),) * ax + (_wrap_index(indices, x.shape[ax]),)]


def take_along_axis(x: Tensor, indices: Tensor, /, *, axis: int = -1) -> Tensor:
    """numpy.take_along_axis: pick along `axis` with `indices` broadcast against `x`."""
    ax = _axes(x, axis)[0]
    if indices.ndim != x.ndim:
        raise ValueError(f"indices has {indices.ndim} dimensions, x has {x.ndim}")
    idx = _wrap_index(indices, x.shape[ax])
    other = np.broadcast_shapes(tuple(s for i, s in enumerate(x.shape) if i != ax),
                                tuple(s for i, s in enumerate(idx.shape) if i != ax))
    xs = list(other)
    xs.insert(ax, x.shape[ax])
    ishape = list(other)
    ishape.insert(ax, idx.shape[ax])
    return x.expand(tuple(xs)).gather(ax, idx.expand(tuple(ishape)))


# ---- data-dependent shapes: computed on the host (refused inside `compile`) --------------------------------
def nonzero(x: Tensor, /) -> tuple[Tensor, ...]:
    """Indices of the nonzero elements, one int64 array per axis."""
    if x.ndim == 0:
        raise ValueError("nonzero needs an array of at least one dimension")
    _host_only("nonzero")
    return tuple(from_numpy(i.astype(np.int64), device=x.device) for i in np.nonzero(x.numpy()))


def _unique(x: Tensor, **kw: _pybool) -> tuple[np.ndarray, ...]:
    _host_only("unique_*")
    flat = x.numpy().reshape(-1)
    out = np.unique(flat, equal_nan=False, **kw)
    return out if isinstance(out, tuple) else (out,)


class UniqueAllResult(NamedTuple):
    """values, indices, inverse_indices, counts."""

    values: Tensor
    indices: Tensor
    inverse_indices: Tensor
    counts: Tensor


class UniqueCountsResult(NamedTuple):
    """values, counts."""

    values: Tensor
    counts: Tensor


class UniqueInverseResult(NamedTuple):
    """values, inverse_indices."""

    values: Tensor
    inverse_indices: Tensor


def _i64(a: np.ndarray, device: Any) -> Tensor:
    return from_numpy(a.astype(np.int64), device=device)


def unique_values(x: Tensor, /) -> Tensor:
    """The distinct values, sorted (every NaN is distinct, as the standard says)."""
    return from_numpy(_unique(x)[0], dtype=x.dtype, device=x.device)


def unique_counts(x: Tensor, /) -> UniqueCountsResult:
    """The distinct values and how often each occurs."""
    v, c = _unique(x, return_counts=True)
    return UniqueCountsResult(from_numpy(v, dtype=x.dtype, device=x.device), _i64(c, x.device))


def unique_inverse(x: Tensor, /) -> UniqueInverseResult:
    """The distinct values and, shaped like `x`, the index of each element's value among them."""
    v, inv = _unique(x, return_inverse=True)
    return UniqueInverseResult(from_numpy(v, dtype=x.dtype, device=x.device),
                               _i64(inv.reshape(x.shape), x.device))


def unique_all(x: Tensor, /) -> UniqueAllResult:
    """The distinct values, the first index of each, the inverse indices (shaped like `x`) and counts."""
    v, i, inv, c = _unique(x, return_index=True, return_inverse=True, return_counts=True)
    return UniqueAllResult(from_numpy(v, dtype=x.dtype, device=x.device), _i64(i, x.device),
                           _i64(inv.reshape(x.shape), x.device), _i64(c, x.device))


# ---- sorting and searching ---------------------------------------------------------------------------------------
def sort(x: Tensor, /, *, axis: int = -1, descending: _pybool = False, stable: _pybool = True) -> Tensor:
    """Sorted copy along `axis`."""
    return x.sort(dim=axis, descending=descending)[0]


def argsort(x: Tensor, /, *, axis: int = -1, descending: _pybool = False, stable: _pybool = True) -> Tensor:
    """Indices that sort `x` along `axis`, as int64."""
    return x.argsort(dim=axis, descending=descending).cast(int64)


def searchsorted(x1: Tensor, x2: Tensor, /, *, side: str = "left", sorter: Tensor | None = None) -> Tensor:
    """Insertion indices of `x2` into the sorted 1-D `x1` (NaNs sort last), as int64; runs on the device."""
    if side not in ("left", "right"):
        raise ValueError(f"side must be 'left' or 'right', got {side!r}")
    if x1.ndim != 1:
        raise ValueError(f"searchsorted needs a 1-D x1, got shape {tuple(x1.shape)}")
    if sorter is not None:
        x1 = take(x1, sorter)
    if x1.shape[0] == 0 or x2.numel() == 0:
        return full(x2.shape, 0, dtype=int64)
    dt = result_type(x1, x2)
    a = x1.cast(dt).reshape((1,) * x2.ndim + (x1.shape[0],))
    v = x2.cast(dt).unsqueeze(-1)
    before = (a < v) if side == "left" else _le(a, v)
    if _is_float(dt):
        # NaNs sort after every number: a NaN query goes after the numbers (left) or after everything (right)
        before = before | (isnan(v) & (isnan(a).logical_not() if side == "left" else True))
    return before.cast(int64).sum(-1)


# ---- the standard's array-object protocol ----------------------------------------------------------------
# True while tinygrad_backend runs or traces a compiled function (the backend shares this list)
tracing = [False]


def _python_scalar(x: Tensor, kind: type) -> Any:
    """`x`'s single value as a Python bool/int/float/complex, computed eagerly (refused inside `compile`)."""
    if tracing[0]:
        raise CompileError(
            f"{kind.__name__}() of an array inside be.compile: TinyJit captures the kernels once, so a Python "
            "value (an `if`, a loop bound, int() of an index) would be frozen into the compiled program. Keep "
            "the computation in arrays (xp.where, masks) or move the branch outside the compiled function.")
    if x.numel() != 1:
        raise TypeError(f"{kind.__name__}() needs an array of one element, got shape {tuple(x.shape)}")
    # int(nan) / int(inf) raise ValueError / OverflowError, as Python's int() of a float does
    return kind(x.item())


def _index(x: Tensor) -> int:
    if x.dtype not in _SIGNED + _UNSIGNED:
        raise TypeError(f"only integer arrays can be used as an index, got {x.dtype}")
    return _python_scalar(x, _pyint)


def _host_only(what: str) -> None:
    if tracing[0]:
        raise CompileError(f"{what} inside be.compile: its result's shape depends on the data, which TinyJit "
                           "cannot capture; use xp.where with a fixed shape, or call it outside the compiled function")


def _mask_of(key: Any) -> Tensor | None:
    """The boolean array of a key that is one boolean array (alone or in a 1-tuple), else None."""
    if isinstance(key, tuple) and len(key) == 1:
        key = key[0]
    if isinstance(key, np.ndarray) and key.dtype == np.bool_:
        key = from_numpy(key)
    return key if isinstance(key, Tensor) and key.dtype == bool else None


def _check_mask(x: Tensor, mask: Tensor) -> None:
    if tuple(mask.shape) != tuple(x.shape[:mask.ndim]):
        raise IndexError(f"boolean index of shape {tuple(mask.shape)} does not match the array's leading "
                         f"dimensions {tuple(x.shape)}")


def _bound(b: Any) -> Any:
    # a 0-d integer array as a slice bound is a Python int to tinygrad (eagerly; refused inside compile)
    return operator.index(b) if isinstance(b, (Tensor, np.integer)) else b


def _plain_key(key: Any) -> Any:
    """`key` with array slice bounds turned into ints, which tinygrad's slicing needs."""
    if isinstance(key, slice):
        return slice(_bound(key.start), _bound(key.stop), _bound(key.step))
    if isinstance(key, np.integer):
        return _pyint(key)
    if isinstance(key, tuple):
        return tuple(_plain_key(k) for k in key)
    return key


def _getitem(self: Tensor, key: Any) -> Tensor:
    """tinygrad's indexing plus boolean masks (the standard's data-dependent `x[mask]`, resolved on the host)."""
    mask = _mask_of(key)
    if mask is None:
        return _tinygrad_getitem(self, _plain_key(key))
    _check_mask(self, mask)
    _host_only("x[boolean mask]")
    rest = tuple(self.shape[mask.ndim:])
    flat = np.flatnonzero(mask.numpy())
    if flat.size == 0:
        return full((0,) + rest, 0, dtype=self.dtype)
    return _tinygrad_getitem(self.reshape((-1,) + rest), from_numpy(flat.astype(np.int64), device=self.device))


def _setitem(self: Tensor, key: Any, value: Any) -> None:
    """tinygrad's item assignment, plus boolean masks, value casting, and no "other uses" refusal.

    tinygrad refuses to assign into a Tensor that lazy results still reference; eagerly those results
    were computed before the assignment, so the new value is swapped in functionally instead.
    """
    if self.dtype in dtypes.weaks:
        self.replace(self.cast(_strong(self.dtype)))
    value = value.cast(self.dtype) if isinstance(value, Tensor) and value.dtype != self.dtype else value
    mask = _mask_of(key)
    if mask is not None:
        _check_mask(self, mask)
        m = mask.reshape(tuple(mask.shape) + (1,) * (self.ndim - mask.ndim))
        if not isinstance(value, Tensor) or value.ndim == 0:
            self.replace(m.where(value, self).cast(self.dtype))
            return
        _host_only("x[boolean mask] = array")
        flat = np.flatnonzero(mask.numpy())
        if flat.size == 0:
            return
        target = self.reshape((-1,) + tuple(self.shape[mask.ndim:]))
        index = from_numpy(flat.astype(np.int64), device=self.device)
        self.replace(target._getitem(index, value).reshape(self.shape))
        return
    key = _plain_key(key)
    try:
        _tinygrad_setitem(self, key, value)
    except RuntimeError as e:
        if "other uses" not in str(e):
            raise
        if not isinstance(value, Tensor):
            value = Tensor(value, device=self.device, dtype=self.dtype)
        self.replace(self._getitem(key, value))


_tinygrad_getitem, _tinygrad_setitem, _tinygrad_pow = Tensor.__getitem__, Tensor.__setitem__, Tensor.__pow__
_tinygrad_le, _tinygrad_ge = Tensor.__le__, Tensor.__ge__


def _dlpack(self: Tensor, /, *, stream: Any = None, max_version: Any = None, dl_device: Any = None,
            copy: _pybool | None = None) -> Any:
    # tinygrad has no DLPack export: a host copy through numpy is exported (never zero-copy)
    if copy is False:
        raise BufferError("tinygrad arrays export DLPack through a host copy; copy=False cannot be honoured")
    if stream is not None:
        raise BufferError("tinygrad arrays export host (CPU) memory; a stream makes no sense for them")
    kw = {"max_version": max_version} if max_version is not None else {}
    return _host_array(self).__dlpack__(**kw)


def _host_array(x: Tensor) -> np.ndarray:
    return x.cast(_strong(x.dtype)).numpy() if x.dtype in dtypes.weaks else x.numpy()


def from_dlpack(x: Any, /, *, device: Any = None, copy: _pybool | None = None) -> Tensor:
    """An array from any object with `__dlpack__` (data is copied: tinygrad cannot wrap foreign memory)."""
    if isinstance(x, Tensor):
        same = device is None or _device(device) == x.device
        if copy is False and not same:
            raise BufferError(f"from_dlpack(copy=False) cannot move an array from {x.device} to {device}")
        return asarray(x, device=device, copy=True) if copy or not same else x
    if copy is False:
        raise BufferError("tinygrad cannot wrap foreign memory; from_dlpack(copy=False) is impossible")
    return from_numpy(np.from_dlpack(x), device=device)


def install_array_protocol() -> None:
    """Give tinygrad.Tensor the array-object members the standard asks and tinygrad lacks or refuses.

    Arrays are plain Tensors (every tinygrad op returns a plain Tensor, so a subclass would not survive one
    operation); these members are therefore set on tinygrad.Tensor, here and nowhere else, when a
    tinygrad backend is constructed (never at import; idempotent). The patch is process-wide: a program
    that uses tinygrad itself and wants its own Tensor semantics should not construct puffer's tinygrad
    backend (torch or jax train the same algorithms). Missing members
    are added (`x.mT`, `abs(x)`, `+x`, `x.__array_namespace__()`); tinygrad's own `__bool__` (which always
    raises) is replaced so that eager code such as `if xp.any(mask):` works on a one-element array, as on
    torch, JAX and numpy; inside `compile` bool()/int()/float() raise CompileError instead.
    """
    import sys

    added = {
        "mT": property(lambda self: self.transpose(-1, -2)),
        "__abs__": lambda self: abs(self),
        "__pos__": lambda self: self,
        "__array_namespace__": lambda self, api_version=None: sys.modules[__name__],
        "__dlpack__": _dlpack,
        "__dlpack_device__": lambda self: (1, 0),  # kDLCPU: the exported copy lives on the host
        "to_device": lambda self, device, /, *, stream=None: self.to(_device(device)),
    }
    for name, member in added.items():
        if not hasattr(Tensor, name):
            setattr(Tensor, name, member)
    replaced = {
        "__bool__": lambda self: _python_scalar(self, _pybool),
        "__int__": lambda self: _python_scalar(self, _pyint),
        "__float__": lambda self: _python_scalar(self, _pyfloat),
        "__complex__": lambda self: _python_scalar(self, complex),
        "__index__": _index,
        # tinygrad's pow misses the standard's special cases (see `pow`); these three route through it
        "__pow__": lambda self, x: pow(self, x),
        "__rpow__": lambda self, x: pow(full(self.shape, x, dtype=result_type(self, x)), self),
        "__ipow__": lambda self, x: self.assign(pow(self, x).cast(self.dtype)),
        # tinygrad's <= and >= are "not >" and "not <": True for NaN, which IEEE and the standard say is False
        "__le__": _le,
        "__ge__": _ge,
        "__getitem__": _getitem,
        "__setitem__": _setitem,
    }
    for name, member in replaced.items():
        setattr(Tensor, name, member)

