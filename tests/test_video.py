"""Annotated video: a short clip through the annotate command, smoothing, and unreadable inputs."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

keras = pytest.importorskip("keras")

from kaggle_sf.config import CLASSES, BackboneConfig, Config, flatten  # noqa: E402
from kaggle_sf.explain.video import PredictionSmoother, VideoError, annotate_video  # noqa: E402

FRAME_SIZE = (320, 240)  # width, height of the clip's frames
N_FRAMES = 10
FPS = 5.0
INPUT_SIZE = (224, 224)


def write_clip(path: Path, frames: list[np.ndarray], fps: float = FPS) -> Path:
    """Write BGR frames as an MJPG video."""
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (width, height))
    assert writer.isOpened()
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


def read_clip(path: Path) -> tuple[list[np.ndarray], float]:
    """Read every frame of a video as BGR, and its frame rate."""
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    fps = capture.get(cv2.CAP_PROP_FPS)
    capture.release()
    return frames, fps


def clip_frames(tmp_path: Path, shared_data: Path) -> list[np.ndarray]:
    """Ten frames of one driver: the real test frames when present, synthetic frames otherwise."""
    real = shared_data / "statefarm-fullres"
    if real.is_dir():
        labels = pd.read_csv(real / "test_labels.csv")
        driver = labels[labels["subject"] == sorted(labels["subject"].unique())[0]].sort_values("img")
        paths = [real / "test" / img for img in driver["img"].iloc[:N_FRAMES]]
    else:
        from kaggle_sf.data.synthetic import generate_dataset

        root = generate_dataset(tmp_path / "synthetic", n_train_subjects=1, n_test_subjects=1, frames_per_class=1,
                                image_size=(160, 120))
        paths = sorted((root / "test").glob("*.jpg"))[:N_FRAMES]
    return [cv2.resize(cv2.imread(str(path)), FRAME_SIZE, interpolation=cv2.INTER_AREA) for path in paths]


@pytest.fixture
def finetuned_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """An MLflow store with one fine-tuned-style fold model (``model.keras``), as the main job records it.

    Uses MobileNet-0.25 with its ImageNet weights when they are present, and otherwise ResNet50 with
    random weights (a randomly initialised MobileNet's feature maps are all close to 0). The head is
    random either way, seeded.
    """
    import mlflow
    from conftest import MOBILENET_WEIGHTS

    from kaggle_sf import tracking
    from kaggle_sf.models.classifier import build_classifier

    if MOBILENET_WEIGHTS.is_file():
        backbone = BackboneConfig(name="mobilenet", alpha=0.25, input_size=INPUT_SIZE, weights=str(MOBILENET_WEIGHTS))
    else:
        backbone = BackboneConfig(name="resnet50", input_size=INPUT_SIZE, weights="none")
    keras.utils.set_random_seed(5)
    classifier = build_classifier(backbone)
    model_dir = tmp_path / "work" / "cache" / "models" / backbone.label / "key" / "fold_0"
    model_dir.mkdir(parents=True)
    classifier.save(model_dir / "model.keras")

    # MLflow's set_tracking_uri exports MLFLOW_TRACKING_URI; monkeypatch restores it after the test.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")
    monkeypatch.chdir(tmp_path)
    work_dir = tmp_path / "work"
    tracking.configure_tracking(work_dir)
    experiment = tracking.experiment_id("video-test", work_dir)
    with mlflow.start_run(experiment_id=experiment) as parent:
        tracking.log_params(parent.info.run_id, flatten(Config(backbones=(backbone,)).to_dict()))
        with mlflow.start_run(experiment_id=experiment, nested=True, parent_run_id=parent.info.run_id,
                              tags={"stage": "fold", "backbone": backbone.label, "fold": "0", "mode": "finetune",
                                    "model_dir": str(model_dir)}):
            pass
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")
    return work_dir, parent.info.run_id, classifier


def test_annotated_clip_matches_model_predictions(finetuned_run, tmp_path, capsys):
    from conftest import SHARED_DATA

    from kaggle_sf.explain.frames import resize_frames
    from pipelines import annotate_video as command

    work_dir, run_id, classifier = finetuned_run
    clip = write_clip(tmp_path / "clip.avi", clip_frames(tmp_path, SHARED_DATA))
    output = tmp_path / "out" / "annotated.mp4"
    predictions_csv = tmp_path / "out" / "predictions.csv"

    code = command.main(["--run-id", run_id, "--input", str(clip), "--output", str(output), "--work-dir",
                         str(work_dir), "--batch-size", "4", "--predictions", str(predictions_csv)])
    assert code == 0
    assert "Annotated 10 frames in" in capsys.readouterr().out

    annotated, fps = read_clip(output)
    assert len(annotated) == N_FRAMES
    assert annotated[0].shape == (FRAME_SIZE[1], 2 * FRAME_SIZE[0], 3)
    assert fps == pytest.approx(FPS)
    assert not list(output.parent.glob(".tmp-*"))

    # The model's own predictions on the frames as the video decodes them.
    decoded, _ = read_clip(clip)
    expected = classifier.predict(resize_frames([frame[..., ::-1] for frame in decoded], INPUT_SIZE), verbose=0)
    assert np.ptp(expected.max(axis=1)) > 1e-3
    written = pd.read_csv(predictions_csv)
    assert written["frame"].tolist() == list(range(N_FRAMES))
    assert written["classname"].tolist() == [CLASSES[i] for i in expected.argmax(axis=1)]
    np.testing.assert_allclose(written.loc[:, list(CLASSES)].to_numpy(), expected, atol=1e-4)
    np.testing.assert_allclose(written["probability"], expected.max(axis=1), atol=1e-4)

    # The right half is the frame under its heatmap: it differs from the left half where the heat is.
    left, right = annotated[0][:, :FRAME_SIZE[0]], annotated[0][:, FRAME_SIZE[0]:]
    assert np.abs(left.astype(int) - right.astype(int)).max() > 50


def test_smoother_window_mean():
    smoother = PredictionSmoother(window=2)
    first = np.eye(10)[0]
    second = np.eye(10)[1]
    np.testing.assert_allclose(smoother.update(first), first)
    np.testing.assert_allclose(smoother.update(second), (first + second) / 2)
    np.testing.assert_allclose(smoother.update(second), second)
    with pytest.raises(ValueError, match="at least 1 frame"):
        PredictionSmoother(window=0)


def _tiny_model():
    from kaggle_sf.explain.cam import split_classifier

    frames = keras.Input(shape=(16, 16, 3))
    maps = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv")(frames)
    pooled = keras.layers.GlobalAveragePooling2D()(maps)
    return split_classifier(keras.Model(frames, keras.layers.Dense(10, activation="softmax")(pooled)), "conv")


def test_smoothed_labels_follow_the_window(tmp_path):
    keras.utils.set_random_seed(2)
    model = _tiny_model()
    rng = np.random.default_rng(0)
    clip = write_clip(tmp_path / "noise.avi", [rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(6)])

    raw = annotate_video([model], str(clip), tmp_path / "raw.avi", smooth=1, batch_size=4)
    smoothed = annotate_video([model], str(clip), tmp_path / "smoothed.avi", smooth=3, batch_size=4)
    probabilities = raw.predictions.loc[:, list(CLASSES)].to_numpy()
    expected = np.stack([probabilities[max(0, i - 2):i + 1].mean(axis=0) for i in range(6)])
    np.testing.assert_allclose(smoothed.predictions.loc[:, list(CLASSES)].to_numpy(), expected, atol=1e-6)
    assert smoothed.predictions["classname"].tolist() == [CLASSES[i] for i in expected.argmax(axis=1)]
    assert smoothed.frames == 6
    assert smoothed.frames_per_second > 0


def test_video_without_frames(tmp_path, capsys):
    from pipelines import annotate_video as command

    empty = tmp_path / "empty.avi"
    writer = cv2.VideoWriter(str(empty), cv2.VideoWriter_fourcc(*"MJPG"), FPS, (64, 48))
    writer.release()
    assert command.main(["--run-id", "any", "--input", str(empty), "--output", str(tmp_path / "o.mp4")]) == 2
    assert capsys.readouterr().err == f"error: {empty} has no frames to read\n"

    with pytest.raises(VideoError, match="has no frames to read"):
        annotate_video([_tiny_model()], str(empty), tmp_path / "o.mp4")
    assert not (tmp_path / "o.mp4").exists()


@pytest.mark.parametrize("content, message", [
    (None, "video {path} not found"),
    ("not a video", "cannot open video {path}: OpenCV (FFmpeg) does not recognise it as a video file"),
])
def test_unopenable_video(tmp_path, capsys, content, message):
    from pipelines import annotate_video as command

    path = tmp_path / "input.mp4"
    if content is not None:
        path.write_text(content)
    assert command.main(["--run-id", "any", "--input", str(path), "--output", str(tmp_path / "o.mp4")]) == 2
    assert capsys.readouterr().err == f"error: {message.format(path=path)}\n"


def test_output_needs_a_video_suffix(tmp_path):
    clip = write_clip(tmp_path / "clip.avi", [np.zeros((48, 64, 3), dtype=np.uint8)] * 2)
    with pytest.raises(VideoError, match=r"must end in \.mp4 or \.avi, got \.gif"):
        annotate_video([_tiny_model()], str(clip), tmp_path / "out.gif")


def test_show_without_window_support(tmp_path, capsys):
    from pipelines import annotate_video as command

    try:
        cv2.namedWindow("probe")
        cv2.destroyAllWindows()
        pytest.skip("this OpenCV has window support")
    except cv2.error:
        pass
    clip = write_clip(tmp_path / "clip.avi", [np.zeros((48, 64, 3), dtype=np.uint8)] * 2)
    assert command.main(["--run-id", "any", "--input", str(clip), "--output", str(tmp_path / "o.mp4"),
                         "--show"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: --show needs OpenCV with window support")
    assert error.count("\n") == 1
