"""``deforhmr eval``: Table-1-style evaluation of one or more models on 3DPW / RICH / 2D sets.

Examples::

    deforhmr eval --model deforhmr-def-m --dataset 3dpw,rich --data-root data/eval \\
        --body-male SMPL_MALE.pkl --body-female SMPL_FEMALE.pkl --output results.json
    deforhmr eval --model a.safetensors --model b.safetensors --dataset my_test.npz --joints lsp14

Needs (user-supplied, not redistributable): the dataset ``.npz`` files and images, SMPL
(neutral for predictions; male/female for gendered ground truth) and the joint regressor of
the chosen protocol (``J_regressor_h36m.npy`` for h36m14, ``SMPL_to_J19.pkl`` for lsp14 and
for PCK on 2D sets). Exit status: 0 success, 1 failure reported as one line, 2 usage error.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from deforhmr_model.cli_errors import guard


def add_eval_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``eval`` to an argparse subparsers object."""
    from deforhmr_model.eval.benchmarks import DATASETS
    p = subparsers.add_parser("eval", help="MPJPE / PA-MPJPE / PVE (mm) and PCK on benchmark files",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", action="append", required=True,
                   help="checkpoint name or .safetensors / HMR 2.0 .ckpt path (repeat for several rows)")
    p.add_argument("--dataset", required=True,
                   help=f"comma-separated names among {sorted(DATASETS)} (files looked up in --data-root) "
                        "or paths to SPIN/ProHMR .npz files")
    p.add_argument("--data-root", default=".", help="folder holding the dataset .npz files (default .)")
    p.add_argument("--image-root", default=None, help="folder the npz 'imgname' paths are relative to "
                                                       "(default: the npz's folder)")
    p.add_argument("--joints", default=None, help="joint protocol: h36m14 (default for 3DPW/RICH), lsp14, smpl24")
    p.add_argument("--regressor", default=None, help="joint regressor file of the protocol (default: searched "
                                                     "in the weights folders by its standard name)")
    p.add_argument("--j19", default=None, help="SMPL_to_J19.pkl for PCK on 2D sets")
    p.add_argument("--body", default=None, help="body for predictions (default: SMPL neutral, else the open body)")
    p.add_argument("--body-male", default=None,
                   help="SMPL male file for gendered ground truth (default: installed SMPL_MALE, if any)")
    p.add_argument("--body-female", default=None,
                   help="SMPL female file for gendered ground truth (default: installed SMPL_FEMALE, if any)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU; default), cpu, cuda, cuda:1, mps")
    p.add_argument("--max-samples", type=int, default=None, help="evaluate only the first N people")
    p.add_argument("--per-sequence", action="store_true", help="also print per-sequence tables")
    p.add_argument("--output", default=None, help="write all results as JSON here (atomic)")
    p.set_defaults(func=guard(_evaluate, "deforhmr eval"))
    return p


def _evaluate(args) -> int:
    import torch
    from deforhmr_model.body.model import BodyModel, default_body_data, find_smpl_file, load_body_data
    from deforhmr_model.network.checkpoint import load_model
    from deforhmr_model.datasets.readers import NpzSource
    from deforhmr_model.device import resolve_device
    from deforhmr_model.files.weights import require_file
    from deforhmr_model.body.joints import load_regressor, make_j24_regressor
    from deforhmr_model.eval.benchmarks import DATASETS
    from deforhmr_model.eval.protocol import Evaluator, format_table, protocol_for, write_reports

    device = resolve_device(args.device)
    body = BodyModel(load_body_data(args.body) if args.body else default_body_data()).to(device)
    gt_bodies = {"n": body}
    for g, gender, path in (("m", "male", args.body_male), ("f", "female", args.body_female)):
        if path is None and body.num_vertices == 6890:      # installed SMPL_MALE / SMPL_FEMALE
            path = find_smpl_file(gender)
        if path:
            gt_bodies[g] = BodyModel(load_body_data(path)).to(device)
    bad = [g for g, b in gt_bodies.items() if b.num_vertices != body.num_vertices]
    if bad:
        raise ValueError(f"ground-truth body models {bad} have a different mesh than the prediction body "
                         f"({body.num_vertices} vertices): use SMPL files of the same topology")
    jobs = []
    for item in [s for s in args.dataset.split(",") if s]:
        if item in DATASETS:
            fname, kind, default_joints = DATASETS[item]
            path = Path(args.data_root) / fname
            name = item
        else:
            path, name = Path(item), Path(item).stem
            kind, default_joints = None, "h36m14"
        src = NpzSource(path, args.image_root)
        if kind is None:
            lab = src.labels(0)
            kind = "3d" if (lab.has_smpl > 0 or (lab.keypoints_3d[:, 3] > 0).any()) else "2d"
        jobs.append((name, src, kind, args.joints or default_joints or "h36m14"))
    models = [(m, load_model(m, device=device)) for m in args.model]
    reports = []
    for name, src, kind, joints in jobs:
        protocol = protocol_for(joints)
        reg = None
        if kind == "3d" and protocol.regressor is not None:
            reg_path = args.regressor or require_file(protocol.regressor, subdirs=("", "smpl"))
            reg = load_regressor(reg_path, protocol.rows, body.num_vertices)
        j24 = make_j24_regressor(body, args.j19).to(device) if kind == "2d" else None
        for model_name, model in models:
            ev = Evaluator(model, body, gt_bodies, protocol, reg, j24=j24, device=device,
                           batch_size=args.batch_size)
            with torch.inference_mode():
                run = ev.evaluate_3d if kind == "3d" else ev.evaluate_2d
                reports.append(run(src, name, Path(str(model_name)).stem, args.max_samples))
    print(format_table(reports, per_sequence=args.per_sequence))
    if args.output:
        write_reports(reports, args.output)
        print(f"wrote {args.output}")
    return 0
