"""Annotated video: each frame beside its class-activation heatmap, with the predicted class and probability.

Frames come from a video file or a camera (OpenCV ``VideoCapture``) and are explained in batches. The
label can be smoothed over the last few frames: the mean of their probabilities decides the class shown,
and the heatmap shows that class. The output is written under a temporary name and renamed when
complete, so a failed run leaves no half-written file under the output name. A run stopped by the user
(``q`` in the window, or Ctrl-C) keeps the frames annotated so far in a complete file.
"""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from tqdm import tqdm

from kaggle_sf.atomic import atomic_path
from kaggle_sf.config import CLASSES
from kaggle_sf.explain import CLASS_DESCRIPTIONS
from kaggle_sf.explain.cam import CamModel, class_heatmaps, compute_activations, overlay_heatmap
from kaggle_sf.explain.frames import resize_frames

logger = logging.getLogger(__name__)

FOURCC_BY_SUFFIX = {".mp4": "mp4v", ".avi": "MJPG"}
"""Codec written for each output file suffix; both are in OpenCV's FFmpeg build of opencv-python."""
DEFAULT_FPS = 25.0
"""Frame rate written when the input does not report one (cameras often report 0)."""
WINDOW_NAME = "kaggle_sf: frame | heatmap (press q to stop)"


class VideoError(ValueError):
    """A video cannot be opened, read, written or shown."""


@dataclass(frozen=True)
class VideoReport:
    """The result of an annotation run.

    Attributes:
        output: the annotated video.
        frames: number of frames written.
        seconds: wall-clock time from the first frame read to the output closed.
        predictions: one row per frame: ``frame, classname, probability, c0..c9`` (smoothed probabilities).
    """

    output: Path
    frames: int
    seconds: float
    predictions: pd.DataFrame

    @property
    def frames_per_second(self) -> float:
        """Frames annotated per second of wall-clock time."""
        return self.frames / self.seconds if self.seconds > 0 else math.inf


class PredictionSmoother:
    """Average class probabilities over the last ``window`` frames (1 turns smoothing off)."""

    def __init__(self, window: int) -> None:
        if window < 1:
            raise ValueError(f"smoothing window must be at least 1 frame, got {window}")
        self._recent: deque[np.ndarray] = deque(maxlen=window)

    def update(self, probabilities: np.ndarray) -> np.ndarray:
        """Add one frame's probabilities and return the mean over the window."""
        self._recent.append(np.asarray(probabilities, dtype=np.float64))
        return np.mean(self._recent, axis=0)


# --- Reading and writing -------------------------------------------------------------------------


def open_capture(source: str | int) -> tuple[cv2.VideoCapture, str]:
    """Open a video file, or a camera when ``source`` is an integer (or a string of digits).

    Returns:
        The open capture and a description of the source for messages.

    Raises:
        VideoError: the file is missing, or OpenCV cannot open the file or camera.
    """
    if isinstance(source, int) or str(source).isdigit():
        index = int(source)
        capture = cv2.VideoCapture(index)
        if not capture.isOpened():
            raise VideoError(f"cannot open camera {index}; check that it is connected and not in use, "
                             "or pass a video file to --input")
        return capture, f"camera {index}"
    path = Path(source)
    if not path.is_file():
        raise VideoError(f"video {path} not found")
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        raise VideoError(f"cannot open video {path}: OpenCV (FFmpeg) does not recognise it as a video file")
    return capture, str(path)


def check_video_file(path: str | Path) -> None:
    """Check that a video file opens and has a first frame, before slower work starts.

    Raises:
        VideoError: the file is missing, cannot be opened, or has no frames.
    """
    capture, described = open_capture(str(path))
    try:
        if not capture.read()[0]:
            raise VideoError(f"{described} has no frames to read")
    finally:
        capture.release()


def read_frames(capture: cv2.VideoCapture, max_frames: int | None) -> Iterator[np.ndarray]:
    """Yield RGB frames until the capture ends or ``max_frames`` are read."""
    count = 0
    while max_frames is None or count < max_frames:
        ok, frame = capture.read()
        if not ok:
            return
        count += 1
        yield np.ascontiguousarray(frame[..., ::-1])


def batched(frames: Iterator[np.ndarray], batch_size: int) -> Iterator[list[np.ndarray]]:
    """Group frames into lists of ``batch_size`` (the last one may be shorter)."""
    batch: list[np.ndarray] = []
    for frame in frames:
        batch.append(frame)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def video_codec(output: Path) -> str:
    """Return the FourCC code for an output file, chosen by its suffix.

    Raises:
        VideoError: the suffix is not ``.mp4`` or ``.avi``.
    """
    suffix = Path(output).suffix.lower()
    if suffix not in FOURCC_BY_SUFFIX:
        raise VideoError(f"output {output} must end in {' or '.join(FOURCC_BY_SUFFIX)}, got {suffix or 'no suffix'}")
    return FOURCC_BY_SUFFIX[suffix]


def open_writer(path: Path, output: Path, fps: float, size: tuple[int, int]) -> cv2.VideoWriter:
    """Open a video writer at ``path`` for (width, height) frames, with the codec that ``output`` implies.

    Raises:
        VideoError: OpenCV cannot write the file.
    """
    codec = video_codec(output)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), fps, size)
    if not writer.isOpened():
        raise VideoError(f"cannot write video {output}: OpenCV could not open a {codec} writer")
    return writer


