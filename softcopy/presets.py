"""End rules of real instruments, by name (`--preset`). Each rule's source is in
docs/service.md ("Presets"); options given explicitly override a preset's."""

from __future__ import annotations

from typing import Any

from .errors import ConfigError

PRESETS: dict[str, dict[str, Any]] = {
    "none": {},
    # Illumina: CopyComplete.txt once its ctime is 15 minutes old, as Illumina support
    # recommends (sruns-monitor); RTAComplete.txt where an instrument never writes
    # CopyComplete.txt (NextSeq 2000), only once the whole run is as quiet.
    "illumina": {
        "kind": "directory",
        "sentinels": ("CopyComplete.txt",),
        "sentinel_fallbacks": ("RTAComplete.txt",),
        "sentinel_min_age": 900.0,
    },
    # Oxford Nanopore: MinKNOW writes final_summary.txt (final_summary_*_*.txt since 3.6)
    # when the run ends (Hesiod, TACA).
    "ont": {"kind": "directory", "sentinels": ("final_summary*.txt",), "sentinel_min_age": 60.0},
    # A zarr writer that says it is done with the `complete` marker.
    "zarr": {"kind": "zarr", "complete_marker": "complete"},
}

# What only a run folder has: asking for it with the zarr preset is a contradiction.
_RUN_FOLDER_RULES = ("sentinels", "sentinel_fallbacks", "sentinel_min_age")


def apply_preset(options: dict[str, Any], where: str) -> dict[str, Any]:
    """`options` with the preset's rules filled in where not given explicitly."""
    name = options.get("preset", "none")
    preset = PRESETS[name]
    if name == "zarr":
        given = [o for o in _RUN_FOLDER_RULES if o in options]
        if given or options.get("kind") == "directory":
            what = ", ".join(f"--{o.replace('_', '-').rstrip('s')}" for o in given) or "--kind"
            raise ConfigError(
                where,
                "read options",
                f"--preset zarr ends a zarr archive by its '{preset['complete_marker']}' marker, "
                f"but {what} asks for the end rules of a run folder: drop one of them",
            )
    elif preset and options.get("kind") == "zarr":
        raise ConfigError(
            where,
            "read options",
            f"--preset {name} is for {name} run folders (plain directories), but --kind zarr "
            "was given too: drop one of them",
        )
    merged = dict(preset)
    if "sentinels" in options:  # an explicit sentinel replaces the preset's fallback too
        merged.pop("sentinel_fallbacks", None)
    merged.update(options)
    return merged
