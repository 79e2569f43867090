"""The ``deforhmr`` command line: infer, convert-smpl, convert-checkpoint, download, attention, train, eval.

``deforhmr infer INPUT... -o OUTDIR`` writes, per image ``<stem>``:
``<stem>.npz`` + ``<stem>.json`` (result file, see :mod:`deforhmr_model.files.result`),
``<stem>_person<k>.obj`` (one per person), ``<stem>.glb`` (all people, skinned, with
armatures) and ``<stem>_overlay.png`` (or ``.jpg``, ``--overlay-format``). A video file (``.mp4``, ``.mov``, ``.webm``, ``.avi``,
...), or the images of the inputs with ``--sequence``, is one sequence
(:mod:`deforhmr_model.video.sequence`): ``<stem>.npz`` + ``.json`` (sequence result),
``<stem>.glb`` (animated, one rig per track), ``<stem>_track<id>.bvh`` and ``<stem>_overlay.mp4``. Every file is written to a temporary name
and renamed, so an interrupted run never leaves a partial file. Exit status: 0
if at least one image produced output, 1 if none did, 2 for usage errors.
"""
from __future__ import annotations

import argparse
import glob
import logging
import sys
import tempfile
from pathlib import Path

from deforhmr_model.cli_errors import UsageError, guard

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
FORMATS = ("npz", "obj", "glb", "overlay", "bvh")  # obj: photos only; bvh: sequences only
OVERLAY_FORMATS = ("png", "jpg")