def check_window_support() -> None:
    """Raise VideoError when OpenCV was built without a GUI, so that ``show`` cannot open a window."""
    try:
        cv2.namedWindow(WINDOW_NAME, cv2.WINDOW_NORMAL)
    except cv2.error as error:
        raise VideoError("--show needs OpenCV with window support, but this OpenCV has none (the "
                         "opencv-python-headless build). Install opencv-python in its place, or leave out "
                         "--show") from error


# --- Drawing -------------------------------------------------------------------------------------


def _label(image: np.ndarray, text: str, line: int) -> None:
    """Write a line of white text on a dark band in the image's top-left corner, in place."""
    scale = max(0.4, image.shape[1] / 900)
    thickness = max(1, round(scale * 2))
    (width, height), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    top = 4 + line * (height + baseline + 6)
    cv2.rectangle(image, (0, top), (width + 10, top + height + baseline + 6), (0, 0, 0), thickness=-1)
    cv2.putText(image, text, (5, top + height + 3), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thickness,
                cv2.LINE_AA)


def compose_frame(frame: np.ndarray, heatmap: np.ndarray, classname: str, probability: float,
                  smooth: int) -> np.ndarray:
    """Put an RGB frame and its heatmap overlay side by side, labelled; return the BGR image to write."""
    overlay = overlay_heatmap(frame, heatmap)
    panel = np.ascontiguousarray(np.concatenate([frame, overlay], axis=1)[..., ::-1])
    _label(panel, f"{classname} {CLASS_DESCRIPTIONS[classname]}: {probability:.0%}", 0)
    if smooth > 1:
        _label(panel, f"averaged over {smooth} frames", 1)
    return panel


# --- Annotating ----------------------------------------------------------------------------------


def annotate_video(models: Sequence[CamModel], source: str | int, output: Path, *, smooth: int = 1,
                   show: bool = False, batch_size: int = 8, max_frames: int | None = None,
                   method: str = "auto") -> VideoReport:
    """Write a video of each input frame beside its heatmap, labelled with the predicted class.

    Args:
        models: the fold models of one backbone (probabilities and heatmaps are averaged).
        source: a video file, or a camera index.
        output: the ``.mp4`` or ``.avi`` file to write; its folder is created.
        smooth: number of recent frames whose probabilities are averaged for the label (1: none).
        show: also show each annotated frame in a window; ``q`` in the window stops.
        batch_size: frames explained per forward pass; 1 gives the lowest latency for a live camera.
        max_frames: stop after this many frames (a camera otherwise runs until stopped).
        method: ``auto``, ``cam`` or ``gradcam``.

    Returns:
        The report, including the per-frame predictions.

    Raises:
        VideoError: the source cannot be opened or has no frames, the output cannot be written, or
            ``show`` is asked of an OpenCV without window support.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    video_codec(output)
    if show:
        check_window_support()
    smoother = PredictionSmoother(smooth)
    capture, described = open_capture(source)
    try:
        frames = read_frames(capture, max_frames)
        first = next(frames, None)
        if first is None:
            raise VideoError(f"{described} has no frames to read")
        fps = capture.get(cv2.CAP_PROP_FPS)
        fps = fps if math.isfinite(fps) and fps > 0 else DEFAULT_FPS
        total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        total = min(total, max_frames or total) if total > 0 else max_frames
        height, width = first.shape[:2]

        output = Path(output)
        rows: list[list] = []
        started = time.monotonic()
        with atomic_path(output) as temporary:
            writer = open_writer(temporary, output, fps, (2 * width, height))
            try:
                with tqdm(total=total, desc="annotating", unit="frame", disable=None) as progress:
                    for batch in batched(itertools.chain([first], frames), batch_size):
                        stop = _annotate_batch(models, batch, smoother, smooth, method, writer, show, rows)
                        progress.update(len(batch))
                        if stop:
                            break
            except KeyboardInterrupt:
                logger.info("Stopped by the user; keeping the %d frames annotated so far", len(rows))
            finally:
                writer.release()
        seconds = time.monotonic() - started
    finally:
        capture.release()
        if show:
            cv2.destroyAllWindows()

    predictions = pd.DataFrame(rows, columns=["frame", "classname", "probability", *CLASSES])
    report = VideoReport(output=output, frames=len(rows), seconds=seconds, predictions=predictions)
    logger.info("Annotated %d frames of %s in %.1f s (%.1f frames per second): %s", report.frames, described,
                report.seconds, report.frames_per_second, output)
    return report


def _annotate_batch(models: Sequence[CamModel], batch: list[np.ndarray], smoother: PredictionSmoother,
                    smooth: int, method: str, writer: cv2.VideoWriter, show: bool, rows: list) -> bool:
    """Explain, label and write one batch; return True when the user asked to stop."""
    inputs = resize_frames(batch, models[0].input_size)
    activations = compute_activations(models, inputs)

    # Smoothing runs frame by frame in order, so the heatmaps are computed once the classes are known.
    smoothed = np.stack([smoother.update(row) for row in activations.probabilities])
    classes = smoothed.argmax(axis=1)
    heatmaps = class_heatmaps(activations, classes, method)

    for frame, heatmap, probabilities, index in zip(batch, heatmaps, smoothed, classes):
        classname = CLASSES[index]
        annotated = compose_frame(frame, heatmap, classname, float(probabilities[index]), smooth)
        writer.write(annotated)
        rows.append([len(rows), classname, float(probabilities[index]), *map(float, probabilities)])
        if show:
            # NOTE: unverified: the headless OpenCV that setup.py installs cannot open a window.
            cv2.imshow(WINDOW_NAME, annotated)
            if cv2.waitKey(1) & 0xFF == ord("q"):
                return True
    return False
