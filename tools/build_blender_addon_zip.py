#!/usr/bin/env python3
"""Zip ``blender_addon/`` into an installable Blender add-on / extension.

The zip holds one folder, ``deforhmr_importer/`` (the extension id), with the add-on's
Python files, ``blender_manifest.toml`` and ``README.md``. Blender 4.2+ installs it as an
extension (Edit > Preferences > Get Extensions > Install from Disk); Blender 3.6-4.1
as a legacy add-on (Edit > Preferences > Add-ons > Install).

Usage: python tools/build_blender_addon_zip.py [--out build/deforhmr_importer-0.1.0.zip]
Prints the path of the zip. Standard library only.
"""
from __future__ import annotations

import argparse
import os
import re
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ADDON = ROOT / "blender_addon"
FOLDER = "deforhmr_importer"


def manifest_version() -> str:
    text = (ADDON / "blender_manifest.toml").read_text()
    match = re.search(r'^version\s*=\s*"([^"]+)"', text, re.M)
    if not match:
        raise SystemExit("blender_addon/blender_manifest.toml has no version")
    return match.group(1)


def build(out: Path) -> Path:
    """Write the zip atomically (temporary file + rename) and return its path."""
    files = sorted(p for p in ADDON.rglob("*") if p.is_file() and "__pycache__" not in p.parts
                   and p.suffix in (".py", ".toml", ".md"))
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".zip.tmp", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as f, zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED) as z:
            for p in files:
                z.write(p, f"{FOLDER}/{p.relative_to(ADDON).as_posix()}")
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path,
                        default=ROOT / "build" / f"{FOLDER}-{manifest_version()}.zip")
    print(build(parser.parse_args(argv).out))


if __name__ == "__main__":
    main()
