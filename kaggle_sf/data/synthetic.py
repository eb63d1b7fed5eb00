"""Synthetic State Farm dataset: drawn dashboard-camera frames in the competition's file layout.

The toolkit runs on this dataset when there are no competition files and no Kaggle credentials, and the
tests use it. The frames are drawings, not photographs, but they keep the properties of the real data
that decide how a model must be validated:

* Each driver has their own look: car interior colour and texture, window, lighting, clothes, skin and
  hair, seat position and camera placement. All frames of one driver share it.
* Frames of one driver and class are near-duplicates, like consecutive video frames: one pose with a few
  pixels of jitter, sensor noise and JPEG compression.
* The class evidence sits where the real classes differ. It is the hands on the wheel, a phone in the
  right or left hand or at the ear, a hand on the radio, a cup at the mouth, an arm reaching behind the
  seat, a hand at the hair, or the head turned toward the passenger.
* The right-hand and left-hand classes (c1 and c3, c2 and c4) hold the phone at mirrored places about the
  driver's head, so a horizontal flip moves the phone of one class to the side of the other: flipping is
  not a label-preserving augmentation here, as on the real data.
* Test drivers never appear in train.

A classifier therefore scores much better on a random split of the training frames than on a split by
driver, as it does on the real data.
"""

from __future__ import annotations

import csv
import logging
import math
import numbers
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from kaggle_sf.config import CLASSES

logger = logging.getLogger(__name__)

MARKER_NAME = "SYNTHETIC.txt"
"""File at the top of a generated dataset that marks it as synthetic."""

MIN_IMAGE_SIDE = 32
MAX_SUBJECTS = 999  # subject ids are written with three digits, p001 to p999

# Poses are laid out on a 640x480 canvas, the size of the competition's frames, and scaled to the
# requested image size when drawn.
_REFERENCE_WIDTH, _REFERENCE_HEIGHT = 640, 480
_SHIFT = 4  # fractional bits of the coordinates passed to OpenCV's drawing functions
_BODY_PIVOT = np.array([250.0, 360.0])  # the hip: drivers differ in position and size around it

# Positions of the body parts and hand targets of a driver with no offset, in reference pixels. The
# right-hand and left-hand targets mirror each other about the vertical line through the head (x = 230).
_BODY_ANCHORS = {
    "head": (230.0, 117.0),
    "shoulder_near": (215.0, 185.0),
    "shoulder_far": (272.0, 175.0),
    "hip": (250.0, 360.0),
    "knee": (445.0, 330.0),
    "text_right": (185.0, 290.0),
    "text_left": (275.0, 290.0),
    "ear_right": (192.0, 124.0),
    "ear_left": (270.0, 124.0),
    "mouth": (282.0, 150.0),
    "hair": (222.0, 64.0),
}
# Car parts do not move with the driver, only with the camera.
_CAR_ANCHORS = {
    "wheel_high": (588.0, 92.0),
    "wheel_low": (596.0, 285.0),
    "radio": (486.0, 412.0),
    "behind": (70.0, 270.0),
}


@dataclass(frozen=True)
class _Pose:
    """Hand targets, held object and head turn of one class."""

    near_hand: str  # the driver's right hand, on the camera's side
    far_hand: str
    prop: str | None = None  # "phone_text", "phone_ear" or "cup", held by the hand at prop_hand
    prop_hand: str = "near"
    head_turned: bool = False
    lean: float = 0.0  # reference pixels the upper body moves sideways


_POSES = {
    "c0": _Pose("wheel_low", "wheel_high"),
    "c1": _Pose("text_right", "wheel_high", prop="phone_text"),
    "c2": _Pose("ear_right", "wheel_high", prop="phone_ear"),
    "c3": _Pose("wheel_low", "text_left", prop="phone_text", prop_hand="far"),
    "c4": _Pose("wheel_low", "ear_left", prop="phone_ear", prop_hand="far"),
    "c5": _Pose("radio", "wheel_high", lean=12.0),
    "c6": _Pose("mouth", "wheel_high", prop="cup"),
    "c7": _Pose("behind", "wheel_high", lean=-28.0),
    "c8": _Pose("hair", "wheel_high"),
    "c9": _Pose("wheel_low", "wheel_high", head_turned=True),
}


