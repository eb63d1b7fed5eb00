"""Run configuration: typed sections loaded from YAML, overridden by ``--set``, checked before any work.

A configuration is a tree of frozen dataclasses. Loading walks the YAML mapping against the dataclass
fields, so an unknown key, a wrong type or an impossible value is rejected with the dotted key path
(``train.head.learning_rate``) before a single image is read.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

CLASSES = tuple(f"c{i}" for i in range(10))
BACKBONE_NAMES = ("mobilenet", "resnet50", "xception", "inception_v3", "inception_resnet_v2")


class ConfigError(ValueError):
    """A configuration key is unknown, has the wrong type or an impossible value."""

    def __init__(self, message: str, key: str = "", detail: str = "") -> None:
        super().__init__(message)
        self.key = key
        self.detail = detail


class DuplicateKeyError(yaml.YAMLError):
    """A YAML mapping gives one key twice, which PyYAML would otherwise resolve silently to the last value."""

    def __init__(self, key: object, line: int) -> None:
        super().__init__(f"line {line}: key '{key}' is given twice in the same mapping")
        self.key = key
        self.line = line


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, rejecting duplicate keys."""


def _construct_unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    # A mapping with a merge key ("<<") may override merged keys on purpose, so it is left as it is.
    if not any(key_node.tag == "tag:yaml.org,2002:merge" for key_node, _ in node.value):
        seen: set[object] = set()
        for key_node, _ in node.value:
            key = loader.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
            except TypeError:
                # An unhashable key, which the safe loader reports itself.
                continue
            if duplicate:
                raise DuplicateKeyError(key, key_node.start_mark.line + 1)
            seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping)


def _load_yaml(text: str) -> Any:
    """Parse YAML text like ``yaml.safe_load``, raising ``DuplicateKeyError`` for a key given twice."""
    return yaml.load(text, Loader=_UniqueKeyLoader)


def _require(condition: bool, key: str, message: str) -> None:
    if not condition:
        raise ConfigError(f"config key '{key}': {message}", key=key, detail=message)


@dataclass(frozen=True)
class DataConfig:
    """Settings for reading competition images."""

    on_bad_image: str = "fail"
    """Handling of undecodable images, which a cheap check finds before feature extraction.

    ``fail`` stops the run and lists them all. ``skip`` lists them and leaves them out; a skipped test
    image gets the training class prior in the submission.
    """

    def __post_init__(self) -> None:
        _require(self.on_bad_image in ("fail", "skip"), "data.on_bad_image",
                 f"expected 'fail' or 'skip', got {self.on_bad_image!r}")


@dataclass(frozen=True)
class FoldsConfig:
    """Driver-grouped cross-validation folds."""

    n_splits: int = 5
    seed: int = 42
    validation_subjects: tuple[tuple[str, ...], ...] = ()
    """Explicit validation drivers per fold; when given, ``n_splits`` is ignored."""

    def __post_init__(self) -> None:
        if not self.validation_subjects:
            _require(self.n_splits >= 2, "folds.n_splits", f"needs at least 2 folds, got {self.n_splits}")
        seen: set[str] = set()
        for fold, subjects in enumerate(self.validation_subjects):
            _require(len(subjects) > 0, "folds.validation_subjects", f"fold {fold} lists no driver")
            repeated = seen.intersection(subjects)
            _require(not repeated, "folds.validation_subjects",
                     f"drivers {sorted(repeated)} are listed in more than one fold")
            seen.update(subjects)


@dataclass(frozen=True)
class BackboneConfig:
    """One ImageNet backbone: which network, at what input size, with which weights."""

    name: str = "mobilenet"
    alpha: float = 0.25
    """Width multiplier; used by MobileNet only."""
    input_size: tuple[int, int] = (224, 224)
    """Height and width in pixels."""
    weights: str = "imagenet"
    """``imagenet`` (Keras' cache under ``$KERAS_HOME/models``), a path to an ``.h5`` file, or ``none``."""

    def __post_init__(self) -> None:
        _require(self.name in BACKBONE_NAMES, "backbones.name",
                 f"unknown backbone {self.name!r}; choose one of {', '.join(BACKBONE_NAMES)}")
        _require(self.alpha > 0, "backbones.alpha", f"must be positive, got {self.alpha}")
        _require(len(self.input_size) == 2 and min(self.input_size) >= 32, "backbones.input_size",
                 f"expected [height, width] of at least 32 pixels, got {list(self.input_size)}")

    @property
    def label(self) -> str:
        """Short name used in run names, cache folders and tables, e.g. ``mobilenet_0.25_224x224``."""
        width = f"_{self.alpha:g}" if self.name == "mobilenet" else ""
        height_px, width_px = self.input_size
        return f"{self.name}{width}_{height_px}x{width_px}"


