"""Shared fixtures: tiny competition folders, the real frames in ../shared/data, MobileNet weights."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

CLASSES = [f"c{i}" for i in range(10)]
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MOBILENET_WEIGHTS = SHARED_DATA / "weights" / "mobilenet_2_5_224_tf_no_top.h5"


def write_jpeg(path: Path, seed: int, size: tuple[int, int] = (64, 48)) -> None:
    """Write a small random RGB JPEG of ``size`` (width, height)."""
    import cv2

    rng = np.random.default_rng(seed)
    image = rng.integers(0, 255, size=(size[1], size[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image)


def make_competition(root: Path, subjects: list[str], frames_per_class: int = 2, n_test: int = 6,
                     size: tuple[int, int] = (64, 48)) -> Path:
    """Write a tiny data directory in the competition's layout and return it."""
    rows = []
    number = 0
    for subject in subjects:
        for classname in CLASSES:
            for _ in range(frames_per_class):
                img = f"img_{number}.jpg"
                write_jpeg(root / "train" / classname / img, number, size)
                rows.append((subject, classname, img))
                number += 1
    pd.DataFrame(rows, columns=["subject", "classname", "img"]).to_csv(root / "driver_imgs_list.csv", index=False)
    test_ids = []
    for _ in range(n_test):
        img = f"img_{number}.jpg"
        write_jpeg(root / "test" / img, number, size)
        test_ids.append(img)
        number += 1
    sample = pd.DataFrame({"img": test_ids, **{c: 0.1 for c in CLASSES}})
    sample.to_csv(root / "sample_submission.csv", index=False)
    return root


@pytest.fixture
def tiny_competition(tmp_path: Path) -> Path:
    """A data directory of 4 drivers x 10 classes x 2 frames and 6 test frames, 64x48 pixels."""
    return make_competition(tmp_path / "data", ["p001", "p002", "p003", "p004"])


@pytest.fixture
def mobilenet_keras_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A KERAS_HOME whose cache holds the official MobileNet-0.25 ImageNet weights; skips without them."""
    if not MOBILENET_WEIGHTS.is_file():
        pytest.skip(f"{MOBILENET_WEIGHTS} not present")
    home = tmp_path / "keras_home"
    (home / "models").mkdir(parents=True)
    shutil.copy(MOBILENET_WEIGHTS, home / "models" / MOBILENET_WEIGHTS.name)
    monkeypatch.setenv("KERAS_HOME", str(home))
    return home


@pytest.fixture
def fullres_data() -> Path:
    """The real 640x480 frames of ../shared/data/statefarm-fullres; skips when absent."""
    path = SHARED_DATA / "statefarm-fullres"
    if not path.is_dir():
        pytest.skip(f"{path} not present")
    return path
