"""Counters that the fuzzing and hostile-input suites print at the end of a pytest run.

`make test` runs without `-s`, so a suite's own prints would be swallowed; instead each suite
adds to these counters and `tests/conftest.py` prints them in the terminal summary, e.g.
`schemathesis (live pydockd): requests sent 1200, inputs tried 1200, failures found 0`.
"""

from __future__ import annotations

from collections import Counter

# suite -> counter name -> value; counter names are printed as they are
COUNTS: dict[str, Counter[str]] = {}
ORDER = ("requests sent", "inputs tried", "operations", "archives built", "escapes found", "failures found")


def count(suite: str, what: str, n: int = 1) -> None:
    COUNTS.setdefault(suite, Counter())[what] += n


def summary_lines() -> list[str]:
    lines = []
    for suite, counts in sorted(COUNTS.items()):
        names = [k for k in ORDER if k in counts] + sorted(k for k in counts if k not in ORDER)
        if "failures found" not in counts:
            names.append("failures found")
        lines.append(f"{suite}: " + ", ".join(f"{k} {counts[k]}" for k in names))
    return lines
