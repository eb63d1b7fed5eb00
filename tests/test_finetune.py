import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from kaggle_sf.config import BackboneConfig, load_config
from kaggle_sf.data.catalog import load_catalog
from kaggle_sf.data.folds import make_folds

BACKBONE = BackboneConfig(name="mobilenet", alpha=0.25, input_size=(64, 64), weights="none")
ROOT = Path(__file__).resolve().parents[1]


def _fold_frames(data_dir: Path):
    catalog = load_catalog(data_dir)
    folds = make_folds(catalog.train, n_splits=2, seed=0)
    frames = catalog.train.set_index("img").loc[folds["img"]].reset_index()
    validation = (folds["fold"] == 0).to_numpy()
    return frames[~validation], frames[validation], catalog.test


@pytest.fixture
def pretrained_weights(tmp_path: Path) -> Path:
    """A MobileNet weights file with settled BatchNormalization statistics, standing in for ImageNet's."""
    import keras

    network = keras.applications.MobileNet(include_top=False, weights=None, input_shape=(64, 64, 3), alpha=0.25)
    images = np.random.default_rng(1).uniform(-1, 1, size=(32, 64, 64, 3)).astype("float32")
    for _ in range(40):
        network(images, training=True)
    path = tmp_path / "pretrained.weights.h5"
    network.save_weights(path)
    return path


def test_batch_norm_statistics_stay_fixed_while_backbone_trains(pretrained_weights: Path):
    import keras

    from kaggle_sf.models.classifier import build_classifier

    backbone = BackboneConfig(name="mobilenet", alpha=0.25, input_size=(64, 64), weights=str(pretrained_weights))
    model = build_classifier(backbone, dropout=0.0)
    network = model.get_layer("mobilenet")
    batch_norms = [layer for layer in network.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(batch_norms) == 27
    statistics_before = [(layer.moving_mean.numpy().copy(), layer.moving_variance.numpy().copy())
                         for layer in batch_norms]
    kernels_before = [layer.kernel.numpy().copy() for layer in network.layers if hasattr(layer, "kernel")]

    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    images = np.random.default_rng(0).uniform(0, 255, size=(16, 64, 64, 3)).astype("float32")
    model.fit(images, np.arange(16) % 10, epochs=2, batch_size=8, verbose=0)

    for layer, (mean, variance) in zip(batch_norms, statistics_before):
        assert np.array_equal(layer.moving_mean.numpy(), mean), layer.name
        assert np.array_equal(layer.moving_variance.numpy(), variance), layer.name
    # The convolutions did train: the weights of the last blocks moved.
    names = [layer.name for layer in network.layers if hasattr(layer, "kernel")]
    kernels_after = [layer.kernel.numpy() for layer in network.layers if hasattr(layer, "kernel")]
    trained = {n for n, a, b in zip(names, kernels_after, kernels_before) if not np.allclose(a, b)}
    assert {"conv_dw_13", "conv_pw_13", "conv_dw_12", "conv_pw_12"} <= trained


def test_saved_model_reloads_in_fresh_process_with_identical_predictions(tiny_competition: Path, tmp_path: Path):
    from kaggle_sf.finetune import finetune_fold

    config = load_config(None, ["train.finetune.phases=[{epochs: 1, learning_rate: 1e-3}]",
                                "train.finetune.batch_size=16"]).train.finetune
    train, validation, test = _fold_frames(tiny_competition)
    folder = tmp_path / "fold_0"
    result = finetune_fold(BACKBONE, 0, train, validation, test, config, seed=1, folder=folder)

    script = textwrap.dedent(f"""
        import pandas as pd
        from kaggle_sf.finetune import predict_images
        from kaggle_sf.models.classifier import load_classifier
        model = load_classifier({str(folder / 'model.keras')!r})
        table = pd.read_json({str(tmp_path / 'test.json')!r})
        print(predict_images(model, table, (64, 64), 16).to_json())
    """)
    test.to_json(tmp_path / "test.json")
    output = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, cwd=ROOT)
    reloaded = json.loads(output.stdout.strip().splitlines()[-1])
    for column in result.test.columns[1:]:
        fresh = [reloaded[column][str(i)] for i in range(len(test))]
        assert np.allclose(fresh, result.test[column].to_numpy(), atol=1e-6)
    assert list(reloaded["img"].values()) == list(result.test["img"])