def main(argv: list[str] | None = None) -> int:
    """Run ``deforhmr``; every handler runs inside :func:`deforhmr_model.cli_errors.guard`
    (one-line errors, exit status 2 for usage errors); a command group may wrap its handlers
    in its own guard first (``deforhmr train``/``eval``: prefix and exit status 1)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    verbose = getattr(args, "verbose", False)
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(message)s")
    logging.getLogger("deforhmr.device").setLevel(logging.INFO)  # one line: which device "auto" chose
    if verbose:  # third-party native INFO lines (LiteRT's delegate message) only with -v
        logging.getLogger("deforhmr.native").setLevel(logging.INFO)
    if not hasattr(args, "func"):
        parser.print_help()
        return 2
    return guard(args.func, file_error_status=2)(args)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="deforhmr", description="3D human mesh recovery from photos (DeforHMR).")
    sub = p.add_subparsers(metavar="COMMAND")

    inf = sub.add_parser("infer", help="recover every person's 3D body from photos")
    inf.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or glob patterns")
    inf.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="output folder (created)")
    inf.add_argument("--model", default="auto",
                     help="'auto' (default): the installed network (def-m, else hmr2), else the fit; a checkpoint "
                          "name or .safetensors path; 'none' fits the body to the 2D keypoints")
    inf.add_argument("--body", default=None,
                     help="SMPL-format body file (.npz/.pkl); default: SMPL neutral if installed, else the open body")
    inf.add_argument("--device", default="auto",
                     help="auto (CUDA, then MPS, then CPU; default), cpu, cuda, cuda:1, mps")
    inf.add_argument("--refine", action=argparse.BooleanOptionalAction, default=False,
                     help="2D pose-guided refinement after the network (default off)")
    inf.add_argument("--formats", default=",".join(FORMATS),
                     help=f"comma-separated outputs among {','.join(FORMATS)} (default all)")
    inf.add_argument("--overlay-format", choices=OVERLAY_FORMATS, default="png",
                     help="overlay picture format (default png, lossless; jpg is ~10x smaller on big photos)")
    inf.add_argument("--overlay-max-side", type=int, default=0, metavar="PX",
                     help="scale the overlay down so its longer side is at most PX pixels (default 0: "
                          "the photo's own size)")
    inf.add_argument("--max-people", type=int, default=None, help="at most this many people per image")
    inf.add_argument("--detector", choices=("movenet", "blazepose"), default="movenet",
                     help="person detector (both shipped): movenet = MoveNet MultiPose, tiled, + BlazePose "
                          "landmarks (default); blazepose = BlazePose's own detector, tiled")
    inf.add_argument("--det-threshold", type=float, default=None,
                     help="person detection threshold 0..1 (default: the detector's, movenet 0.2, blazepose 0.5)")
    inf.add_argument("--min-person", type=float, default=0.2,
                     help="smallest person to detect, fraction of the image's short side (default 0.2; "
                          "0.4 is ~4x faster and finds only main subjects)")
    inf.add_argument("--boxes", default=None,
                     help="user boxes 'x1,y1,x2,y2[;x1,y1,x2,y2...]' (px) applied to every input, bypassing detection")
    cam = inf.add_mutually_exclusive_group()
    cam.add_argument("--focal", type=float, default=None, metavar="PX",
                     help="camera focal length in pixels (default: from the photo's EXIF, else a standard "
                          "30 mm full-frame-equivalent lens)")
    cam.add_argument("--fov", type=float, default=None, metavar="DEG",
                     help="camera field of view in degrees across the image's longer side (instead of --focal)")
    inf.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    inf.add_argument("--sequence", action="store_true",
                     help="treat the input images (folders/globs, natural order) as the frames of one video")
    inf.add_argument("--fps", type=float, default=None,
                     help="frame rate of an image sequence (default 30), or override a video's")
    inf.add_argument("--smooth", choices=("off", "light", "strong"), default="light",
                     help="temporal smoothing of videos/sequences (default light)")
    inf.add_argument("--foot-lock", action=argparse.BooleanOptionalAction, default=True,
                     help="videos/sequences: keep planted feet from sliding by shifting the body along the "
                          "floor (default on; --no-foot-lock keeps the fitted positions)")
    inf.add_argument("-v", "--verbose", action="store_true")
    inf.set_defaults(func=guard(_cmd_infer, file_error_status=2))

    cs = sub.add_parser("convert-smpl", help="convert an SMPL .pkl (no chumpy needed) to .npz")
    cs.add_argument("src", metavar="PKL")
    cs.add_argument("dst", metavar="NPZ")
    cs.set_defaults(func=guard(_cmd_convert_smpl, file_error_status=2))

    cc = sub.add_parser("convert-checkpoint",
                        help="import an HMR 2.0 .ckpt, a ViTPose .pth or a DeforHMR file to .safetensors")
    cc.add_argument("src")
    cc.add_argument("dst")
    cc.add_argument("--variant", default=None,
                    help="model variant to build around a ViTPose .pth encoder (e.g. def-m); "
                         "an HMR 2.0 .ckpt is always reg-s")
    cc.add_argument("--backbone", default=None, help="encoder size (default: read from the file)")
    cc.add_argument("--dtype", choices=("float32", "bfloat16", "float16"), default=None,
                    help="store the weights in this dtype (default: as loaded)")
    cc.set_defaults(func=guard(_cmd_convert_checkpoint, file_error_status=2))

    for name, mod in (("download", "deforhmr_model.cli_network"), ("attention", "deforhmr_model.cli_network"),
                      ("train", "deforhmr_model.train.cli"), ("eval", "deforhmr_model.eval.cli")):
        try:
            module = __import__(mod, fromlist=["x"])
            getattr(module, f"add_{name}_parser")(sub)
        except ImportError as e:  # keep infer usable if an optional piece is missing
            sp = sub.add_parser(name, help=f"(unavailable: {e})")
            sp.set_defaults(func=lambda a, e=e: (print(f"deforhmr: {e}", file=sys.stderr), 1)[1])
    return p


# ---------------------------------------------------------------------- infer
def expand_inputs(patterns: list[str]) -> tuple[list[Path], list[str]]:
    """Files to process and one-line problems for inputs that match nothing.

    Folders give their image files (:data:`IMAGE_SUFFIXES`), without hidden files and without
    this product's ``*_overlay.png``/``.jpg`` outputs; other files there are counted in one notice line.
    Files named explicitly are always tried."""
    from deforhmr_model.files.output_set import is_output_name
    files, problems = [], []
    for pat in patterns:
        p = Path(pat)
        if p.is_dir():
            entries = sorted(q for q in p.iterdir() if q.is_file() and not q.name.startswith("."))
            found = [q for q in entries if q.suffix.lower() in IMAGE_SUFFIXES and not is_output_name(q.name)]
            if not found:
                problems.append(f"{pat}: folder has no image files ({', '.join(sorted(IMAGE_SUFFIXES))})")
            elif len(found) < len(entries):
                print(f"{pat}: ignoring {len(entries) - len(found)} file(s) that are not photos "
                      f"(other types, or *_overlay.png/.jpg outputs)", file=sys.stderr)
            files.extend(found)
        elif p.is_file():
            files.append(p)
        else:
            hits = sorted(Path(h) for h in glob.glob(pat) if Path(h).is_file())
            if not hits:
                problems.append(f"{pat}: no such file, folder or matching pattern")
            files.extend(hits)
    seen, unique = set(), []
    for f in files:
        if f.resolve() not in seen:
            seen.add(f.resolve())
            unique.append(f)
    return unique, problems


def _parse_boxes(text: str | None):
    if not text:
        return None
    import numpy as np
    try:
        boxes = np.array([[float(v) for v in b.split(",")] for b in text.split(";") if b.strip()], np.float64)
    except ValueError:
        boxes = np.zeros((0, 3))
    if (boxes.ndim != 2 or boxes.shape[1] != 4 or not np.isfinite(boxes).all()
            or (boxes[:, 2:] <= boxes[:, :2]).any()):
        raise UsageError(f"--boxes {text!r}: expected 'x1,y1,x2,y2[;...]' in pixels with x2>x1 and y2>y1")
    return boxes


def _check_output_dir(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=out, prefix=".deforhmr-write-test"):
            pass
    except OSError as e:
        raise UsageError(f"cannot write to output folder {out}: {e.strerror or e}; choose another -o") from None


def _cmd_infer(args) -> int:
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    bad = [f for f in formats if f not in FORMATS]
    if bad or not formats:
        raise UsageError(f"--formats: unknown {bad or formats}; choose among {','.join(FORMATS)}")
    if args.overlay_max_side < 0:
        raise UsageError(f"--overlay-max-side {args.overlay_max_side}: must be 0 (full size) or a number of pixels")
    if not 0.0 < args.min_person <= 1.0:
        raise UsageError(f"--min-person {args.min_person}: must be in (0, 1]")
    if args.det_threshold is not None and not 0.0 <= args.det_threshold <= 1.0:
        raise UsageError(f"--det-threshold {args.det_threshold}: must be between 0 and 1")
    if args.focal is not None and not args.focal > 0:
        raise UsageError(f"--focal {args.focal:g}: must be a positive number of pixels (e.g. 1500)")
    if args.fov is not None and not 0.0 < args.fov < 180.0:
        raise UsageError(f"--fov {args.fov:g}: must be between 0 and 180 degrees (e.g. 60)")
    if args.max_people is not None and args.max_people < 1:
        raise UsageError(f"--max-people {args.max_people}: must be 1 or more (leave it out for everybody)")
    if args.threads is not None and args.threads < 1:
        raise UsageError(f"--threads {args.threads}: must be 1 or more (leave it out for torch's default)")
    if args.fps is not None and not args.fps > 0:
        raise UsageError(f"--fps {args.fps}: must be a positive number of frames per second")
    boxes = _parse_boxes(args.boxes)
    out = Path(args.output)
    _check_output_dir(out)
    files, problems = expand_inputs(args.inputs)
    for msg in problems:
        print(f"skipped: {msg}", file=sys.stderr)
    from deforhmr_model.video.reader import is_video
    videos = [f for f in files if is_video(f)]
    files = [f for f in files if not is_video(f)]
    sequences = [[v] for v in videos]
    if args.sequence and files:
        sequences.append([f for f in files if f.suffix.lower() in IMAGE_SUFFIXES])
        files = []
    if not files and not sequences:
        print("deforhmr: nothing to do: no input files", file=sys.stderr)
        return 1

    import numpy as np
    import torch
    from tqdm import tqdm

    from deforhmr_model.device import DeviceError, resolve_device
    from deforhmr_model.files.image_io import ImageLoadError, load_image
    from deforhmr_model.pipeline import HMRPipeline

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        device = resolve_device(args.device)
    except DeviceError as e:
        raise UsageError(f"--device {e}") from None
    try:
        pipe = HMRPipeline(model=args.model, body=args.body, device=device, refine=args.refine,
                           max_people=args.max_people, det_threshold=args.det_threshold, detector=args.detector,
                           min_person=args.min_person, focal_length=args.focal, fov=args.fov)
    except (RuntimeError, OSError) as e:  # e.g. out of device memory, an unreadable file
        raise UsageError(str(e)) from None

    done, failed, empty = 0, len(problems), 0
    stems: set[str] = set()
    for seq_inputs in sequences:
        ok = _infer_sequence(pipe, seq_inputs, args, out, stems, formats)
        done, failed = done + (ok is True), failed + (ok is False)
        empty += ok is None
    for path in tqdm(files, desc="deforhmr", unit="img", disable=None):
        try:
            image = load_image(path)
        except ImageLoadError as e:
            tqdm.write(f"skipped: {e}", file=sys.stderr)
            failed += 1
            continue
        try:
            result = pipe.recover([image], [pipe.detect(image, boxes)], [pipe.camera(image, path)])[0]
        except (ValueError, RuntimeError, np.linalg.LinAlgError) as e:   # this image only; the batch goes on
            tqdm.write(f"failed: {path}: {_one_line(e)}", file=sys.stderr)
            failed += 1
            continue
        result.image_path = str(path)
        if not result.people:
            tqdm.write(f"no person found: {path}", file=sys.stderr)
            empty += 1
            continue
        stem = _unique_stem(path.stem, stems)
        try:
            written = write_outputs(result, image, out, stem, formats, args.overlay_format,
                                    args.overlay_max_side)
        except (OSError, ValueError) as e:
            tqdm.write(f"failed to write outputs for {path} (none kept): {_one_line(e)}", file=sys.stderr)
            failed += 1
            continue
        done += 1
        n = len(result.people)
        tqdm.write(f"{path}: {n} {'person' if n == 1 else 'people'} -> {', '.join(p.name for p in written)}")
    what = "input(s)" if sequences else "image(s)"
    print(f"deforhmr: {done} {what} written to {out}, {empty} without people, {failed} failed",
          file=sys.stderr)
    return 0 if done else 1


def _infer_sequence(pipe, inputs: list[Path], args, out: Path, stems: set[str], formats) -> bool | None:
    """One video or image sequence -> sequence outputs. True: written, None: no person, False: failed."""
    from tqdm import tqdm

    from deforhmr_model.video.reader import SequenceError, is_video, open_source
    from deforhmr_model.video.sequence import SequenceConfig, recover_sequence, write_sequence_outputs
    try:
        source = open_source(inputs[0] if len(inputs) == 1 and is_video(inputs[0]) else inputs, args.fps)
    except SequenceError as e:
        print(f"skipped: {e}", file=sys.stderr)
        return False
    bar = tqdm(total=source.num_frames or None, desc=source.name, unit="frame", disable=None)
    try:
        seq = recover_sequence(pipe, source, SequenceConfig(smoothing=args.smooth, foot_lock=args.foot_lock),
                               progress=lambda f, n: (bar.update(1), bar.set_postfix(people=n)))
    except (ValueError, RuntimeError) as e:   # SequenceError is a ValueError; this input only
        bar.close()
        print(f"failed: {source.name}: {_one_line(e)}", file=sys.stderr)
        return False
    bar.close()
    if not seq.tracks:
        print(f"no person found: {source.name}", file=sys.stderr)
        return None
    stem = _unique_stem(source.name, stems)
    try:
        written = write_sequence_outputs(seq, source, pipe.body, out, stem, formats)
    except (OSError, ValueError) as e:
        print(f"failed to write outputs for {source.name}: {_one_line(e)}", file=sys.stderr)
        return False
    ids = ", ".join(f"{t.track_id} ({len(t.frames)} frames)" for t in seq.tracks)
    print(f"{source.name}: {seq.num_frames} frames, tracks {ids} -> {', '.join(p.name for p in written)}",
          file=sys.stderr)
    return True


def _unique_stem(stem: str, used: set[str]) -> str:
    cand, k = stem, 1
    while cand in used:
        cand, k = f"{stem}_{k}", k + 1
    used.add(cand)
    return cand


def write_outputs(result, image, out: Path, stem: str, formats, overlay_format: str = "png",
                  overlay_max_side: int = 0) -> list[Path]:
    """Write the requested outputs for one image as one set (:mod:`deforhmr_model.files.output_set`:
    all or nothing; the stem's earlier outputs not in the new set are removed); returns the paths.
    The overlay is ``<stem>_overlay.png`` or ``.jpg`` (``overlay_format``), its longer side at most
    ``overlay_max_side`` pixels (0: the photo's size)."""
    from deforhmr_model.files.export import export_result
    from deforhmr_model.files.output_set import write_output_set

    def write(folder: Path) -> list[Path]:
        written = export_result(result, folder, stem, [f for f in formats if f not in ("overlay", "bvh")])
        if "overlay" in formats:
            from deforhmr_model.files.image_io import fit_max_side, save_jpeg, save_png
            from deforhmr_model.files.render import render_overlay
            picture = fit_max_side(render_overlay(image, result).overlay, overlay_max_side)
            save = save_jpeg if overlay_format == "jpg" else save_png
            written.append(save(folder / f"{stem}_overlay.{overlay_format}", picture))
        return written
    return write_output_set(out, stem, write)


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if isinstance(e, ValueError) else f"{type(e).__name__}: {text}"


# ---------------------------------------------------------------------- converters
def _cmd_convert_smpl(args) -> int:
    from deforhmr_model.body.smpl_io import convert_smpl
    return _convert(convert_smpl, args)


def _cmd_convert_checkpoint(args) -> int:
    import torch

    from deforhmr_model.network.checkpoint import convert_checkpoint
    dtype = getattr(torch, args.dtype) if args.dtype else None
    return _convert(convert_checkpoint, args, variant=args.variant, backbone=args.backbone, dtype=dtype)


def _convert(fn, args, **kwargs) -> int:
    try:
        path = fn(args.src, args.dst, **kwargs)
    except OSError as e:  # a missing source, or a destination folder missing or not writable
        raise UsageError(str(e)) from None
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
