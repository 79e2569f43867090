"""Frames of a video file, an image sequence or an in-memory batch, streamed one at a time.

Decoder: OpenCV (``cv2.VideoCapture``, FFmpeg backend of opencv-python-headless, already a
dependency). It decodes the dev phone clips (H.264 mp4, 1080x1920, 12 fps) and the
PoseTrack mp4 at ~6 ms per 1080p frame, applies the container's rotation metadata, and
reads mp4/mov/avi/webm/mkv; PyAV would add a second FFmpeg build for no gain here.

Every source yields :class:`Frame` objects in display order; only the current frame is
held in memory (a 1-hour clip costs what one frame costs). Frame times are seconds from
the first frame: a video's own timestamps (``CAP_PROP_POS_MSEC``) when they increase, else
``index / fps``; an image sequence's ``index / fps`` with ``fps`` given by the caller.

Errors: :class:`SequenceError` (a ``ValueError``) with one line naming the input and the fix.
A frame of an image sequence that cannot be read is skipped with a warning (its time slot
stays empty); a frame whose size differs from the first frame is skipped the same way.
"""
from __future__ import annotations

import logging
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

log = logging.getLogger("deforhmr")

VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".avi", ".webm", ".mkv", ".m4v"})
DEFAULT_IMAGE_FPS = 30.0
MAX_PIXELS = 8192 * 8192   # larger frames are refused before decoding


class SequenceError(ValueError):
    """A video or image sequence cannot be read; the message names it and the fix."""


@dataclass
class Frame:
    """One frame: ``index`` (0-based, display order), ``time`` (s from the first frame),
    ``image`` (H, W, 3) uint8 RGB, ``name`` (file name of an image-sequence frame, or None)."""

    index: int
    time: float
    image: np.ndarray
    name: str | None = None


class FrameSource:
    """Base of the frame sources: ``fps``, ``num_frames`` (expected, may be an estimate for
    videos), ``size`` (width, height) px, ``name`` (for messages and output stems) and
    iteration over :class:`Frame`. Iterating again starts again from the first frame."""

    fps: float
    num_frames: int
    size: tuple[int, int]
    name: str
    path: str | None = None

    def __iter__(self) -> Iterator[Frame]:  # pragma: no cover - interface
        raise NotImplementedError

    def __len__(self) -> int:
        return self.num_frames


class VideoSource(FrameSource):
    """A video file decoded with OpenCV.

    Args:
        path: ``.mp4``, ``.mov``, ``.avi``, ``.webm``, ``.mkv`` or ``.m4v`` file.
        fps: override the file's frame rate (None: the file's; 30 when the file has none).
    Raises:
        SequenceError: missing/empty file, or OpenCV cannot decode it.
    """

    def __init__(self, path: str | os.PathLike, fps: float | None = None):
        import cv2
        p = Path(path)
        if not p.is_file():
            raise SequenceError(f"{p}: video file not found")
        if p.stat().st_size == 0:
            raise SequenceError(f"{p}: video file is empty (0 bytes)")
        cap = cv2.VideoCapture(str(p))
        try:
            if not cap.isOpened():
                raise SequenceError(f"{p}: cannot decode this video (OpenCV/FFmpeg); re-encode it as H.264 .mp4")
            W, H = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
            file_fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
            n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
        finally:
            cap.release()
        if W <= 0 or H <= 0:
            raise SequenceError(f"{p}: video has no readable frames; re-encode it as H.264 .mp4")
        if W * H > MAX_PIXELS:
            raise SequenceError(f"{p}: frames of {W}x{H} are too large (limit {MAX_PIXELS} pixels); downscale it")
        if fps is None and not (math.isfinite(file_fps) and 0 < file_fps < 1000):
            log.warning("%s: the file has no frame rate; assuming %g fps (set it with --fps)", p, DEFAULT_IMAGE_FPS)
            file_fps = DEFAULT_IMAGE_FPS
        self.path, self.name = str(p), p.stem
        self.fps = float(fps) if fps is not None else file_fps
        self.num_frames, self.size = max(n, 0), (W, H)
        self._override = fps is not None

    def __iter__(self) -> Iterator[Frame]:
        import cv2
        cap = cv2.VideoCapture(self.path)
        try:
            i, t0, last = 0, None, -math.inf
            while True:
                ok, bgr = cap.read()
                if not ok or bgr is None:
                    break
                ms = float(cap.get(cv2.CAP_PROP_POS_MSEC))
                t = i / self.fps
                if not self._override and math.isfinite(ms):
                    t0 = ms if t0 is None else t0
                    if (ms - t0) / 1000.0 > last:
                        t = (ms - t0) / 1000.0
                last = t
                rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                if (rgb.shape[1], rgb.shape[0]) != self.size:  # rotation metadata applied by OpenCV
                    self.size = (rgb.shape[1], rgb.shape[0])
                yield Frame(i, t, rgb)
                i += 1
        finally:
            cap.release()
        if i == 0:
            raise SequenceError(f"{self.path}: no frame could be decoded; re-encode it as H.264 .mp4")
        self.num_frames = i


