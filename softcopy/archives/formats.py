"""What an archive is: its compression and encryption, from options or from its file name.

Every choice is checked up front, before a byte of the source is read: an unknown format,
a recipient `age` refuses, a recipients file that names no one, a key gpg cannot encrypt
to, a tool that is not installed. The real `age` and `gpg` judge their own keys.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass

from ..errors import ConfigError
from ..inputs import read_input

PACK_FORMATS = ("tar", "tar.gz", "tar.zst")
COMPRESSIONS = ("gzip", "zstd")
ENCRYPTION_TOOLS = ("age", "gpg")

_COMPRESSION_OF_FORMAT = {"tar": "", "tar.gz": "gzip", "tar.zst": "zstd"}
_SUFFIX_OF_COMPRESSION = {"": ".tar", "gzip": ".tar.gz", "zstd": ".tar.zst"}
_DEBIAN_PACKAGE = {"age": "age", "gpg": "gnupg", "pigz": "pigz"}
# A recipients file is a few lines of keys; anything larger is not one.
_RECIPIENTS_LIMIT = 1 << 20
_CHECK_TIMEOUT = 60.0
_LEVELS = {"gzip": (1, 9), "zstd": (1, 22)}
_MAX_THREADS = 256


@dataclass(frozen=True)
class Encryption:
    tool: str  # "age" | "gpg"
    # age: public keys (`age1...`, ssh keys) or `@FILE` recipients files; gpg: key ids or
    # fingerprints. Empty when read back from a file name.
    recipients: tuple[str, ...]


@dataclass(frozen=True)
class Packing:
    compression: str  # "" | "gzip" | "zstd"
    level: int | None = None  # None: the measured default of the compression
    # 0: the measured default; zstd: its worker threads; gzip: more than 1 runs pigz.
    threads: int = 0
    encryption: Encryption | None = None

    def __post_init__(self) -> None:
        if self.compression not in ("", *COMPRESSIONS):
            raise ConfigError(
                self.compression, "compress with", f"choose one of {', '.join(COMPRESSIONS)}"
            )
        low, high = _LEVELS.get(self.compression, (0, 0))
        if self.level is not None and self.compression and not low <= self.level <= high:
            raise ConfigError(
                str(self.level),
                f"compress with {self.compression} at level",
                f"it is not {low}-{high}",
            )
        if not 0 <= self.threads <= _MAX_THREADS:
            raise ConfigError(
                str(self.threads), "compress with threads", f"it is not 0-{_MAX_THREADS}"
            )

    @property
    def suffix(self) -> str:
        tail = f".{self.encryption.tool}" if self.encryption else ""
        return _SUFFIX_OF_COMPRESSION[self.compression] + tail


def parse_pack(text: str) -> str:
    """The compression of a `--pack` value (tar, tar.gz, tar.zst)."""
    if text not in _COMPRESSION_OF_FORMAT:
        raise ConfigError(
            text, "pack as", f"it is not an archive format; choose one of {', '.join(PACK_FORMATS)}"
        )
    return _COMPRESSION_OF_FORMAT[text]


def packing_of(name: str) -> Packing:
    """The packing an archive's file name says (`run0042.tar.zst.age`); the recipients of
    its encryption are not in the name, so they are empty."""
    base, encryption = name, None
    for tool in ENCRYPTION_TOOLS:
        if name.endswith(f".{tool}"):
            base, encryption = name[: -len(tool) - 1], Encryption(tool, ())
    for compression, suffix in sorted(_SUFFIX_OF_COMPRESSION.items(), key=lambda kv: -len(kv[1])):
        if base.endswith(suffix) and len(base) > len(suffix):
            return Packing(compression, encryption=encryption)
    choices = ", ".join(f"{s}[.age|.gpg]" for s in _SUFFIX_OF_COMPRESSION.values())
    raise ConfigError(name, "read the archive", f"its name does not end in one of {choices}")


def tool_path(tool: str) -> str:
    """The installed program, or a ConfigError saying which Debian package provides it."""
    found = shutil.which(tool)
    if found is None:
        raise ConfigError(
            tool,
            "run",
            f"the program is not installed (Debian package `{_DEBIAN_PACKAGE[tool]}`)",
        )
    return found


def parse_encrypt(values: Iterable[str]) -> Encryption | None:
    """The encryption of `--encrypt` values (`age:RECIPIENT`, `age:@FILE`, `gpg:KEYID`,
    each repeatable, one tool only), every recipient checked by the tool itself."""
    tools: list[str] = []
    recipients: list[str] = []
    for value in values:
        scheme, sep, recipient = value.partition(":")
        if not sep or scheme not in ENCRYPTION_TOOLS:
            raise ConfigError(
                value,
                "encrypt to",
                "it is not age:RECIPIENT, age:@FILE or gpg:KEYID (softcopy encrypts to public "
                "keys only: there is no passphrase mode)",
            )
        if not recipient:
            raise ConfigError(value, "encrypt to", "it names no recipient after the colon")
        if tools and scheme != tools[0]:
            raise ConfigError(
                value, "encrypt to", f"it mixes {scheme} with {tools[0]}; choose one of age or gpg"
            )
        tools.append(scheme)
        recipients.append(recipient)
    if not tools:
        return None
    tool = tools[0]
    program = tool_path(tool)
    for recipient in recipients:
        if tool == "age":
            _check_age_recipient(program, recipient)
        else:
            _check_gpg_key(program, recipient)
    return Encryption(tool, tuple(recipients))


def age_recipient_args(recipient: str) -> list[str]:
    """`-R FILE` for an `@FILE` recipients file, `-r KEY` for a key."""
    return ["-R", recipient[1:]] if recipient.startswith("@") else ["-r", recipient]


def _check_age_recipient(program: str, recipient: str) -> None:
    shown = f"age:{recipient}"
    if recipient.startswith("@"):
        path = recipient[1:]
        action = "read the age recipients file"
        data = read_input(path, action, _RECIPIENTS_LIMIT, "recipients file")
        lines = [ln.strip() for ln in data.splitlines()]
        if not any(ln and not ln.startswith(b"#") for ln in lines):
            raise ConfigError(path, action, "it names no recipient")
    # Encrypting nothing to the recipient is age's own judgement of the key or file.
    result = subprocess.run(
        [program, "-e", *age_recipient_args(recipient), "-o", os.devnull],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=_CHECK_TIMEOUT,
        start_new_session=True,
    )
    if result.returncode != 0:
        raise ConfigError(shown, "encrypt to", f"age refuses it: {last_line(result.stderr)}")


def gpg_base_args(program: str) -> list[str]:
    """gpg never asking anyone: no terminal, no pinentry (a missing or locked secret key is
    an error, not a prompt)."""
    return [program, "--batch", "--no-tty", "--quiet", "--pinentry-mode", "error"]


def _check_gpg_key(program: str, key: str) -> None:
    shown = f"gpg:{key}"
    result = subprocess.run(
        [*gpg_base_args(program), "--with-colons", "--list-keys", "--", key],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=_CHECK_TIMEOUT,
        start_new_session=True,
    )
    if result.returncode != 0:
        raise ConfigError(shown, "encrypt to", "the key is not in the gpg keyring")
    keys = [line.split(":") for line in result.stdout.decode("utf-8", "replace").splitlines()]
    primaries = [f for f in keys if f[0] == "pub"]
    if len(primaries) > 1:
        raise ConfigError(
            shown, "encrypt to", f"it matches {len(primaries)} keys; give the fingerprint"
        )
    # Field 12 of the primary key holds the capabilities of the whole key: `E` when some
    # valid (not expired, not revoked) subkey can encrypt.
    if not primaries or "E" not in primaries[0][11]:
        raise ConfigError(
            shown, "encrypt to", "the key has no valid encryption subkey (expired or revoked?)"
        )


def last_line(stderr: bytes) -> str:
    """The last line a tool wrote to stderr that says something (age ends every error
    with a line asking for bug reports)."""
    lines = [ln.strip() for ln in stderr.decode("utf-8", "replace").splitlines()]
    lines = [ln for ln in lines if ln and "report unexpected or unhelpful errors" not in ln]
    return lines[-1] if lines else "(no message)"
