"""puffer's cross-backend conformance suite, shipped with the package.

From a shell: `puffer conformance --backend tinygrad`; from Python: `conformance.run(["tinygrad"])`;
from the repository: `python -m pytest conformance --backend tinygrad` (or `-k tinygrad`).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

__all__ = ["run"]

HERE = Path(__file__).resolve().parent


def run(backends: list[str] | None = None, pytest_args: Sequence[str] = ()) -> int:
    """Run the conformance suite on `backends` (None: every installed one) and return pytest's exit code.

    The suite runs from the installed package directory with a blank pytest configuration, so neither
    the caller's working directory nor its pytest.ini/pyproject settings change what runs. A table of
    passed/failed/skipped counts per backend is printed at the end.
    """
    import pytest

    pytest_args = list(pytest_args)
    if pytest_args[:1] == ["--"]:  # `puffer conformance --backend X -- -k softmax` passes the separator on
        pytest_args = pytest_args[1:]
    args = [str(HERE)]
    for name in backends or ():
        args += ["--backend", name]
    with tempfile.TemporaryDirectory(prefix="puffer-conformance-") as tmp:
        # an empty ini file pins the rootdir and keeps the user's own pytest configuration out; the
        # cache provider is off because site-packages may be read-only
        ini = os.path.join(tmp, "pytest.ini")
        with open(ini, "w") as f:
            f.write("[pytest]\n")
        args += ["-c", ini, "--rootdir", str(HERE.parent), "-p", "no:cacheprovider", *pytest_args]
        return int(pytest.main(args))
