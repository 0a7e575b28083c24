"""`simulate` (a microscope writing a zarr archive) and `demo` (one copied live)."""

from __future__ import annotations

import errno
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from ..config import make_target
from ..engine.runner import StopSignal
from ..errors import EXIT_FAILED, EXIT_OK, ConfigError, SoftcopyError, from_os_error
from ..units import counted
from ..zarr.simulate import FORMATS, LAYOUTS
from .common import quiet_asked
from .copy import copy_all
from .progress import make_reporter
from .signals import guarded

log = logging.getLogger("softcopy")


def _simulation_options(func: Callable) -> Callable:
    options = [
        click.option(
            "--format", "fmt", type=click.Choice(FORMATS), default="v3", show_default=True
        ),
        click.option("--layout", type=click.Choice(LAYOUTS), default="array", show_default=True),
        click.option("--timepoints", type=click.IntRange(min=1), default=10, show_default=True),
        click.option("--interval", type=click.FloatRange(min=0), default=0.2, show_default=True),
        click.option("--shape", default="4,64,64", show_default=True, help="One timepoint: z,y,x."),
        click.option("--chunks", default="1,32,32", show_default=True),
        click.option(
            "--holes",
            type=click.FloatRange(0, 1),
            default=0.0,
            help="Fraction of fill-value chunks.",
        ),
        click.option("--grow/--no-grow", default=False, help="Resize the time axis per timepoint."),
        click.option(
            "--partial-writes", type=click.IntRange(min=1), default=1, help="Slabs per timepoint."
        ),
        click.option(
            "--delete-chunk/--no-delete-chunk", default=False, help="Fill timepoint 0 at the end."
        ),
        click.option("--complete/--no-complete", default=True, help="Touch 'complete' at the end."),
        click.option("--wells", type=click.IntRange(min=1), default=2, show_default=True),
        click.option("--seed", type=int, default=0),
        click.option("--compress/--no-compress", default=True, help="blosc/zstd or raw bytes."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


def _spec(fmt: str, shape: str, chunks: str, **options: Any):
    from ..zarr.simulate import SimulationSpec

    def ints(text: str, name: str) -> tuple[int, ...]:
        try:
            return tuple(int(x) for x in text.split(","))
        except ValueError:
            raise click.BadParameter(
                f"{text!r} is not a comma-separated list of integers", param_hint=name
            ) from None

    try:
        return SimulationSpec(
            format=fmt, shape=ints(shape, "--shape"), chunks=ints(chunks, "--chunks"), **options
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc


@click.command()
@click.argument("destination", type=click.Path(path_type=Path))
@_simulation_options
@click.pass_context
def simulate(ctx: click.Context, destination: Path, **options: Any) -> None:
    """Write a zarr archive with tensorstore the way a microscope does (for demos and tests)."""
    from ..zarr.simulate import simulate as run_simulation

    spec = _spec(**options)

    def body() -> int:
        try:
            summary = run_simulation(destination, spec, log=lambda m: log.info("%s", m))
        except FileExistsError as exc:
            raise ConfigError(destination, "simulate into", _problem(exc, destination)) from None
        except OSError as exc:
            error = from_os_error(exc, "simulate into", destination)
            if exc.errno in _NOT_A_PLACE:  # where it was told to write: exit 2, fix the path
                raise ConfigError(error.path, error.action, error.problem) from None
            raise error from None
        except ValueError as exc:  # tensorstore's way to say a write failed
            code = re.search(r"os_error_code='(\d+)'", str(exc))
            if code is None:
                raise
            problem = (
                f"{os.strerror(int(code[1]))} while writing; what was written stays: remove "
                f"{destination} before simulating into it again"
            )
            raise SoftcopyError(destination, "simulate into", problem) from None
        if not quiet_asked():  # -q: nothing on success, as every command
            click.echo(
                f"simulated {counted(summary['files'], 'file')} "
                f"({counted(summary['bytes'], 'byte')}) in "
                f"{summary['seconds']:.1f} s at {destination}"
            )
        return EXIT_OK

    ctx.exit(guarded(ctx, body))


# A destination the simulator cannot write to at all, as opposed to one that fills up.
_NOT_A_PLACE = frozenset({errno.ENOTDIR, errno.EROFS, errno.EACCES, errno.EPERM, errno.ELOOP})


def _problem(exc: FileExistsError, destination: Path) -> str:
    """The simulator's message names the path and the action already: the problem alone."""
    text = str(exc)
    said = f"cannot simulate into {destination}: "
    if text.startswith(said):
        return text[len(said) :]
    return text.partition(": ")[2] if text.startswith("cannot simulate into ") else text


@click.command()
@click.option("--keep", is_flag=True, help="Keep the demo directory instead of deleting it.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="v3", show_default=True)
@click.option("--layout", type=click.Choice(LAYOUTS), default="ome", show_default=True)
@click.option("--nprocs", type=click.IntRange(min=1), default=2, show_default=True)
@click.pass_context
def demo(ctx: click.Context, keep: bool, fmt: str, layout: str, nprocs: int) -> None:
    """Simulate an acquisition, copy it live, verify, and print a summary."""
    base = Path(tempfile.mkdtemp(prefix="softcopy-demo-"))
    source, destination = base / "acquisition.zarr", base / "copy.zarr"
    click.echo(f"softcopy demo in {base}: a simulated microscope writes {source.name} ...")
    writer = subprocess.Popen(
        [sys.executable, "-m", "softcopy", "simulate", str(source), "--format", fmt,
         "--layout", layout, "--timepoints", "12", "--interval", "0.25", "--holes", "0.1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    code = EXIT_FAILED
    stop = StopSignal()

    def relay_writer() -> None:
        # sys.stderr as it is at each line: above the live table while it is shown
        # (the writer's own writes to the terminal would tear it).
        assert writer.stderr is not None
        for line in writer.stderr:
            print(line, end="", file=sys.stderr, flush=True)

    relay = threading.Thread(target=relay_writer, daemon=True)
    relay.start()

    def watch_writer() -> None:
        if writer.wait() != 0:
            stop.request()  # nothing more will come: stop waiting for it

    threading.Thread(target=watch_writer, daemon=True).start()
    try:
        cfg = make_target(source, destination, {"nprocs": nprocs, "wait_for_source": True}, "demo")
        code = guarded(ctx, lambda: copy_all([cfg], stop, make_reporter()))
        if writer.wait(60) != 0:
            click.echo("softcopy: the simulated writer failed", err=True)
            code = EXIT_FAILED
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
        relay.join(5)
        if keep:
            click.echo(f"kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
    ctx.exit(code)