@dataclass(frozen=True)
class FeaturesConfig:
    """Bottleneck feature extraction."""

    batch_size: int = 32

    def __post_init__(self) -> None:
        _require(self.batch_size >= 1, "features.batch_size", f"must be at least 1, got {self.batch_size}")


@dataclass(frozen=True)
class HeadConfig:
    """Dropout + dense softmax head trained on cached bottleneck features."""

    dropout: float = 0.5
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 64
    max_epochs: int = 200
    patience: int = 15

    def __post_init__(self) -> None:
        _require(0 <= self.dropout < 1, "train.head.dropout", f"must be in [0, 1), got {self.dropout}")
        _require(self.learning_rate > 0, "train.head.learning_rate", f"must be positive, got {self.learning_rate}")
        _require(self.weight_decay >= 0, "train.head.weight_decay", f"must be >= 0, got {self.weight_decay}")
        _require(self.batch_size >= 1, "train.head.batch_size", f"must be at least 1, got {self.batch_size}")
        _require(self.max_epochs >= 1, "train.head.max_epochs", f"must be at least 1, got {self.max_epochs}")
        _require(self.patience >= 1, "train.head.patience", f"must be at least 1, got {self.patience}")


@dataclass(frozen=True)
class PhaseConfig:
    """One fine-tuning phase: which layers train, at what learning rate, for how long."""

    epochs: int = 3
    learning_rate: float = 1e-4
    train_backbone: bool = True
    """False trains the head alone (a warm-up with the backbone frozen)."""

    def __post_init__(self) -> None:
        _require(self.epochs >= 1, "train.finetune.phases.epochs", f"must be at least 1, got {self.epochs}")
        _require(self.learning_rate > 0, "train.finetune.phases.learning_rate",
                 f"must be positive, got {self.learning_rate}")


@dataclass(frozen=True)
class FinetuneConfig:
    """Fine-tuning of the whole backbone plus head."""

    phases: tuple[PhaseConfig, ...] = (
        PhaseConfig(epochs=1, learning_rate=1e-3, train_backbone=False),
        PhaseConfig(epochs=4, learning_rate=1e-4),
        PhaseConfig(epochs=2, learning_rate=1e-5),
    )
    batch_size: int = 32
    max_images_per_epoch: int = 0
    """Cap on training frames drawn per epoch (a fresh random subset each epoch); 0 uses all."""
    dropout: float = 0.5
    patience: int = 2
    batch_norm: str = "frozen"
    """``frozen`` keeps pretrained BatchNormalization layers in inference mode with their moving statistics;
    ``train`` lets them normalise with batch statistics and update, which small MobileNets need."""
    augment: bool = True
    half_merge_probability: float = 0.3
    mixed_precision: bool = False
    xla: bool = False
    frame_cache_gb: float = 4.0
    """Memory for the training drivers' frames, decoded once and kept across epochs and folds, in GB
    (height x width x 3 bytes a frame). Larger sets are decoded from the files every epoch; 0 always does.
    The batches are the same either way."""

    def __post_init__(self) -> None:
        _require(len(self.phases) >= 1, "train.finetune.phases", "needs at least one phase")
        _require(self.batch_size >= 1, "train.finetune.batch_size", f"must be at least 1, got {self.batch_size}")
        _require(self.max_images_per_epoch >= 0, "train.finetune.max_images_per_epoch",
                 f"must be >= 0, got {self.max_images_per_epoch}")
        _require(0 <= self.dropout < 1, "train.finetune.dropout", f"must be in [0, 1), got {self.dropout}")
        _require(self.patience >= 1, "train.finetune.patience", f"must be at least 1, got {self.patience}")
        _require(self.batch_norm in ("frozen", "train"), "train.finetune.batch_norm",
                 f"expected 'frozen' or 'train', got {self.batch_norm!r}")
        _require(0 <= self.half_merge_probability <= 1, "train.finetune.half_merge_probability",
                 f"must be in [0, 1], got {self.half_merge_probability}")
        _require(self.frame_cache_gb >= 0, "train.finetune.frame_cache_gb",
                 f"must be >= 0, got {self.frame_cache_gb}")