@dataclass(frozen=True)
class _DriverLook:
    """Everything that is the same in all frames of one driver."""

    background: np.ndarray  # RGB image at the output size: interior colour and texture
    window: tuple[int, int, int]
    seat: tuple[int, int, int]
    skin: tuple[int, int, int]
    hair: tuple[int, int, int]
    shirt: tuple[int, int, int]
    trousers: tuple[int, int, int]
    cup: tuple[int, int, int]
    long_sleeves: bool
    glasses: bool
    body_offset: np.ndarray  # reference pixels
    body_scale: float
    camera: np.ndarray  # 2x3 affine map of output pixels: this driver's camera placement
    brightness: float


# ---------------------------------------------------------------------------------------------------
# Drawing in reference coordinates


class _Canvas:
    """An RGB image that is drawn on in reference coordinates, scaled to its own size."""

    def __init__(self, image: np.ndarray) -> None:
        self.image = image
        height, width = image.shape[:2]
        self._scale = np.array([width / _REFERENCE_WIDTH, height / _REFERENCE_HEIGHT])
        self._length_scale = float(self._scale.mean())

    def _point(self, xy) -> tuple[int, int]:
        x, y = np.asarray(xy, dtype=float) * self._scale * (1 << _SHIFT)
        return round(float(x)), round(float(y))

    def _size(self, length: float) -> int:
        return max(1, round(length * self._length_scale * (1 << _SHIFT)))

    def _thickness(self, width: float) -> int:
        return max(1, round(width * self._length_scale))

    def ellipse(self, centre, axes, angle: float, colour, width: float = -1) -> None:
        thickness = -1 if width < 0 else self._thickness(width)
        size = (self._size(axes[0]), self._size(axes[1]))
        cv2.ellipse(self.image, self._point(centre), size, angle, 0, 360, colour, thickness,
                    cv2.LINE_AA, _SHIFT)

    def circle(self, centre, radius: float, colour) -> None:
        cv2.circle(self.image, self._point(centre), self._size(radius), colour, -1, cv2.LINE_AA, _SHIFT)

    def polygon(self, points, colour) -> None:
        pixels = np.array([self._point(point) for point in points], dtype=np.int32)
        cv2.fillPoly(self.image, [pixels], colour, cv2.LINE_AA, _SHIFT)

    def line(self, start, end, colour, width: float) -> None:
        cv2.line(self.image, self._point(start), self._point(end), colour, self._thickness(width),
                 cv2.LINE_AA, _SHIFT)

    def box(self, centre, size, angle: float, colour) -> None:
        corners = cv2.boxPoints(((float(centre[0]), float(centre[1])), size, angle))
        self.polygon(corners, colour)


def _elbow(shoulder: np.ndarray, hand: np.ndarray, segment: float) -> np.ndarray:
    """Return the elbow of a two-segment arm from shoulder to hand, bent downward."""
    middle = (shoulder + hand) / 2
    span = float(np.linalg.norm(hand - shoulder))
    if span >= 2 * segment or span == 0:
        return middle
    normal = np.array([-(hand - shoulder)[1], (hand - shoulder)[0]]) / span
    if normal[1] < 0:
        normal = -normal
    return middle + normal * math.sqrt(segment**2 - (span / 2) ** 2)


# ---------------------------------------------------------------------------------------------------
# Per-driver look


def _random_colour(rng: np.random.Generator, low: int = 30, high: int = 230) -> tuple[int, int, int]:
    return tuple(int(value) for value in rng.integers(low, high, size=3))


