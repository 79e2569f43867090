"""The stages of the main job, the collaborators :class:`~deforhmr_model.pipeline.HMRPipeline` owns.

``HMRPipeline`` decides *what* runs (detection, network or fitting, refinement); each stage
here does one part of *how*:

* :class:`DetectionStage`: people in an image (boxes, COCO-17 keypoints, 33 landmarks) from
  the shipped detectors (``people.detection``), which it creates and caches, or the user's boxes.
* :class:`NetworkStage`: crop every person (256x192, ``people.crop``), one batched network
  forward over all people of all images, weak-perspective camera -> full-image translation
  (``geometry.camera``). Output: a :class:`~deforhmr_model.fitting.fit.FitInit` per image.
* :class:`FitStage`: fit (or refine) the body to each person's 2D keypoints
  (``fitting.fit``). Output: a ``FitInit`` with the fitted parameters.
* :class:`ResultBuilder`: body model forward (vertices, joints, rest shape, 2D joints) ->
  :class:`~deforhmr_model.files.result.ImageResult`.

Units and frames: pixels for image coordinates, metres and the OpenCV camera frame for
translations and joints (see ``files/result.py``).
"""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from deforhmr_model.body.model import BodyModel, BodyModelData
from deforhmr_model.files.result import ImageResult, PersonResult
from deforhmr_model.fitting.fit import EXTRA_NAMES, FitConfig, FitInit, fit_to_keypoints
from deforhmr_model.geometry.camera import MIN_CAM_SCALE, Camera, cam_crop_to_full, perspective_projection
from deforhmr_model.geometry.ground import estimate_ground_plane
from deforhmr_model.network.inference import predict
from deforhmr_model.people.crop import crop_person
from deforhmr_model.people.detection import DEFAULT_MIN_PERSON, DETECTORS, clip_boxes, make_detector

log = logging.getLogger("deforhmr")


@dataclass
class Person:
    """One detected person as the stages see it."""

    bbox: np.ndarray            # (4,) f32 xyxy px
    score: float
    keypoints_coco: np.ndarray  # (17, 3) f32 x px, y px, confidence
    keypoints_extra: np.ndarray | None = None  # (6, 3) heels, toes, hands (fitting.EXTRA_NAMES)
    world_landmarks: np.ndarray | None = None  # (33, 3) BlazePose world landmarks, metres


