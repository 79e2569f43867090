"""``deforhmr download`` and ``deforhmr attention`` (registered by :mod:`deforhmr_model.cli`).

``deforhmr download NAME [--url URL] [--dest DIR] [--keep-archive]`` installs a known model
(``weights/manifest.json`` "downloads"; ``deforhmr download --list`` lists them) into the
first writable weights folder, where ``--model NAME`` and ``--model auto`` find it.

``deforhmr attention PHOTO -o OUT.png [--model NAME] [--layer L] [--head H] [--query Q]``
draws where the decoder's cross-attention looks for every detected person
(:mod:`deforhmr_model.attention`).
"""
from __future__ import annotations

import sys
from pathlib import Path


def add_download_parser(sub) -> None:
    d = sub.add_parser("download", help="download, verify and install a known model (e.g. hmr2)")
    d.add_argument("name", nargs="?", metavar="NAME", help="model name; --list shows them")
    d.add_argument("--url", default=None,
                   help="fetch from this mirror URL, file:// URL or local file instead of the official URL "
                        "(the same checksum applies)")
    d.add_argument("--dest", default=None, metavar="DIR",
                   help="install folder (default: the first writable of $DEFORHMR_WEIGHTS, ~/.cache/deforhmr)")
    d.add_argument("--keep-archive", action="store_true", help="keep the downloaded archive after extraction")
    d.add_argument("--force", action="store_true", help="download again even if installed")
    d.add_argument("--list", action="store_true", help="list the known models and exit")
    d.set_defaults(func=_cmd_download)


def add_attention_parser(sub) -> None:
    a = sub.add_parser("attention", help="draw where the decoder's cross-attention looks (paper Fig. 1, 5)")
    a.add_argument("image", metavar="PHOTO")
    a.add_argument("-o", "--output", required=True, metavar="OUT.png", help="image to write (PNG)")
    a.add_argument("--model", default="auto",
                   help="checkpoint name or .safetensors path (default auto: the installed network)")
    a.add_argument("--layer", type=int, default=-1, help="decoder layer, 0-based; -1 = last (default)")
    a.add_argument("--head", type=int, default=0, help="cross-attention head, 0-based (default 0)")
    a.add_argument("--query", type=int, default=None,
                   help="query token (25-query models: 0-23 SMPL joints, 24 shape/camera); default: mean of all")
    a.add_argument("--max-people", type=int, default=None, help="at most this many people")
    a.add_argument("--boxes", default=None, help="user boxes 'x1,y1,x2,y2[;...]' px instead of detection")
    a.add_argument("--device", default="auto",
                   help="auto (CUDA, then MPS, then CPU; default), cpu, cuda, cuda:1, mps")
    a.set_defaults(func=_cmd_attention)


def _usage(msg: str):
    from deforhmr_model.cli_errors import UsageError
    return UsageError(msg)


def _cmd_download(args) -> int:
    from deforhmr_model.files.download import DownloadError, download, known_models
    models = known_models()
    if args.list or not args.name:
        for name, m in models.items():
            print(f"{name:12s} {m.file} ({m.approx_size or 'size unknown'}) -> {', '.join(m.installs)}; {m.license}")
        return 0 if args.list else 2
    try:
        report = download(args.name, url=args.url, dest=args.dest, keep_archive=args.keep_archive, force=args.force)
    except DownloadError as e:
        raise _usage(str(e)) from None
    except KeyboardInterrupt:
        print("deforhmr: interrupted; run the same command again to resume the download", file=sys.stderr)
        return 130
    if report.already_installed:
        print(f"{args.name} is already installed in {report.dest} ({', '.join(p.name for p in report.installed)}); "
              "--force downloads it again")
        return 0
    if report.resumed_from:
        print(f"resumed from byte {report.resumed_from}", file=sys.stderr)
    print(f"verified: {report.checksum}", file=sys.stderr)
    for p in report.installed:
        print(f"installed {p}")
    if report.archive:
        print(f"kept {report.archive}")
    return 0


def _cmd_attention(args) -> int:
    import numpy as np

    from deforhmr_model.attention import draw_attention, person_attention
    from deforhmr_model.cli import _check_output_dir, _parse_boxes
    from deforhmr_model.device import DeviceError, resolve_device
    from deforhmr_model.files.image_io import ImageLoadError, load_image, save_png
    from deforhmr_model.files.weights import MissingModelFileError
    from deforhmr_model.network.checkpoint import CheckpointError, installed_model, load_model

    out = Path(args.output)
    if out.suffix.lower() != ".png":
        raise _usage(f"-o {out}: the attention image is written as PNG; use a .png name")
    _check_output_dir(out.parent if str(out.parent) else Path("."))
    boxes = _parse_boxes(args.boxes)
    name = args.model
    if name.lower() == "auto":
        name = installed_model()
        if name is None:
            raise _usage("no network checkpoint is installed, and attention maps need one: run "
                         "`deforhmr download hmr2` (or pass --model PATH.safetensors)")
    if name.lower() == "none":
        raise _usage("--model none has no attention maps; choose a checkpoint (e.g. --model hmr2)")
    try:
        image = load_image(args.image)
    except ImageLoadError as e:
        raise _usage(str(e)) from None
    try:
        device = resolve_device(args.device)
    except DeviceError as e:
        raise _usage(f"--device {e}") from None
    try:
        model = load_model(name, device=device)
    except (MissingModelFileError, CheckpointError) as e:
        raise _usage(str(e)) from None

    from deforhmr_model.pipeline import HMRPipeline
    pipe = HMRPipeline(model=None, max_people=args.max_people, device=device)
    dets = pipe.detect(image, boxes)
    if not dets:
        print(f"no person found: {args.image}", file=sys.stderr)
        return 1
    try:
        people = person_attention(model, image, [np.asarray(d.bbox) for d in dets], layer=args.layer,
                                  head=args.head, query=args.query)
    except ValueError as e:
        raise _usage(str(e)) from None
    save_png(out, draw_attention(image, people))
    kind = people[0].kind
    what = "sampling points" if kind == "deformable" else "attention over the token grid"
    print(f"{args.image}: {len(people)} {'person' if len(people) == 1 else 'people'}, {model.config.variant} "
          f"layer {people[0].layer} head {args.head} ({what}) -> {out}")
    return 0