def _background_texture(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Draw a car interior: a base colour with blotches of light and a faint striped upholstery."""
    base = rng.uniform(40, 200, size=3)
    blotches = cv2.resize(rng.normal(0, 28, size=(4, 5, 3)), (width, height), interpolation=cv2.INTER_CUBIC)

    angle = rng.uniform(0, math.pi)
    period = rng.uniform(0.04, 0.12) * width
    ys, xs = np.mgrid[0:height, 0:width]
    phase = (xs * math.cos(angle) + ys * math.sin(angle)) * 2 * math.pi / period
    stripes = rng.uniform(6, 16) * np.sin(phase)[..., None]

    return np.clip(base + blotches + stripes, 0, 255).astype(np.uint8)


def _camera_placement(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    angle = rng.uniform(-3.0, 3.0)
    scale = rng.uniform(0.95, 1.05)
    camera = cv2.getRotationMatrix2D((width / 2, height / 2), angle, scale)
    camera[:, 2] += rng.uniform(-0.03, 0.03, size=2) * (width, height)
    return camera


def _make_driver_look(rng: np.random.Generator, width: int, height: int) -> _DriverLook:
    skin_tone = rng.uniform()
    skin = (1 - skin_tone) * np.array([238, 203, 178]) + skin_tone * np.array([92, 58, 42])
    trousers = [(196, 170, 120), (52, 70, 110), (35, 35, 40), (120, 120, 125), (90, 70, 50)]
    return _DriverLook(
        background=_background_texture(rng, width, height),
        window=_random_colour(rng, 150, 250),
        seat=_random_colour(rng, 60, 220),
        skin=tuple(int(value) for value in skin),
        hair=_random_colour(rng, 10, 110),
        shirt=_random_colour(rng),
        trousers=trousers[rng.integers(len(trousers))],
        cup=_random_colour(rng, 120, 255),
        long_sleeves=bool(rng.uniform() < 0.6),
        glasses=bool(rng.uniform() < 0.3),
        body_offset=rng.uniform((-20, -12), (20, 12)),
        body_scale=float(rng.uniform(0.93, 1.07)),
        camera=_camera_placement(rng, width, height),
        brightness=float(rng.uniform(0.75, 1.2)),
    )


# ---------------------------------------------------------------------------------------------------
# Drawing one frame


def _body_anchors(look: _DriverLook, pose: _Pose, hand_offsets: np.ndarray) -> dict[str, np.ndarray]:
    """Place the driver's body parts and the two hands, in reference pixels."""
    anchors = {}
    for name, xy in _BODY_ANCHORS.items():
        anchors[name] = _BODY_PIVOT + look.body_scale * (np.array(xy) - _BODY_PIVOT) + look.body_offset
    for name in ("head", "shoulder_near", "shoulder_far", "ear_right", "ear_left", "mouth", "hair"):
        anchors[name] = anchors[name] + (pose.lean, 0.0)
    for name, xy in _CAR_ANCHORS.items():
        anchors[name] = np.array(xy)

    anchors["near_hand"] = anchors[pose.near_hand] + hand_offsets[0]
    anchors["far_hand"] = anchors[pose.far_hand] + hand_offsets[1]
    return anchors


def _draw_car(canvas: _Canvas, look: _DriverLook) -> None:
    dark = (28, 28, 32)
    canvas.polygon([(70, 0), (640, 0), (640, 130), (330, 150), (120, 170)], look.window)
    canvas.polygon([(0, 0), (70, 0), (125, 175), (0, 215)], dark)
    canvas.polygon([(430, 480), (470, 340), (640, 300), (640, 480)], (45, 45, 50))
    canvas.box((500, 420), (110, 70), 0, (20, 20, 24))
    for index in range(3):
        canvas.circle((470 + 30 * index, 405), 8, (150, 150, 160))
    canvas.ellipse((605, 190), (48, 128), 0, dark, width=18)


def _draw_driver(canvas: _Canvas, look: _DriverLook, pose: _Pose, anchors: dict[str, np.ndarray]) -> None:
    """Draw the seat, the driver and what the driver holds, back to front."""
    scale = look.body_scale
    head, hip = anchors["head"], anchors["hip"]
    canvas.ellipse(hip + scale * np.array([-65.0, -110.0]), (80 * scale, 175 * scale), -12, look.seat)
    canvas.ellipse(head + scale * np.array([-55.0, -5.0]), (38 * scale, 52 * scale), -10, look.seat)
    canvas.line(hip, anchors["knee"], look.trousers, 80 * scale)
    canvas.line(anchors["knee"], anchors["knee"] + (60, 160), look.trousers, 70 * scale)

    _draw_arm(canvas, look, anchors["shoulder_far"], anchors["far_hand"])
    torso = [anchors["shoulder_near"] + (-30, -10), anchors["shoulder_far"] + (25, -5),
             hip + (55, 10), hip + (-60, 10)]
    canvas.polygon(torso, look.shirt)
    _draw_head(canvas, look, head, scale, pose.head_turned)
    _draw_arm(canvas, look, anchors["shoulder_near"], anchors["near_hand"])

    if pose.prop is not None:
        _draw_prop(canvas, look, pose.prop, anchors[f"{pose.prop_hand}_hand"])
    canvas.circle(anchors["near_hand"], 16 * scale, look.skin)
    canvas.circle(anchors["far_hand"], 15 * scale, look.skin)


def _draw_arm(canvas: _Canvas, look: _DriverLook, shoulder: np.ndarray, hand: np.ndarray) -> None:
    elbow = _elbow(shoulder, hand, segment=115 * look.body_scale)
    forearm = look.shirt if look.long_sleeves else look.skin
    outline = (20, 20, 20)
    canvas.line(shoulder, elbow, outline, 40 * look.body_scale)
    canvas.line(elbow, hand, outline, 32 * look.body_scale)
    canvas.line(shoulder, elbow, look.shirt, 34 * look.body_scale)
    canvas.line(elbow, hand, forearm, 26 * look.body_scale)


def _draw_head(canvas: _Canvas, look: _DriverLook, head: np.ndarray, scale: float, turned: bool) -> None:
    """Draw the head in profile facing the windscreen, or turned toward the camera and the passenger."""
    def at(dx: float, dy: float) -> np.ndarray:
        return head + scale * np.array([dx, dy])

    eye = (40, 40, 40)
    canvas.ellipse(head, (46 * scale, 56 * scale), 0, look.skin)
    if turned:
        canvas.ellipse(at(0, -30), (50 * scale, 32 * scale), 0, look.hair)
        eyes = [at(-17, 0), at(17, 0)]
        canvas.ellipse(at(0, 30), (14 * scale, 6 * scale), 0, (120, 40, 40))
    else:
        canvas.ellipse(at(-14, -22), (42 * scale, 44 * scale), -20, look.hair)
        eyes = [at(28, -4)]
        canvas.ellipse(at(46, 8), (9 * scale, 7 * scale), 0, look.skin)
    for centre in eyes:
        canvas.circle(centre, 6 * scale, eye)
    if look.glasses:
        for centre in eyes:
            canvas.ellipse(centre, (12 * scale, 9 * scale), 0, (15, 15, 15), width=3)


def _draw_prop(canvas: _Canvas, look: _DriverLook, prop: str, hand: np.ndarray) -> None:
    scale = look.body_scale
    if prop == "phone_text":
        canvas.box(hand + (0, -16), (46 * scale, 30 * scale), -20, (20, 20, 24))
        canvas.box(hand + (0, -16), (36 * scale, 21 * scale), -20, (150, 220, 255))
    elif prop == "phone_ear":
        canvas.box(hand + (0, -20), (20 * scale, 48 * scale), 8, (20, 20, 24))
    else:
        canvas.box(hand + (12, -18), (32 * scale, 46 * scale), 0, look.cup)
        canvas.ellipse(hand + (12, -41), (16 * scale, 5 * scale), 0, (235, 235, 235))


def _render_frame(look: _DriverLook, pose: _Pose, take_offsets: np.ndarray,
                  rng: np.random.Generator) -> np.ndarray:
    """Draw one frame: the driver's scene in one pose, with this frame's jitter, light and noise."""
    height, width = look.background.shape[:2]
    canvas = _Canvas(look.background.copy())
    hand_offsets = take_offsets + rng.normal(0, 3.0, size=(2, 2))
    _draw_car(canvas, look)
    _draw_driver(canvas, look, pose, _body_anchors(look, pose, hand_offsets))

    # The camera shakes a little between frames of the same recording.
    camera = look.camera.copy()
    camera[:, 2] += rng.normal(0, 0.006, size=2) * (width, height)
    image = cv2.warpAffine(canvas.image, camera, (width, height), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REFLECT_101)

    light = np.float32(look.brightness * rng.uniform(0.96, 1.04))
    noise = rng.standard_normal(image.shape, dtype=np.float32) * np.float32(4.0)
    noisy = image.astype(np.float32) * light + noise
    return np.clip(noisy, 0, 255, out=noisy).astype(np.uint8)


def _encode_jpeg(image: np.ndarray, quality: int) -> bytes:
    ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                               [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("OpenCV failed to encode a synthetic frame as JPEG")
    return encoded.tobytes()


# ---------------------------------------------------------------------------------------------------
# The dataset on disk

# Independent random streams, so that a driver's look does not depend on how many frames precede it.
_PLAN_STREAM, _LOOK_STREAM, _TAKE_STREAM, _FRAME_STREAM = range(4)


@dataclass(frozen=True)
class _Frame:
    """One frame of the dataset: its file name, driver, true class and split."""

    img: str
    subject: str
    classname: str
    split: str  # "train" or "test"


def _plan_frames(seed: int, n_train_subjects: int, n_test_subjects: int,
                 frames_per_class: int) -> list[tuple[_Frame, int]]:
    """Name the drivers and frames, each frame with its index among the frames of its driver and class."""
    rng = np.random.default_rng([seed, _PLAN_STREAM])
    n_subjects = n_train_subjects + n_test_subjects
    id_pool = np.arange(1, 100) if n_subjects < 100 else np.arange(1, MAX_SUBJECTS + 1)
    subject_ids = [f"p{number:03d}" for number in rng.choice(id_pool, size=n_subjects, replace=False)]
    splits = {"train": sorted(subject_ids[:n_train_subjects]), "test": sorted(subject_ids[n_train_subjects:])}

    slots = [(split, subject, classname, index)
             for split, subjects in splits.items()
             for subject in subjects
             for classname in CLASSES
             for index in range(frames_per_class)]
    # Numbers drawn at random from a wider range, so that a file name reveals neither split nor class.
    numbers = rng.choice(np.arange(1, 10 * len(slots) + 1), size=len(slots), replace=False)
    return [(_Frame(f"img_{number}.jpg", subject, classname, split), index)
            for (split, subject, classname, index), number in zip(slots, numbers)]


def _write_frames(root: Path, planned: list[tuple[_Frame, int]], image_size: tuple[int, int],
                  seed: int) -> None:
    width, height = image_size
    for classname in CLASSES:
        (root / "train" / classname).mkdir(parents=True)
    (root / "test").mkdir()

    looks: dict[str, _DriverLook] = {}
    takes: dict[tuple[str, str], np.ndarray] = {}
    for frame, index in planned:
        subject_number = int(frame.subject[1:])
        class_number = CLASSES.index(frame.classname)
        if frame.subject not in looks:
            look_rng = np.random.default_rng([seed, _LOOK_STREAM, subject_number])
            looks[frame.subject] = _make_driver_look(look_rng, width, height)
        # A take is one recording of a driver in one class: the hands sit a little off the class's
        # usual place, the same way in all of the take's frames.
        if (frame.subject, frame.classname) not in takes:
            take_rng = np.random.default_rng([seed, _TAKE_STREAM, subject_number, class_number])
            takes[frame.subject, frame.classname] = take_rng.normal(0, 10.0, size=(2, 2))

        frame_rng = np.random.default_rng([seed, _FRAME_STREAM, subject_number, class_number, index])
        image = _render_frame(looks[frame.subject], _POSES[frame.classname],
                              takes[frame.subject, frame.classname], frame_rng)
        folder = root / "train" / frame.classname if frame.split == "train" else root / "test"
        (folder / frame.img).write_bytes(_encode_jpeg(image, int(frame_rng.integers(85, 96))))


def _write_csv(path: Path, header: list[str], rows: list[list[object]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def _write_tables(root: Path, frames: list[_Frame]) -> None:
    """Write driver_imgs_list.csv and sample_submission.csv as Kaggle ships them, and test_labels.csv."""
    train = sorted((frame for frame in frames if frame.split == "train"),
                   key=lambda frame: (frame.subject, frame.classname, int(frame.img[4:-4])))
    _write_csv(root / "driver_imgs_list.csv", ["subject", "classname", "img"],
               [[frame.subject, frame.classname, frame.img] for frame in train])

    # Kaggle's sample submission lists the test images sorted by file name as text.
    test = sorted((frame for frame in frames if frame.split == "test"), key=lambda frame: frame.img)
    _write_csv(root / "sample_submission.csv", ["img", *CLASSES],
               [[frame.img, *["0.1"] * len(CLASSES)] for frame in test])
    _write_csv(root / "test_labels.csv", ["img", "subject", "classname"],
               [[frame.img, frame.subject, frame.classname] for frame in test])


def _marker_text(frames: list[_Frame], image_size: tuple[int, int], seed: int) -> str:
    lines = [
        "SYNTHETIC DATA: drawn frames in the file layout of Kaggle's State Farm Distracted Driver",
        "Detection competition, generated by kaggle_sf.data.synthetic. There are no photographs here.",
        "A score measured on this data shows that the pipeline works, not how it would do on the",
        "competition. test_labels.csv contains the true classes of the test frames.",
        "",
        f"seed: {seed}",
        f"image_size: {image_size[0]}x{image_size[1]}",
    ]
    for split in ("train", "test"):
        in_split = [frame for frame in frames if frame.split == split]
        n_subjects = len({frame.subject for frame in in_split})
        lines.append(f"{split}: {len(in_split)} frames of {n_subjects} drivers")
    return "\n".join(lines) + "\n"


def _check_arguments(n_train_subjects: int, n_test_subjects: int, frames_per_class: int,
                     image_size: tuple[int, int], seed: int) -> None:
    counts = {"n_train_subjects": n_train_subjects, "n_test_subjects": n_test_subjects,
              "frames_per_class": frames_per_class, "seed": seed}
    for name, value in counts.items():
        minimum = 0 if name == "seed" else 1
        if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < minimum:
            raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if n_train_subjects + n_test_subjects > MAX_SUBJECTS:
        raise ValueError(f"n_train_subjects + n_test_subjects must be at most {MAX_SUBJECTS}, "
                         f"got {n_train_subjects} + {n_test_subjects}")

    valid_size = (isinstance(image_size, tuple | list) and len(image_size) == 2
                  and all(isinstance(side, numbers.Integral) and side >= MIN_IMAGE_SIDE for side in image_size))
    if not valid_size:
        raise ValueError(f"image_size must be (width, height) with both sides integers >= {MIN_IMAGE_SIDE}, "
                         f"got {image_size!r}")


def _check_destination(destination: Path) -> None:
    if not destination.exists():
        return
    if not destination.is_dir():
        raise ValueError(f"cannot write the synthetic dataset to {destination}: it exists and is not a "
                         "folder. Pass a new or empty folder.")
    visible = sorted(entry.name for entry in destination.iterdir() if not entry.name.startswith("."))
    if visible:
        raise ValueError(f"cannot write the synthetic dataset to {destination}: the folder is not empty "
                         f"(it contains {', '.join(visible[:3])}{', ...' if len(visible) > 3 else ''}). "
                         "Pass a new or empty folder, or delete its contents first.")


def _move_into_place(staging: Path, destination: Path) -> None:
    """Rename the finished dataset onto ``destination``, keeping the hidden entries it already contains.

    Readers see ``destination`` either without the dataset or with all of it. Hidden entries (a
    ``.gitkeep``) are moved over after the swap, so for a moment they are only in the hidden sibling
    ``.<name>.previous-*``, which is where they stay if the process dies in that moment.
    """
    # On POSIX the rename replaces an empty folder in one step and fails on a non-empty one.
    if not destination.exists() or not any(destination.iterdir()):
        os.replace(staging, destination)
        return

    previous = destination.parent / f".{destination.name}.previous-{uuid.uuid4().hex[:12]}"
    os.replace(destination, previous)
    try:
        os.replace(staging, destination)
    except OSError:
        os.replace(previous, destination)
        raise
    for entry in sorted(previous.iterdir()):
        os.replace(entry, destination / entry.name)
    previous.rmdir()


def generate_dataset(
    destination: Path,
    *,
    n_train_subjects: int = 8,
    n_test_subjects: int = 3,
    frames_per_class: int = 6,
    image_size: tuple[int, int] = (160, 120),
    seed: int = 0,
) -> Path:
    """Generate a synthetic dataset in the State Farm competition's layout.

    Writes ``train/c0..c9/img_<n>.jpg``, ``test/img_<n>.jpg``, ``driver_imgs_list.csv``
    (``subject,classname,img``), ``sample_submission.csv`` (``img,c0..c9``, 0.1 each), ``test_labels.csv``
    (``img,subject,classname``, the true classes of the test frames) and the marker file ``SYNTHETIC.txt``.
    Every driver has every class, with ``frames_per_class`` frames each. The dataset is built in a hidden
    sibling folder and renamed onto ``destination`` when complete, so ``destination`` never contains
    part of a dataset. The same arguments give the same bytes with the same versions of NumPy and OpenCV.

    The defaults write 660 frames of 160x120, about 4 MB.

    Args:
        destination: folder to create. It may exist if it is empty or holds only hidden entries (such as
            ``.gitkeep``), which are kept.
        n_train_subjects: number of drivers in ``train/``.
        n_test_subjects: number of other drivers in ``test/``.
        frames_per_class: frames per driver and class; they are near-duplicates of each other.
        image_size: (width, height) of each frame in pixels, at least 32 each.
        seed: seed of everything random in the dataset.

    Returns:
        ``destination``.

    Raises:
        ValueError: an argument is out of range, or ``destination`` is a file or a folder that contains
            anything but hidden entries.

    Example:
        >>> import tempfile
        >>> root = generate_dataset(Path(tempfile.mkdtemp()) / "data", n_train_subjects=2,
        ...                         n_test_subjects=1, frames_per_class=1)
        >>> sorted(path.name for path in root.iterdir())
        ['SYNTHETIC.txt', 'driver_imgs_list.csv', 'sample_submission.csv', 'test', 'test_labels.csv', 'train']
    """
    _check_arguments(n_train_subjects, n_test_subjects, frames_per_class, image_size, seed)
    destination = Path(destination)
    _check_destination(destination)
    image_size = (int(image_size[0]), int(image_size[1]))

    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = destination.parent / f".{destination.name}.partial-{uuid.uuid4().hex[:12]}"
    staging.mkdir()
    try:
        planned = _plan_frames(seed, n_train_subjects, n_test_subjects, frames_per_class)
        frames = [frame for frame, _ in planned]
        _write_frames(staging, planned, image_size, seed)
        _write_tables(staging, frames)
        (staging / MARKER_NAME).write_text(_marker_text(frames, image_size, seed), encoding="utf-8")
        _move_into_place(staging, destination)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)  # nothing left to remove once the rename succeeded
        raise

    logger.info("Wrote a synthetic dataset to %s: %d train drivers, %d test drivers, %d frames of %dx%d",
                destination, n_train_subjects, n_test_subjects, len(frames), *image_size)
    return destination


def is_synthetic(data_dir: Path) -> bool:
    """Return whether ``data_dir`` contains a dataset written by :func:`generate_dataset`."""
    return (Path(data_dir) / MARKER_NAME).is_file()
