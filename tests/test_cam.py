"""Class-activation maps on the trainer's classifiers, the fold-model loader, and the explain command."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest

keras = pytest.importorskip("keras")

from kaggle_sf.config import CLASSES, BackboneConfig, load_config  # noqa: E402
from kaggle_sf.explain.cam import (  # noqa: E402
    CamError,
    explain_frames,
    normalise_heatmaps,
    overlay_heatmap,
    split_classifier,
)
from kaggle_sf.models.backbones import build_backbone, get_spec  # noqa: E402
from kaggle_sf.models.classifier import build_classifier  # noqa: E402
from kaggle_sf.models.heads import build_head  # noqa: E402


def random_frames(count: int, size: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (count, size, size, 3)).astype(np.float32)


# --- CAM and Grad-CAM on the trainer's topology --------------------------------------------------


def backbone_config(name: str, size: int) -> BackboneConfig:
    """MobileNet with its ImageNet weights file (skips without it): a randomly initialised MobileNet's
    feature maps are all close to 0. ResNet50 with random weights, whose maps are not."""
    from conftest import MOBILENET_WEIGHTS

    if name == "mobilenet":
        if not MOBILENET_WEIGHTS.is_file():
            pytest.skip(f"{MOBILENET_WEIGHTS} not present")
        return BackboneConfig(name=name, input_size=(size, size), weights=str(MOBILENET_WEIGHTS))
    return BackboneConfig(name=name, input_size=(size, size), weights="none")


@pytest.mark.parametrize("name", ["mobilenet", "resnet50"])
def test_gradcam_on_build_classifier_equals_cam(name):
    keras.utils.set_random_seed(7)
    classifier = build_classifier(backbone_config(name, 96))
    model = split_classifier(classifier, get_spec(name).last_conv_layer)
    frames = random_frames(3, 96)

    maps = model.feature_maps(frames)
    assert tuple(maps.shape[:3]) == (3, 3, 3)
    assert float(np.abs(maps).mean()) > 1e-3
    np.testing.assert_allclose(model.probabilities(maps), classifier(frames, training=False).numpy(), atol=1e-6)
    np.testing.assert_array_equal(model.dense_kernel, classifier.get_layer("predictions").kernel.numpy())

    # On pooling + dense, Grad-CAM's channel weights are the dense weights over the number of cells,
    # so both methods give the same normalised heatmap.
    classes = np.array([0, 4, 9])
    cam = explain_frames([model], frames, classes=classes, method="cam")
    gradcam = explain_frames([model], frames, classes=classes, method="gradcam")
    assert cam.heatmaps.shape == (3, 3, 3)
    np.testing.assert_allclose(gradcam.heatmaps, cam.heatmaps, atol=1e-5)

    # Each map is scaled to a peak of 1, or is all zeros when nothing in the frame speaks for the class.
    peaks = cam.heatmaps.max(axis=(1, 2))
    assert cam.heatmaps.min() >= 0
    assert set(np.round(peaks, 6)) <= {0.0, 1.0}
    assert peaks.max() == pytest.approx(1.0)


def test_gradcam_inside_nested_backbone():
    keras.utils.set_random_seed(3)
    classifier = build_classifier(backbone_config("resnet50", 64))
    model = split_classifier(classifier, "conv5_block2_out")
    frames = random_frames(2, 64)

    maps = model.feature_maps(frames)
    assert tuple(maps.shape) == (2, 2, 2, 2048)
    assert float(np.abs(maps).mean()) > 1e-3
    expected = classifier(frames, training=False).numpy()
    assert np.abs(expected[0] - expected[1]).max() > 1e-4
    np.testing.assert_allclose(model.probabilities(maps), expected, atol=1e-6)
    assert model.dense_kernel is None
    with pytest.raises(CamError, match="Grad-CAM"):
        model.heatmaps(maps, np.array([0, 1]), method="cam")
    heatmaps = explain_frames([model], frames).heatmaps
    assert heatmaps.shape == (2, 2, 2)
    assert heatmaps.max() == pytest.approx(1.0)


def test_split_rejects_an_unknown_layer():
    classifier = build_classifier(BackboneConfig(name="mobilenet", input_size=(32, 32), weights="none"))
    with pytest.raises(CamError, match="no layer 'conv_pw_99_relu'"):
        split_classifier(classifier, "conv_pw_99_relu")


def _two_channel_classifier(flatten: bool) -> keras.Model:
    """A classifier whose class 0 evidence is channel 0 and class 1 evidence is channel 1."""
    frames = keras.Input(shape=(8, 8, 2), name="image")
    maps = keras.layers.Conv2D(2, 1, use_bias=False, activation="relu", name="conv")(frames)
    if flatten:
        pooled = keras.layers.Flatten(name="flatten")(maps)
        kernel = np.tile(np.eye(2, dtype=np.float32), (64, 1))
    else:
        pooled = keras.layers.GlobalAveragePooling2D(name="pool")(maps)
        kernel = np.eye(2, dtype=np.float32)
    dense = keras.layers.Dense(2, activation="softmax", name="predictions")
    model = keras.Model(frames, dense(pooled))
    model.get_layer("conv").set_weights([np.eye(2, dtype=np.float32).reshape(1, 1, 2, 2)])
    dense.set_weights([kernel, np.zeros(2, dtype=np.float32)])
    return model


@pytest.mark.parametrize("flatten", [False, True], ids=["pool-dense", "flatten-dense"])
def test_heatmaps_on_class_evidence(flatten):
    # Class 0 evidence in the bottom-right quarter, class 1 evidence in the top-left quarter.
    frame = np.zeros((1, 8, 8, 2), dtype=np.float32)
    frame[0, 4:, 4:, 0] = 1.0
    frame[0, :4, :4, 1] = 2.0
    model = split_classifier(_two_channel_classifier(flatten), "conv")
    assert (model.dense_kernel is None) == flatten

    for target, hot in ((1, (slice(0, 4), slice(0, 4))), (0, (slice(4, 8), slice(4, 8)))):
        heatmap = explain_frames([model], frame, classes=np.array([target]), method="gradcam").heatmaps[0]
        assert heatmap[hot].min() == pytest.approx(1.0)
        cold = np.ones((8, 8), dtype=bool)
        cold[hot] = False
        assert heatmap[cold].max() == 0.0


def test_ensemble_averages_fold_models():
    model = split_classifier(_two_channel_classifier(False), "conv")
    frame = np.zeros((1, 8, 8, 2), dtype=np.float32)
    frame[0, :4, :4, 1] = 2.0
    single = explain_frames([model], frame)
    double = explain_frames([model, model], frame)
    np.testing.assert_allclose(double.probabilities, single.probabilities)
    np.testing.assert_allclose(double.heatmaps, single.heatmaps)
    assert single.classes.tolist() == [1]


def test_normalise_heatmaps_values():
    raw = np.array([[[-2.0, 1.0], [2.0, 4.0]], [[-1.0, -3.0], [0.0, -0.5]]])
    normalised = normalise_heatmaps(raw)
    np.testing.assert_allclose(normalised[0], [[0.0, 0.25], [0.5, 1.0]])
    np.testing.assert_array_equal(normalised[1], np.zeros((2, 2)))


def test_overlay_cold_and_hot_pixels():
    frame = np.full((40, 60, 3), 128, dtype=np.uint8)
    heatmap = np.zeros((4, 6), dtype=np.float32)
    heatmap[0, 0] = 1.0
    overlay = overlay_heatmap(frame, heatmap, opacity=0.6)
    assert overlay.shape == (40, 60, 3)
    assert overlay.dtype == np.uint8
    np.testing.assert_array_equal(overlay[30:, 30:], frame[30:, 30:])
    # Full heat is 60 % of the JET colour map's hottest colour over 40 % of the frame.
    hottest = cv2.applyColorMap(np.array([[255]], dtype=np.uint8), cv2.COLORMAP_JET)[0, 0, ::-1]
    np.testing.assert_array_equal(overlay[0, 0], np.round(0.4 * 128 + 0.6 * hottest.astype(float)))
    assert overlay[0, 0].tolist() != [128, 128, 128]


# --- Head-mode fold models -----------------------------------------------------------------------


def test_head_classifier_matches_pooled_head(tmp_path):
    from kaggle_sf.explain.fold_models import assemble_head_classifier

    # Both backbones load one weights file, as feature extraction and the loader do.
    keras.utils.set_random_seed(11)
    weights = tmp_path / "resnet50.weights.h5"
    keras.applications.ResNet50(include_top=False, weights=None, input_shape=(64, 64, 3)).save_weights(weights)
    config = BackboneConfig(name="resnet50", input_size=(64, 64), weights=str(weights))
    head = build_head(2048, dropout=0.5, weight_decay=1e-4)
    frames = random_frames(4, 64)

    pooled = build_backbone(config, pooling="avg")(frames, training=False).numpy()
    expected = head(pooled, training=False).numpy()
    assert expected.max(axis=1).std() > 0.005
    classifier = assemble_head_classifier(build_backbone(config, pooling=None), head)
    model = split_classifier(classifier, get_spec("resnet50").last_conv_layer)
    np.testing.assert_allclose(model.probabilities(model.feature_maps(frames)), expected, atol=1e-5)
    np.testing.assert_array_equal(model.dense_kernel, head.get_layer("predictions").kernel.numpy())


# --- The main job's fold models, charts and the explain command ----------------------------------


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory):
    """A main job in head mode on a tiny competition: 2 folds, ResNet50 at 64x64 with seeded random weights.

    The weights come from a file because a head-mode fold model is rebuilt from its backbone's weights.
    ResNet50 because a randomly initialised MobileNet's pooled features are all close to 0.
    """
    from conftest import make_competition

    from kaggle_sf.run import run

    root = tmp_path_factory.mktemp("explained_run")
    data_dir = make_competition(root / "data", ["p001", "p002", "p003", "p004"])
    keras.utils.set_random_seed(1)
    weights = root / "resnet50_random.weights.h5"
    keras.applications.ResNet50(include_top=False, weights=None, input_shape=(64, 64, 3)).save_weights(weights)
    config = load_config(None, ["backbones.0.name=resnet50", f"backbones.0.weights={weights}",
                                "backbones.0.input_size=[64, 64]", "folds.n_splits=2", "train.head.max_epochs=3",
                                "ensemble.smoothing=false", "run_name=tiny"])
    with pytest.MonkeyPatch.context() as patch:
        # MLflow's set_tracking_uri exports MLFLOW_TRACKING_URI, which would point later tests at this
        # store; the patch restores it. Artifacts of an experiment created without an explicit location
        # land under the working directory, so that moves to the temporary folder too.
        patch.setenv("MLFLOW_TRACKING_URI", "")
        patch.chdir(root)
        work_dir = root / "work"
        result = run(config, data_dir, work_dir)
        yield config, work_dir, data_dir, result


def test_main_job_logs_charts(finished_run):
    from mlflow.tracking import MlflowClient

    config, _, _, result = finished_run
    client = MlflowClient()
    listed = {item.path for folder in ("charts", "cam") for item in client.list_artifacts(result.run_id, folder)}
    label = config.backbones[0].label
    assert listed == {
        "charts/frames_per_class.png", "charts/frames_per_driver.png", "charts/sample_frames.png",
        "charts/confusion_matrix.png", "charts/log_loss_per_class.png", f"charts/learning_curves_{label}.png",
        f"cam/{label}.png",
    }
    grid = cv2.imread(client.download_artifacts(result.run_id, f"cam/{label}.png"))
    assert grid.shape[0] > 500
    assert grid.shape[1] > 300


def test_fold_models_reproduce_oof_predictions(finished_run):
    from kaggle_sf.explain.fold_models import find_fold_models, load_cam_models
    from kaggle_sf.explain.frames import model_inputs
    from kaggle_sf.train import HEAD_FILE, FoldResult

    config, _, data_dir, result = finished_run
    refs = find_fold_models(result.run_id)
    assert [(ref.backbone, ref.fold, ref.mode) for ref in refs] == [(config.backbones[0], 0, "head"),
                                                                     (config.backbones[0], 1, "head")]
    assert all((ref.model_dir / HEAD_FILE).is_file() for ref in refs)
    assert [ref.fold for ref in find_fold_models(refs[1].run_id)] == [1]

    for ref, model in zip(refs, load_cam_models(refs)):
        oof = FoldResult.load(ref.model_dir).oof.loc[:, ["img", *CLASSES]]
        recorded = oof.loc[:, list(CLASSES)].to_numpy()
        # Frames must get different predictions, or matching them would not need the right backbone.
        assert recorded.max(axis=1).std() > 0.005
        paths = [next(data_dir.glob(f"train/*/{img}")) for img in oof["img"]]
        probabilities = model.probabilities(model.feature_maps(model_inputs(paths, model.input_size)))
        np.testing.assert_allclose(probabilities, recorded, atol=1e-5)


def test_explain_command_writes_heatmap_pngs(finished_run, capsys):
    from pipelines import explain

    _, work_dir, data_dir, result = finished_run
    images = sorted((data_dir / "test").glob("*.jpg"))[:2]
    output_dir = work_dir / "pictures"
    code = explain.main(["--run-id", result.run_id, "--images", *map(str, images), "--work-dir", str(work_dir),
                         "--output-dir", str(output_dir), "--method", "gradcam"])
    assert code == 0
    for image in images:
        written = cv2.imread(str(output_dir / f"{image.stem}_cam.png"))
        assert written.shape == (48, 128, 3)  # the 64x48 frame beside its overlay
    printed = capsys.readouterr().out
    assert f"{images[0].name}: predicted c" in printed


def test_explain_command_missing_run_or_store(finished_run, tmp_path, capsys, monkeypatch):
    from pipelines import explain

    _, work_dir, data_dir, _ = finished_run
    # The main job's set_tracking_uri exported the store's URI, which would override --work-dir.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "")
    image = next((data_dir / "test").glob("*.jpg"))
    assert explain.main(["--run-id", "0123abc", "--images", str(image), "--work-dir", str(work_dir)]) == 2
    assert "MLflow run 0123abc not found" in capsys.readouterr().err

    assert explain.main(["--run-id", "0123abc", "--images", str(image), "--work-dir", str(tmp_path / "no")]) == 2
    assert "no MLflow store at" in capsys.readouterr().err


def test_fold_model_without_model_file(finished_run, tmp_path):
    from kaggle_sf.explain.fold_models import ExplainError, find_fold_models, load_cam_models

    _, _, _, result = finished_run
    ref = find_fold_models(result.run_id, fold=0)[0]
    emptied = dataclasses.replace(ref, model_dir=tmp_path / "fold_0")
    emptied.model_dir.mkdir()
    with pytest.raises(ExplainError, match="contains neither model.keras nor head.keras"):
        load_cam_models([emptied])


def test_head_on_random_backbone_is_rejected(finished_run):
    from kaggle_sf.explain.fold_models import ExplainError, find_fold_models, load_cam_models

    _, _, _, result = finished_run
    ref = find_fold_models(result.run_id, fold=0)[0]
    random_backbone = dataclasses.replace(ref, backbone=dataclasses.replace(ref.backbone, weights="none"))
    with pytest.raises(ExplainError, match="randomly initialised backbone"):
        load_cam_models([random_backbone])


def test_find_fold_models_lists_choices(finished_run):
    from kaggle_sf.explain.fold_models import ExplainError, find_fold_models

    _, _, _, result = finished_run
    with pytest.raises(ExplainError, match="its backbones are resnet50_64x64 and its folds 0, 1"):
        find_fold_models(result.run_id, fold=5)
