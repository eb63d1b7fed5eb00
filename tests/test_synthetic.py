"""The synthetic dataset: the competition's layout and tables, determinism, safe writes, driver leakage."""

from __future__ import annotations

import csv
import re
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from sklearn.model_selection import GroupKFold, StratifiedKFold, cross_val_score
from sklearn.neighbors import KNeighborsClassifier

from kaggle_sf.data import synthetic
from kaggle_sf.data.synthetic import MARKER_NAME, generate_dataset, is_synthetic

CLASSES = [f"c{i}" for i in range(10)]
IMG_NAME = re.compile(r"img_\d+\.jpg")


def read_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def file_bytes(root: Path) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


def small_dataset(destination: Path, seed: int = 0) -> Path:
    return generate_dataset(destination, n_train_subjects=2, n_test_subjects=1, frames_per_class=2,
                            image_size=(64, 48), seed=seed)


@pytest.fixture(scope="module")
def default_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The dataset that the default arguments write: 8 train and 3 test drivers, 6 frames per class."""
    return generate_dataset(tmp_path_factory.mktemp("synthetic") / "data")


# --- Layout and tables ----------------------------------------------------------------------------


def test_layout_matches_competition(default_dataset: Path) -> None:
    top_level = sorted(path.name for path in default_dataset.iterdir())
    assert top_level == ["SYNTHETIC.txt", "driver_imgs_list.csv", "sample_submission.csv", "test",
                         "test_labels.csv", "train"]
    assert sorted(path.name for path in (default_dataset / "train").iterdir()) == CLASSES

    train_files = sorted((default_dataset / "train").rglob("*.jpg"))
    test_files = sorted((default_dataset / "test").iterdir())
    assert len(train_files) == 8 * 10 * 6
    assert len(test_files) == 3 * 10 * 6
    assert all(IMG_NAME.fullmatch(path.name) for path in train_files + test_files)


def test_frames_are_rgb_jpegs(default_dataset: Path) -> None:
    paths = sorted((default_dataset / "train" / "c4").iterdir())[:5] + sorted((default_dataset / "test").iterdir())[:5]
    for path in paths:
        with Image.open(path) as image:
            assert image.format == "JPEG"
            assert image.mode == "RGB"
            assert image.size == (160, 120)


def test_image_names_unique(default_dataset: Path) -> None:
    names = [path.name for path in default_dataset.rglob("*.jpg")]
    assert len(names) == 660
    assert len(set(names)) == 660


def test_image_numbers_do_not_reveal_class(default_dataset: Path) -> None:
    _, rows = read_rows(default_dataset / "driver_imgs_list.csv")
    by_number = sorted(rows, key=lambda row: int(row["img"][4:-4]))
    class_changes = sum(a["classname"] != b["classname"] for a, b in zip(by_number, by_number[1:]))
    # In random order about 9 of 10 neighbours differ in class, but numbered class by class only 9 of 479 would.
    assert class_changes > 0.8 * (len(rows) - 1)


def test_driver_imgs_list_lists_every_train_frame(default_dataset: Path) -> None:
    header, rows = read_rows(default_dataset / "driver_imgs_list.csv")
    assert header == ["subject", "classname", "img"]

    listed = {(row["classname"], row["img"]) for row in rows}
    on_disk = {(path.parent.name, path.name) for path in (default_dataset / "train").rglob("*.jpg")}
    assert len(rows) == 480
    assert listed == on_disk


def test_every_train_driver_has_every_class(default_dataset: Path) -> None:
    _, rows = read_rows(default_dataset / "driver_imgs_list.csv")
    subjects = sorted({row["subject"] for row in rows})
    assert len(subjects) == 8
    assert all(re.fullmatch(r"p\d{3}", subject) for subject in subjects)

    counts = Counter((row["subject"], row["classname"]) for row in rows)
    assert counts == {(subject, classname): 6 for subject in subjects for classname in CLASSES}


def test_sample_submission_matches_competition(default_dataset: Path) -> None:
    header, rows = read_rows(default_dataset / "sample_submission.csv")
    assert header == ["img", *CLASSES]

    images = [row["img"] for row in rows]
    assert images == sorted(path.name for path in (default_dataset / "test").iterdir())
    assert all(row[classname] == "0.1" for row in rows for classname in CLASSES)


def test_test_labels_cover_unseen_drivers(default_dataset: Path) -> None:
    header, rows = read_rows(default_dataset / "test_labels.csv")
    assert header == ["img", "subject", "classname"]
    _, submission_rows = read_rows(default_dataset / "sample_submission.csv")
    assert [row["img"] for row in rows] == [row["img"] for row in submission_rows]

    test_subjects = {row["subject"] for row in rows}
    _, train_rows = read_rows(default_dataset / "driver_imgs_list.csv")
    assert len(test_subjects) == 3
    assert test_subjects.isdisjoint({row["subject"] for row in train_rows})

    counts = Counter((row["subject"], row["classname"]) for row in rows)
    assert counts == {(subject, classname): 6 for subject in test_subjects for classname in CLASSES}


def test_marker_says_synthetic(default_dataset: Path, tmp_path: Path) -> None:
    text = (default_dataset / MARKER_NAME).read_text(encoding="utf-8")
    assert text.startswith("SYNTHETIC DATA")
    assert "seed: 0" in text
    assert "train: 480 frames of 8 drivers" in text
    assert "test: 180 frames of 3 drivers" in text
    assert is_synthetic(default_dataset)
    assert not is_synthetic(tmp_path)


def test_image_size_sets_frame_size(tmp_path: Path) -> None:
    root = generate_dataset(tmp_path / "data", n_train_subjects=1, n_test_subjects=1, frames_per_class=1,
                            image_size=(96, 40))
    for path in root.rglob("*.jpg"):
        with Image.open(path) as image:
            assert image.size == (96, 40)


# --- Determinism ----------------------------------------------------------------------------------


def test_same_seed_gives_same_bytes(tmp_path: Path) -> None:
    first = file_bytes(small_dataset(tmp_path / "first"))
    second = file_bytes(small_dataset(tmp_path / "second"))
    assert len(first) == 2 * 10 * 2 + 1 * 10 * 2 + 4
    assert first == second


def test_other_seed_gives_other_frames(tmp_path: Path) -> None:
    first = file_bytes(small_dataset(tmp_path / "first", seed=0))
    second = file_bytes(small_dataset(tmp_path / "second", seed=1))
    assert first["driver_imgs_list.csv"] != second["driver_imgs_list.csv"]
    assert set(first.values()).isdisjoint(value for name, value in second.items() if name.endswith(".jpg"))


# --- Safe writes ----------------------------------------------------------------------------------


def test_rejects_non_empty_destination(tmp_path: Path) -> None:
    destination = tmp_path / "data"
    destination.mkdir()
    (destination / "notes.txt").write_text("keep me")

    with pytest.raises(ValueError, match=re.escape(str(destination))) as raised:
        small_dataset(destination)
    assert "notes.txt" in str(raised.value)
    assert sorted(path.name for path in destination.iterdir()) == ["notes.txt"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["data"]


def test_rejects_file_destination(tmp_path: Path) -> None:
    destination = tmp_path / "data"
    destination.write_text("not a folder")
    with pytest.raises(ValueError, match="not a folder"):
        small_dataset(destination)
    assert destination.read_text() == "not a folder"


def test_fills_empty_destination(tmp_path: Path) -> None:
    destination = tmp_path / "data"
    destination.mkdir()
    small_dataset(destination)
    assert (destination / "driver_imgs_list.csv").is_file()
    assert sorted(path.name for path in tmp_path.iterdir()) == ["data"]


def test_keeps_hidden_entries_of_destination(tmp_path: Path) -> None:
    destination = tmp_path / "data"
    destination.mkdir()
    (destination / ".gitkeep").write_text("")
    small_dataset(destination)
    assert (destination / ".gitkeep").is_file()
    assert is_synthetic(destination)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["data"]


def test_failed_generation_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    encoded = []

    def fail_on_fifth_frame(image: np.ndarray, quality: int) -> bytes:
        if len(encoded) == 4:
            raise OSError("disk full")
        encoded.append(quality)
        return cv2.imencode(".jpg", image)[1].tobytes()

    monkeypatch.setattr(synthetic, "_encode_jpeg", fail_on_fifth_frame)
    with pytest.raises(OSError, match="disk full"):
        small_dataset(tmp_path / "data")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        ({"n_train_subjects": 0}, "n_train_subjects"),
        ({"n_test_subjects": 0}, "n_test_subjects"),
        ({"frames_per_class": 0}, "frames_per_class"),
        ({"frames_per_class": 2.5}, "frames_per_class"),
        ({"seed": -1}, "seed"),
        ({"n_train_subjects": 990, "n_test_subjects": 10}, "at most 999"),
        ({"image_size": (16, 120)}, "image_size"),
        ({"image_size": (160,)}, "image_size"),
    ],
)
def test_rejects_invalid_arguments(tmp_path: Path, arguments: dict, named: str) -> None:
    with pytest.raises(ValueError, match=re.escape(named)):
        generate_dataset(tmp_path / "data", **arguments)
    assert list(tmp_path.iterdir()) == []


# --- Driver leakage -------------------------------------------------------------------------------


def test_random_split_overstates_driver_split(default_dataset: Path) -> None:
    _, rows = read_rows(default_dataset / "driver_imgs_list.csv")
    pixels = []
    for row in rows:
        gray = cv2.imread(str(default_dataset / "train" / row["classname"] / row["img"]), cv2.IMREAD_GRAYSCALE)
        pixels.append(cv2.resize(gray, (32, 24), interpolation=cv2.INTER_AREA).ravel().astype(np.float64))
    features = np.stack(pixels)
    features = (features - features.mean(axis=1, keepdims=True)) / features.std(axis=1, keepdims=True)
    labels = np.array([int(row["classname"][1:]) for row in rows])
    subjects = np.array([row["subject"] for row in rows])

    nearest_neighbour = KNeighborsClassifier(n_neighbors=1)
    random_split = cross_val_score(nearest_neighbour, features, labels,
                                   cv=StratifiedKFold(4, shuffle=True, random_state=0)).mean()
    driver_split = cross_val_score(nearest_neighbour, features, labels, cv=GroupKFold(4), groups=subjects).mean()

    # Measured over seeds 0-7: random split 0.88-0.93, driver split 0.27-0.33, chance 0.10.
    assert random_split > 0.8
    assert driver_split > 0.2
    assert random_split - driver_split > 0.45