KILL_AFTER_FIRST_EPOCH = """
import json, logging, os, signal, sys
logging.basicConfig(level=logging.INFO)
from pathlib import Path
import keras
from kaggle_sf.config import BackboneConfig, load_config
from kaggle_sf.data.catalog import load_catalog
from kaggle_sf.data.folds import make_folds
from kaggle_sf.finetune import TrainingState, finetune_fold

class KillAtSecondEpoch(keras.callbacks.Callback):
    calls = 0
    def on_train_begin(self, logs=None):
        KillAtSecondEpoch.calls += 1
        if KillAtSecondEpoch.calls == 2 and os.environ.get("KILL") == "1":
            os.kill(os.getpid(), signal.SIGKILL)

if os.environ.get("KILL") == "second state":
    # Killed after the second epoch's checkpoint is written and before the state that goes with it.
    save_state = TrainingState.save
    def save_or_die(self, folder):
        if len(self.history["loss"]) == 2:
            os.kill(os.getpid(), signal.SIGKILL)
        save_state(self, folder)
    TrainingState.save = save_or_die

catalog = load_catalog(Path(sys.argv[1]))
folds = make_folds(catalog.train, n_splits=2, seed=0)
frames = catalog.train.set_index("img").loc[folds["img"]].reset_index()
validation = (folds["fold"] == 0).to_numpy()
config = load_config(None, ["train.finetune.phases=[{epochs: 3, learning_rate: 1e-3}]", "train.finetune.patience=5",
                            "train.finetune.batch_size=16"]).train.finetune
backbone = BackboneConfig(name="mobilenet", alpha=0.25, input_size=(64, 64), weights="none")
result = finetune_fold(backbone, 0, frames[~validation], frames[validation], catalog.test, config, seed=1,
                       folder=Path(sys.argv[2]), callbacks=[KillAtSecondEpoch()])
print("EPOCHS", len(result.history["loss"]))
print("HISTORY", json.dumps(result.history))
"""


def _history(stdout: str) -> dict[str, list[float]]:
    return json.loads(next(line for line in stdout.splitlines() if line.startswith("HISTORY "))[8:])


def test_killed_training_resumes_from_last_finished_epoch(tiny_competition: Path, tmp_path: Path):
    folder = tmp_path / "fold_0"
    command = [sys.executable, "-c", KILL_AFTER_FIRST_EPOCH, str(tiny_competition), str(folder)]
    environment = {**os.environ, "KILL": "1"}
    never_stopped = subprocess.run([*command[:-1], str(tmp_path / "never_stopped")], capture_output=True,
                                   text=True, cwd=ROOT)
    assert never_stopped.returncode == 0, never_stopped.stderr[-2000:]

    killed = subprocess.run(command, capture_output=True, text=True, env=environment, cwd=ROOT)
    assert killed.returncode == -9, killed.stderr[-2000:]
    state = json.loads((folder / "state.json").read_text())
    assert state["epoch"] == 1
    assert len(state["history"]["loss"]) == 1
    assert not (folder / "model.keras").exists()
    assert not [p for p in folder.iterdir() if p.name.startswith(".tmp-")]

    resumed = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "Resuming mobilenet_0.25_64x64 fold 0 at phase 1, epoch 2" in resumed.stderr
    # One epoch before the kill plus two after it: three in all, not four.
    assert "EPOCHS 3" in resumed.stdout
    assert (folder / "model.keras").is_file()
    # The same shuffles, augmentations and dropout masks as a training that was never stopped (the
    # head's dropout is on by default).
    resumed_history, never_stopped_history = _history(resumed.stdout), _history(never_stopped.stdout)
    del resumed_history["images_per_second"], never_stopped_history["images_per_second"]
    assert resumed_history == never_stopped_history


