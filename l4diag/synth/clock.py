"""Timestamp shapes that real training logs use, from one absolute time in seconds."""

from __future__ import annotations

import re
from datetime import datetime, timezone

from ..lines import MONTHS


def _dt(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, tz=timezone.utc)


def pylog(epoch: float) -> str:
    """Python logging default: ``2024-05-01 10:00:00,123``."""
    d = _dt(epoch)
    return d.strftime("%Y-%m-%d %H:%M:%S") + f",{d.microsecond // 1000:03d}"


def bracket(epoch: float) -> str:
    """DeepSpeed / torchelastic: ``[2024-05-01 10:00:00,123]``."""
    return f"[{pylog(epoch)}]"


def seconds(epoch: float) -> str:
    """``2024-05-01 10:00:00`` (Megatron datetime, HF >> lines use pylog)."""
    return _dt(epoch).strftime("%Y-%m-%d %H:%M:%S")


def iso(epoch: float) -> str:
    """Collector (kubectl --timestamps) style: ``2024-05-01T10:00:00.123456Z``."""
    d = _dt(epoch)
    return d.strftime("%Y-%m-%dT%H:%M:%S") + f".{d.microsecond:06d}Z"


def glog(level: str, epoch: float) -> str:
    """c10d glog header time: ``E0501 10:00:00.123456789``."""
    d = _dt(epoch)
    nanos = d.microsecond * 1000 + int((epoch * 1e9) % 1000)
    return f"{level}{d.strftime('%m%d %H:%M:%S')}.{nanos:09d}"


def elastic_time(epoch: float) -> str:
    """ChildFailedError block time: ``2024-05-01_10:00:00``."""
    return _dt(epoch).strftime("%Y-%m-%d_%H:%M:%S")


def syslog(epoch: float) -> str:
    """journald / syslog: ``May 01 10:00:00``."""
    return _dt(epoch).strftime("%b %d %H:%M:%S")


# --- moving a real excerpt onto the run's clock ---------------------------------------------------

_MONTHS = list(MONTHS)  # the order lines.MONTHS numbers them in
STAMP_RE = re.compile(
    r"(?P<iso>(?P<y>\d{4})-(?P<mo>\d\d)-(?P<d>\d\d)(?P<sep>[ T_])(?P<h>\d\d):(?P<mi>\d\d):(?P<s>\d\d))"
    r"|(?P<sys>\b(?P<smon>" + "|".join(_MONTHS) + r") (?P<sd>[ \d]\d) (?P<sh>\d\d):(?P<smi>\d\d):(?P<ss>\d\d)\b)"
    r"|(?P<glog>\b(?P<lvl>[IWEF])(?P<gmo>[01]\d)(?P<gd>[0-3]\d) (?P<gh>\d\d):(?P<gmi>\d\d):(?P<gs>\d\d)\.)"
)


def retime(lines: list, epoch: float) -> tuple:
    """``lines`` with every wall-clock timestamp shifted so the first one reads ``epoch``, each in its own
    layout, and each line's offset in seconds from that first time (an untimed line keeps the one before).

    A real excerpt comes from another day; pasted into a synthetic run verbatim, its kernel or
    launcher times would lie months away from the run around it, which no real log does.
    """
    first = _first_stamp(lines)
    if first is None:
        return list(lines), [0.0] * len(lines)
    delta = _dt(epoch).replace(microsecond=0, tzinfo=None) - first
    out, offsets, offset = [], [], 0.0
    for line in lines:
        stamps: list = []

        def shift(m: re.Match) -> str:
            when = _parse(m, first.year)
            if when is None:
                return m.group(0)
            stamps.append(when)
            return _render(m, when + delta)

        out.append(STAMP_RE.sub(shift, line))
        if stamps:
            offset = max(offset, (stamps[0] - first).total_seconds())
        offsets.append(offset)
    return out, offsets


def _first_stamp(lines: list) -> datetime | None:
    year = next((int(m.group("y")) for ln in lines for m in STAMP_RE.finditer(ln) if m.group("iso")), 2000)
    for line in lines:
        for m in STAMP_RE.finditer(line):
            when = _parse(m, year)
            if when is not None:
                return when
    return None


def _parse(m: re.Match, year: int) -> datetime | None:
    try:
        if m.group("iso"):
            return datetime(int(m.group("y")), int(m.group("mo")), int(m.group("d")), int(m.group("h")),
                            int(m.group("mi")), int(m.group("s")))
        if m.group("sys"):
            return datetime(year, _MONTHS.index(m.group("smon")) + 1, int(m.group("sd")), int(m.group("sh")),
                            int(m.group("smi")), int(m.group("ss")))
        return datetime(year, int(m.group("gmo")), int(m.group("gd")), int(m.group("gh")), int(m.group("gmi")),
                        int(m.group("gs")))
    except ValueError:
        return None


def _render(m: re.Match, d: datetime) -> str:
    """``d`` in the layout of the timestamp ``m`` matched."""
    if m.group("iso"):
        return d.strftime(f"%Y-%m-%d{m.group('sep')}%H:%M:%S")
    if m.group("sys"):
        day = f"{d.day:2d}" if m.group("sd").startswith(" ") else f"{d.day:02d}"
        return f"{_MONTHS[d.month - 1]} {day} {d.strftime('%H:%M:%S')}"
    return f"{m.group('lvl')}{d.strftime('%m%d %H:%M:%S')}."
