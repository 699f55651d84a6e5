"""tinygrad: an array-API adapter over `tinygrad.Tensor`, `Tensor.gradient`, and TinyJit behind `compile`.

`compile` semantics (TinyJit's contract, made safe to use functionally):
- arguments are pytrees of Tensors; other leaves (Python numbers, strings, None) are static: a new value
  is a new signature. Each signature (tree structure, shapes, dtypes, devices, static values) gets its
  own compiled program, so a shape change transparently re-captures (call 1 of a signature runs eagerly,
  calls 2 and 3 capture). More than `MAX_SIGNATURES` signatures warns: something changes every call.
- inputs that are not plain realized buffers (lazy results, views, constants, one buffer passed twice)
  are copied into fresh buffers first, so TinyJit never sees them.
- outputs are safe to keep. TinyJit rewrites the same output buffers on every replay, so each signature
  alternates between two captured programs ("ping-pong"): step N reads the buffers step N-1 wrote and
  writes the other set, so feeding outputs back as inputs costs no copy. Before a program overwrites its
  buffers, any Tensor still alive that references them (a kept output, or a lazy result computed from
  one) is moved to a copy; in a training loop that rebinds its state every step nothing is copied.
- `donate` is accepted for interface parity and ignored: ping-pong already avoids the copies it would save.

Randomness uses the base class's numpy Philox streams: deterministic per key and identical to the numpy
backend (tinygrad's own RNG is a global seed plus counters, not key-based).

tinygrad internals this backend relies on (hence the pin to tinygrad 0.14.* in pyproject.toml and
0.14.0 in constraints/cpu.txt; re-check each on an upgrade): `TinyJit.captured` (replayed directly,
skipping `TinyJit.__call__`'s per-call input validation) and its `_written_uops`; `UOp` buffers and
ops (`UOp.new_buffer`, `Ops.RESHAPE`, `.base`) to build and inspect tensors without a graph rewrite;
`tensor.all_tensors` to find live tensors before a replay overwrites their buffers; and the device
allocator's `_copyin` for zero-extra-copy host-to-device writes (in `tinygrad_xp`).
"""

from __future__ import annotations

import math
import warnings
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from tinygrad import Tensor, dtypes
from tinygrad.dtype import DType
from tinygrad.engine.jit import JitError, TinyJit
from tinygrad.tensor import all_tensors
from tinygrad.uop.ops import Ops, UOp

from puffer.backends import tinygrad_xp
from puffer.backends.base import Array, Backend, check_grad_inputs, check_scalar_loss
from puffer.errors import GradientError
from puffer.tree import flatten, unflatten

MAX_SIGNATURES = 8

# True while a compiled function is being run or traced: value_and_grad then leaves its results lazy
# so the whole step fuses into one schedule instead of realizing mid-step, and the array protocol
# refuses bool()/int()/float() of an array (the value would be frozen into the captured program).
_tracing = tinygrad_xp.tracing


def _is_floating(dtype: Any) -> bool:
    return dtypes.is_float(dtype)


def _new_tensor(uop: UOp) -> Tensor:
    # Tensor(uop) validates devices and dtypes (~9 us); outputs are rebuilt every call, so build directly
    t = Tensor.__new__(Tensor)
    t.uop, t.grad, t.is_param = uop, None, True
    all_tensors[weakref.ref(t)] = None
    return t


def _plain_buffer(u: UOp) -> UOp | None:
    """The BUFFER behind a realized, full, unviewed Tensor, else None."""
    while u.op is Ops.DETACH:
        u = u.src[0]
    if u.op is Ops.RESHAPE:
        u = u.src[0]
    return u if u.op is Ops.BUFFER and u.is_realized else None