@dataclass(frozen=True)
class TrainConfig:
    """Training settings of each backbone x fold model."""

    mode: str = "head"
    """``head`` trains a head on cached features; ``finetune`` trains the whole backbone."""
    head: HeadConfig = field(default_factory=HeadConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)

    def __post_init__(self) -> None:
        _require(self.mode in ("head", "finetune"), "train.mode",
                 f"expected 'head' or 'finetune', got {self.mode!r}")


def _require_range(bounds: tuple[float, float], key: str, *, log: bool) -> None:
    low, high = bounds
    _require(low < high, key, f"expected [low, high] with low < high, got {list(bounds)}")
    if log:
        _require(low > 0, key, f"a log-scale range needs a positive low end, got {list(bounds)}")


@dataclass(frozen=True)
class HeadSearchConfig:
    """The head search: ranges (learning rate and weight decay on a log scale, dropout on a linear one)."""

    learning_rate: tuple[float, float] = (1e-5, 1e-1)
    dropout: tuple[float, float] = (0.0, 0.8)
    weight_decay: tuple[float, float] = (1e-7, 1e-1)
    batch_sizes: tuple[int, ...] = (32, 64, 128, 256)
    repeats: int = 2
    """Heads trained per fold with different seeds; a trial's value is the mean of their out-of-fold losses."""

    def __post_init__(self) -> None:
        _require(self.repeats >= 1, "search.head.repeats", f"must be at least 1, got {self.repeats}")
        _require_range(self.learning_rate, "search.head.learning_rate", log=True)
        _require_range(self.weight_decay, "search.head.weight_decay", log=True)
        _require_range(self.dropout, "search.head.dropout", log=False)
        _require(0 <= self.dropout[0] and self.dropout[1] < 1, "search.head.dropout",
                 f"must lie in [0, 1), got {list(self.dropout)}")
        _require(len(self.batch_sizes) >= 1 and all(size >= 1 for size in self.batch_sizes),
                 "search.head.batch_sizes", f"expected a list of sizes of at least 1, got {list(self.batch_sizes)}")


@dataclass(frozen=True)
class FinetuneSearchConfig:
    """Short fine-tuning trials over the learning rate of the backbone phases."""

    learning_rate: tuple[float, float] = (1e-6, 1e-2)
    """Range of the first backbone-training phase's rate; later backbone phases keep their configured ratio."""
    steps: int = 200
    """Training steps per trial, at ``train.finetune.batch_size`` frames per step."""
    evaluations: int = 4
    """Validation passes per trial, evenly spaced; each is a point where the pruner may stop the trial."""
    n_train_images: int = 1024
    """Frames sampled from the first fold's training drivers, decoded once per search."""
    n_val_images: int = 512
    """Frames sampled from the first fold's validation drivers, decoded once per search."""

    def __post_init__(self) -> None:
        _require_range(self.learning_rate, "search.finetune.learning_rate", log=True)
        _require(self.evaluations >= 1, "search.finetune.evaluations", f"must be at least 1, got {self.evaluations}")
        _require(self.steps >= self.evaluations, "search.finetune.steps",
                 f"must be at least search.finetune.evaluations ({self.evaluations}), got {self.steps}")
        _require(self.n_train_images >= 1, "search.finetune.n_train_images",
                 f"must be at least 1, got {self.n_train_images}")
        _require(self.n_val_images >= 1, "search.finetune.n_val_images", f"must be at least 1, got {self.n_val_images}")


