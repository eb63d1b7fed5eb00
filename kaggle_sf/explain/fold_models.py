"""The fold models behind an MLflow run, loaded as classifiers split for class-activation maps.

The main job tags each fold child run with ``stage=fold``, ``backbone`` (the backbone's label), ``fold``,
``mode`` and ``model_dir``, the fold model's cache folder. That folder holds, next to the fold's
predictions, either

* ``model.keras``: a fine-tuned classifier from frames to probabilities (``build_classifier``'s
  topology), or
* ``head.keras``: a head trained on pooled bottleneck features. Its dense layer is put back on top of
  the backbone's feature maps, rebuilt from the backbone's settings in the parent run's params
  (``backbones.<i>.*``), which gives the same topology.

A run id may name the parent run (all its fold models, narrowed by backbone or fold) or one fold run.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from kaggle_sf.config import BackboneConfig, ConfigError

logger = logging.getLogger(__name__)

MODEL_FILE = "model.keras"
"""A fine-tuned fold model's whole classifier, in its fold model's folder."""


class ExplainError(ValueError):
    """A run has no usable fold models, or their files are missing."""


@dataclass(frozen=True)
class FoldModelRef:
    """The location and settings of one fold model of a run.

    Attributes:
        run_id: the fold's MLflow child run.
        backbone: the backbone's settings.
        fold: the fold whose drivers the model did not train on.
        mode: ``head`` or ``finetune``.
        model_dir: the fold model's cache folder.
    """

    run_id: str
    backbone: BackboneConfig
    fold: int
    mode: str
    model_dir: Path

    @property
    def name(self) -> str:
        """Label for logs and figures, e.g. ``mobilenet_0.25_224x224 fold 3``."""
        return f"{self.backbone.label} fold {self.fold}"


# --- Finding a run's fold models -----------------------------------------------------------------


def _backbones_of(run_id: str, params: dict[str, str]) -> list[BackboneConfig]:
    """Rebuild the backbone settings that a main job logged as ``backbones.<i>.*`` params."""
    backbones = []
    index = 0
    while f"backbones.{index}.name" in params:
        prefix = f"backbones.{index}."
        try:
            backbones.append(BackboneConfig(
                name=params[prefix + "name"],
                alpha=float(params.get(prefix + "alpha", BackboneConfig.alpha)),
                input_size=tuple(json.loads(params.get(prefix + "input_size", "[224, 224]"))),
                weights=params.get(prefix + "weights", BackboneConfig.weights),
            ))
        except (ConfigError, ValueError, TypeError) as error:
            raise ExplainError(f"MLflow run {run_id} logs backbone settings {prefix}* that this version "
                               f"cannot use: {error}") from error
        index += 1
    return backbones


def _fold_runs(client, run) -> tuple[list, object]:
    """Return the fold runs a run id stands for, and their parent run."""
    tags = run.data.tags
    if tags.get("stage") == "fold":
        parent_id = tags.get("mlflow.parentRunId")
        if parent_id is None:
            raise ExplainError(f"fold run {run.info.run_id} has no parent run, whose params name its backbone")
        return [run], client.get_run(parent_id)

    filter_string = f"tags.mlflow.parentRunId = '{run.info.run_id}' and tags.stage = 'fold'"
    children = client.search_runs([run.info.experiment_id], filter_string=filter_string, max_results=10000)
    return list(children), run


def find_fold_models(run_id: str, *, backbone: str | None = None, fold: int | None = None) -> list[FoldModelRef]:
    """List the fold models of an MLflow run in the current tracking store, by backbone and fold.

    Args:
        run_id: a main job's parent run, or one of its fold runs.
        backbone: keep only this backbone label (e.g. ``mobilenet_0.25_224x224``).
        fold: keep only this fold.

    Raises:
        ExplainError: the run is not found, has no fold runs, or none matches ``backbone`` and ``fold``.
    """
    import mlflow
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    client = MlflowClient()
    try:
        run = client.get_run(run_id)
    except MlflowException as error:
        raise ExplainError(f"MLflow run {run_id} not found in {mlflow.get_tracking_uri()}; pass a run id that "
                           "the main job printed, with the --work-dir it ran in") from error
    fold_runs, parent = _fold_runs(client, run)
    backbones = {config.label: config for config in _backbones_of(parent.info.run_id, parent.data.params)}

    refs = []
    for fold_run in fold_runs:
        tags = fold_run.data.tags
        label = tags.get("backbone", "")
        if "model_dir" not in tags:
            raise ExplainError(f"fold run {fold_run.info.run_id} ({label} fold {tags.get('fold')}) has no "
                               "model_dir tag; re-run the main job to record where its model is")
        if label not in backbones:
            raise ExplainError(f"fold run {fold_run.info.run_id} is tagged with backbone {label!r}, which the "
                               f"parent run {parent.info.run_id} does not configure ({', '.join(backbones)})")
        refs.append(FoldModelRef(run_id=fold_run.info.run_id, backbone=backbones[label], fold=int(tags["fold"]),
                                 mode=tags.get("mode", "head"), model_dir=Path(tags["model_dir"])))
    if not refs:
        raise ExplainError(f"MLflow run {run_id} has no fold runs; pass the run id of a main job or of one of "
                           "its fold runs")

    labels = list(dict.fromkeys(ref.backbone.label for ref in refs))
    folds = sorted({ref.fold for ref in refs})
    if backbone is not None:
        refs = [ref for ref in refs if ref.backbone.label == backbone]
    if fold is not None:
        refs = [ref for ref in refs if ref.fold == fold]
    if not refs:
        raise ExplainError(f"MLflow run {run_id} has no fold model for backbone {backbone or 'any'} and fold "
                           f"{'any' if fold is None else fold}; its backbones are {', '.join(labels)} and its "
                           f"folds {', '.join(map(str, folds))}")
    return sorted(refs, key=lambda ref: (labels.index(ref.backbone.label), ref.fold))


def single_backbone(refs: Sequence[FoldModelRef]) -> list[FoldModelRef]:
    """Return ``refs`` when they share one backbone.

    Raises:
        ExplainError: they span several backbones; the message lists them.
    """
    labels = list(dict.fromkeys(ref.backbone.label for ref in refs))
    if len(labels) > 1:
        raise ExplainError(f"the run has fold models of {len(labels)} backbones ({', '.join(labels)}); "
                           "choose one with --backbone")
    return list(refs)


# --- Loading -------------------------------------------------------------------------------------


def assemble_head_classifier(features, head):
    """Put a head-mode head on a backbone's feature maps: the topology of ``build_classifier``.

    Args:
        features: ``build_backbone(config, pooling=None)``, frames -> last feature maps.
        head: ``build_head``'s model, pooled features -> probabilities, with trained weights.

    Returns:
        A model from frames to probabilities that shares the layers (and weights) of both.
    """
    import keras

    pooled = keras.layers.GlobalAveragePooling2D(name="pool")(features.outputs[0])
    dropped = head.get_layer("dropout")(pooled)
    probabilities = head.get_layer("predictions")(dropped)
    return keras.Model(features.inputs, probabilities, name=f"{features.name}_with_head")


def load_cam_models(refs: Sequence[FoldModelRef]) -> list:
    """Load fold models as ``CamModel``s split at their backbone's last convolutional layer.

    Head-mode folds of one backbone share a single backbone instance, so an ensemble computes its
    feature maps once per frame.

    Raises:
        ExplainError: a fold model's folder has neither ``model.keras`` nor ``head.keras``, or a head-mode
            fold model sits on a randomly initialised backbone, which cannot be rebuilt.
        WeightsError: a head-mode backbone's ImageNet weights are not available.
    """
    import keras

    from kaggle_sf.explain.cam import split_classifier
    from kaggle_sf.models.backbones import build_backbone, get_spec
    from kaggle_sf.train import HEAD_FILE

    backbones: dict[str, keras.Model] = {}
    models = []
    for ref in refs:
        layer = get_spec(ref.backbone.name).last_conv_layer
        model_file, head_file = ref.model_dir / MODEL_FILE, ref.model_dir / HEAD_FILE
        if model_file.is_file():
            classifier = keras.models.load_model(model_file, compile=False)
        elif head_file.is_file():
            if ref.backbone.weights.lower() == "none":
                raise ExplainError(f"{ref.name} is a head trained on features of a randomly initialised "
                                   "backbone (backbones.weights: none), whose weights were never saved, so it "
                                   "cannot be rebuilt; train with imagenet or an .h5 weights file to explain it")
            if ref.backbone.label not in backbones:
                # NOTE: this loads the weights file found now; a different file than at feature
                # extraction (another ImageNet download, an edited .h5) is not detected here.
                backbones[ref.backbone.label] = build_backbone(ref.backbone, pooling=None)
            head = keras.models.load_model(head_file, compile=False)
            classifier = assemble_head_classifier(backbones[ref.backbone.label], head)
        else:
            raise ExplainError(f"{ref.model_dir} ({ref.name}) contains neither {MODEL_FILE} nor {HEAD_FILE}; "
                               "the model was trained before fold models were saved, or the folder was "
                               "removed. Delete the folder and re-run the main job to retrain that fold")
        models.append(split_classifier(classifier, layer, name=ref.name))
        logger.debug("Loaded %s from %s", ref.name, ref.model_dir)
    return models



def open_tracking_store(work_dir: Path) -> None:
    """Point MLflow at the main job's store in ``work_dir``.

    Raises:
        ExplainError: ``work_dir`` has no SQLite store (unless ``MLFLOW_TRACKING_URI`` names another store).
    """
    from kaggle_sf import tracking

    uri = tracking.tracking_uri(work_dir)
    database = Path(uri.removeprefix("sqlite:///")) if uri.startswith("sqlite:///") else None
    if database is not None and not database.is_file():
        raise ExplainError(f"no MLflow store at {database}; pass the --work-dir that the main job ran in")
    tracking.configure_tracking(work_dir)


def load_run_models(run_id: str, *, backbone: str | None = None,
                    fold: int | None = None) -> tuple[list[FoldModelRef], list]:
    """Find and load the fold models of one backbone of a run, for explanations.

    Returns:
        The fold models' references and their ``CamModel``s, in the same order.

    Raises:
        ExplainError: the run has no matching fold models, spans several backbones without ``backbone``,
            or a model file is missing.
    """
    refs = single_backbone(find_fold_models(run_id, backbone=backbone, fold=fold))
    return refs, load_cam_models(refs)
