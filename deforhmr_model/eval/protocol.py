"""Benchmark evaluation (DeforHMR Table 1): MPJPE, PA-MPJPE, PVE on 3DPW / RICH; PCK on 2D sets.

Protocol (``hmr2_reference.md`` §7):

* **Data**: the field's standard ``.npz`` files (SPIN / ProHMR layout, see
  :mod:`deforhmr_model.datasets.readers`): ``imgname``, ``center``, ``scale`` and
  ground truth as SMPL parameters (``pose``/``shape`` or ``body_pose``/``betas``,
  with ``gender``) or as 3D joints (``S`` / ``extra_keypoints_3d``). Crops: the
  box rule of HMR 2.0, 256x192, no augmentation, no blur.
* **Prediction**: the network's SMPL parameters through the *neutral* body model
  (no translation).
* **Ground truth meshes**: the GT parameters through the gender-specific model
  (``body_male`` / ``body_female``) where the file gives a gender, else neutral;
  when gendered GT is present but those models were not supplied, the neutral
  model is used and the report says so (numbers then differ from published ones).
* **Joints** (:data:`~deforhmr_model.body.joints.PROTOCOLS`): ``h36m14`` (default for
  3DPW and RICH; the 14 LSP joints of ``J_regressor_h36m.npy``, H36M pelvis —
  the SPIN/CLIFF protocol behind most Table-1 baselines), ``lsp14`` (HMR 2.0's:
  ``SMPL_to_J19.pkl``, J19 pelvis) or ``smpl24``. The same regressor is applied to
  predicted and GT vertices. With ``lsp14`` and joint-only GT, the file's J19
  joints are used directly.
* **Alignment**: joints and vertices minus their own pelvis (pred and GT
  separately); PA-MPJPE adds a similarity Procrustes per sample.
* **Units**: metres in, millimetres out. Sequences: the ``sequence`` key if
  present, else the image's folder name (skipping ``cam_XX`` folders).
* **PCK** (2D-only sets): predicted J24 joints projected with the crop camera and
  mapped back to photo pixels; distances in units of the original box's longer
  side (``scale * 200``); joints with GT confidence > 0.5; thresholds 0.05 / 0.1.
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from deforhmr_model.files.atomic import atomic_write
from deforhmr_model.eval.benchmarks import DATASETS  # noqa: F401  (re-exported)
from deforhmr_model.body.joints import PROTOCOLS, JointProtocol
from deforhmr_model.geometry.metrics import mpjpe, pa_mpjpe, pck, pve

@dataclass
class EvalReport:
    """Results of one model on one dataset; errors in mm, PCK in [0, 1]."""

    dataset: str
    model: str
    protocol: str
    samples: int
    overall: dict[str, float]
    per_sequence: dict[str, dict[str, float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def sequence_names(imgnames: list[str], explicit=None) -> list[str]:
    """Sequence per sample: ``explicit`` values, else the image's folder (``cam_XX`` skipped)."""
    if explicit is not None:
        return [str(s) for s in explicit]
    out = []
    for name in imgnames:
        parts = Path(name).parts[:-1]
        parts = [p for p in parts if not re.fullmatch(r"cam_?\d+", p)]
        out.append(parts[-1] if parts else "all")
    return out


def _aggregate(errors: dict[str, torch.Tensor], seqs: list[str]) -> tuple[dict, dict]:
    overall = {k: float(v.mean()) for k, v in errors.items()}
    per = {}
    arr = np.asarray(seqs)
    for s in sorted(set(seqs)):
        m = torch.from_numpy(arr == s)
        per[s] = {k: float(v[m].mean()) for k, v in errors.items()} | {"samples": int(m.sum())}
    return overall, per