class DetectionStage:
    """People in an image: the shipped detectors, created on first use and cached here (the
    only cache: their LiteRT interpreters are reused across calls), or a detector object.

    Args:
        detector: "movenet" | "blazepose" (:data:`deforhmr_model.people.detection.DETECTORS`)
            or any ``PersonDetector`` object (used as is; the options below do not apply to it).
        max_people: keep at most this many people per image (highest scores); None: all.
        det_threshold: person score threshold in [0, 1]; None: the detector's default.
        min_person: smallest person looked for, as a fraction of the image's short side.
    Raises:
        ValueError: an unknown detector name.
    """

    CACHE_SIZE = 4

    def __init__(self, detector="movenet", max_people: int | None = None, det_threshold: float | None = None,
                 min_person: float = DEFAULT_MIN_PERSON):
        self.max_people, self.det_threshold, self.min_person = max_people, det_threshold, min_person
        self.cache: dict[tuple, object] = {}
        if detector is None or isinstance(detector, str):
            self.name, self._fixed = str(detector or "movenet").lower(), None
            self._check(self.name)
        else:
            self.name, self._fixed = type(detector).__name__, detector

    @staticmethod
    def _check(name: str) -> None:
        if name not in DETECTORS:
            raise ValueError(f"unknown detector {name!r}; use one of {', '.join(DETECTORS)}")

    def detector(self, detector: str | None = None, det_threshold: float | None = None,
                 min_person: float | None = None, refine_keypoints: bool | None = None):
        """The detector for these settings (None: the stage's); a fixed detector object wins."""
        if self._fixed is not None:
            return self._fixed
        name = str(detector or self.name).lower()
        self._check(name)
        threshold = self.det_threshold if det_threshold is None else float(det_threshold)
        opts = {"min_person": float(self.min_person if min_person is None else min_person)}
        if threshold is not None:
            opts["threshold"] = threshold
        if refine_keypoints is not None:
            opts["refine"] = bool(refine_keypoints)
        key = (name, tuple(sorted(opts.items())))
        if key not in self.cache:
            if len(self.cache) >= self.CACHE_SIZE:
                self.cache.pop(next(iter(self.cache)))
            self.cache[key] = make_detector(name, **opts)
        return self.cache[key]

    def __call__(self, image: np.ndarray, boxes: np.ndarray | None = None, *, detector: str | None = None,
                 det_threshold: float | None = None, min_person: float | None = None,
                 refine_keypoints: bool | None = None, max_people: int | None = None) -> list:
        """Detections (:class:`~deforhmr_model.people.detection.Detection`: box, keypoints,
        world landmarks) for one HxWx3 uint8 RGB image, highest score first.

        ``boxes`` (N,4) xyxy px bypass the person detector: keypoints are estimated inside
        them and the user's boxes (clipped to the image) are kept, one detection per box, in
        order; ValueError for a non-finite box or one with nothing inside the image. The keyword
        options override the stage's settings for this call (ignored with a detector object):
        ``detector`` ("movenet" | "blazepose"), ``det_threshold``, ``min_person``,
        ``refine_keypoints`` (second landmark pass on the rotated ROI), ``max_people`` (0 or
        None: the stage's). Raises ValueError for an unknown detector or a bad image/boxes.
        """
        det = self.detector(detector, det_threshold, min_person, refine_keypoints)
        limit = max_people or self.max_people
        if boxes is not None:  # one result per box, in the boxes' order; the user's box, clipped to the image
            boxes = clip_boxes(boxes, (image.shape[1], image.shape[0])).astype(np.float32)
            dets = det.keypoints_for_boxes(image, boxes)
            return [dataclasses.replace(d, bbox=b) for d, b in zip(dets, boxes)]
        dets = sorted(det.detect(image), key=lambda d: -float(d.score))
        return dets[:limit] if limit else dets


class NetworkStage:
    """A DeforHMR network run over all people of a batch of images.

    Args:
        model: a loaded ``DeforHMR`` (any ``nn.Module`` returning ``HMROutput``), in eval mode.
        device: where the crops go; bf16 autocast on CUDA, batches sized to free memory
            (:func:`deforhmr_model.network.inference.predict`).
        name: short name for results (checkpoint stem or variant).
        smpl_betas: False when the body's shape space is not SMPL's
            (:attr:`BodyModelData.smpl_betas`): the predicted betas are then zeroed.
    """

    def __init__(self, model: torch.nn.Module, device: torch.device, name: str | None,
                 smpl_betas: bool = True):
        self.model, self.device, self.name, self.smpl_betas = model, torch.device(device), name, smpl_betas

    @classmethod
    def load(cls, spec, device: torch.device, dtype: torch.dtype | None = None,
             smpl_betas: bool = True) -> "NetworkStage | None":
        """None for ``spec`` None/""/"none"; a loaded module is moved to ``device``; a name or
        path goes through :func:`deforhmr_model.network.checkpoint.load_model` (raises
        ``MissingModelFileError``/``CheckpointError``)."""
        if spec is None or (isinstance(spec, str) and spec.lower() in ("", "none")):
            return None
        if isinstance(spec, torch.nn.Module):
            model = spec.to(device).eval()
        else:
            from deforhmr_model.network.checkpoint import load_model
            model = load_model(spec, device=device, dtype=dtype).eval()
        return cls(model, device, _model_name(spec, model), smpl_betas)

    def __call__(self, images: Sequence[np.ndarray], people: Sequence[Sequence[Person]],
                 cams: Sequence[Camera]) -> list[FitInit | None]:
        """Per image the network's estimate for its people (None for an image without people).

        images: HxWx3 uint8 RGB; people: per image; cams: per image the photo's camera (its
        focal length converts the crop camera to the full image, as CLIFF does).
        Rotations (P,3,3)/(P,23,3,3), betas (P,10), translation (P,3) metres, camera frame;
        float32 on the CPU.
        """
        crops, owner = [], []
        for i, (im, ppl) in enumerate(zip(images, people)):
            for p in ppl:
                crops.append(crop_person(im, p.bbox))
                owner.append(i)
        if not crops:
            return [None] * len(images)
        # chunks sized to the device's free memory; bf16 autocast on CUDA (network/inference.py)
        pred = predict(self.model, torch.stack([c.image for c in crops]))
        go, bp, betas, cam = pred.global_orient, pred.body_pose, pred.betas, pred.pred_cam.clone()
        if (cam[:, 0] <= MIN_CAM_SCALE).any():
            log.warning("network predicted a non-positive camera scale for %d person(s); clamped",
                        int((cam[:, 0] <= MIN_CAM_SCALE).sum()))
            cam[:, 0] = cam[:, 0].clamp(min=MIN_CAM_SCALE)
        if not self.smpl_betas:  # SMPL-space betas mean nothing on another shape space
            betas = torch.zeros_like(betas)
        centers = torch.tensor(np.stack([c.center for c in crops]), dtype=torch.float32)
        sizes = torch.tensor([c.size for c in crops], dtype=torch.float32)
        img_size = torch.tensor([[images[i].shape[1], images[i].shape[0]] for i in owner], dtype=torch.float32)
        focal = torch.tensor([cams[i].focal_length for i in owner], dtype=torch.float32)
        transl = cam_crop_to_full(cam, centers, sizes, img_size, focal)
        owner_t = torch.tensor(owner)
        out = []
        for i in range(len(images)):
            m = owner_t == i
            out.append(FitInit(go[m].reshape(-1, 3, 3), bp[m], betas[m], transl[m]) if m.any() else None)
        return out


