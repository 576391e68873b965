"""Signal names and numbers as Docker parses them (`--stop-signal`, `kill -s`, `StopSignal`).

Docker accepts a number, or a name with or without `SIG` in any case (`term`, `SIGTERM`,
`RTMIN+3`); anything else, and `0`, is `Invalid signal: <raw>`. Pure; no process is signalled here.
"""

from __future__ import annotations

import signal

from runtime.errors import InvalidParameter

SIGRTMIN = 34
SIGRTMAX = 64

_NAMES: dict[str, int] = {
    s.name.removeprefix("SIG"): int(s)
    for s in signal.Signals
    if s.name.startswith("SIG") and not s.name.startswith(("SIG_", "SIGRT"))
}
_NAMES.update({"CLD": int(signal.SIGCHLD), "IOT": int(signal.SIGABRT), "POLL": int(signal.SIGIO)})
_NAMES.update({"UNUSED": 31, "RTMIN": SIGRTMIN, "RTMAX": SIGRTMAX})
_NAMES.update({f"RTMIN+{i}": SIGRTMIN + i for i in range(1, 16)})
_NAMES.update({f"RTMAX-{i}": SIGRTMAX - i for i in range(1, 15)})

_BY_NUMBER: dict[int, str] = {}
for _name, _num in sorted(_NAMES.items(), key=lambda kv: len(kv[0]), reverse=True):
    _BY_NUMBER[_num] = _name  # the shortest (canonical) name wins: CHLD over CLD
_BY_NUMBER[int(signal.SIGCHLD)] = "CHLD"
_BY_NUMBER[int(signal.SIGABRT)] = "ABRT"
_BY_NUMBER[int(signal.SIGIO)] = "IO"
_BY_NUMBER[31] = "SYS"


def parse_signal(raw: str | int) -> int:
    """The signal number for `raw`, or `InvalidParameter("Invalid signal: raw")`."""
    if isinstance(raw, int):
        if raw <= 0:
            raise InvalidParameter(f"Invalid signal: {raw}")
        if raw > SIGRTMAX:
            raise InvalidParameter(f"the linux daemon does not support signal {raw}")
        return raw
    text = raw.strip()
    if text.lstrip("-").isdigit():
        number = int(text)
        if number <= 0:
            raise InvalidParameter(f"Invalid signal: {raw}")
        if number > SIGRTMAX:  # dockerd's ValidSignalForPlatform; runc would fail with a 500
            raise InvalidParameter(f"the linux daemon does not support signal {number}")
        return number
    number_or_none = _NAMES.get(text.upper().removeprefix("SIG"))
    if number_or_none is None:
        raise InvalidParameter(f"Invalid signal: {raw}")
    return number_or_none


def signal_name(number: int) -> str:
    """`SIGTERM` for 15; a bare number for signals without a name."""
    name = _BY_NUMBER.get(number)
    return f"SIG{name}" if name else str(number)
