"""Packing a run folder: `softcopy copy --pack` against `tar | zstd -T0` and `tar | pigz`.

softcopy packs at its default level (1) on one thread; `zstd -T0` (level 3, every core)
and `pigz` (level 6, every core) are what people type, `zstd -1 -T1` and `pigz -1` the
same level as softcopy's. A FASTQ-like run folder (reads of random bases and
qualities, in files of --file-mb each) is packed by each tool into a fresh folder on
the same disk, then `sync`. For each: wall time, MB/s of source read, CPU-seconds per GB
of source (the tool and its children, user + system), and the archive's size. softcopy's
time includes its verification (the archive read back, decompressed, every member's
BLAKE3 compared); `softcopy verify ARCHIVE` is then timed alone: the time verification
adds. Tools run in turn, round by round, so they share the machine's load; the ratios
are what to compare.

    python benchmarks/pack.py [--mb 512] [--file-mb 64] [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SOFTCOPY = [sys.executable, "-m", "softcopy"]
RUN_OPTIONS = ["--kind", "directory", "--sentinel", "CopyComplete.txt", "--sentinel-min-age", "0"]


def make_run(root: Path, total_mb: int, file_mb: int) -> Path:
    import numpy as np

    run = root / "run0001"
    (run / "fastq").mkdir(parents=True)
    rng = np.random.default_rng(42)
    bases, quals = np.frombuffer(b"ACGT", np.uint8), np.frombuffer(b"FFFF:,F", np.uint8)
    header = b"@A01234:42:HXYZ:1:1101:1:1 1:N:0:ACGTACGT\n"
    for n in range(max(1, total_mb // file_mb)):
        with open(run / "fastq" / f"S{n}_R1_001.fastq", "wb") as f:
            written = 0
            while written < file_mb << 20:
                # 4,096 reads of 150 random bases and qualities from Illumina's binned set:
                # about as compressible as real reads (qualities carry most of the entropy).
                reads = 4096
                record = np.empty((reads, len(header) + 150 + 3 + 150 + 1), np.uint8)
                record[:, : len(header)] = np.frombuffer(header, np.uint8)
                at = len(header)
                record[:, at : at + 150] = bases[rng.integers(0, 4, (reads, 150))]
                record[:, at + 150 : at + 153] = np.frombuffer(b"\n+\n", np.uint8)
                record[:, at + 153 : at + 303] = quals[rng.integers(0, 7, (reads, 150))]
                record[:, -1] = ord("\n")
                f.write(record.tobytes())
                written += record.size
    (run / "RunInfo.xml").write_text("<RunInfo/>\n")
    (run / "CopyComplete.txt").write_text("")
    return run


def source_bytes(run: Path) -> int:
    return sum(p.stat().st_size for p in run.rglob("*") if p.is_file())


def timed(cmd: list[str] | str, shell: bool = False) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the children) of one command, and `sync` after it."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(cmd, shell=shell, check=True, stdout=subprocess.DEVNULL)
    subprocess.run(["sync"], check=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mb", type=int, default=512, help="source size in MB [512]")
    parser.add_argument("--file-mb", type=int, default=64, help="MB per file [64]")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    for tool in ("zstd", "pigz", "tar"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is not installed (apt-get install {tool})")
    base = Path(tempfile.mkdtemp(prefix="softcopy-pack-bench-"))
    try:
        run = make_run(base / "src", args.mb, args.file_mb)
        size = source_bytes(run)
        gb = size / 1e9
        runs: dict[str, list[tuple[float, float, int]]] = {}
        out = base / "out"

        def one(name: str, archive: Path, cmd: list[str] | str, shell: bool = False) -> None:
            if out.exists():
                shutil.rmtree(out)
            out.mkdir()
            wall, cpu = timed(cmd, shell)
            runs.setdefault(name, []).append((wall, cpu, archive.stat().st_size))

        src = str(run)
        for _ in range(args.rounds):
            one(
                "softcopy --pack tar.zst",
                out / "run.tar.zst",
                [*SOFTCOPY, "-q", "copy", "--pack", "tar.zst", *RUN_OPTIONS, src,
                 str(out / "run.tar.zst")],
            )  # fmt: skip
            verify_wall, verify_cpu = timed([*SOFTCOPY, "-q", "verify", str(out / "run.tar.zst")])
            runs.setdefault("softcopy verify (tar.zst)", []).append(
                (verify_wall, verify_cpu, (out / "run.tar.zst").stat().st_size)
            )
            one(
                "tar | zstd -T0",
                out / "run.tar.zst",
                f"tar -C {run.parent} -cf - {run.name} | zstd -q -T0 -3 -o {out}/run.tar.zst",
                shell=True,
            )
            one(
                "tar | zstd -1 -T1",
                out / "run.tar.zst",
                f"tar -C {run.parent} -cf - {run.name} | zstd -q -T1 -1 -o {out}/run.tar.zst",
                shell=True,
            )
            one(
                "softcopy --pack tar.gz",
                out / "run.tar.gz",
                [*SOFTCOPY, "-q", "copy", "--pack", "tar.gz", *RUN_OPTIONS, src,
                 str(out / "run.tar.gz")],
            )  # fmt: skip
            one(
                "tar | pigz -1",
                out / "run.tar.gz",
                f"tar -C {run.parent} -cf - {run.name} | pigz -1 > {out}/run.tar.gz",
                shell=True,
            )
            one(
                "tar | pigz",
                out / "run.tar.gz",
                f"tar -C {run.parent} -cf - {run.name} | pigz > {out}/run.tar.gz",
                shell=True,
            )
        print(f"source: {size / 1e6:.0f} MB in {args.mb // args.file_mb} files; "
              f"{os.cpu_count()} CPUs; median of {args.rounds} rounds")  # fmt: skip
        print(f"{'tool':28} {'wall s':>7} {'MB/s':>7} {'CPU s/GB':>9} {'ratio':>6}")
        for name, results in runs.items():
            wall = statistics.median(r[0] for r in results)
            cpu = statistics.median(r[1] for r in results)
            ratio = statistics.median(r[2] for r in results) / size
            print(f"{name:28} {wall:7.2f} {size / 1e6 / wall:7.1f} {cpu / gb:9.2f} {ratio:6.3f}")
    finally:
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
