#!/usr/bin/env bash
# Create .venv-blender: Blender as a Python module (bpy) for tests/test_blender_addon.py.
#
# bpy needs Python 3.11 and numpy<2, so it cannot share the main .venv (numpy 2).
# Usage: bash tools/setup_blender_venv.sh          (idempotent; ~1 GB, ~20 s from cache)
# Env:   BPY_VERSION   bpy to install (default 5.0.1; 4.2.x-4.5.x also work on 3.11)
#        PYTHON311     Python 3.11 interpreter (default: python3.11)
#        BLENDER_VENV  where to create it (default: <repo>/.venv-blender)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${BLENDER_VENV:-$ROOT/.venv-blender}"
BPY_VERSION="${BPY_VERSION:-5.0.1}"
PYTHON311="${PYTHON311:-python3.11}"

installed() {
  "$VENV/bin/python" - "$BPY_VERSION" <<'PY' 2>/dev/null
import sys
from importlib.metadata import version
ok = version("bpy") == sys.argv[1] and version("numpy").startswith("1.") and version("pytest")
sys.exit(0 if ok else 1)
PY
}

if [ -x "$VENV/bin/python" ] && installed; then
  echo "setup_blender_venv: $VENV already has bpy $BPY_VERSION"
  exit 0
fi

if ! command -v "$PYTHON311" >/dev/null 2>&1 || \
   ! "$PYTHON311" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
  echo "setup_blender_venv: bpy $BPY_VERSION needs Python 3.11; set PYTHON311=/path/to/python3.11" >&2
  exit 1
fi

rm -rf "$VENV"
"$PYTHON311" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
  "bpy==$BPY_VERSION" "numpy==1.26.4" "pytest"
"$VENV/bin/python" -c "import bpy, numpy; print('setup_blender_venv: bpy', bpy.app.version_string, 'numpy', numpy.__version__)"