def drop_non_finite(people: list[Person], init: FitInit | None) -> tuple[list[Person], FitInit | None]:
    """The people whose network estimate is finite, and their rows of ``init``.

    A person with NaN/inf in any parameter is an error for that person only: left out with one
    warning line naming the likely cause. Returns the inputs unchanged when all are finite.
    """
    if init is None or not people:
        return people, init
    rows = [t.reshape(len(people), -1) for t in (init.global_orient, init.body_pose, init.betas, init.transl)]
    ok = torch.stack([torch.isfinite(r).all(1) for r in rows]).all(0)
    if bool(ok.all()):
        return people, init
    log.warning("network output is NaN/inf for %d of %d person(s), left out; the model file may hold "
                "damaged weights: download or convert it again", int((~ok).sum()), len(people))
    keep = [k for k in range(len(people)) if bool(ok[k])]
    if not keep:
        return [], None
    idx = torch.tensor(keep)
    return [people[k] for k in keep], FitInit(*(t[idx] for t in (init.global_orient, init.body_pose,
                                                                   init.betas, init.transl)))


class FitStage:
    """Fit the body to the people's 2D keypoints (from ``init`` when given: refinement).

    Args:
        body_data: the body fitted.
        config: :class:`~deforhmr_model.fitting.fit.FitConfig`.
    """

    def __init__(self, body_data: BodyModelData, config: FitConfig):
        self.body_data, self.config = body_data, config

    def __call__(self, people: Sequence[Person], focal: float, pp: tuple[float, float],
                 init: FitInit | None, warm_start: bool = False) -> FitInit | None:
        """Fitted parameters of ``people`` (None when there are none); focal and principal
        point in px. ``warm_start``: ``init`` is the same people's fit in the previous video
        frame (:func:`~deforhmr_model.fitting.fit.fit_to_keypoints`)."""
        if not people:
            return None
        kp = np.stack([p.keypoints_coco for p in people])
        bb = np.stack([p.bbox for p in people])
        none = np.zeros((len(EXTRA_NAMES), 3), np.float32)
        extra = np.stack([p.keypoints_extra if p.keypoints_extra is not None else none for p in people])
        no_world = np.zeros((33, 3), np.float32)
        world = np.stack([p.world_landmarks if p.world_landmarks is not None else no_world for p in people])
        r = fit_to_keypoints(self.body_data, kp, bb, focal, pp, init=init, config=self.config,
                             extra_keypoints=extra, world_landmarks=world, warm_start=warm_start)
        return FitInit(r.global_orient, r.body_pose, r.betas, r.transl)


