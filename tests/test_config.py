import re
from pathlib import Path

import pytest

from kaggle_sf.config import Config, ConfigError, flatten, load_config

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_defaults_load_without_a_file():
    config = load_config()
    assert config == Config()
    assert config.backbones[0].label == "mobilenet_0.25_224x224"


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_shipped_configs_load(name):
    load_config(CONFIGS / name)


def test_set_overrides_nested_and_list_keys():
    config = load_config(None, ["folds.n_splits=4", "backbones.0.alpha=0.5", "train.head.learning_rate=3e-4",
                                "backbones.0.input_size=[192, 256]"])
    assert config.folds.n_splits == 4
    assert config.backbones[0].alpha == 0.5
    assert config.train.head.learning_rate == pytest.approx(3e-4)
    assert config.backbones[0].input_size == (192, 256)


def test_yaml_backbone_entries_start_from_defaults(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("backbones:\n  - name: resnet50\n    input_size: [224, 224]\n  - name: mobilenet\n")
    config = load_config(path)
    assert [b.name for b in config.backbones] == ["resnet50", "mobilenet"]
    assert config.backbones[1].alpha == 0.25


@pytest.mark.parametrize("overrides, key", [
    (["folds.n_split=4"], "folds.n_split"),
    (["folds.n_splits=0"], "folds.n_splits"),
    (["folds.n_splits=four"], "folds.n_splits"),
    (["train.head.learning_rate=-0.1"], "train.head.learning_rate"),
    (["backbones.0.name=vgg16"], "backbones.0.name"),
    (["train.finetune.phases.1.learning_rate=-1"], "train.finetune.phases.1.learning_rate"),
    (["train.mode=magic"], "train.mode"),
    (["train.head.dropout=1.5"], "train.head.dropout"),
])
def test_bad_values_name_the_key(overrides, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config(None, overrides)


def test_unknown_key_in_file_is_named(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train:\n  head:\n    learnig_rate: 0.1\n")
    with pytest.raises(ConfigError, match=r"unknown config key 'train\.head\.learnig_rate'"):
        load_config(path)


def test_missing_config_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="nope.yaml not found"):
        load_config(tmp_path / "nope.yaml")


def test_flatten_gives_dotted_keys():
    flat = flatten(Config().to_dict())
    assert flat["folds.n_splits"] == "5"
    assert flat["backbones.0.name"] == "mobilenet"
    assert flat["train.head.learning_rate"] == "0.001"


def test_default_config_found_outside_the_repository(tmp_path, monkeypatch, caplog):
    from pipelines import common

    monkeypatch.chdir(tmp_path)
    with caplog.at_level("INFO", logger="pipelines.common"):
        path = common.resolve_config_path(None)
    assert path == CONFIGS / "default.yaml"
    assert load_config(path).train.mode == "finetune"
    assert f"Configuration: {path}" in caplog.text


def test_default_config_prefers_the_current_directory(tmp_path, monkeypatch):
    from pipelines import common

    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "default.yaml").write_text("seed: 7\n")
    monkeypatch.chdir(tmp_path)
    assert common.resolve_config_path(None) == Path("configs/default.yaml")
    assert common.resolve_config_path(tmp_path / "mine.yaml") == tmp_path / "mine.yaml"


def test_missing_default_config_warns(tmp_path, monkeypatch, caplog):
    from pipelines import common

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(common, "REPOSITORY_DEFAULT_CONFIG", tmp_path / "absent.yaml")
    with caplog.at_level("WARNING", logger="pipelines.common"):
        assert common.resolve_config_path(None) is None
    assert "using the built-in defaults" in caplog.text
    assert "Pass --config FILE" in caplog.text


def test_infinite_number_is_rejected():
    with pytest.raises(ConfigError, match=r"'train\.head\.learning_rate': expected a finite number, got inf"):
        load_config(None, ["train.head.learning_rate=inf"])


def test_binary_config_file_is_named(tmp_path):
    path = tmp_path / "image.yaml"
    path.write_bytes(b"\x89PNG\x00\x01binary")
    with pytest.raises(ConfigError, match=r"image\.yaml is not UTF-8 text .* pass a YAML file to --config"):
        load_config(path)


@pytest.mark.parametrize("text, line, key", [
    ("seed: 1\nseed: 2\n", 2, "seed"),
    ("train:\n  finetune:\n    batch_size: 16\n    dropout: 0.1\n    batch_size: 8\n", 5, "batch_size"),
    ("train: {head: {dropout: 0.1, dropout: 0.2}}\n", 1, "dropout"),
])
def test_duplicate_key_in_file_is_named(tmp_path, text, line, key):
    path = tmp_path / "twice.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=rf"{path}, line {line}: key '{key}' is given twice"):
        load_config(path)


def test_same_key_in_two_sections_is_allowed(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("train:\n  head:\n    dropout: 0.1\n  finetune:\n    dropout: 0.2\n")
    config = load_config(path)
    assert config.train.head.dropout == 0.1
    assert config.train.finetune.dropout == 0.2


def test_duplicate_key_in_override_is_named():
    with pytest.raises(ConfigError, match=r"--set train\.finetune\.phases: key 'epochs' is given twice"):
        load_config(None, ["train.finetune.phases=[{epochs: 1, epochs: 2}]"])


@pytest.mark.parametrize("assignment", ["seed=[", "run_name=a: b: c", "seed={x"])
def test_invalid_yaml_in_override_is_named(assignment):
    key, _, value = assignment.partition("=")
    with pytest.raises(ConfigError, match=rf"--set {key}: the value '{re.escape(value)}' is not valid YAML"):
        load_config(None, [assignment])