@dataclass(frozen=True)
class SearchConfig:
    """Optuna search over learning rates and head settings, one study per backbone.

    In ``head`` mode the study tunes the head on cached features by out-of-fold log loss; in ``finetune``
    mode it tunes the backbone learning rate with short fine-tuning trials.
    """

    enabled: bool = False
    n_trials: int = 30
    """Finished (complete or pruned) trials each study should hold, counted over all workers and restarts."""
    timeout_s: float = 600.0
    """Wall-clock limit of one process's search on one backbone, in seconds."""
    storage: str = ""
    """Optuna storage URL, e.g. ``postgresql+psycopg2://user:password@host/db``; empty means
    ``sqlite:///<work_dir>/mlruns/optuna.db``."""
    study_name: str = "kaggle_sf"
    """Prefix of the study names; the rest is the search kind, the backbone and a digest of the data."""
    seed: int = 42
    """Seed of the sampler: each trial's draws are seeded by this plus the trial number."""
    n_startup_trials: int = 8
    """Trials sampled at random before TPE models the results."""
    pruner: str = "median"
    """``median`` stops a trial whose value at a step is worse than the median of earlier trials; ``none``."""
    pruner_startup_trials: int = 4
    """Finished trials the pruner waits for before it stops any."""
    head: HeadSearchConfig = field(default_factory=HeadSearchConfig)
    finetune: FinetuneSearchConfig = field(default_factory=FinetuneSearchConfig)

    def __post_init__(self) -> None:
        _require(self.n_trials >= 1, "search.n_trials", f"must be at least 1, got {self.n_trials}")
        _require(self.timeout_s > 0, "search.timeout_s", f"must be positive, got {self.timeout_s}")
        _require(bool(self.study_name.strip()), "search.study_name", "must not be empty")
        _require(self.n_startup_trials >= 0, "search.n_startup_trials",
                 f"must be >= 0, got {self.n_startup_trials}")
        _require(self.pruner in ("median", "none"), "search.pruner",
                 f"expected 'median' or 'none', got {self.pruner!r}")
        _require(self.pruner_startup_trials >= 0, "search.pruner_startup_trials",
                 f"must be >= 0, got {self.pruner_startup_trials}")


@dataclass(frozen=True)
class EnsembleConfig:
    """The blend stage: candidate recipes for the submission, scored on out-of-fold predictions."""

    clip: float = 1e-3
    """Bound of the clipping calibration: probabilities clipped to [clip, 1 - clip] and renormalised.
    Calibration keeps it only where it lowers the out-of-fold loss; 0 leaves clipping out."""
    smoothing: bool = True
    """Try neighbour smoothing in each backbone's bottleneck-feature space."""
    neighbours: tuple[int, ...] = (1, 2, 3, 5, 8, 13, 20, 30, 50)
    """Neighbour counts tried by smoothing."""
    neighbour_weights: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
    """Weights of the neighbours' mean tried by smoothing; the frame's own prediction keeps the rest."""
    held_out_repeats: int = 3
    """Random splits of the drivers into halves for the held-out check; each is fitted both ways."""
    select_by: str = "held_out"
    """``held_out`` chooses the candidate with the lowest held-out loss, ``oof`` the lowest OOF loss."""

    def __post_init__(self) -> None:
        _require(0 <= self.clip < 0.1, "ensemble.clip", f"must be in [0, 0.1), got {self.clip}")
        _require(len(self.neighbours) >= 1 and all(k >= 1 for k in self.neighbours), "ensemble.neighbours",
                 f"expected a list of counts of at least 1, got {list(self.neighbours)}")
        _require(len(self.neighbour_weights) >= 1 and all(0 < w <= 1 for w in self.neighbour_weights),
                 "ensemble.neighbour_weights",
                 f"expected a list of weights in (0, 1], got {list(self.neighbour_weights)}")
        _require(self.held_out_repeats >= 1, "ensemble.held_out_repeats",
                 f"must be at least 1, got {self.held_out_repeats}")
        _require(self.select_by in ("held_out", "oof"), "ensemble.select_by",
                 f"expected 'held_out' or 'oof', got {self.select_by!r}")


@dataclass(frozen=True)
class SubmitConfig:
    """Upload of the submission to Kaggle."""

    enabled: bool = False
    message: str = ""
    """Submission description; empty means the run name, MLflow run id and out-of-fold log loss."""
    timeout_s: float = 600.0
    """How long to wait for Kaggle's score before leaving the submission pending."""
    poll_interval_s: float = 10.0

    def __post_init__(self) -> None:
        _require(self.timeout_s > 0, "submit.timeout_s", f"must be positive, got {self.timeout_s}")
        _require(self.poll_interval_s > 0, "submit.poll_interval_s", f"must be positive, got {self.poll_interval_s}")


