"""Known backend bugs, each marked xfail(strict=True) so that a fix turns the test red until removed here.

An entry is (backend, regular expression searched in the test name, reason naming the cause). Entries are
applied at collection by conftest.py; keep the list short and tell the backend's owner about each.
"""

from __future__ import annotations

KNOWN_FAILURES: list[tuple[str, str, str]] = [
    ("torch", r"^test_unique_all\[", "array-api-compat's torch namespace has no unique_all: torch.unique cannot "
     "return first indices (pytorch/pytorch#36748)"),
]
