"""shiv preamble of `dist/pydockd`: runs after the bundled site-packages is extracted (to
`~/.shiv`, or `$SHIV_ROOT`) and before pydockd starts.

The bundle carries compiled extensions (httptools, uvloop, pydantic-core, zstandard) built for
one CPython version and platform. Under another interpreter they would fail deep inside an
import; say so plainly instead. Keep this file free of newer syntax: it runs before any check.
"""

import importlib.machinery
import sys
from pathlib import Path

_site_packages = globals().get("site_packages")  # set by shiv's bootstrap
if sys.version_info < (3, 11):  # noqa: UP036 - this runs under whatever python3 is on PATH
    sys.exit(f"pydockd needs Python 3.11 or newer; {sys.executable} is {sys.version.split()[0]}")
if _site_packages is not None:
    _built = sorted(
        {p.name.split(".", 1)[1] for p in Path(_site_packages).rglob("*.so") if ".cpython-" in p.name}
    )
    if _built and not any("." + tag in importlib.machinery.EXTENSION_SUFFIXES for tag in _built):
        sys.exit(
            f"pydockd: this build carries compiled modules for {', '.join(_built).replace('.so', '')}, but "
            f"{sys.executable} is CPython {sys.version.split()[0]}: run it with the Python it was "
            "built for, or rebuild it with `make dist` there"
        )