class TinygradBackend(Backend):
    """Trains with `Tensor.gradient`; `compile` is TinyJit with ping-pong output buffers."""

    name = "tinygrad"
    can_train = True
    xp = tinygrad_xp
    array_type = Tensor

    def __init__(self, device: str = "cpu"):
        super().__init__(device)
        tinygrad_xp.install_array_protocol()
        self._device = tinygrad_xp._device(device.upper())

    def _is_native_dtype(self, dtype: Any) -> bool:
        return isinstance(dtype, DType)

    # ---- numpy in/out -----------------------------------------------------------------------------
    def asarray(self, x: Any, dtype: Any = None) -> Array:
        """A Tensor on this backend's device; numpy data is copied (one memcpy, no kernel)."""
        if isinstance(x, Tensor):
            out = x if x.device == self._device else x.to(self._device)
            dt = tinygrad_xp.to_tinygrad_dtype(dtype)
            return out if dt is None or dt == out.dtype else out.cast(dt)
        return tinygrad_xp.asarray(x, dtype=dtype, device=self._device)

    def to_numpy(self, x: Array) -> np.ndarray:
        """A numpy copy; realized buffers are copied out directly, without a kernel."""
        if not isinstance(x, Tensor):
            return np.asarray(x)
        if x.dtype in dtypes.weaks:
            x = x.cast(tinygrad_xp._strong(x.dtype))
        buf = _plain_buffer(x.uop)
        if buf is None or 0 in x.shape or not isinstance(x.device, str):
            return x.numpy()
        raw = buf.buffer
        out = np.empty(x.shape, dtype=tinygrad_xp.to_numpy_dtype(x.dtype))
        raw.allocator._copyout(memoryview(out).cast("B"), raw._buf)
        return out

    # ---- extras: tinygrad natives where accurate, careful formulas where tinygrad's are not ----------
    def logsumexp(self, x: Array, axis: int = -1, keepdims: bool = False) -> Array:
        return x.logsumexp(axis=axis, keepdim=keepdims)

    def log_softmax(self, x: Array, axis: int = -1) -> Array:
        # (x - m) - log(sum(exp(x - m))): subtracting m first keeps precision at large |x|
        m = x.max(axis=axis, keepdim=True).detach()
        z = x - m
        return z - z.exp().sum(axis=axis, keepdim=True).log()

    def softmax(self, x: Array, axis: int = -1) -> Array:
        return x.softmax(axis=axis)

    def softplus(self, x: Array) -> Array:
        return x.maximum(0.0) + tinygrad_xp.log1p((-x.abs()).exp())

    def sigmoid(self, x: Array) -> Array:
        return x.sigmoid()

    def relu(self, x: Array) -> Array:
        return x.relu()

    def gelu(self, x: Array) -> Array:
        """Exact (erf-based) GELU, as torch.nn.functional.gelu's default."""
        return 0.5 * x * (1.0 + self.erf(x * (1.0 / math.sqrt(2.0))))

    def erf(self, x: Array) -> Array:
        """erf to ~1 ulp: Maclaurin series for |x| < 2.5, the erfc continued fraction beyond.

        tinygrad's Tensor.erf is Abramowitz & Stegun 7.1.26 (1.5e-7 absolute error), too coarse for float64.
        """
        if not dtypes.is_float(x.dtype):
            x = x.cast(tinygrad_xp.DEFAULT_FLOAT)
        f64 = x.dtype == dtypes.float64
        a = x.abs()
        # each branch sees clipped inputs so the unused one never overflows (inf * 0 = NaN in gradients)
        s = x.clip(-2.5, 2.5)
        n = 38 if f64 else 22
        coefs = [(-1) ** k / (math.factorial(k) * (2 * k + 1)) for k in range(n)]
        series = (2.0 / math.sqrt(math.pi)) * s * tinygrad_xp._horner(s * s, coefs)
        c = a.maximum(2.5)
        frac = c
        for k in range(40 if f64 else 18, 0, -1):
            frac = c + (k / 2.0) / frac
        tail = 1.0 - (-(c * c)).exp() / (math.sqrt(math.pi) * frac)
        return (a < 2.5).where(series, x.sign() * tail)

    def stop_gradient(self, x: Array) -> Array:
        return x.detach()

    def one_hot(self, idx: Array, n: int, dtype: Any = None) -> Array:
        return idx.one_hot(n).cast(tinygrad_xp.to_tinygrad_dtype(dtype) or dtypes.float32)

    def take_along_axis(self, x: Array, idx: Array, axis: int = -1) -> Array:
        return tinygrad_xp.take_along_axis(x, idx, axis=axis)

    # ---- gradients ------------------------------------------------------------------------------
    def value_and_grad(self, f: Callable, has_aux: bool = False) -> Callable:
        """`g(params, *args) -> (value | (value, aux)), grads` via `loss.gradient(*params)`.

        Outside `compile` the value, aux and gradients are realized together (one schedule; it also keeps
        eager training loops from growing ever larger lazy graphs); inside they stay lazy so the whole
        step fuses.
        """

        def vg(params, *args, **kwargs):
            if isinstance(params, dict):
                params = {k: v if isinstance(v, Tensor) else self.asarray(v) for k, v in params.items()}
            check_grad_inputs("tinygrad", params, _is_floating)
            eager = not _tracing[0]
            if eager:
                _realize(list(params.values()))
            # a DETACH per key makes each parameter its own leaf (a key aliasing another's graph gets no
            # gradient through it). One Tensor under two keys would share its DETACH node (UOps are
            # hash-consed), so a repeat gets DETACH(DETACH(..)): a distinct leaf that passes no gradient on.
            leaves, seen = {}, set()
            for k, v in params.items():
                leaf = v.detach()
                while leaf.uop in seen:
                    leaf = leaf.detach()
                seen.add(leaf.uop)
                leaves[k] = leaf
            out = f(leaves, *args, **kwargs)
            if has_aux and not (isinstance(out, tuple) and len(out) == 2):
                raise GradientError("value_and_grad(has_aux=True) needs f to return a (loss, aux) pair")
            value, aux = out if has_aux else (out, None)
            if not isinstance(value, Tensor):
                raise GradientError(f"tinygrad: value_and_grad needs f to return a Tensor loss, got {type(value)}")
            check_scalar_loss("tinygrad", value)
            if not dtypes.is_float(value.dtype):
                raise GradientError(f"tinygrad: the loss must be floating point, got {value.dtype}")
            grads = dict(zip(leaves, value.gradient(*leaves.values())))
            value = value.detach()
            aux_leaves, aux_spec = flatten(aux)
            aux_leaves = [a.detach() if isinstance(a, Tensor) else a for a in aux_leaves]
            if eager:
                _realize([value, *aux_leaves, *grads.values()])
            aux = unflatten(aux_spec, aux_leaves)
            return ((value, aux), grads) if has_aux else (value, grads)

        return vg

    # ---- compilation ------------------------------------------------------------------------------
    def compile(self, f: Callable, donate: Sequence[int] = ()) -> Callable:
        """`f` under TinyJit: see the module docstring for shapes, static leaves and output safety."""
        return _Compiled(self, f)


