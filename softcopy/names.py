"""File names are bytes: how one is shown on a terminal or in a log, and carried in JSON.

A key is a `str` decoded with surrogateescape (what os.scandir gives on a str path): a
byte that is not UTF-8 is a lone surrogate U+DC80..U+DCFF, `os.fsencode(key)` gives the
bytes back. Such a string cannot be printed to a strict UTF-8 stream nor put in strict
JSON, and a name may hold a newline or an escape sequence that would forge or garble a
line of output: every name printed goes through `shown`, every JSON record through
`json_record`.
"""

from __future__ import annotations

import os
from typing import Any

_ESCAPES = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(text: str, backslash: bool) -> str:
    if text.isprintable() and (not backslash or "\\" not in text):
        return text  # nearly every name: no copy, no loop
    out = []
    for c in text:
        code = ord(c)
        if c in _ESCAPES and (backslash or c != "\\"):
            out.append(_ESCAPES[c])
        elif 0xDC80 <= code <= 0xDCFF:  # a raw byte that is not UTF-8 (surrogateescape)
            out.append(f"\\x{code - 0xDC00:02x}")
        elif c.isprintable() or c == "\\":
            out.append(c)
        elif code < 0x80:  # \x1b, \x7f: the byte itself
            out.append(f"\\x{code:02x}")
        elif code <= 0xFFFF:
            # C1 controls too (U+0085 is \u0085): \x80-\xff always means a raw byte.
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    return "".join(out)


def shown(name: str) -> str:
    """A name on one line of any terminal, unambiguously: a backslash is doubled; newline,
    CR and tab are \\n, \\r, \\t; other control characters and bytes that are not UTF-8 are
    \\xNN; other unprintable characters \\uNNNN. The result is printable, valid UTF-8, and
    different names always show differently."""
    return _escape(name, backslash=True)


def safe_text(text: str) -> str:
    """A whole message (which may hold names someone else put in it) made safe to print:
    control characters and raw bytes escaped as in `shown`, backslashes left alone, so a
    message whose names are already `shown` comes out unchanged."""
    return _escape(text, backslash=False)


def name_bytes(value: str) -> bytes:
    """The bytes a key stands for (a stray surrogate not from a name: its UTF-8 form)."""
    try:
        return os.fsencode(value)
    except UnicodeEncodeError:
        return value.encode("utf-8", "surrogatepass")


def utf8_text(value: str) -> str:
    """A string as valid UTF-8 text: raw bytes of a name that is not UTF-8 become \\xNN."""
    return name_bytes(value).decode("utf-8", "backslashreplace")


def json_record(record: dict[str, Any]) -> dict[str, Any]:
    """A record every string of which is valid Unicode, so any JSON reader accepts it.

    A string that is not UTF-8 (a name's raw bytes) is written as `utf8_text` of it, and
    the record's `names_hex` maps that text to the exact bytes, in hex: a reader takes
    `bytes.fromhex(record["names_hex"][text])` when the text is there, `text.encode()`
    otherwise. Records without such a name are unchanged.
    """
    names_hex: dict[str, str] = {}
    out = _json_value(record, names_hex)
    if names_hex:
        out["names_hex"] = {**out.get("names_hex", {}), **names_hex}
    return out


def _json_value(value: Any, names_hex: dict[str, str]) -> Any:
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if isinstance(value, str):
        try:
            value.encode("utf-8")
            return value
        except UnicodeEncodeError:
            text = utf8_text(value)
            names_hex[text] = name_bytes(value).hex()
            return text
    if isinstance(value, dict):
        return {_json_value(k, names_hex): _json_value(v, names_hex) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_value(v, names_hex) for v in value]
    return value


def name_from_json(record: dict[str, Any], text: str) -> str:
    """The key a `json_record` text stands for (surrogateescape str, like os.scandir's)."""
    raw = record.get("names_hex", {}).get(text)
    return os.fsdecode(bytes.fromhex(raw)) if raw is not None else text
