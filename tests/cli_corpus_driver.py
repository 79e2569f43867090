"""Runs many ``deforhmr`` command lines in one process (the CLI's ``main``), for the bad-input corpus.

Usage: ``python tests/cli_corpus_driver.py CASES.json REPORT.json``. CASES is a list of
``{"name", "argv", "enospc_stem"?}``. For each case the driver records the exit code, stdout,
stderr and any exception that escaped ``main`` (with its traceback: the test fails on it).

After the imports, the address space is limited to what the process uses plus
``DEFORHMR_CORPUS_HEADROOM_MB`` (default 1500): a reader that allocated a 4 GB "npz bomb" would
raise MemoryError instead of succeeding. ``enospc_stem`` makes writing that stem's ``.glb`` fail
with ENOSPC (a full disk), after its ``.npz``/``.json``/``.obj`` were written.
"""
from __future__ import annotations

import contextlib
import errno
import io
import json
import logging
import os
import resource
import sys
import traceback

import torch  # noqa: F401  (imported before the limit: torch reserves much address space)

import deforhmr_model.cli as cli
import deforhmr_model.files.export as export
import deforhmr_model.pipeline  # noqa: F401
from deforhmr_model.people import detection  # noqa: F401


def _vm_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def main() -> int:
    cases = json.loads(open(sys.argv[1]).read())
    headroom = int(os.environ.get("DEFORHMR_CORPUS_HEADROOM_MB", "1500")) * 2**20
    limit = _vm_bytes() + headroom
    resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))
    real_glb = export.export_glb
    report = []
    for case in cases:
        stem = case.get("enospc_stem")

        def glb(result, path, *a, _stem=stem, **k):
            if _stem and os.path.basename(str(path)) == f"{_stem}.glb":
                raise OSError(errno.ENOSPC, "No space left on device", str(path))
            return real_glb(result, path, *a, **k)
        export.export_glb = glb
        logging.root.handlers.clear()             # the CLI's basicConfig binds the current stderr
        out, err = io.StringIO(), io.StringIO()
        code, exc = None, None
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = cli.main(case["argv"])
            except SystemExit as e:             # argparse errors
                code = e.code
            except BaseException:               # noqa: BLE001 - recorded, the test fails on it
                exc = traceback.format_exc()
        export.export_glb = real_glb
        report.append({"name": case["name"], "code": code, "stdout": out.getvalue(),
                       "stderr": err.getvalue(), "exception": exc})
    with open(sys.argv[2], "w") as f:
        json.dump({"cases": report, "address_space_limit": limit}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