def test_kill_before_state_resumes_exactly(tiny_competition: Path, tmp_path: Path):
    folder = tmp_path / "fold_0"
    command = [sys.executable, "-c", KILL_AFTER_FIRST_EPOCH, str(tiny_competition), str(folder)]
    never_stopped = subprocess.run([*command[:-1], str(tmp_path / "never_stopped")], capture_output=True,
                                   text=True, cwd=ROOT)
    assert never_stopped.returncode == 0, never_stopped.stderr[-2000:]

    killed = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "KILL": "second state"},
                            cwd=ROOT)
    assert killed.returncode == -9, killed.stderr[-2000:]
    state = json.loads((folder / "state.json").read_text())
    assert state["epoch"] == 1
    assert sorted(path.name for path in folder.glob("checkpoint*.keras")) == ["checkpoint-0-1.keras",
                                                                              "checkpoint-0-2.keras"]

    resumed = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "Resuming mobilenet_0.25_64x64 fold 0 at phase 1, epoch 2" in resumed.stderr
    resumed_history, never_stopped_history = _history(resumed.stdout), _history(never_stopped.stdout)
    del resumed_history["images_per_second"], never_stopped_history["images_per_second"]
    assert resumed_history == never_stopped_history
    # Only the checkpoint of the last state is left.
    assert [path.name for path in folder.glob("checkpoint*.keras")] == [json.loads(
        (folder / "state.json").read_text())["checkpoint"]]


@pytest.mark.parametrize("phases", ["[{epochs: 1, learning_rate: 1e-3, train_backbone: false}]"])
def test_frozen_phase_leaves_backbone_unchanged(tiny_competition: Path, tmp_path: Path, phases: str):
    import keras

    from kaggle_sf.finetune import finetune_fold

    config = load_config(None, [f"train.finetune.phases={phases}", "train.finetune.batch_size=16"]).train.finetune
    train, validation, test = _fold_frames(tiny_competition)
    keras.utils.set_random_seed(1)
    finetune_fold(BACKBONE, 0, train, validation, test, config, seed=1, folder=tmp_path / "a")
    first = keras.models.load_model(tmp_path / "a" / "model.keras").get_layer("mobilenet").get_weights()
    keras.utils.set_random_seed(1)
    from kaggle_sf.models.classifier import build_classifier

    initial = build_classifier(BACKBONE).get_layer("mobilenet").get_weights()
    assert all(np.array_equal(a, b) for a, b in zip(first, initial))


def _batches(dataset) -> list[list[np.ndarray]]:
    return [[np.asarray(column) for column in batch] for batch in dataset]


