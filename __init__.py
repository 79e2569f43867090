"""ComfyUI entry point of the DeforHMR node pack (this folder goes in ``ComfyUI/custom_nodes/``).

Importing it is cheap (no torch, numpy or model files are touched: the node
modules import the library when a node runs) and never needs an optional piece:

* the library ``deforhmr_model`` ships beside this file; when it is not installed
  as a package, this folder is appended to ``sys.path`` (at the end, so ComfyUI's
  own top-level modules such as ``nodes`` keep precedence);
* ``models/deforhmr`` (plus this pack's ``deforhmr_model/weights/``) and ``models/smpl`` are
  registered with ComfyUI's ``folder_paths`` when it is there; a failure is logged,
  never raised;
* a package from ``requirements.txt`` that is not installed is named once in the log, with
  the pip command, and every node raises that same one-line message instead of running.
"""
import importlib.util
import sys
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parent)
if importlib.util.find_spec("deforhmr_model") is None and _ROOT not in sys.path:
    sys.path.append(_ROOT)

if __package__:  # loaded as a package, as ComfyUI loads custom nodes
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS  # noqa: E402
    from .nodes.deps import warn_once  # noqa: E402
    from .nodes.host import register_model_folders  # noqa: E402

    register_model_folders()
    warn_once()  # a package from requirements.txt missing: one log line with the pip command
else:  # imported as a plain module, e.g. by pytest when the folder name is no identifier
    NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS = {}, {}  # (ComfyUI-DeforHMR): nothing to register

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
