"""pytest wiring of the conformance suite: the `--backend` option, backend fixtures, per-backend counts.

Fixtures
- `be`:  every selected array backend (numpy, torch, jax, tinygrad), ids equal to the backend name;
- `tbe`: the selected training backends only (numpy is forward-only, so it is never parametrized there).

At the end of a run that collected conformance tests, a table of passed/failed/skipped/xfailed
counts per backend is printed.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from pathlib import Path

import pytest

import puffer
from conformance._helpers import ARRAY_BACKENDS, TRAINING_BACKENDS
from conformance.known_failures import KNOWN_FAILURES

_HERE = Path(__file__).resolve().parent
GENERAL = "(any)"  # the summary row of tests that do not depend on a backend
_SELECTED_KEY = pytest.StashKey[list]()
# node id -> (backend, outcome); module-level because pytest_runtest_logreport gets no config
_OUTCOMES: dict[str, tuple[str, str]] = {}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("puffer conformance")
    group.addoption(
        "--backend",
        action="append",
        default=[],
        metavar="NAME",
        help="run the conformance suite only on this backend (repeatable, or comma-separated); "
        "default: every installed one of " + ", ".join(ARRAY_BACKENDS),
    )


def selected_backends(config: pytest.Config) -> list[str]:
    """The backends named by --backend, or every installed array backend."""
    if _SELECTED_KEY in config.stash:
        return config.stash[_SELECTED_KEY]
    requested = [n.strip() for arg in config.getoption("--backend") for n in arg.split(",") if n.strip()]
    installed = puffer.backends.available()
    if requested:
        for name in requested:
            if name not in puffer.backends.names():
                raise pytest.UsageError(
                    f"--backend {name}: unknown backend; puffer knows {', '.join(puffer.backends.names())}"
                )
            if name not in installed:
                raise pytest.UsageError(
                    f"--backend {name}: not installed here (installed: {', '.join(installed)}); "
                    f"pip install 'puffer-rl[{name}]'"
                )
        names = list(dict.fromkeys(requested))
    else:
        names = [n for n in ARRAY_BACKENDS if n in installed]
    config.stash[_SELECTED_KEY] = names
    return names


def pytest_configure(config: pytest.Config) -> None:
    _OUTCOMES.clear()  # run() may call pytest.main more than once in one process
    selected_backends(config)  # a bad --backend is a usage error up front, not an error per test module


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    names = selected_backends(metafunc.config)
    if "be" in metafunc.fixturenames:
        metafunc.parametrize("be", names, ids=names, indirect=True)
    elif "tbe" in metafunc.fixturenames:
        trainers = [n for n in names if n in TRAINING_BACKENDS]
        metafunc.parametrize("tbe", trainers, ids=trainers, indirect=True)


@pytest.fixture
def be(request: pytest.FixtureRequest) -> puffer.backends.Backend:
    """The backend under test (numpy, torch, jax or tinygrad)."""
    return puffer.backend(request.param)


@pytest.fixture
def tbe(request: pytest.FixtureRequest) -> puffer.backends.Backend:
    """The training backend under test (torch, jax or tinygrad)."""
    return puffer.backend(request.param)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # a training-only test when no training backend is selected (e.g. --backend numpy) is not a test
    # of the selection at all: deselect it rather than report it as skipped
    empty = [item for item in items if _has_empty_backend(item)]
    if empty:
        config.hook.pytest_deselected(items=empty)
        items[:] = [item for item in items if not _has_empty_backend(item)]
    for item in items:
        if _HERE not in item.path.parents:
            continue  # the repository's other tests share the session
        callspec = getattr(item, "callspec", None)
        params = callspec.params if callspec is not None else {}
        name = params.get("be", params.get("tbe", GENERAL))
        # the backend travels with each report, so the summary counts by backend, not by parsing node ids
        item.user_properties.append(("puffer_backend", name))
        for backend, pattern, reason in KNOWN_FAILURES:
            if backend == name and re.search(pattern, item.name):
                item.add_marker(pytest.mark.xfail(strict=True, reason=f"known {backend} bug: {reason}"))


def _has_empty_backend(item: pytest.Item) -> bool:
    if _HERE not in item.path.parents:
        return False
    callspec = getattr(item, "callspec", None)
    if callspec is None:
        return False
    return any(k in callspec.params and not isinstance(callspec.params[k], str) for k in ("be", "tbe"))


def _outcome(report: pytest.TestReport) -> str | None:
    """The outcome a test counts under, decided by the phase that settles it (None: not settled yet)."""
    if hasattr(report, "wasxfail"):
        if report.skipped:
            return "xfailed"
        if report.passed and report.when == "call":
            return "xpassed"
    if report.failed:
        return "failed" if report.when == "call" else "error"
    if report.skipped:
        return "skipped"
    if report.passed and report.when == "call":
        return "passed"
    return None


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    backend = dict(report.user_properties).get("puffer_backend")
    outcome = _outcome(report) if backend is not None else None
    if outcome is None:
        return
    previous = _OUTCOMES.get(report.nodeid)
    # a teardown error after a passed call turns the test into an error; nothing else overrides
    if previous is None or (previous[1] == "passed" and outcome == "error"):
        _OUTCOMES[report.nodeid] = (backend, outcome)


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    counts: dict[str, Counter] = defaultdict(Counter)
    for backend, outcome in _OUTCOMES.values():
        counts[backend][outcome] += 1
    if not counts:
        return
    columns = ["passed", "failed", "error", "skipped", "xfailed", "xpassed"]
    tr = terminalreporter
    tr.section("puffer conformance per backend", sep="=")
    header = f"{'backend':<10}" + "".join(f"{c:>9}" for c in columns) + f"{'total':>9}"
    tr.write_line(header)
    for name in sorted(counts, key=lambda n: (*ARRAY_BACKENDS, n).index(n) if n != GENERAL else 99):
        c = counts[name]
        total = sum(c[k] for k in columns)
        tr.write_line(f"{name:<10}" + "".join(f"{c[k]:>9}" for k in columns) + f"{total:>9}")
