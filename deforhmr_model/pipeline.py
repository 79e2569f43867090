"""The main job: photo in, every person's SMPL-format body out.

Data flow (``design.md``)::

    image -> load & normalise (image_io) -> detect people: boxes + 2D keypoints (detection)
          -> [checkpoint installed] crop 256x192 (crop) -> DeforHMR forward, batched (model)
             -> weak-perspective camera -> full-image translation (camera)
             -> [refine] 2D pose-guided refinement (fitting)
          -> [no checkpoint] fit the body to the 2D keypoints (fitting)
          -> body model forward: vertices, joints (body) -> ImageResult (result)

Camera: pinhole with HMR 2.0's focal length ``5000/256 * max(W, H)`` px and the
principal point at the image centre; OpenCV camera frame, metres.
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from deforhmr_model.body.model import BodyModel, default_body_data, load_body_data
from deforhmr_model.geometry.camera import cam_crop_to_full, default_focal_length, perspective_projection
from deforhmr_model.people.crop import crop_person
from deforhmr_model.fitting.fit import FitConfig, FitInit, extremity_keypoints, fit_to_keypoints
from deforhmr_model.files.image_io import load_image
from deforhmr_model.files.result import ImageResult, PersonResult

log = logging.getLogger("deforhmr")


@dataclass
class _Person:
    bbox: np.ndarray          # (4,) xyxy px
    score: float
    keypoints_coco: np.ndarray  # (17,3)
    keypoints_extra: np.ndarray | None = None  # (6,3) heels, toes, hands (fitting.EXTRA_NAMES)


class HMRPipeline:
    """Detect, recover and (optionally) refine every person in a photo.

    Args:
        model: None / "none" (fit to keypoints), a checkpoint name or path
            (see :func:`deforhmr_model.network.checkpoint.load_model`), or a loaded ``DeforHMR``.
        body: None (SMPL neutral if installed, else the shipped open body), a path to an
            SMPL-format ``.npz``/``.pkl``, or a ``BodyModelData``.
        device: torch device for the network and body model.
        refine: run 2D pose-guided refinement after the network (ignored without a network:
            fitting is then the method).
        detector: a ``PersonDetector``; default BlazePose (shipped weights, no downloads).
        max_people: keep at most this many people per image (highest scores).
        det_threshold: detection score threshold in [0, 1].
        min_person: smallest person the default detector looks for, as a fraction of the
            image's short side (0.2 finds small background people, as the COCO/MPII
            annotations require; 0.4 is about 4x faster and finds only main subjects).
        fit_config: :class:`~deforhmr_model.fitting.fit.FitConfig`.
    Raises:
        MissingModelFileError: a named checkpoint/body file is not installed.
    """

    def __init__(self, model=None, body=None, device: str | torch.device = "cpu", refine: bool = False,
                 detector=None, max_people: int | None = None, det_threshold: float = 0.5,
                 min_person: float = 0.2, fit_config: FitConfig | None = None, dtype: torch.dtype | None = None):
        self.device = torch.device(device)
        if body is None:
            self.body_data = default_body_data()
        elif isinstance(body, (str, Path)):
            self.body_data = load_body_data(body)
        else:
            self.body_data = body
        self.body = BodyModel(self.body_data).to(self.device)
        self.model = self._load_network(model, dtype)
        self.model_name = _model_name(model, self.model)
        self.refine = refine
        self.max_people = max_people
        self.det_threshold = det_threshold
        self.min_person = min_person
        self._detector = detector
        self.fit_config = fit_config or FitConfig()

    # ------------------------------------------------------------------ public API
    @property
    def detector(self):
        if self._detector is None:
            from deforhmr_model.people.detection import BlazePoseDetector
            self._detector = BlazePoseDetector(threshold=self.det_threshold, max_people=self.max_people,
                                               min_person=self.min_person)
        return self._detector

    def detect(self, image: np.ndarray, boxes: np.ndarray | None = None) -> list:
        """Detections (boxes + keypoints) for one HxWx3 uint8 RGB image; ``boxes`` (N,4) xyxy
        px bypass the person detector (keypoints are still estimated inside them)."""
        if boxes is not None:  # one result per box, in the boxes' order; the user's box is kept
            boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
            dets = self.detector.keypoints_for_boxes(image, boxes)
            return [dataclasses.replace(d, bbox=b) for d, b in zip(dets, boxes)]
        dets = sorted(self.detector.detect(image), key=lambda d: -float(d.score))
        return dets[: self.max_people] if self.max_people else dets

    def __call__(self, image, boxes: np.ndarray | None = None) -> ImageResult:
        """Run the main job on one image (path, HxWx3 uint8 RGB array or tensor)."""
        return self.run_many([image], [boxes])[0]

    def run_many(self, images: Sequence, boxes: Sequence | None = None) -> list[ImageResult]:
        """Run on several images; the network forward is batched over all people of all images."""
        loaded, paths = [], []
        for img in images:
            loaded.append(load_image(img))
            paths.append(str(img) if isinstance(img, (str, Path)) else None)
        boxes = list(boxes) if boxes is not None else [None] * len(loaded)
        detections = [self.detect(im, b) for im, b in zip(loaded, boxes)]
        results = self.recover(loaded, detections)
        for r, p in zip(results, paths):
            r.image_path = p
        return results

    def recover(self, images: Sequence[np.ndarray], detections: Sequence[Sequence]) -> list[ImageResult]:
        """Bodies for given detections. images: list of HxWx3 uint8 RGB; detections: per image,
        objects with ``bbox`` (4,), ``score`` and ``keypoints_coco`` (17,3)."""
        people = [[_Person(np.asarray(d.bbox, np.float32), float(d.score),
                           np.asarray(d.keypoints_coco, np.float32), _extra_keypoints(d))
                   for d in dets] for dets in detections]
        cams = [self._camera(im) for im in images]
        init = self._network(images, people, cams) if self.model is not None else [None] * len(images)
        out = []
        for im, ppl, (f, pp), ini in zip(images, people, cams, init):
            params, method = self._fit_or_refine(ppl, f, pp, ini)
            out.append(self._build_result(im, ppl, f, pp, params, method))
        return out

    def refine_result(self, result: ImageResult) -> ImageResult:
        """Re-run 2D pose-guided refinement on an existing result, from its parameters."""
        ppl = [_Person(p.bbox, p.score, p.keypoints_2d) for p in result.people]
        t = lambda k: torch.as_tensor(np.stack([getattr(p, k) for p in result.people]))  # noqa: E731
        init = FitInit(t("global_orient"), t("body_pose"), t("betas"), t("transl")) if ppl else None
        params = self._fit(ppl, result.focal_length, result.principal_point, init)
        methods = [p.method if p.method.endswith("+refine") else p.method + "+refine" for p in result.people]
        new = self._build_result(None, ppl, result.focal_length, result.principal_point, params,
                                 methods, image_size=result.image_size)
        new.image_path = result.image_path
        return new

    # ------------------------------------------------------------------ stages
    def _load_network(self, model, dtype):
        if model is None or (isinstance(model, str) and model.lower() in ("", "none")):
            return None
        if isinstance(model, torch.nn.Module):
            return model.to(self.device).eval()
        from deforhmr_model.network.checkpoint import load_model
        return load_model(model, device=self.device, dtype=dtype).eval()

    @staticmethod
    def _camera(image: np.ndarray) -> tuple[float, tuple[float, float]]:
        H, W = image.shape[:2]
        return default_focal_length(W, H), (W / 2.0, H / 2.0)

    def _network(self, images, people, cams) -> list[FitInit | None]:
        crops, owner = [], []
        for i, (im, ppl) in enumerate(zip(images, people)):
            for p in ppl:
                crops.append(crop_person(im, p.bbox))
                owner.append(i)
        if not crops:
            return [None] * len(images)
        x = torch.stack([c.image for c in crops]).to(self.device)
        dev = self.device.type
        with torch.inference_mode(), torch.autocast(dev, dtype=torch.bfloat16, enabled=dev == "cuda"):
            pred = self.model(x)
        go, bp, betas, cam = (t.float().cpu().clone() for t in (pred.global_orient, pred.body_pose, pred.betas, pred.pred_cam))
        if (cam[:, 0] <= 1e-2).any():  # s <= 0 would put the body behind the camera
            log.warning("network predicted a non-positive camera scale for %d person(s); clamped",
                        int((cam[:, 0] <= 1e-2).sum()))
            cam[:, 0] = cam[:, 0].clamp(min=1e-2)
        if self.body_data.id == "open_body":  # SMPL-space betas mean nothing on the open body
            betas = torch.zeros_like(betas)
        centers = torch.tensor(np.stack([c.center for c in crops]), dtype=torch.float32)
        sizes = torch.tensor([c.size for c in crops], dtype=torch.float32)
        img_size = torch.tensor([[images[i].shape[1], images[i].shape[0]] for i in owner], dtype=torch.float32)
        focal = torch.tensor([cams[i][0] for i in owner], dtype=torch.float32)
        transl = cam_crop_to_full(cam, centers, sizes, img_size, focal)
        owner_t = torch.tensor(owner)
        out = []
        for i in range(len(images)):
            m = owner_t == i
            out.append(FitInit(go[m].reshape(-1, 3, 3), bp[m], betas[m], transl[m]) if m.any() else None)
        return out

    def _fit_or_refine(self, ppl, focal, pp, init):
        if self.model is None:
            return self._fit(ppl, focal, pp, None), "fit"
        if self.refine and init is not None:
            return self._fit(ppl, focal, pp, init), f"network:{self.model_name}+refine"
        return init, f"network:{self.model_name}"

    def _fit(self, ppl, focal, pp, init):
        if not ppl:
            return None
        kp = np.stack([p.keypoints_coco for p in ppl])
        bb = np.stack([p.bbox for p in ppl])
        extra = np.stack([p.keypoints_extra if p.keypoints_extra is not None else np.zeros((6, 3), np.float32)
                          for p in ppl])
        r = fit_to_keypoints(self.body_data, kp, bb, focal, pp, init=init, config=self.fit_config,
                             extra_keypoints=extra)
        return FitInit(r.global_orient, r.body_pose, r.betas, r.transl)

    def _build_result(self, image, ppl, focal, pp, params: FitInit | None, method,
                      image_size=None) -> ImageResult:
        if image_size is None:
            image_size = (image.shape[1], image.shape[0])
        people = []
        if ppl and params is not None:
            dev = self.device
            with torch.inference_mode():
                go, bp, betas, tr = (t.to(dev).float() for t in
                                     (params.global_orient, params.body_pose, params.betas, params.transl))
                out = self.body(go, bp, betas, tr)
                rest_v, rest_j = self.body.rest(betas)
                j2d = perspective_projection(out.joints, focal, torch.tensor(pp, device=dev, dtype=torch.float32))
            to_np = lambda t: t.detach().cpu().numpy().astype(np.float32)  # noqa: E731
            for k, p in enumerate(ppl):
                people.append(PersonResult(
                    betas=to_np(betas[k]), global_orient=to_np(go[k]), body_pose=to_np(bp[k]),
                    transl=to_np(tr[k]), rest_vertices=to_np(rest_v[k]), rest_joints=to_np(rest_j[k]),
                    vertices=to_np(out.vertices[k]), joints=to_np(out.joints[k]), joints_2d=to_np(j2d[k]),
                    keypoints_2d=p.keypoints_coco.astype(np.float32), bbox=p.bbox.astype(np.float32),
                    score=p.score, person_index=k,
                    method=method[k] if isinstance(method, list) else method))
        d = self.body_data
        return ImageResult(
            people=people, image_size=(int(image_size[0]), int(image_size[1])), focal_length=float(focal),
            principal_point=(float(pp[0]), float(pp[1])), faces=np.asarray(d.faces, np.int32),
            lbs_weights=np.asarray(d.lbs_weights, np.float32), parents=np.asarray(d.parents, np.int32),
            joint_names=list(d.joint_names), body_model={"id": d.id, "name": d.name, "license": d.license},
            model={"name": self.model_name} if self.model is not None else {})


def _extra_keypoints(det) -> np.ndarray | None:
    """Heels, toes and hands (6,3) from a detection's 33 BlazePose landmarks, if it has them."""
    kp = getattr(det, "keypoints", None)
    if kp is None or np.shape(kp) != (33, 3):
        return None
    return extremity_keypoints(kp)


def _model_name(spec, model) -> str | None:
    """A short name for results: the checkpoint's file stem or name, else the variant."""
    if model is None:
        return None
    if isinstance(spec, (str, Path)):
        return Path(spec).stem if str(spec).endswith(".safetensors") else str(spec)
    cfg = getattr(model, "config", None)
    return getattr(cfg, "variant", None) or type(model).__name__
