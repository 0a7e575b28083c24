"""Encrypted archives (issue 14) with the real `age` and `gpg`: round trips, wrong keys,
tampering, and key handling that cannot be truncated the way dataflow's is (its random
binary passphrase through `gpg --passphrase-file` is cut at the first newline byte):
softcopy encrypts to public keys only, given whole to the tool, and has no passphrase
path at all."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from test_archives_tar import (
    FORMATS,
    flip_middle,
    make_run,
    pack,
    problems_of,
    read_back,
    tree,
)

from softcopy.archives.check import compare
from softcopy.archives.formats import Encryption, Packing, parse_encrypt
from softcopy.archives.members import write_tar
from softcopy.archives.pipeline import decrypt_argv, encrypt_argv, packer
from softcopy.errors import ConfigError, SoftcopyError

# Curve keys: generated in milliseconds, where RSA would take seconds.
FAST = ("future-default", "default", "never")
SIGN = ("ed25519", "sign", "never")


def age_key(path: Path) -> str:
    """A new age identity file at path; its public key."""
    subprocess.run(["age-keygen", "-o", path], check=True, capture_output=True)
    return next(
        line.split(": ")[1]
        for line in path.read_text().splitlines()
        if line.startswith("# public key: ")
    )


@pytest.fixture
def gnupg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A throw-away keyring with one encryption key (no passphrase); its fingerprint."""
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    monkeypatch.setenv("GNUPGHOME", str(home))
    gpg = ["gpg", "--batch", "--no-tty", "--quiet"]
    subprocess.run(
        [*gpg, "--passphrase", "", "--quick-gen-key", "softcopy test <t@example.org>", *FAST],
        check=True,
        capture_output=True,
    )
    listing = subprocess.run(
        [*gpg, "--with-colons", "--list-keys"], check=True, capture_output=True, text=True
    ).stdout
    fpr = next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr"))
    yield home, fpr
    subprocess.run(["gpgconf", "--kill", "all"], capture_output=True)


def test_age_round_trip_to_many_recipients_each_decrypts_exactly(tmp_path: Path) -> None:
    run = make_run(tmp_path / "src")
    keys = tmp_path / "keys"
    keys.mkdir()
    direct = [age_key(keys / f"direct{i}.key") for i in range(6)]
    listed = [age_key(keys / f"listed{i}.key") for i in range(6)]
    recipients = tmp_path / "recipients.txt"
    recipients.write_text("# the archive team\n" + "\n".join(listed) + "\n\n")
    values = [f"age:{k}" for k in direct] + [f"age:@{recipients}"]
    encryption = parse_encrypt(values)
    assert encryption == Encryption("age", (*direct, f"@{recipients}"))
    packing = Packing("zstd", encryption=encryption)
    assert packing.suffix == ".tar.zst.age"
    dest = tmp_path / "run0042.tar.zst.age"
    members, _, _ = pack(run, dest, packing)

    plain = None
    for identity in sorted(keys.iterdir()):
        out = subprocess.run(
            ["age", "-d", "-i", identity, dest], capture_output=True, check=True
        ).stdout
        assert plain is None or out == plain
        plain = out
        assert compare(members, read_back(dest, packing, identity)) == []
    into = tmp_path / "x"
    into.mkdir()
    subprocess.run(["tar", "--zstd", "-xf", "-", "-C", into], input=plain, check=True)
    assert tree(into / "run0042") == tree(run)

    stranger = tmp_path / "stranger.key"
    age_key(stranger)
    with pytest.raises(
        SoftcopyError, match="cannot run age: the identity does not match any recipient"
    ):
        read_back(dest, packing, stranger)
    with pytest.raises(ConfigError, match=r"read the age identity .*missing\.key: No such file"):
        read_back(dest, packing, tmp_path / "missing.key")


