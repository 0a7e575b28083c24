"""The wheel holds the package and the `softcopy` command, and nothing else; `--version` works.

Offline: the wheel is built from a copy of the source with the venv's own setuptools
(`--no-build-isolation --no-index`). .ci/run also builds the wheel and sdist with
build isolation and installs the wheel into a fresh venv.
"""

from __future__ import annotations

import configparser
import email.parser
import importlib.metadata
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

import softcopy

ROOT = Path(__file__).resolve().parent.parent
# bdist_wheel moved into setuptools in 70.1; before that it needs the `wheel` package.
MIN_SETUPTOOLS = (70, 1)


def _setuptools_version() -> tuple[int, ...] | None:
    try:
        text = importlib.metadata.version("setuptools")
    except importlib.metadata.PackageNotFoundError:
        return None
    return tuple(int(p) for p in text.split(".")[:2] if p.isdigit())


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    found = _setuptools_version()
    if found is None or found < MIN_SETUPTOOLS:
        pytest.skip(
            f"building the wheel offline needs setuptools>={'.'.join(map(str, MIN_SETUPTOOLS))} "
            f"in this venv (found {found}); reinstall the test extra: pip install -e '.[test]'"
        )
    base = tmp_path_factory.mktemp("packaging")
    # Build from a copy: an in-tree build would leave build/ and an egg-info in the checkout.
    src = base / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE", "MANIFEST.in"):
        if (ROOT / name).exists():
            shutil.copy2(ROOT / name, src / name)
    shutil.copytree(
        ROOT / "softcopy", src / "softcopy", ignore=shutil.ignore_patterns("__pycache__")
    )
    dist = base / "dist"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--no-index", "--quiet", "-w", str(dist), str(src)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, f"pip wheel failed:\n{proc.stdout}\n{proc.stderr}"
    wheels = list(dist.glob("softcopy-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


def _dist_info(names: list[str], leaf: str) -> str:
    hits = [n for n in names if n.endswith(f".dist-info/{leaf}") and n.count("/") == 1]
    assert len(hits) == 1, (leaf, hits)
    return hits[0]


def test_wheel_holds_the_package_and_nothing_else(wheel: Path):
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
    package = ROOT / "softcopy"
    modules = sorted(p.relative_to(package).as_posix() for p in package.rglob("*.py"))
    assert "cli/__init__.py" in modules and "copiers/pool.py" in modules
    for module in modules:
        assert f"softcopy/{module}" in names, f"softcopy/{module} missing from {wheel.name}"
    top = {n.split("/", 1)[0] for n in names}
    assert top == {"softcopy", f"softcopy-{softcopy.__version__}.dist-info"}
    assert not [n for n in names if n.startswith(("tests/", "benchmarks/", "docs/"))]


def test_wheel_entry_point_and_metadata(wheel: Path):
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        entry_points = zf.read(_dist_info(names, "entry_points.txt")).decode()
        metadata = zf.read(_dist_info(names, "METADATA")).decode()
    parser = configparser.ConfigParser()
    parser.read_string(entry_points)
    assert parser["console_scripts"]["softcopy"].strip() == "softcopy.cli:entry"

    meta = email.parser.Parser().parsestr(metadata)
    assert meta["Name"] == "softcopy"
    assert meta["Version"] == softcopy.__version__
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert meta["Requires-Python"] == project["requires-python"]
    # every runtime dependency is declared unconditionally (not only under an extra)
    requires = {r.replace(" ", "") for r in meta.get_all("Requires-Dist") or []}
    for dep in project["dependencies"]:
        assert dep.replace(" ", "") in requires, f"{dep} not in Requires-Dist"


def test_version_option_prints_package_version():
    script = Path(sys.executable).with_name("softcopy")
    commands = [[sys.executable, "-m", "softcopy", "--version"]]
    if script.exists():  # the console script installed by pip, as a user runs it
        commands.append([str(script), "--version"])
    for cmd in commands:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == f"softcopy, version {softcopy.__version__}", proc.stdout