class ResultBuilder:
    """Body parameters -> :class:`ImageResult` (posed and rest meshes, joints, 2D joints).

    Args:
        body: the :class:`BodyModel` layer (on the pipeline's device).
        body_data: its arrays (faces, skinning weights, names and licence go into the result).
    """

    def __init__(self, body: BodyModel, body_data: BodyModelData):
        self.body, self.body_data = body, body_data

    def __call__(self, cam: Camera, people: Sequence[Person], params: FitInit | None,
                 method: str | list[str], model: dict | None = None) -> ImageResult:
        """``cam`` the photo's camera (its size is the image size); ``method`` one string or one
        per person; ``model`` the result's model info ({"name": ...} or {}). The result gets a
        ground plane (:func:`~deforhmr_model.geometry.ground.estimate_ground_plane`) when
        people's feet are visible."""
        focal, pp, image_size = cam.focal_length, cam.principal_point, cam.size
        out_people = []
        if people and params is not None:
            dev = self.body.v_template.device
            with torch.inference_mode():
                go, bp, betas, tr = (t.to(dev).float() for t in
                                     (params.global_orient, params.body_pose, params.betas, params.transl))
                out = self.body(go, bp, betas, tr)
                rest_v, rest_j = self.body.rest(betas)
                j2d = perspective_projection(out.joints, focal, torch.tensor(pp, device=dev, dtype=torch.float32))
            to_np = lambda t: t.detach().cpu().numpy().astype(np.float32)  # noqa: E731
            for k, p in enumerate(people):
                out_people.append(PersonResult(
                    betas=to_np(betas[k]), global_orient=to_np(go[k]), body_pose=to_np(bp[k]),
                    transl=to_np(tr[k]), rest_vertices=to_np(rest_v[k]), rest_joints=to_np(rest_j[k]),
                    vertices=to_np(out.vertices[k]), joints=to_np(out.joints[k]), joints_2d=to_np(j2d[k]),
                    keypoints_2d=p.keypoints_coco.astype(np.float32), bbox=p.bbox.astype(np.float32),
                    keypoints_extra=(p.keypoints_extra if p.keypoints_extra is not None
                                     else np.zeros((len(EXTRA_NAMES), 3))).astype(np.float32),
                    world_landmarks=(p.world_landmarks if p.world_landmarks is not None
                                     else np.zeros((33, 3))).astype(np.float32),
                    score=p.score, person_index=k,
                    method=method[k] if isinstance(method, list) else method))
        d = self.body_data
        ground = None
        if out_people:
            ground = estimate_ground_plane(np.stack([p.global_orient for p in out_people]),
                                           np.stack([p.vertices for p in out_people]),
                                           np.array([_foot_confidence(p) for p in out_people]))
        return ImageResult(
            people=out_people, image_size=(int(image_size[0]), int(image_size[1])), focal_length=float(focal),
            principal_point=(float(pp[0]), float(pp[1])), focal_source=cam.source, ground_plane=ground,
            faces=np.asarray(d.faces, np.int32),
            lbs_weights=np.asarray(d.lbs_weights, np.float32), parents=np.asarray(d.parents, np.int32),
            joint_names=list(d.joint_names), body_model={"id": d.id, "name": d.name, "license": d.license},
            model=dict(model or {}))


def _foot_confidence(p: PersonResult) -> float:
    """How sure we are that one of the person's feet is seen: the best foot's largest
    ankle/heel/toe confidence."""
    kp, ex = p.keypoints_2d[:, 2], p.keypoints_extra[:, 2]
    return float(max(max(kp[15], ex[0], ex[2]), max(kp[16], ex[1], ex[3])))


def _model_name(spec, model) -> str | None:
    """A short name for results: the checkpoint's file stem or name, else the variant."""
    if isinstance(spec, (str, Path)):
        return Path(spec).stem if str(spec).endswith(".safetensors") else str(spec)
    cfg = getattr(model, "config", None)
    return getattr(cfg, "variant", None) or type(model).__name__
