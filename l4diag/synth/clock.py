"""Timestamp shapes that real training logs use, from one absolute time in seconds."""

from __future__ import annotations

from datetime import datetime, timezone


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