class Evaluator:
    """Runs a model over a dataset source and computes the protocol's metrics.

    Args:
        model: a DeforHMR (eval mode is set here).
        body: neutral body model for predictions (``deforhmr_model.body.model.BodyModel``).
        gt_bodies: {'n': neutral, 'm': male, 'f': female} body models for GT meshes
            (missing genders fall back to 'n' with a note).
        protocol: a :class:`JointProtocol`.
        regressor: (rows, V) array for the protocol (None for ``smpl24``).
        j24: optional :class:`~deforhmr_model.body.joints.J24Regressor` (PCK on 2D sets).
        device, batch_size: where and how many crops at a time.
    """

    def __init__(self, model, body, gt_bodies: dict, protocol: JointProtocol, regressor: np.ndarray | None,
                 j24=None, device: str | torch.device = "cpu", batch_size: int = 32):
        self.model, self.body, self.gt_bodies = model.eval(), body, gt_bodies
        self.protocol, self.j24 = protocol, j24
        self.device, self.batch_size = torch.device(device), batch_size
        self.reg = None if regressor is None else torch.as_tensor(regressor, dtype=torch.float32, device=self.device)

    def _predict(self, imgs: np.ndarray):
        """Network on a (B, 3, 256, 192) batch; bf16 autocast on CUDA (the body runs in float32)."""
        x = torch.from_numpy(imgs).to(self.device)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
            return self.model(x)

    def _joints(self, out) -> torch.Tensor:
        j = out.joints if self.reg is None else torch.einsum("jv,bvc->bjc", self.reg, out.vertices)
        return j

    @torch.no_grad()
    def evaluate_3d(self, source, name: str, model_name: str, max_samples: int | None = None) -> EvalReport:
        """MPJPE / PA-MPJPE / PVE (mm) over a 3D source (an ``NpzSource`` with GT)."""
        from deforhmr_model.people.crop import crop_matrix, warp_image
        p = self.protocol
        n = len(source) if max_samples is None else min(len(source), max_samples)
        notes: list[str] = []
        errs: dict[str, list] = {"mpjpe": [], "pa_mpjpe": [], "pve": []}
        for lo in range(0, n, self.batch_size):
            idx = range(lo, min(n, lo + self.batch_size))
            labs = [source.labels(i) for i in idx]
            imgs = np.stack([warp_image(source.image(i), crop_matrix(lab.center, lab.size))
                             for i, lab in zip(idx, labs)])
            pred = self._predict(imgs)
            out = self.body(pred.global_orient.float(), pred.body_pose.float(), pred.betas.float(), None)
            pj = self._joints(out)
            gj, gv = self._ground_truth(labs, notes)
            pel_p = pj[:, list(p.pelvis)].mean(1, keepdim=True)
            pel_g = gj[:, list(p.pelvis)].mean(1, keepdim=True)
            sel = list(p.select)
            a, b = (pj - pel_p)[:, sel].cpu(), (gj - pel_g)[:, sel].cpu()
            errs["mpjpe"].append(mpjpe(a, b))
            errs["pa_mpjpe"].append(pa_mpjpe(a, b))
            if gv is not None:
                errs["pve"].append(pve((out.vertices - pel_p).cpu(), (gv - pel_g).cpu()))
        errors = {k: torch.cat(v) for k, v in errs.items() if v}
        if "pve" not in errors:
            notes.append("PVE not computed: the file has no SMPL ground truth")
        explicit = getattr(source, "sequence", None)
        seqs = sequence_names([source.labels(i).imgname for i in range(n)],
                              None if explicit is None else explicit[:n])
        overall, per = _aggregate(errors, seqs)
        return EvalReport(name, model_name, p.name, n, overall, per, sorted(set(notes)))

    def _ground_truth(self, labs, notes: list[str]):
        """GT joints (B, rows, 3) and vertices (B, V, 3) or None, metres, from SMPL params or joints."""
        from deforhmr_model.geometry.rotation import axis_angle_to_rotmat
        if all(lab.has_smpl > 0 for lab in labs):
            pose = torch.from_numpy(np.stack([lab.pose for lab in labs])).float().to(self.device).reshape(-1, 24, 3)
            betas = torch.from_numpy(np.stack([lab.betas for lab in labs])).float().to(self.device)
            R = axis_angle_to_rotmat(pose)
            outs = []
            for g in sorted({lab.gender for lab in labs}):
                m = torch.tensor([lab.gender == g for lab in labs], device=self.device)
                body = self.gt_bodies.get(g)
                if body is None:
                    body = self.gt_bodies["n"]
                    notes.append(f"gender '{g}' ground truth built with the neutral body "
                                 "(pass --body-male/--body-female for the published protocol)")
                o = body(R[m, 0], R[m, 1:], betas[m], None)
                outs.append((m, o))
            V = outs[0][1].vertices.shape[1]
            verts = torch.zeros(len(labs), V, 3, device=self.device)
            joints = torch.zeros(len(labs), 24, 3, device=self.device)
            for m, o in outs:
                verts[m], joints[m] = o.vertices, o.joints
            if self.reg is not None:
                joints = torch.einsum("jv,bvc->bjc", self.reg, verts)
            return joints, verts
        if self.protocol.name == "lsp14":
            kp = torch.from_numpy(np.stack([lab.keypoints_3d[:19, :3] for lab in labs])).float().to(self.device)
            return kp, None
        raise ValueError(f"protocol {self.protocol.name!r} needs SMPL ground truth (pose/shape) in the "
                         "dataset file; this file has only joints: use --joints lsp14")

    @torch.no_grad()
    def evaluate_2d(self, source, name: str, model_name: str, max_samples: int | None = None,
                    thresholds=(0.05, 0.1)) -> EvalReport:
        """PCK@thresholds over a 2D source (J24 keypoints with confidence)."""
        from deforhmr_model.geometry.camera import crop_projection
        from deforhmr_model.people.crop import crop_matrix, warp_image
        if self.j24 is None:
            raise ValueError("2D evaluation needs a J24 regressor")
        n = len(source) if max_samples is None else min(len(source), max_samples)
        res: dict[float, list] = {t: [] for t in thresholds}
        for lo in range(0, n, self.batch_size):
            idx = range(lo, min(n, lo + self.batch_size))
            labs = [source.labels(i) for i in idx]
            As = [crop_matrix(lab.center, lab.size) for lab in labs]
            imgs = np.stack([warp_image(source.image(i), A) for i, A in zip(idx, As)])
            pred = self._predict(imgs)
            out = self.body(pred.global_orient.float(), pred.body_pose.float(), pred.betas.float(), None)
            uv = crop_projection(self.j24(out.vertices, out.joints), pred.pred_cam.float()).cpu().double()
            px = [_crop_to_photo(u.numpy(), A) for u, A in zip(uv, As)]
            gt = torch.from_numpy(np.stack([lab.keypoints_2d for lab in labs])).double()
            vis = (gt[..., 2] > 0.5) & (self.j24.mask.cpu() > 0)
            norm = torch.tensor([lab.box_side for lab in labs], dtype=torch.float64)
            for t, v in pck(torch.from_numpy(np.stack(px)), gt[..., :2], vis, norm, thresholds).items():
                res[t].append(v)
        overall = {}
        for t, chunks in res.items():
            v = torch.cat(chunks)
            overall[f"pck@{t:g}"] = float(torch.nanmean(v)) if (~v.isnan()).any() else float("nan")
        notes = [] if self.j24.j19 is not None else [
            "J24 joints approximated from the skeleton (SMPL_to_J19.pkl not supplied): PCK is biased"]
        return EvalReport(name, model_name, "j24-2d", n, overall, {}, notes)