@dataclass(frozen=True)
class ExplainConfig:
    """Charts and class-activation grids logged to the run's MLflow artifacts."""

    enabled: bool = True
    frames_per_class: int = 2
    """Right predictions per class in the class-activation grid, and as many wrong ones; also the number
    of sample frames per class."""
    method: str = "auto"
    """``cam`` (pooling + dense heads), ``gradcam`` (any model), or ``auto``: CAM where it applies."""

    def __post_init__(self) -> None:
        _require(self.frames_per_class >= 1, "explain.frames_per_class",
                 f"must be at least 1, got {self.frames_per_class}")
        _require(self.method in ("auto", "cam", "gradcam"), "explain.method",
                 f"expected 'auto', 'cam' or 'gradcam', got {self.method!r}")


@dataclass(frozen=True)
class Config:
    """A whole run: data, folds, backbones, training, blending, submission, charts."""

    competition: str = "state-farm-distracted-driver-detection"
    run_name: str = ""
    """Name of the MLflow parent run and of the submission file; empty means ``<config>-<time>``."""
    seed: int = 42
    data: DataConfig = field(default_factory=DataConfig)
    folds: FoldsConfig = field(default_factory=FoldsConfig)
    backbones: tuple[BackboneConfig, ...] = (BackboneConfig(),)
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    ensemble: EnsembleConfig = field(default_factory=EnsembleConfig)
    submit: SubmitConfig = field(default_factory=SubmitConfig)
    explain: ExplainConfig = field(default_factory=ExplainConfig)

    def __post_init__(self) -> None:
        _require(len(self.backbones) >= 1, "backbones", "needs at least one backbone")
        labels = [backbone.label for backbone in self.backbones]
        _require(len(set(labels)) == len(labels), "backbones", f"lists the same backbone twice: {labels}")

    def to_dict(self) -> dict[str, Any]:
        """Return the configuration as plain YAML-compatible data (tuples become lists)."""
        return json.loads(json.dumps(dataclasses.asdict(self)))


# --- Loading -----------------------------------------------------------------------------------