def test_age_identity_with_several_keys_and_comments(tmp_path: Path) -> None:
    run = make_run(tmp_path / "src")
    one, two = tmp_path / "one.key", tmp_path / "two.key"
    public = age_key(two)
    age_key(one)
    both = tmp_path / "both.key"
    both.write_text(one.read_text() + "\n# and the archive key\n" + two.read_text())
    packing = Packing("gzip", encryption=parse_encrypt([f"age:{public}"]))
    dest = tmp_path / "run0042.tar.gz.age"
    members, _, _ = pack(run, dest, packing)
    assert compare(members, read_back(dest, packing, both)) == []


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_age_tampered_and_truncated(tmp_path: Path, fmt: str) -> None:
    run = make_run(tmp_path / "src")
    identity = tmp_path / "id.key"
    packing = Packing(FORMATS[fmt], encryption=parse_encrypt([f"age:{age_key(identity)}"]))
    dest = tmp_path / f"run0042.{fmt}.age"
    members, _, _ = pack(run, dest, packing)
    intact = dest.read_bytes()
    flip_middle(dest)
    damaged = "cannot run age: the archive is truncated, tampered with or corrupt"
    assert damaged in problems_of(dest, packing, members, identity=identity)
    dest.write_bytes(intact[: len(intact) // 2])
    assert damaged in problems_of(dest, packing, members, identity=identity)


def test_gpg_round_trip_wrong_key_and_tampering(tmp_path: Path, gnupg) -> None:
    home, fpr = gnupg
    run = make_run(tmp_path / "src")
    packing = Packing("zstd", encryption=parse_encrypt([f"gpg:{fpr}"]))
    dest = tmp_path / "run0042.tar.zst.gpg"
    members, _, _ = pack(run, dest, packing)
    plain = subprocess.run(
        ["gpg", "--batch", "--quiet", "-d", dest], capture_output=True, check=True
    ).stdout
    into = tmp_path / "x"
    into.mkdir()
    subprocess.run(["tar", "--zstd", "-xf", "-", "-C", into], input=plain, check=True)
    assert tree(into / "run0042") == tree(run)
    assert compare(members, read_back(dest, packing)) == []

    # Only the public key elsewhere: decrypting is refused at once, never prompted for.
    public = subprocess.run(
        ["gpg", "--batch", "--export", fpr], capture_output=True, check=True
    ).stdout
    other = tmp_path / "public-only"
    other.mkdir(mode=0o700)
    env = {**os.environ, "GNUPGHOME": str(other)}
    subprocess.run(["gpg", "--batch", "--import"], input=public, env=env, check=True)
    os.environ["GNUPGHOME"] = str(other)
    try:
        with pytest.raises(
            SoftcopyError, match="cannot run gpg: the secret key is not in the gpg keyring"
        ):
            read_back(dest, packing)
    finally:
        os.environ["GNUPGHOME"] = str(home)
        subprocess.run(["gpgconf", "--kill", "all"], env=env, capture_output=True)

    intact = dest.read_bytes()
    flip_middle(dest)
    found = problems_of(dest, packing, members)
    damaged = "cannot run gpg: the archive is truncated, tampered with or corrupt"
    assert damaged in found, found
    dest.write_bytes(intact[: len(intact) // 2])
    assert damaged in problems_of(dest, packing, members)


def test_gpg_keys_checked_up_front(tmp_path: Path, gnupg) -> None:
    subprocess.run(
        ["gpg", "--batch", "--passphrase", "", "--quick-gen-key", "s <s@example.org>", *SIGN],
        check=True,
        capture_output=True,
    )
    with pytest.raises(ConfigError, match=r"gpg:s@example\.org.*no valid encryption subkey"):
        parse_encrypt(["gpg:s@example.org"])
    with pytest.raises(ConfigError, match=r"gpg:nobody@example\.org.*not in the gpg keyring"):
        parse_encrypt(["gpg:nobody@example.org"])


def test_age_recipients_checked_by_age(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="age:age1notakey: age refuses it"):
        parse_encrypt(["age:age1notakey"])
    with pytest.raises(ConfigError, match=r"missing\.txt.*No such file"):
        parse_encrypt([f"age:@{tmp_path / 'missing.txt'}"])
    empty = tmp_path / "empty.txt"
    empty.write_text("# nobody yet\n\n")
    with pytest.raises(ConfigError, match=r"empty\.txt: it names no recipient"):
        parse_encrypt([f"age:@{empty}"])
    bad = tmp_path / "bad.txt"
    bad.write_text(age_key(tmp_path / "k") + "\nnot-a-key\n")
    with pytest.raises(ConfigError, match=r"bad\.txt: age refuses it"):
        parse_encrypt([f"age:@{bad}"])


def test_bad_encrypt_values(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = age_key(tmp_path / "k")
    assert parse_encrypt([]) is None
    for value, why in (
        ("passphrase:hunter2", "no passphrase mode"),
        ("age", "no passphrase mode"),
        ("age:", "names no recipient"),
        ("pgp:ABCD", "not age:RECIPIENT"),
    ):
        with pytest.raises(ConfigError, match=why):
            parse_encrypt([value])
    with pytest.raises(ConfigError, match="mixes gpg with age"):
        parse_encrypt([f"age:{key}", "gpg:ABCD"])
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with pytest.raises(ConfigError, match="not installed \\(Debian package `age`\\)"):
        parse_encrypt([f"age:{key}"])
    with pytest.raises(ConfigError, match="Debian package `gnupg`"):
        parse_encrypt(["gpg:ABCD"])


def test_no_passphrase_path_at_all(tmp_path: Path) -> None:
    """Every command line softcopy gives age or gpg encrypts to public keys, or decrypts
    with a secret key; none reads a passphrase, from a file, a descriptor or a prompt."""
    forbidden = ("passphrase", "symmetric", "-c", "-p", "--passphrase-fd", "--passphrase-file")
    for packing in (
        Packing("zstd", encryption=Encryption("age", ("age1xyz", "@file"))),
        Packing("", encryption=Encryption("gpg", ("ABCD",))),
    ):
        argvs = [encrypt_argv(packing), decrypt_argv(packing, Path("id.key"))]
        for argv in argvs:
            assert not any(a in forbidden or "passphrase" in a for a in argv), argv
    assert "--pinentry-mode" in decrypt_argv(packing, None)


def _children() -> list[str]:
    me = str(os.getpid())
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[1] == me:
                found.append(f"{pid} {fields[0]}")
    return found


def test_a_failure_inside_the_packer_leaves_no_process(tmp_path: Path) -> None:
    run = make_run(tmp_path / "src")
    packing = Packing("zstd", encryption=parse_encrypt([f"age:{age_key(tmp_path / 'k')}"]))
    before = _children()
    with (
        pytest.raises(RuntimeError, match="stop"),
        open(tmp_path / "out", "wb") as out,
        packer(out, packing) as (stream, _),
    ):
        write_tar(stream, run, "run0042")
        raise RuntimeError("stop")
    assert _children() == before


def test_a_failing_destination_stops_the_tool(tmp_path: Path) -> None:
    """The destination's own error comes out, as it would without encryption."""

    class Full:
        def write(self, data: bytes) -> None:
            raise OSError(28, "No space left on device")

        def flush(self) -> None:
            pass

    run = make_run(tmp_path / "src")
    packing = Packing("", encryption=parse_encrypt([f"age:{age_key(tmp_path / 'k')}"]))
    before = _children()
    with (
        pytest.raises(OSError, match="No space left"),
        packer(Full(), packing) as (stream, _),  # type: ignore[arg-type]
    ):
        write_tar(stream, run, "run0042")
    assert _children() == before