def test_decoded_frames_give_identical_batches(tiny_competition: Path):
    from kaggle_sf.data.augment import AugmentConfig, make_batch_augmenter
    from kaggle_sf.data.images import DecodedFrames, image_dataset
    from kaggle_sf.train import class_indices

    train, validation, _ = _fold_frames(tiny_competition)
    everything = pd.concat([train, validation])
    # Decoded in another order and with extra frames, as one store serves every fold.
    decoded = DecodedFrames(everything["path"].tolist()[::-1], (40, 56))
    labels = class_indices(train["classname"])
    augment = make_batch_augmenter(AugmentConfig())

    for source in (None, decoded):
        dataset = image_dataset(train["path"], (40, 56), 8, labels=labels, shuffle=True, seed=3, augment=augment,
                                decoded=source)
        # Two passes: the second reshuffles, and the augmentation seeds move on.
        epochs = [_batches(dataset), _batches(dataset)]
        if source is None:
            from_files = epochs
    for epoch_from_files, epoch_from_memory in zip(from_files, epochs):
        assert len(epoch_from_memory) == len(epoch_from_files) == -(-len(train) // 8)
        for (images_a, labels_a), (images_b, labels_b) in zip(epoch_from_files, epoch_from_memory):
            assert images_b.dtype == np.float32
            assert np.array_equal(images_a, images_b)
            assert np.array_equal(labels_a, labels_b)
    assert not np.array_equal(from_files[0][0][1], from_files[1][0][1])

    with_ids = [image_dataset(validation["path"], (40, 56), 8, ids=validation["img"], decoded=source)
                for source in (None, decoded)]
    for (images_a, ids_a), (images_b, ids_b) in zip(*map(_batches, with_ids)):
        assert np.array_equal(images_a, images_b)
        assert list(ids_a) == list(ids_b)


def test_training_datasets_run_without_autotuning(tiny_competition: Path):
    from kaggle_sf.data.images import image_dataset

    train, _, _ = _fold_frames(tiny_competition)
    dataset = image_dataset(train["path"], (40, 56), 8, labels=np.zeros(len(train), dtype=int), shuffle=True)
    assert dataset.options().autotune.enabled is False
    assert sum(int(images.shape[0]) for images, _ in dataset) == len(train)


def test_decoded_frames_name_what_they_lack(tiny_competition: Path, tmp_path: Path):
    from kaggle_sf.data.images import DecodedFrames, ImageDecodeError, image_dataset

    train, validation, _ = _fold_frames(tiny_competition)
    decoded = DecodedFrames(train["path"], (40, 56))
    assert decoded.frames.shape == (len(train), 40, 56, 3)
    assert decoded.nbytes == len(train) * 40 * 56 * 3
    missing = validation["path"].iloc[0]
    with pytest.raises(KeyError, match=f"{missing} is not among the {len(train)} decoded frames"):
        image_dataset(validation["path"], (40, 56), 8, decoded=decoded)
    with pytest.raises(ValueError, match=r"frames decoded at \(40, 56\) cannot make batches at \(48, 64\)"):
        image_dataset(train["path"], (48, 64), 8, decoded=decoded)

    broken = tmp_path / "broken.jpg"
    broken.write_bytes(Path(train["path"].iloc[0]).read_bytes()[:100])
    with pytest.raises(ImageDecodeError, match="broken.jpg: OpenCV cannot decode it"):
        DecodedFrames([*train["path"], str(broken)], (40, 56))


def test_decoded_frames_normalise_paths(tiny_competition: Path):
    from kaggle_sf.data.images import DecodedFrames

    train, _, _ = _fold_frames(tiny_competition)
    paths = train["path"].tolist()[:3]
    decoded = DecodedFrames(paths, (40, 56))
    spelled = [str(Path(paths[0]).parent / "." / Path(paths[0]).name), f"{Path(paths[1]).parent}//"
               f"{Path(paths[1]).name}", Path(paths[2])]
    assert decoded.rows(spelled).tolist() == [0, 1, 2]


@pytest.mark.parametrize("shuffle", [False, True])
def test_empty_image_list_gives_no_batches(shuffle: bool):
    from kaggle_sf.data.images import image_dataset

    dataset = image_dataset([], (40, 56), 8, labels=[], shuffle=shuffle)
    assert list(dataset) == []


def test_decoded_frames_are_freed_after_use(tiny_competition: Path):
    import gc
    import weakref

    from kaggle_sf.data.images import DecodedFrames, image_dataset

    train, _, _ = _fold_frames(tiny_competition)
    # A list, as YAML gives the input size.
    decoded = DecodedFrames(train["path"], [40, 56])
    assert decoded.size == (40, 56)
    dataset = image_dataset(train["path"], (40, 56), 8, labels=np.zeros(len(train), dtype=int), decoded=decoded)
    assert sum(int(images.shape[0]) for images, _ in dataset) == len(train)

    alive = weakref.ref(decoded)
    del decoded
    gc.collect()
    assert alive() is None
    with pytest.raises(Exception, match="the decoded frames were freed while a dataset still reads them"):
        next(iter(dataset))


def test_finetune_rejects_frames_missing_validation(tiny_competition: Path, tmp_path: Path):
    from kaggle_sf.data.images import DecodedFrames
    from kaggle_sf.finetune import finetune_fold

    config = load_config(None, ["train.finetune.phases=[{epochs: 1, learning_rate: 1e-3}]"]).train.finetune
    train, validation, test = _fold_frames(tiny_competition)
    decoded = DecodedFrames(train["path"], BACKBONE.input_size)
    with pytest.raises(KeyError, match="decode every frame that the dataset reads"):
        finetune_fold(BACKBONE, 0, train, validation, test, config, seed=1, folder=tmp_path / "fold", decoded=decoded)
    assert not (tmp_path / "fold").exists()


def test_frame_memory_limit_decodes_from_files(tiny_competition: Path, caplog: pytest.LogCaptureFixture):
    from kaggle_sf.finetune import keep_frames_in_memory

    train, _, _ = _fold_frames(tiny_competition)
    needed_gb = len(train) * 64 * 64 * 3 / 1e9
    config = load_config(None, [f"train.finetune.frame_cache_gb={needed_gb}"]).train.finetune
    decoded = keep_frames_in_memory(train, BACKBONE, config)
    assert decoded is not None
    assert decoded.paths == train["path"].tolist()

    config = load_config(None, [f"train.finetune.frame_cache_gb={needed_gb * 0.99}"]).train.finetune
    with caplog.at_level("INFO", logger="kaggle_sf.finetune"):
        assert keep_frames_in_memory(train, BACKBONE, config) is None
    assert f"{len(train)} training frames at 64x64 would take 0.00 GB" in caplog.text
    assert "decoding them from the files every epoch" in caplog.text


def test_frame_memory_changes_neither_model_nor_key(tiny_competition: Path, tmp_path: Path):
    from dataclasses import replace

    from kaggle_sf.data.images import DecodedFrames
    from kaggle_sf.finetune import finetune_fold
    from kaggle_sf.run import _finetune_settings

    config = load_config(None, ["train.finetune.phases=[{epochs: 2, learning_rate: 1e-3}]",
                                "train.finetune.batch_size=16"]).train.finetune
    assert _finetune_settings(replace(config, frame_cache_gb=0)) == _finetune_settings(config)
    assert _finetune_settings(replace(config, dropout=0.1)) != _finetune_settings(config)

    train, validation, test = _fold_frames(tiny_competition)
    decoded = DecodedFrames(pd.concat([train, validation])["path"], BACKBONE.input_size)
    from_files = finetune_fold(BACKBONE, 0, train, validation, test, config, seed=1, folder=tmp_path / "files")
    from_memory = finetune_fold(BACKBONE, 0, train, validation, test, config, seed=1, folder=tmp_path / "memory",
                                decoded=decoded)
    for name in ("loss", "val_log_loss"):
        assert len(from_memory.history[name]) == 2
        assert np.allclose(from_memory.history[name], from_files.history[name], rtol=1e-5), name
    assert list(from_memory.oof["img"]) == list(from_files.oof["img"])
    assert np.allclose(from_memory.oof.iloc[:, 1:].to_numpy(float), from_files.oof.iloc[:, 1:].to_numpy(float),
                       atol=1e-6)


def test_phase_on_same_layers_restarts_adam_in_place(tiny_competition: Path, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch):
    import kaggle_sf.finetune as finetune

    config = load_config(None, ["train.finetune.phases=[{epochs: 1, learning_rate: 1e-3, train_backbone: false}, "
                                "{epochs: 1, learning_rate: 1e-3}, {epochs: 2, learning_rate: 1e-4}]",
                                "train.finetune.batch_size=16", "train.finetune.patience=5"]).train.finetune
    train, validation, test = _fold_frames(tiny_competition)
    restarts = []
    restart = finetune._restart_optimizer

    def counting_restart(model, learning_rate):
        restarted = restart(model, learning_rate)
        restarts.append((learning_rate, restarted, int(model.optimizer.iterations.numpy())))
        return restarted

    monkeypatch.setattr(finetune, "_restart_optimizer", counting_restart)
    restarted = finetune.finetune_fold(BACKBONE, 0, train, validation, test, config, seed=1, folder=tmp_path / "a")
    # Only the third phase trains the same layers as the phase before it.
    assert restarts == [(1e-4, True, 0)]

    monkeypatch.setattr(finetune, "_restart_optimizer", lambda model, learning_rate: False)
    compiled = finetune.finetune_fold(BACKBONE, 0, train, validation, test, config, seed=1, folder=tmp_path / "b")
    for name in ("loss", "val_log_loss"):
        assert len(restarted.history[name]) == 4
        assert np.allclose(restarted.history[name], compiled.history[name], rtol=1e-5), name