def _convert(value: Any, annotation: Any, key: str) -> Any:
    """Convert YAML data to ``annotation``, raising ConfigError that names ``key`` on a mismatch."""
    origin = typing.get_origin(annotation)
    if dataclasses.is_dataclass(annotation):
        _require(isinstance(value, dict), key, f"expected a mapping, got {value!r}")
        return _build(annotation, value, key)
    if origin is tuple:
        _require(isinstance(value, (list, tuple)), key, f"expected a list, got {value!r}")
        arguments = typing.get_args(annotation)
        if len(arguments) == 2 and arguments[1] is Ellipsis:
            return tuple(_convert(item, arguments[0], f"{key}.{i}") for i, item in enumerate(value))
        _require(len(value) == len(arguments), key, f"expected {len(arguments)} values, got {list(value)}")
        return tuple(_convert(item, kind, f"{key}.{i}") for i, (item, kind) in enumerate(zip(value, arguments)))
    if origin in (typing.Union, types.UnionType):
        return value
    if annotation is bool:
        _require(isinstance(value, bool), key, f"expected true or false, got {value!r}")
        return value
    if annotation is int:
        _require(isinstance(value, int) and not isinstance(value, bool), key, f"expected an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, str):
            # YAML 1.1 reads exponent notation without a dot (1e-4) as a string.
            try:
                value = float(value)
            except ValueError:
                pass
        _require(isinstance(value, (int, float)) and not isinstance(value, bool), key,
                 f"expected a number, got {value!r}")
        _require(math.isfinite(value), key, f"expected a finite number, got {value!r}")
        return float(value)
    if annotation is str:
        if value is None:
            return ""
        _require(isinstance(value, (str, int, float)) and not isinstance(value, bool), key,
                 f"expected a string, got {value!r}")
        return str(value)
    raise TypeError(f"unsupported config annotation {annotation!r} at {key}")


def _build(cls: type, data: dict[str, Any], prefix: str) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        where = f"{prefix}.{unknown[0]}" if prefix else unknown[0]
        raise ConfigError(f"unknown config key '{where}'; valid keys here: {', '.join(sorted(names))}")
    values = {}
    for name, value in data.items():
        key = f"{prefix}.{name}" if prefix else name
        values[name] = _convert(value, hints[name], key)
    try:
        return cls(**values)
    except ConfigError as error:
        # A section's own checks name its keys without list indices (``backbones.name``), so add the index.
        field_name = error.key.rpartition(".")[2]
        if prefix and field_name in names and error.key != f"{prefix}.{field_name}":
            key = f"{prefix}.{field_name}"
            raise ConfigError(f"config key '{key}': {error.detail}", key=key, detail=error.detail) from None
        raise
    except (TypeError, ValueError) as error:
        raise ConfigError(f"config section '{prefix or 'root'}': {error}") from error


def _set_override(tree: dict[str, Any], assignment: str) -> None:
    """Apply one ``key.path=value`` override in place; the value is parsed as YAML."""
    key, separator, raw_value = assignment.partition("=")
    key = key.strip()
    if not separator or not key:
        raise ConfigError(f"--set expects key=value, got {assignment!r}")
    try:
        value = _load_yaml(raw_value) if raw_value.strip() else ""
    except DuplicateKeyError as error:
        raise ConfigError(f"--set {key}: key '{error.key}' is given twice; keep one") from error
    except yaml.YAMLError as error:
        problem = getattr(error, "problem", None) or "invalid YAML"
        raise ConfigError(f"--set {key}: the value {raw_value!r} is not valid YAML ({problem}); write it as "
                          "YAML, e.g. a number, a word, [a, b] or {key: value}") from error
    parts = key.split(".")
    node: Any = tree
    for depth, part in enumerate(parts[:-1]):
        prefix = ".".join(parts[: depth + 1])
        if isinstance(node, list):
            _require(part.isdigit() and int(part) < len(node), prefix, f"no list item {part}")
            node = node[int(part)]
        else:
            _require(isinstance(node, dict) and part in node, prefix, "unknown config section")
            node = node[part]
    last = parts[-1]
    if isinstance(node, list):
        _require(last.isdigit() and int(last) < len(node), key, f"no list item {last}")
        node[int(last)] = value
    else:
        _require(isinstance(node, dict) and last in node, key,
                 f"unknown config key; valid keys here: {', '.join(sorted(node))}")
        node[last] = value


def _merge(base: dict[str, Any], update: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    merged = dict(base)
    for name, value in update.items():
        key = f"{prefix}.{name}" if prefix else name
        if name not in base:
            # Let _build report it with the list of valid keys.
            merged[name] = value
        elif isinstance(base[name], dict) and isinstance(value, dict):
            merged[name] = _merge(base[name], value, key)
        elif isinstance(base[name], list) and value and all(isinstance(v, dict) for v in value) \
                and base[name] and isinstance(base[name][0], dict):
            # Items of a list of sections start from the default item, so a YAML entry may give
            # only the keys it changes.
            merged[name] = [_merge(base[name][0], item, f"{key}.{i}") for i, item in enumerate(value)]
        else:
            merged[name] = value
    return merged


def load_config(path: Path | None = None, overrides: typing.Sequence[str] = ()) -> Config:
    """Load a configuration from YAML (or the defaults), apply ``key=value`` overrides and check it.

    Args:
        path: a YAML file; None uses the built-in defaults.
        overrides: assignments such as ``folds.n_splits=4`` or ``backbones.0.alpha=0.5``.

    Raises:
        ConfigError: the file is missing or not a mapping, or a key is unknown, mistyped or impossible.
    """
    tree = Config().to_dict()
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} not found; pass an existing YAML file to --config")
        try:
            loaded = _load_yaml(path.read_text(encoding="utf-8-sig")) or {}
        except UnicodeDecodeError as error:
            raise ConfigError(f"config file {path} is not UTF-8 text ({error.reason} at byte {error.start}); "
                              "pass a YAML file to --config") from error
        except DuplicateKeyError as error:
            raise ConfigError(f"config file {path}, line {error.line}: key '{error.key}' is given twice in the "
                              "same section; delete one of them") from error
        except yaml.YAMLError as error:
            raise ConfigError(f"config file {path} is not valid YAML: {error}") from error
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping of keys, got {type(loaded).__name__}")
        tree = _merge(tree, loaded)
    for assignment in overrides:
        _set_override(tree, assignment)
    return _build(Config, tree, "")


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, str]:
    """Flatten nested config data into ``dotted.key -> value`` strings, e.g. for MLflow params."""
    flat: dict[str, str] = {}
    for name, value in tree.items():
        key = f"{prefix}.{name}" if prefix else str(name)
        if isinstance(value, dict):
            flat.update(flatten(value, key))
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for i, item in enumerate(value):
                flat.update(flatten(item, f"{key}.{i}"))
        else:
            flat[key] = json.dumps(value) if isinstance(value, (list, dict)) else str(value)
    return flat