def _crop_to_photo(uv: np.ndarray, A: np.ndarray) -> np.ndarray:
    """(K, 2) normalised crop coordinates -> photo pixels, inverting the (2, 3) crop affine."""
    from deforhmr_model.people.crop import CROP_CENTER, CROP_SIZE
    px = uv * CROP_SIZE + CROP_CENTER
    M = np.vstack([A, [0, 0, 1]])
    return (np.c_[px, np.ones(len(px))] @ np.linalg.inv(M).T)[:, :2]


# ----------------------------------------------------------------------------- reporting

_COLUMNS_3D = (("pa_mpjpe", "PA-MPJPE"), ("mpjpe", "MPJPE"), ("pve", "PVE"))


def format_table(reports: list[EvalReport], per_sequence: bool = False) -> str:
    """A Table-1-style text table: one row per model, PA-MPJPE / MPJPE / PVE (mm) per dataset,
    PCK columns for 2D sets; optional per-sequence tables below."""
    datasets = list(dict.fromkeys(r.dataset for r in reports))
    models = list(dict.fromkeys(r.model for r in reports))
    cols = []
    for d in datasets:
        keys = list(dict.fromkeys(k for r in reports if r.dataset == d for k in r.overall))
        names = [(k, n) for k, n in _COLUMNS_3D if k in keys] + [(k, k.upper()) for k in keys if k.startswith("pck")]
        cols += [(d, k, n) for k, n in names]
    head1 = f"{'Method':<24}" + "".join(f"{d:>12}" if i == 0 or cols[i - 1][0] != d else f"{'':>12}"
                                         for i, (d, _, _) in enumerate(cols))
    head2 = f"{'':<24}" + "".join(f"{n:>12}" for _, _, n in cols)
    lines = [head1, head2, "-" * len(head2)]
    for m in models:
        row = f"{m[-24:]:<24}"
        for d, k, _ in cols:
            r = next((r for r in reports if r.model == m and r.dataset == d), None)
            v = r.overall.get(k) if r else None
            row += f"{v * 100:>12.1f}" if (v is not None and k.startswith("pck")) else (
                f"{v:>12.1f}" if v is not None else f"{'-':>12}")
        lines.append(row)
    if per_sequence:
        for r in reports:
            if r.per_sequence:
                lines += ["", f"{r.dataset} / {r.model} per sequence (mm):",
                          f"{'sequence':<32}{'n':>6}" + "".join(f"{n:>12}" for k, n in _COLUMNS_3D if k in r.overall)]
                for s, v in r.per_sequence.items():
                    lines.append(f"{s[-32:]:<32}{v['samples']:>6}" + "".join(
                        f"{v[k]:>12.1f}" for k, _ in _COLUMNS_3D if k in r.overall))
    notes = sorted({f"[{r.dataset}] {n}" for r in reports for n in r.notes})
    return "\n".join(lines + ([""] + notes if notes else []))


def write_reports(reports: list[EvalReport], path: str | Path) -> Path:
    """Write the reports as one JSON document, atomically."""
    doc = _finite({"schema": "deforhmr.eval", "version": 1, "reports": [asdict(r) for r in reports]})
    return atomic_write(path, lambda f: f.write(json.dumps(doc, indent=2, allow_nan=False).encode()))


def _finite(x):
    """NaN/inf -> None, recursively (strict JSON)."""
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_finite(v) for v in x]
    if isinstance(x, float) and not np.isfinite(x):
        return None
    return x


def protocol_for(name: str) -> JointProtocol:
    """A :data:`PROTOCOLS` entry; ValueError listing the choices otherwise."""
    if name not in PROTOCOLS:
        raise ValueError(f"unknown joint protocol {name!r}; choose one of {sorted(PROTOCOLS)}")
    return PROTOCOLS[name]