def _realize(tensors: list[Any]) -> None:
    todo = [t for t in tensors if isinstance(t, Tensor) and not t.uop.is_virtual and not t.uop.is_realized]
    if todo:
        Tensor.realize(*todo)


class _Program:
    """One captured TinyJit program of a signature, and the bookkeeping that keeps its outputs safe."""

    def __init__(self, entry: _Entry):
        self.entry = entry
        self.jit = TinyJit(self._traced)
        self.jit.cnt = 1  # capture on first use: the signature's eager call already ran
        self.out_uops: list[UOp] = []
        self.owned: list[bool] = []  # output i lives in a buffer this program rewrites
        self.in_bases: list[UOp] = []  # capture-time input buffers, for outputs that are input views
        self.written: set[UOp] = set()
        self.sentinel: Tensor | None = None

    def _traced(self, *tensors: Tensor) -> list[Tensor]:
        out = self.entry.run_f(list(tensors))
        return [t for t in out if isinstance(t, Tensor)]

    def capture(self, inputs: list[Tensor]) -> None:
        self.in_bases = [t.uop.base for t in inputs]
        try:
            ret = self.jit(*inputs)
        except JitError as e:
            if "didn't JIT anything" not in str(e):
                raise
            self.entry.eager_only = True  # nothing to compute (outputs are inputs or constants)
            return
        # a realized detached output is DETACH(buffer): the data is the buffer's, so hand out the buffer
        self.out_uops = [t.uop.src[0] if t.uop.op is Ops.DETACH else t.uop for t in ret]
        self.written = set(self.jit.captured._written_uops)
        in_set = set(self.in_bases)
        self.owned = []
        for u in self.out_uops:
            if u.is_virtual:
                self.owned.append(False)
            elif any(n in in_set for n in u.toposort()):
                self.owned.append(False)
                self.entry.has_input_views = True
            else:
                self.owned.append(_plain_buffer(u) in self.written or u.base in self.written)
        self.buffers = {u.base for u, own in zip(self.out_uops, self.owned) if own}

    def protect(self) -> None:
        """Move every live Tensor that still references this program's output buffers to a copy."""
        if self.sentinel is None or not self.buffers:
            return
        hits: list[Tensor] = []
        for ref in reversed(all_tensors):
            t = ref()
            if t is None:
                continue
            if t is self.sentinel:
                break
            u = t.uop
            if u.op is Ops.RESHAPE:
                u = u.src[0]
            if u.op is Ops.BUFFER:
                if u in self.buffers:
                    hits.append(t)
            elif any(n in self.buffers for n in u.toposort()):
                hits.append(t)
        if not hits:
            return
        used = {n for t in hits for n in t.uop.toposort() if n in self.buffers}
        copies = {b: Tensor(b).clone() for b in used}
        Tensor.realize(*copies.values())
        mapping = {b: c.uop.base for b, c in copies.items()}
        for t in hits:
            t.uop = t.uop.substitute(mapping)

    def replay(self, inputs: list[Tensor]) -> list[Tensor]:
        # straight to the captured program: TinyJit.__call__ re-validates every input with a graph rewrite
        # (~50 us each, the largest per-step cost with 25 inputs); the signature key and `_jit_inputs`
        # already guarantee what it checks (same shapes/dtypes/devices, distinct plain buffers)
        self.jit.captured([t.uop.base for t in inputs], {})
        return self.hand_out(inputs)

    def hand_out(self, inputs: list[Tensor]) -> list[Tensor]:
        # the sentinel marks where Tensors created from now on start in `all_tensors` (insertion-ordered)
        self.sentinel = _new_tensor(UOp.const(0.0, dtypes.float32))
        views = {}
        if self.entry.has_input_views:
            views = {b: t.uop.base for b, t in zip(self.in_bases, inputs) if b is not t.uop.base}
        return [_new_tensor(u.substitute(views) if views and not own else u)
                for u, own in zip(self.out_uops, self.owned)]


