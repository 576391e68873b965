"""Wall-clock spans of pydockd's own functions, for the questions a sampling profiler cannot
answer in an asyncio daemon (where does a request *wait*?).

    python -m bench.spantrace run --out SPANS.jsonl -- <pydockd args>   # pydockd, instrumented
    python -m bench.spantrace report SPANS.jsonl [--root Supervisor._start] [--last 3]

`run` wraps every function and coroutine function defined in `runtime.*` and `netproxy.*` (module
functions and class methods, not generators) with a timer, then runs pydockd's `main()`. Each call
that takes >= 0.2 ms is written as one JSON line: name, start, duration, thread, and its parent
span (a context variable, so spans nest across `await`, tasks and `asyncio.to_thread`). `report`
prints the total per function and the span trees under the last calls of `--root`.

A bench tool only: the daemon's code is not changed; the wrappers cost ~2 us a call.
"""

from __future__ import annotations

import argparse
import contextvars
import functools
import importlib
import inspect
import itertools
import json
import pkgutil
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

PACKAGES = ("runtime", "netproxy")
MIN_MS = 0.2
_parent: contextvars.ContextVar[int] = contextvars.ContextVar("span_parent", default=0)
_ids = itertools.count(1)
_out: TextIO | None = None
_lock = threading.Lock()


def _emit(span_id: int, parent: int, name: str, start: float, end: float) -> None:
    ms = (end - start) * 1e3
    if ms < MIN_MS or _out is None:
        return
    line = json.dumps(
        {"id": span_id, "parent": parent, "name": name, "t": round(start * 1e3, 3), "ms": round(ms, 3),
         "thread": threading.current_thread().name},
    )  # fmt: skip
    with _lock:
        _out.write(line + "\n")
        _out.flush()


def _wrap(fn: Callable[..., Any], name: str) -> Callable[..., Any]:
    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def async_span(*args: Any, **kwargs: Any) -> Any:
            span_id = next(_ids)
            token = _parent.set(span_id)
            parent = _prev(token)
            start = time.perf_counter()
            try:
                return await fn(*args, **kwargs)
            finally:
                _parent.reset(token)
                _emit(span_id, parent, name, start, time.perf_counter())

        return async_span

    @functools.wraps(fn)
    def span(*args: Any, **kwargs: Any) -> Any:
        span_id = next(_ids)
        token = _parent.set(span_id)
        parent = _prev(token)
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            _parent.reset(token)
            _emit(span_id, parent, name, start, time.perf_counter())

    return span


def _prev(token: contextvars.Token[int]) -> int:
    old = token.old_value
    return old if isinstance(old, int) else 0


def _wrappable(obj: Any) -> bool:
    return (
        inspect.isfunction(obj)
        and not inspect.isgeneratorfunction(obj)
        and not inspect.isasyncgenfunction(obj)
        and obj.__module__.split(".")[0] in PACKAGES
    )


def instrument() -> int:
    """Import every module of PACKAGES and wrap their functions; returns how many were wrapped."""
    for pkg_name in PACKAGES:
        pkg = importlib.import_module(pkg_name)
        for info in pkgutil.iter_modules(pkg.__path__, f"{pkg_name}."):
            importlib.import_module(info.name)
    wrapped: dict[Callable[..., Any], Callable[..., Any]] = {}
    modules = [m for n, m in list(sys.modules.items()) if n.split(".")[0] in (*PACKAGES, "app")]
    for module in modules:
        for attr, value in list(vars(module).items()):
            if _wrappable(value):
                if value not in wrapped:
                    wrapped[value] = _wrap(value, value.__qualname__)
                setattr(module, attr, wrapped[value])
            elif inspect.isclass(value) and value.__module__.split(".")[0] in PACKAGES:
                if value.__module__ != module.__name__:
                    continue  # patched where it is defined
                for mattr, member in list(vars(value).items()):
                    if mattr.startswith("__"):
                        continue
                    if _wrappable(member):
                        setattr(value, mattr, _wrap(member, member.__qualname__))
                    elif isinstance(member, staticmethod) and _wrappable(member.__func__):
                        fn = member.__func__
                        setattr(value, mattr, staticmethod(_wrap(fn, fn.__qualname__)))
    return len(wrapped)


# --- report ---------------------------------------------------------------------------------------


def report(path: Path, root: str, last: int, top: int) -> str:
    spans = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    by_id = {s["id"]: s for s in spans}
    children: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for s in spans:
        children[s["parent"]].append(s)
    totals: dict[str, list[float]] = defaultdict(list)
    for s in spans:
        totals[s["name"]].append(s["ms"])
    out = [
        f"{len(spans)} spans >= {MIN_MS} ms in {path}",
        "",
        "-- total per function (calls, mean, total) --",
    ]
    ranked = sorted(totals.items(), key=lambda kv: -sum(kv[1]))[:top]
    for name, values in ranked:
        out.append(f"{len(values):6d}  {sum(values) / len(values):8.2f} ms  {sum(values):10.1f} ms  {name}")
    roots = [s for s in spans if s["name"].endswith(root)][-last:]
    for r in roots:
        out += ["", f"-- {r['name']} {r['ms']:.1f} ms --"]
        out += _tree(r, children, r["t"], 0)
    del by_id
    return "\n".join(out)


def _tree(
    span: dict[str, Any], children: dict[int, list[dict[str, Any]]], t0: float, depth: int
) -> list[str]:
    lines = [f"{span['t'] - t0:8.1f} +{span['ms']:7.1f} ms  {'  ' * depth}{span['name']}  [{span['thread']}]"]
    for child in sorted(children.get(span["id"], []), key=lambda s: s["t"]):
        if depth < 8:
            lines += _tree(child, children, t0, depth + 1)
    return lines


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["run"]:
        sep = argv.index("--")
        ap = argparse.ArgumentParser(prog="spantrace run")
        ap.add_argument("--out", type=Path, required=True)
        args = ap.parse_args(argv[1:sep])
        global _out
        _out = open(args.out, "a")  # noqa: SIM115 - open for the daemon's whole life
        count = instrument()
        print(f"spantrace: {count} functions wrapped, spans to {args.out}", file=sys.stderr, flush=True)
        from app.main import main as pydockd_main

        sys.argv = ["pydockd", *argv[sep + 1 :]]
        result = pydockd_main()
        return int(result or 0)
    ap = argparse.ArgumentParser(prog="spantrace report")
    ap.add_argument("mode", choices=("report",))
    ap.add_argument("spans", type=Path)
    ap.add_argument("--root", default="Supervisor._start")
    ap.add_argument("--last", type=int, default=2)
    ap.add_argument("--top", type=int, default=40)
    args = ap.parse_args(argv)
    print(report(args.spans, args.root, args.last, args.top))
    return 0


if __name__ == "__main__":
    sys.exit(main())
