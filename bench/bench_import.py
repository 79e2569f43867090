"""Import time of the ComfyUI node pack, each measurement in a fresh Python process.

ComfyUI imports every custom-node folder at start-up; a slow import delays the
whole UI and a failing one hides the pack. This loads the repository root the way
ComfyUI does (``spec_from_file_location`` of ``__init__.py`` as a package) and times
only that import, in three settings:

* ``cold``: a bare interpreter (nothing imported yet) -- the worst case;
* ``after torch``: torch already imported, as it always is inside ComfyUI;
* ``baseline``: ``import torch`` alone in a bare interpreter, measured in the same
  run, so the pack's cost is printed as a ratio to what ComfyUI itself pays.

Each setting runs ``--repeats`` fresh processes; the median is reported. The pack
must import torch/numpy lazily: the cold run also reports whether it pulled them in.

    python bench/bench_import.py [--repeats 5]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

_CHILD = r"""
import importlib.util, json, sys, time
pre = sys.argv[1]
if pre == "torch":
    import torch  # noqa: F401
t0 = time.perf_counter()
if pre == "baseline":
    import torch  # noqa: F401
    n = 0
else:
    spec = importlib.util.spec_from_file_location("ComfyUI_DeforHMR", sys.argv[2] + "/__init__.py",
                                                  submodule_search_locations=[sys.argv[2]])
    m = importlib.util.module_from_spec(spec)
    sys.modules["ComfyUI_DeforHMR"] = m
    spec.loader.exec_module(m)
    n = len(m.NODE_CLASS_MAPPINGS)
dt = time.perf_counter() - t0
print(json.dumps({"seconds": dt, "nodes": n, "torch": "torch" in sys.modules, "numpy": "numpy" in sys.modules}))
"""


def measure(mode: str, repeats: int) -> dict:
    runs = []
    for _ in range(repeats):
        out = subprocess.run([sys.executable, "-c", _CHILD, mode, str(REPO)], capture_output=True, text=True,
                             check=True, cwd="/")
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    return {"median_s": statistics.median(r["seconds"] for r in runs), "runs": runs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    base = measure("baseline", args.repeats)
    cold = measure("cold", args.repeats)
    warm = measure("torch", args.repeats)
    last = cold["runs"][-1]
    print(f"nodes registered: {last['nodes']}; cold import pulled in torch={last['torch']} numpy={last['numpy']}")
    print(f"baseline  import torch:              {base['median_s'] * 1000:8.1f} ms")
    print(f"pack      cold (bare interpreter):   {cold['median_s'] * 1000:8.1f} ms  "
          f"ratio to torch {cold['median_s'] / base['median_s']:.3f}")
    print(f"pack      after torch (as in ComfyUI): {warm['median_s'] * 1000:6.1f} ms  "
          f"ratio to torch {warm['median_s'] / base['median_s']:.3f}")
    print(f"target: cold <= 300 ms -> {'OK' if cold['median_s'] <= 0.3 else 'TOO SLOW'}")


if __name__ == "__main__":
    main()
