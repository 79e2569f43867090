"""Run the Khronos glTF validator (npm ``gltf-validator``) on a GLB file, from Python.

The validator is a devDependency in the repository's ``package.json``; install it once
with ``npm ci --no-audit --no-fund`` at the repository root (it lands in ``node_modules/``,
which git ignores). :func:`validator_missing` says why it cannot run (no node, not
installed), so tests can skip with that message.

Usage from a shell: ``python tests/gltf_validate.py file.glb`` prints the issue summary
and the messages, and exits 1 when there are errors.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "node_modules" / "gltf-validator"
INSTALL = "npm ci --no-audit --no-fund  (at the repository root)"

# Reads the file named by argv[1], validates it, prints the report as JSON.
_SCRIPT = r"""
const fs = require('fs');
const validator = require(process.argv[2]);
const bytes = new Uint8Array(fs.readFileSync(process.argv[1]));
validator.validateBytes(bytes, {maxIssues: 1000}).then(
  (report) => { process.stdout.write(JSON.stringify(report)); },
  (err) => { process.stderr.write(String(err)); process.exit(2); });
"""


def validator_missing() -> str | None:
    """None when the validator can run, else the reason and the install command."""
    if shutil.which("node") is None:
        return "node (Node.js) is not installed; the Khronos glTF validator runs on it"
    if not (PACKAGE / "index.js").is_file():
        return f"the npm package gltf-validator is not installed in {PACKAGE.parent}; run: {INSTALL}"
    return None


def validate(path: str | Path, timeout: float = 120.0) -> dict:
    """Validate a .glb/.gltf file; return the validator's report (``report["issues"]`` has
    ``numErrors``, ``numWarnings``, ``numInfos``, ``numHints`` and ``messages``).

    Raises:
        RuntimeError: the validator is not installed or could not read the file at all.
    """
    why = validator_missing()
    if why:
        raise RuntimeError(why)
    proc = subprocess.run(["node", "-e", _SCRIPT, str(Path(path).resolve()), str(PACKAGE)],
                          capture_output=True, text=True, timeout=timeout, cwd=REPO)
    if proc.returncode != 0:
        raise RuntimeError(f"gltf-validator failed on {path}: {proc.stderr.strip()}")
    return json.loads(proc.stdout)


def summary(report: dict) -> str:
    """One line per issue: severity, code, pointer, message (severity 0 error ... 3 hint)."""
    sev = {0: "ERROR", 1: "WARNING", 2: "INFO", 3: "HINT"}
    return "\n".join(f"{sev.get(m['severity'], m['severity'])} {m['code']} {m.get('pointer', '')}: "
                     f"{m['message']}" for m in report["issues"]["messages"])


if __name__ == "__main__":
    rep = validate(sys.argv[1])
    i = rep["issues"]
    print(f"errors {i['numErrors']} warnings {i['numWarnings']} infos {i['numInfos']} "
          f"hints {i['numHints']}")
    print(summary(rep))
    sys.exit(1 if i["numErrors"] else 0)
