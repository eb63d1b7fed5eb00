"""Bad settings stop the main job before any work, with one line naming the key, and exit code 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.common import main_guard
from pipelines.full_run import main


def run_main(argv: list[str]) -> int:
    """Run the main job's command line in this process and return its exit code."""
    with pytest.raises(SystemExit) as exited:
        main_guard(lambda: main(argv))
    return int(exited.value.code)


@pytest.mark.parametrize("assignment, message", [
    ("folds.n_splits=0", "error: config key 'folds.n_splits': needs at least 2 folds, got 0"),
    ("folds.n_splits=2.5", "error: config key 'folds.n_splits': expected an integer, got 2.5"),
    ("train.head.learning_rate=-0.001", "error: config key 'train.head.learning_rate': must be positive, got -0.001"),
    ("train.head.learnig_rate=0.1", "error: config key 'train.head.learnig_rate': unknown config key; valid keys "
                                    "here: batch_size, dropout, learning_rate"),
    ("backbones.0.name=vgg16", "error: config key 'backbones.0.name': unknown backbone 'vgg16'; choose one of "
                               "mobilenet, resnet50"),
    ("backbones.0.input_size=[224]", "error: config key 'backbones.0.input_size': expected 2 values, got [224]"),
    ("features.batch_size=many", "error: config key 'features.batch_size': expected an integer, got 'many'"),
    ("data.on_bad_image=ignore", "error: config key 'data.on_bad_image': expected 'fail' or 'skip', got 'ignore'"),
    ("backbones.3.alpha=0.5", "error: config key 'backbones.3': no list item 3"),
    ("seed=[", "error: --set seed: the value '[' is not valid YAML"),
])
def test_bad_setting_prints_one_line_and_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture,
                                                 assignment: str, message: str):
    code = run_main(["--data-dir", str(tmp_path / "data"), "--work-dir", str(tmp_path / "work"),
                     "--set", assignment])
    stderr_lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(stderr_lines) == 1
    assert stderr_lines[0].startswith(message)
    assert not (tmp_path / "work").exists()
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("text, message", [
    ("folds:\n  n_splits: 3\n  shuffle: true\n",
     "error: unknown config key 'folds.shuffle'; valid keys here: n_splits, seed, validation_subjects"),
    ("folds:\n  n_splits: 3\n  n_splits: 4\n",
     "error: config file {config}, line 3: key 'n_splits' is given twice in the same section; delete one of them"),
])
def test_bad_config_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture, text: str, message: str):
    config = tmp_path / "run.yaml"
    config.write_text(text)
    code = run_main(["--config", str(config), "--data-dir", str(tmp_path / "data"), "--work-dir", str(tmp_path)])
    stderr_lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert stderr_lines == [message.format(config=config)]


def test_interrupt_prints_message_exits_130(capsys: pytest.CaptureFixture):
    def interrupted() -> int:
        raise KeyboardInterrupt

    with pytest.raises(SystemExit) as exited:
        main_guard(interrupted, interrupted="Interrupted.")
    assert exited.value.code == 130
    assert capsys.readouterr().err == "Interrupted.\n"


def test_more_folds_than_drivers_stops_before_features(tiny_competition: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture):
    work_dir = tmp_path / "work"
    code = run_main(["--data-dir", str(tiny_competition), "--work-dir", str(work_dir),
                     "--set", "folds.n_splits=5", "--set", "backbones.0.weights=none"])
    stderr = capsys.readouterr().err
    assert code == 2
    assert "error: folds.n_splits is 5 but there are only 4 drivers; use at most 4 folds" in stderr
    assert "Traceback" not in stderr
    assert not (work_dir / "cache" / "features").exists()
    assert not (work_dir / "mlruns").exists()