class _Entry:
    """The state of one signature: its static leaves, call count and two ping-pong programs."""

    def __init__(self, compiled: _Compiled, spec: Any, statics: list[Any], tensor_pos: list[int]):
        self.compiled, self.spec, self.statics, self.tensor_pos = compiled, spec, statics, tensor_pos
        self.calls = 0
        self.eager_only = False
        self.has_input_views = False
        self.out_spec: Any = None
        self.out_statics: list[Any] = []  # non-Tensor output leaves, with Tensor leaves as None
        self.programs: list[_Program] = []

    def run_f(self, tensors: list[Tensor]) -> list[Any]:
        leaves = list(self.statics)
        for p, t in zip(self.tensor_pos, tensors):
            leaves[p] = t
        args, kwargs = unflatten(self.spec, leaves)
        was = _tracing[0]
        _tracing[0] = True
        try:
            out = self.compiled.f(*args, **kwargs)
        finally:
            _tracing[0] = was
        out_leaves, self.out_spec = flatten(out)
        self.out_statics = [None if isinstance(x, Tensor) else x for x in out_leaves]
        return out_leaves

    def rebuild(self, tensors: list[Tensor]) -> Any:
        it = iter(tensors)
        return unflatten(self.out_spec, [next(it) if s is None else s for s in self.out_statics])

    def __call__(self, tensors: list[Tensor]) -> Any:
        n = self.calls
        self.calls += 1
        if n == 0 or self.eager_only:
            out = self.run_f(tensors)
            _realize(out)
            return unflatten(self.out_spec, out)
        if n > 2:
            prog = self.programs[(n - 1) % 2]
            prog.protect()  # before preparing inputs: protecting may re-point an input to a copy
            return self.rebuild(prog.replay(_jit_inputs(tensors)))
        inputs = _jit_inputs(tensors)
        prog = _Program(self)
        prog.capture(inputs)
        if self.eager_only:
            return self(tensors)
        self.programs.append(prog)
        return self.rebuild(prog.hand_out(inputs))


def _jit_inputs(tensors: list[Tensor]) -> list[Tensor]:
    """Copy lazy, viewed, constant or repeated inputs into fresh buffers: TinyJit takes only distinct real buffers."""
    out, seen, fresh = [], set(), []
    for t in tensors:
        buf = _plain_buffer(t.uop)
        if buf is None or buf in seen:
            src = t.cast(tinygrad_xp._strong(t.dtype)) if t.dtype in dtypes.weaks else t
            t = src.clone()
            fresh.append(t)
        else:
            seen.add(buf)
        out.append(t)
    if fresh:
        Tensor.realize(*fresh)
    return out


class _Compiled:
    """A compiled function: one `_Entry` per call signature."""

    def __init__(self, be: TinygradBackend, f: Callable):
        self.be, self.f = be, f
        self.entries: dict[Any, _Entry] = {}
        self.__wrapped__ = f
        self.__doc__ = getattr(f, "__doc__", None)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if _tracing[0]:
            return self.f(*args, **kwargs)  # inside another compiled function: inline (no nested TinyJit)
        leaves, spec = flatten((args, kwargs))
        tensors, pos, statics, sig = [], [], [], []
        for i, x in enumerate(leaves):
            if isinstance(x, np.ndarray):
                x = self.be.asarray(x)
            if isinstance(x, Tensor):
                tensors.append(x)
                pos.append(i)
                statics.append(None)
                sig.append((x.shape, x.dtype, x.device))
            else:
                statics.append(x)
                sig.append(("static", type(x), x))
        key = (spec, tuple(sig))
        try:
            entry = self.entries.get(key)
        except TypeError as e:
            raise TypeError("compile: non-array arguments are static and must be hashable") from e
        if entry is None:
            if len(self.entries) == MAX_SIGNATURES:
                warnings.warn(
                    f"compiled function {getattr(self.f, '__name__', self.f)!r} has seen {MAX_SIGNATURES} call "
                    "signatures; each new shape or static (non-array) value captures a new program. Pass "
                    "values that change between calls as 0-d arrays.", stacklevel=2)
            entry = self.entries[key] = _Entry(self, spec, statics, pos)
        return entry(tensors)
