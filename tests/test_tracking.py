from pathlib import Path

import pytest

from kaggle_sf import tracking


@pytest.fixture
def no_user_uri(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def test_each_work_dir_gets_its_own_store_and_artifacts(tmp_path: Path, no_user_uri, monkeypatch):
    import mlflow

    monkeypatch.chdir(tmp_path)
    for name in ("first", "second"):
        work_dir = tmp_path / name
        uri = tracking.configure_tracking(work_dir)
        assert uri == f"sqlite:///{work_dir / 'mlruns' / 'mlflow.db'}"
        experiment = tracking.experiment_id("competition", work_dir)
        with mlflow.start_run(experiment_id=experiment) as run:
            mlflow.log_text("hello", "note.txt")
        assert run.info.artifact_uri.startswith((work_dir / "mlruns" / "artifacts").as_uri())
        assert (work_dir / "mlruns" / "mlflow.db").is_file()
    assert not (tmp_path / "mlruns").exists()


def test_user_tracking_uri_wins(tmp_path: Path, monkeypatch):
    user_store = f"sqlite:///{tmp_path / 'shared.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", user_store)
    assert tracking.tracking_uri(tmp_path / "work") == user_store
    assert tracking.user_tracking_uri() == user_store
