"""Human-readable sizes for messages, and rates as users write them ("200M")."""

from __future__ import annotations


def human_bytes(n: float) -> str:
    """1234567 -> '1.2 MB' (decimal units, as disks are sold and `df -H` shows)."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} PB"


def counted(n: int, noun: str, plural: str = "") -> str:
    """'1 file', '2 files', '0 files': a count with its noun, as people write it."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


_RATE_UNITS = {"": 1, "k": 1e3, "m": 1e6, "g": 1e9, "ki": 1 << 10, "mi": 1 << 20, "gi": 1 << 30}


def parse_rate(text: object) -> float:
    """Bytes per second from 200M, 1.5G, 800k, 100Mi, 200MB/s or a plain number.

    Decimal units (M = 10^6) as disks and networks are sold; Ki/Mi/Gi are binary.
    Raises ValueError naming the text.
    """
    if isinstance(text, int | float) and not isinstance(text, bool):
        value = float(text)
    elif isinstance(text, str):
        body = text.strip().lower().removesuffix("/s").removesuffix("b").strip()
        digits = body.rstrip("kmgi")
        unit = body[len(digits) :]
        try:
            value = float(digits) * _RATE_UNITS[unit]
        except (KeyError, ValueError):
            raise ValueError(f"{text!r} is not a rate (e.g. 200M, 1.5G, 100Mi bytes/s)") from None
    else:
        raise ValueError(f"{text!r} is not a rate (e.g. 200M, 1.5G, 100Mi bytes/s)")
    if not value > 0:
        raise ValueError(f"{text!r} is not a positive rate")
    return value


def parse_size(text: object) -> int:
    """Bytes from 64Mi, 100M, 8k or a plain number (units as parse_rate reads them)."""
    try:
        return int(parse_rate(text))
    except ValueError:
        raise ValueError(f"{text!r} is not a size (e.g. 64Mi, 100M, 1048576 bytes)") from None


_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: object) -> float:
    """Seconds from "90", "45s", "30m", "12h", "7d" or "2w"; ValueError says what is wrong."""
    value = str(text).strip().lower()
    unit = value[-1:] if value[-1:] in _DURATION_UNITS else "s"
    number = value[:-1] if value[-1:] in _DURATION_UNITS else value
    try:
        seconds = float(number) * _DURATION_UNITS[unit]
    except ValueError:
        raise ValueError(
            f"{text!r} is not a duration (a number with s, m, h, d or w, e.g. 7d)"
        ) from None
    if not seconds >= 0 or seconds == float("inf"):
        raise ValueError(f"{text!r} is not a duration of zero or more seconds")
    return seconds