class ImageSequenceSource(FrameSource):
    """Image files played as a video, in natural sort order (``frame2`` before ``frame10``).

    Args:
        files: the frame files (already expanded from folders/globs).
        fps: frame rate (None: 30, with a note).
        name: a name for messages and outputs (default: the files' folder name).
    Raises:
        SequenceError: no files, or the first readable frame cannot be found.
    """

    def __init__(self, files: Sequence[str | os.PathLike], fps: float | None = None, name: str | None = None):
        from deforhmr_model.files.image_io import ImageLoadError, load_image
        self.files = sorted((Path(f) for f in files), key=_natural_key)
        if not self.files:
            raise SequenceError("image sequence has no files; pass a folder or a glob such as 'frames/*.png'")
        if fps is not None and not (math.isfinite(fps) and fps > 0):
            raise SequenceError(f"frame rate {fps}: must be a positive number of frames per second")
        if fps is None:
            log.info("image sequence: assuming %g fps (set it with --fps)", DEFAULT_IMAGE_FPS)
        self.fps = float(fps) if fps is not None else DEFAULT_IMAGE_FPS
        self.num_frames = len(self.files)
        self.name = name or self.files[0].parent.name or "sequence"
        self.path = str(self.files[0].parent)
        for f in self.files:  # the first readable frame sets the size
            try:
                im = load_image(f)
            except ImageLoadError:
                continue
            self.size = (im.shape[1], im.shape[0])
            break
        else:
            raise SequenceError(f"image sequence {self.name}: none of its {len(self.files)} files is a readable image")

    def __iter__(self) -> Iterator[Frame]:
        from deforhmr_model.files.image_io import ImageLoadError, load_image
        for i, f in enumerate(self.files):
            try:
                im = load_image(f)
            except ImageLoadError as e:
                log.warning("skipped frame %d: %s", i, e)
                continue
            if (im.shape[1], im.shape[0]) != self.size:
                log.warning("skipped frame %d: %s is %dx%d, the sequence is %dx%d", i, f,
                            im.shape[1], im.shape[0], *self.size)
                continue
            yield Frame(i, i / self.fps, im, f.name)


class ArraySource(FrameSource):
    """Frames already in memory: a (T, H, W, 3) array/tensor (ComfyUI IMAGE batch, float 0..1
    or uint8) or a list of images; converted one frame at a time with ``load_image``."""

    def __init__(self, frames, fps: float = DEFAULT_IMAGE_FPS, name: str = "sequence"):
        if not (math.isfinite(fps) and fps > 0):
            raise SequenceError(f"frame rate {fps}: must be a positive number of frames per second")
        if len(frames) == 0:
            raise SequenceError(f"{name}: the batch has no frames")
        self._frames, self.fps, self.name = frames, float(fps), name
        self.num_frames = len(frames)
        first = self._image(0)
        self.size = (first.shape[1], first.shape[0])

    def _image(self, i):
        from deforhmr_model.files.image_io import load_image
        return load_image(self._frames[i])

    def __iter__(self) -> Iterator[Frame]:
        for i in range(self.num_frames):
            yield Frame(i, i / self.fps, self._image(i))


def is_video(path: str | os.PathLike) -> bool:
    """True for a file whose suffix is a video container OpenCV reads (:data:`VIDEO_SUFFIXES`)."""
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def open_source(inputs, fps: float | None = None) -> FrameSource:
    """A :class:`FrameSource` for one video path, or for image files (an image sequence)."""
    if isinstance(inputs, (str, os.PathLike)):
        if is_video(inputs):
            return VideoSource(inputs, fps)
        inputs = [inputs]
    return ImageSequenceSource(list(inputs), fps)


def _natural_key(p: Path):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", p.name)]
