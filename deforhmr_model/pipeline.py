"""The main job: photo in, every person's SMPL-format body out.

Data flow (``design.md``)::

    image -> load & normalise (image_io) -> detect people: boxes + 2D keypoints (detection)
          -> [checkpoint installed] crop 256x192 (crop) -> DeforHMR forward, batched (model)
             -> weak-perspective camera -> full-image translation (camera)
             -> [refine] 2D pose-guided refinement (fitting)
          -> [no checkpoint] fit the body to the 2D keypoints (fitting)
          -> body model forward: vertices, joints (body) -> ImageResult (result)

Camera: one pinhole camera per photo, shared by its people: the user's focal
length / field of view, else the photo's EXIF, else a standard 30 mm-equivalent
lens (:func:`deforhmr_model.geometry.camera.choose_camera`); principal point at
the image centre; OpenCV camera frame, metres. The result records the focal
length and its source.

``HMRPipeline`` decides what runs; the work is done by its stages (``stages.py``):
``NetworkStage`` (crops + batched forward + camera), ``FitStage`` (fitting/refinement) and
``ResultBuilder`` (body forward -> ``ImageResult``).
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
import logging
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from deforhmr_model.body.model import BodyModel, default_body_data, load_body_data
from deforhmr_model.device import resolve_device
from deforhmr_model.geometry.camera import Camera, choose_camera
from deforhmr_model.people.detection import DEFAULT_MIN_PERSON
from deforhmr_model.fitting.fit import FitConfig, FitInit, extremity_keypoints
from deforhmr_model.files.image_io import load_image, read_exif_focal
from deforhmr_model.files.result import ImageResult
from deforhmr_model.files.weights import WeightStore
from deforhmr_model.stages import DetectionStage, FitStage, NetworkStage, ResultBuilder, drop_non_finite
from deforhmr_model.stages import Person as _Person

log = logging.getLogger("deforhmr")
OVERLAP_CHUNK = 8   # images per network call when detection runs ahead on a thread (GPU only)


class HMRPipeline:
    """Detect, recover and (optionally) refine every person in a photo.

    Args:
        model: "auto" (default: the first installed checkpoint of
            :data:`~deforhmr_model.network.checkpoint.AUTO_MODELS`, else the fit),
            None / "none" (fit to keypoints), a checkpoint name or path
            (see :func:`deforhmr_model.network.checkpoint.load_model`), or a loaded ``DeforHMR``.
        body: None (SMPL neutral if installed, else the shipped open body), a path to an
            SMPL-format ``.npz``/``.pkl``, or a ``BodyModelData``.
        device: torch device for the network and body model; "auto" (default): CUDA, then
            MPS, then CPU (:func:`deforhmr_model.device.resolve_device`).
        refine: run 2D pose-guided refinement after the network (ignored without a network:
            fitting is then the method).
        detector: a shipped detector's name, ``"movenet"`` (default: tiled MoveNet MultiPose +
            BlazePose landmarks) or ``"blazepose"`` (BlazePose's own detector, tiled), both
            shipped (no downloads; :func:`deforhmr_model.people.detection.make_detector`), or
            any ``PersonDetector`` object (used as is: the options below do not apply to it).
        max_people: keep at most this many people per image (highest scores).
        det_threshold: person score threshold in [0, 1]; None: the detector's default
            (movenet 0.2, blazepose 0.5).
        min_person: smallest person the detector looks for, as a fraction of the image's
            short side (0.2 finds small background people, as the COCO/MPII annotations
            require; larger values mean fewer tiles, faster, main subjects only).
        fit_config: :class:`~deforhmr_model.fitting.fit.FitConfig`.
        focal_length: the camera's focal length in px for every photo (overrides EXIF).
        fov: the camera's field of view in degrees across the longer image side (overrides
            EXIF; ``focal_length`` wins if both are given). Neither: EXIF, else a standard lens.
    Raises:
        MissingModelFileError: a named checkpoint/body file is not installed.
        ValueError: focal_length <= 0 or fov outside (0, 180).
        DeviceError: ``device`` is not available here.
    """

    def __init__(self, model="auto", body=None, device: str | torch.device = "auto", refine: bool = False,
                 detector="movenet", max_people: int | None = None, det_threshold: float | None = None,
                 min_person: float = DEFAULT_MIN_PERSON, fit_config: FitConfig | None = None,
                 dtype: torch.dtype | None = None, focal_length: float | None = None, fov: float | None = None):
        self.device = resolve_device(device)
        self.weights = WeightStore()  # this pipeline's model-file search path (files/weights.py)
        choose_camera(640, 480, focal_length, fov)  # validate the overrides now, not per image
        self.focal_length, self.fov = focal_length, fov
        if body is None:
            self.body_data = default_body_data(store=self.weights)
        elif isinstance(body, (str, Path)):
            self.body_data = load_body_data(body)
        else:
            self.body_data = body
        self.body = BodyModel(self.body_data).to(self.device)
        if isinstance(model, str) and model.lower() == "auto":   # method=auto: network if installed
            from deforhmr_model.network.checkpoint import installed_model
            model = installed_model(store=self.weights)
        self.network = self._load_network(model, dtype)
        self.model = self.network.model if self.network is not None else None
        self.model_name = self.network.name if self.network is not None else None
        self.refine = refine
        self.detection = DetectionStage(detector, max_people, det_threshold, min_person)
        self.fitter = FitStage(self.body_data, fit_config or FitConfig())
        self.builder = ResultBuilder(self.body, self.body_data)

    @property
    def fit_config(self) -> FitConfig:
        return self.fitter.config

    # ------------------------------------------------------------------ public API
    @property
    def detector(self):
        """The person detector with the pipeline's settings, created on first use."""
        return self.detection.detector()

    def detect(self, image: np.ndarray, boxes: np.ndarray | None = None, **options) -> list:
        """Detections for one HxWx3 uint8 RGB image, highest score first; ``boxes`` (N,4) xyxy
        px are kept (clipped) with keypoints estimated inside them. See
        :meth:`deforhmr_model.stages.DetectionStage.__call__` for ``options`` and errors."""
        return self.detection(image, boxes, **options)

    def __call__(self, image, boxes: np.ndarray | None = None) -> ImageResult:
        """Run the main job on one image (path, HxWx3 uint8 RGB array or tensor)."""
        return self.run_many([image], [boxes])[0]

    def run_many(self, images: Sequence, boxes: Sequence | None = None, chunk: int = OVERLAP_CHUNK,
                 overlap: bool | None = None) -> list[ImageResult]:
        """Run on several images; the network forward is batched over all people of all images.

        With the network on a GPU, detection (CPU) runs in a background thread ahead of the
        network: images are recovered ``chunk`` at a time as their detections arrive, so the GPU
        does not wait for the detector of the whole batch. The detector stays on one thread
        (its LiteRT interpreters are not thread-safe). ``overlap`` None = only with a network
        on a non-CPU device; True/False force it (results are the same either way).
        """
        loaded, paths, cams = [], [], []
        for img in images:
            loaded.append(load_image(img))
            paths.append(str(img) if isinstance(img, (str, Path)) else None)
            cams.append(self.camera(loaded[-1], img))
        boxes = list(boxes) if boxes is not None else [None] * len(loaded)
        if overlap is None:
            overlap = self.network is not None and self.network.device.type != "cpu"
        if not overlap or len(loaded) <= chunk:
            results = self.recover(loaded, [self.detect(im, b) for im, b in zip(loaded, boxes)], cams)
        else:
            results = []
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="deforhmr-detect") as pool:
                futures = [pool.submit(self.detect, im, b) for im, b in zip(loaded, boxes)]
                for start in range(0, len(loaded), chunk):
                    dets = [f.result() for f in futures[start:start + chunk]]
                    results += self.recover(loaded[start:start + chunk], dets, cams[start:start + chunk])
        for r, p in zip(results, paths):
            r.image_path = p
        return results

    def camera(self, image: np.ndarray, source=None) -> Camera:
        """The camera of one HxWx3 image: the pipeline's ``focal_length``/``fov`` if set, else
        the EXIF of ``source`` (the image's file path or PIL image, if any), else the standard lens."""
        H, W = image.shape[:2]
        exif = read_exif_focal(source) if source is not None and self.focal_length is None \
            and self.fov is None else None
        return choose_camera(W, H, self.focal_length, self.fov, exif)

    def recover(self, images: Sequence[np.ndarray], detections: Sequence[Sequence],
                cameras: Sequence[Camera | None] | None = None) -> list[ImageResult]:
        """Bodies for given detections. images: list of HxWx3 uint8 RGB; detections: per image,
        objects with ``bbox`` (4,), ``score`` and ``keypoints_coco`` (17,3); cameras: per image a
        :class:`~deforhmr_model.geometry.camera.Camera` (None: :meth:`camera` without EXIF)."""
        people = [[_Person(np.asarray(d.bbox, np.float32), float(d.score),
                           np.asarray(d.keypoints_coco, np.float32), _extra_keypoints(d), _world_landmarks(d))
                   for d in dets] for dets in detections]
        cameras = list(cameras) if cameras is not None else [None] * len(images)
        cams = [c if c is not None else self.camera(im) for im, c in zip(images, cameras)]
        init = self._network(images, people, cams) if self.model is not None else [None] * len(images)
        for i, ini in enumerate(init):              # a NaN/inf estimate: an error for that person only
            people[i], init[i] = drop_non_finite(people[i], ini)
        out = []
        for ppl, cam, ini in zip(people, cams, init):
            params, method = self._fit_or_refine(ppl, cam.focal_length, cam.principal_point, ini)
            out.append(self._build_result(ppl, cam, params, method))
        return out

    def refine_result(self, result: ImageResult) -> ImageResult:
        """Re-run 2D pose-guided refinement on an existing result, from its parameters."""
        ppl = [_Person(p.bbox, p.score, p.keypoints_2d, p.keypoints_extra, p.world_landmarks)
               for p in result.people]
        t = lambda k: torch.as_tensor(np.stack([getattr(p, k) for p in result.people]))  # noqa: E731
        init = FitInit(t("global_orient"), t("body_pose"), t("betas"), t("transl")) if ppl else None
        cam = Camera(result.focal_length, result.principal_point, result.image_size, result.focal_source)
        params = self._fit(ppl, cam.focal_length, cam.principal_point, init)
        methods = [p.method if p.method.endswith("+refine") else p.method + "+refine" for p in result.people]
        new = self._build_result(ppl, cam, params, methods)
        new.image_path = result.image_path
        return new

    # ------------------------------------------------------------------ stages
    def _load_network(self, model, dtype) -> NetworkStage | None:
        return NetworkStage.load(model, self.device, dtype, smpl_betas=self.body_data.smpl_betas)

    def _network(self, images, people, cams) -> list[FitInit | None]:
        return self.network(images, people, cams)

    def _fit_or_refine(self, ppl, focal, pp, init):
        if self.model is None:
            return self._fit(ppl, focal, pp, None), "fit"
        if self.refine and init is not None:
            return self._fit(ppl, focal, pp, init), f"network:{self.model_name}+refine"
        return init, f"network:{self.model_name}"

    def _fit(self, ppl, focal, pp, init):
        return self.fitter(ppl, focal, pp, init)

    def _build_result(self, ppl, cam: Camera, params: FitInit | None, method) -> ImageResult:
        model = {"name": self.model_name} if self.model is not None else {}
        return self.builder(cam, ppl, params, method, model)


def _extra_keypoints(det) -> np.ndarray | None:
    """Heels, toes and hands (6,3) from a detection's 33 BlazePose landmarks, if it has them."""
    kp = getattr(det, "keypoints", None)
    if kp is None or np.shape(kp) != (33, 3):
        return None
    return extremity_keypoints(kp)


def _world_landmarks(det) -> np.ndarray | None:
    """A detection's (33,3) BlazePose world landmarks (metres), if its detector gives them."""
    w = getattr(det, "world_landmarks", None)
    if w is None or np.shape(w) != (33, 3):
        return None
    return np.asarray(w, np.float32)
