"""The Kaggle adapter, fetch and submit, driving the real kaggle 2.2 client against a local fake of Kaggle.

The client's requests go to the fake through ``HTTP_PROXY`` (see tests/fake_kaggle.py); nothing leaves
the machine. MLflow runs live in a SQLite store under a temporary folder.
"""

from __future__ import annotations

import base64
import gzip
import io
import logging
import os
import random
import socket
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from kaggle_sf.data.fetch import DOWNLOAD_FOLDER, ArchiveError, download_competition
from kaggle_sf.kaggle_client import (
    CompetitionNotFoundError,
    CredentialsRejectedError,
    DownloadInterruptedError,
    KaggleClient,
    MissingCredentialsError,
    OfflineError,
    RulesNotAcceptedError,
    SubmissionRejectedError,
    credentials_source,
    have_credentials,
)
from kaggle_sf.kaggle_submit import plan_submission, upload_and_wait
from pipelines import fetch_data, submit
from tests.fake_kaggle import FakeCompetition, FakeKaggle

REPO_ROOT = Path(__file__).resolve().parents[1]
SLUG = "state-farm-distracted-driver-detection"
USERNAME = "sf-tester"
KEY = "sfk-5ecret-key-7d1c0e"
TOKEN = "KGAT_5ecret_token_91ab44"
CLASSES = [f"c{i}" for i in range(10)]
TEST_IMAGES = [f"img_{i}.jpg" for i in (3, 7, 11, 19, 42)]


# --- Test data -----------------------------------------------------------------------------------


def zip_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as bundle:
        for name, data in members.items():
            bundle.writestr(zipfile.ZipInfo(name), data)
    return buffer.getvalue()


def sample_submission_csv() -> bytes:
    rows = [",".join(["img", *CLASSES])] + [",".join([img] + ["0.1"] * 10) for img in TEST_IMAGES]
    return ("\n".join(rows) + "\n").encode()


# Random bytes do not compress, so the archive is larger than the client's 1 MiB download chunk.
COMPETITION_MEMBERS = {
    "driver_imgs_list.csv": b"subject,classname,img\np002,c0,img_1.jpg\n",
    "sample_submission.csv": sample_submission_csv(),
    "imgs.zip": random.Random(0).randbytes(2 * 1024 * 1024),
}


def submission_csv(path: Path) -> Path:
    rows = [",".join(["img", *CLASSES])]
    rows += [",".join([img, "0.55"] + ["0.05"] * 9) for img in TEST_IMAGES]
    path.write_text("\n".join(rows) + "\n")
    return path


def tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


# --- Fixtures ------------------------------------------------------------------------------------


@pytest.fixture
def clean_env(tmp_path, monkeypatch) -> Path:
    """No Kaggle credentials, proxies or MLflow settings from the machine; HOME is a fresh folder."""
    home = tmp_path / "home"
    home.mkdir()
    for name in list(os.environ):
        if (name.startswith("KAGGLE_") or name.lower() in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
                or name in ("MLFLOW_TRACKING_URI", "VERBOSE", "VERBOSE_OUTPUT")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("KAGGLE_API_ENVIRONMENT", "LOCALHOST")
    return home


@pytest.fixture
def local_kaggle_api(clean_env, monkeypatch):
    """Point the kaggle client at http://localhost (port 80) instead of https://api.kaggle.com."""
    from kaggle.api.kaggle_api_extended import KaggleApi

    # KaggleApi turns KAGGLE_API_ENVIRONMENT into ``args`` once, when kaggle is first imported; pin the
    # result in case kaggle was imported before the variable was set.
    monkeypatch.setattr(KaggleApi, "args", ["--local"])
    return KaggleApi


@pytest.fixture
def fake_kaggle(local_kaggle_api, monkeypatch):
    """The fake Kaggle, with the competition, receiving the client's requests."""
    fake = FakeKaggle(username=USERNAME, key=KEY, token=TOKEN,
                      competitions={SLUG: FakeCompetition(archive=zip_bytes(COMPETITION_MEMBERS))})
    with fake:
        for name in ("HTTP_PROXY", "http_proxy"):
            monkeypatch.setenv(name, fake.url)
        yield fake


@pytest.fixture
def api_key(monkeypatch):
    monkeypatch.setenv("KAGGLE_USERNAME", USERNAME)
    monkeypatch.setenv("KAGGLE_KEY", KEY)


@pytest.fixture(scope="module")
def mlflow_store(tmp_path_factory) -> tuple[Path, str, str]:
    """A work directory with a SQLite MLflow store and the competition's experiment."""
    from mlflow.tracking import MlflowClient

    from kaggle_sf.tracking import artifact_root

    work_dir = tmp_path_factory.mktemp("work")
    (work_dir / "mlruns").mkdir()
    uri = f"sqlite:///{work_dir / 'mlruns' / 'mlflow.db'}"
    experiment_id = MlflowClient(uri).create_experiment(SLUG, artifact_location=artifact_root(work_dir))
    return work_dir, uri, experiment_id


@pytest.fixture
def tracked_run(mlflow_store, tmp_path) -> tuple[Path, Path, str, str]:
    """A finished parent run with an OOF log loss and a submission artifact, plus a data directory.

    Returns:
        The work directory, the data directory, the tracking URI and the run id.
    """
    from mlflow.tracking import MlflowClient

    work_dir, uri, experiment_id = mlflow_store
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "sample_submission.csv").write_bytes(sample_submission_csv())
    csv = submission_csv(tmp_path / "resnet50-head.csv")

    client = MlflowClient(uri)
    run = client.create_run(experiment_id, run_name="resnet50-head")
    client.log_metric(run.info.run_id, "oof_log_loss", 0.31234)
    client.log_param(run.info.run_id, "backbone", "resnet50")
    client.log_artifact(run.info.run_id, str(csv), artifact_path="submission")
    client.set_terminated(run.info.run_id)
    return work_dir, data_dir, uri, run.info.run_id


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


# --- Credentials ---------------------------------------------------------------------------------


def test_credentials_absent_in_clean_environment(clean_env):
    assert credentials_source() is None
    assert not have_credentials()


@pytest.mark.parametrize("source", ["KAGGLE_API_TOKEN", "token file", "access_token", "username and key",
                                    "kaggle.json in KAGGLE_CONFIG_DIR", "kaggle.json in ~/.kaggle",
                                    "oauth"])
def test_credentials_found_in_each_source(clean_env, monkeypatch, tmp_path, source):
    kaggle_dir = clean_env / ".kaggle"
    if source == "KAGGLE_API_TOKEN":
        monkeypatch.setenv("KAGGLE_API_TOKEN", TOKEN)
    elif source == "token file":
        (tmp_path / "token").write_text(TOKEN)
        monkeypatch.setenv("KAGGLE_API_TOKEN", str(tmp_path / "token"))
    elif source == "access_token":
        kaggle_dir.mkdir()
        (kaggle_dir / "access_token").write_text(TOKEN + "\n")
    elif source == "username and key":
        monkeypatch.setenv("KAGGLE_USERNAME", USERNAME)
        monkeypatch.setenv("KAGGLE_KEY", KEY)
    elif source == "kaggle.json in KAGGLE_CONFIG_DIR":
        (tmp_path / "config").mkdir()
        (tmp_path / "config" / "kaggle.json").write_text(f'{{"username": "{USERNAME}", "key": "{KEY}"}}')
        monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "config"))
    elif source == "kaggle.json in ~/.kaggle":
        kaggle_dir.mkdir()
        (kaggle_dir / "kaggle.json").write_text(f'{{"username": "{USERNAME}", "key": "{KEY}"}}')
    else:
        kaggle_dir.mkdir()
        (kaggle_dir / "credentials.json").write_text('{"refresh_token": "r", "username": "u"}')

    assert have_credentials()
    assert KEY not in credentials_source()
    assert TOKEN not in credentials_source()


def test_credentials_ignore_incomplete_sources(clean_env, monkeypatch, tmp_path):
    kaggle_dir = clean_env / ".kaggle"
    kaggle_dir.mkdir()
    (kaggle_dir / "access_token").write_text("  \n")
    (kaggle_dir / "kaggle.json").write_text(f'{{"username": "{USERNAME}"}}')
    (kaggle_dir / "credentials.json").write_text("not json")
    monkeypatch.setenv("KAGGLE_USERNAME", USERNAME)

    assert credentials_source() is None


def test_client_without_credentials_raises(clean_env, tmp_path):
    with pytest.raises(MissingCredentialsError, match="No Kaggle credentials found: create an API token"):
        KaggleClient().list_submissions(SLUG)


# --- Download ------------------------------------------------------------------------------------


def test_download_extracts_competition_files(fake_kaggle, api_key, tmp_path):
    data_dir = tmp_path / "data"

    assert download_competition(SLUG, data_dir) == data_dir

    assert tree(data_dir) == sorted(COMPETITION_MEMBERS)
    assert (data_dir / "imgs.zip").read_bytes() == COMPETITION_MEMBERS["imgs.zip"]
    authorization = fake_kaggle.calls("DownloadDataFiles")[0].headers["Authorization"]
    assert authorization == "Basic " + base64.b64encode(f"{USERNAME}:{KEY}".encode()).decode()


def test_download_resumes_partial_archive(fake_kaggle, api_key, tmp_path):
    archive_size = len(fake_kaggle.competitions[SLUG].archive)
    fake_kaggle.cut_next_download_after = archive_size * 3 // 4
    data_dir = tmp_path / "data"
    client = KaggleClient(download_retries=0)

    with pytest.raises(DownloadInterruptedError, match="resumes where it stopped"):
        download_competition(SLUG, data_dir, client=client)
    partial = data_dir / DOWNLOAD_FOLDER / f"{SLUG}.zip"
    partial_size = partial.stat().st_size
    assert 0 < partial_size < archive_size
    assert [p.name for p in data_dir.iterdir()] == [DOWNLOAD_FOLDER]

    download_competition(SLUG, data_dir, client=client)

    ranged = [r for r in fake_kaggle.storage_requests() if "Range" in r.headers]
    assert [r.headers["Range"] for r in ranged] == [f"bytes={partial_size}-"]
    assert tree(data_dir) == sorted(COMPETITION_MEMBERS)
    assert (data_dir / "imgs.zip").read_bytes() == COMPETITION_MEMBERS["imgs.zip"]


def test_download_rejects_path_traversal(fake_kaggle, api_key, tmp_path):
    fake_kaggle.competitions[SLUG].archive = zip_bytes({"sample_submission.csv": b"img\n",
                                                        "../escaped.txt": b"outside"})
    work_dir = tmp_path / "work"
    data_dir = work_dir / "data"
    data_dir.mkdir(parents=True)
    (data_dir / ".gitkeep").touch()

    with pytest.raises(ArchiveError) as caught:
        download_competition(SLUG, data_dir)

    assert f"{SLUG}.zip: member '../escaped.txt' has a '..' path part" in str(caught.value)
    assert tree(work_dir) == ["data", "data/.gitkeep"]


def test_download_forbidden_names_rules_page(fake_kaggle, api_key, tmp_path):
    fake_kaggle.competitions[SLUG].rules_accepted = False

    with pytest.raises(RulesNotAcceptedError) as caught:
        download_competition(SLUG, tmp_path / "data")

    message = str(caught.value)
    assert f"accept the competition rules at https://www.kaggle.com/competitions/{SLUG}/rules" in message
    assert "HTTP 403" in message
    assert "\n" not in message
    assert tree(tmp_path / "data") == []


def test_download_unknown_competition(fake_kaggle, api_key, tmp_path):
    with pytest.raises(CompetitionNotFoundError) as caught:
        download_competition("state-farm-distracted-driver-detectoin", tmp_path / "data")

    message = str(caught.value)
    assert message.startswith("Competition 'state-farm-distracted-driver-detectoin' was not found on Kaggle")
    assert "check the slug" in message


def test_download_wrong_key_rejected(fake_kaggle, monkeypatch, tmp_path):
    monkeypatch.setenv("KAGGLE_USERNAME", USERNAME)
    monkeypatch.setenv("KAGGLE_KEY", "not-the-key")

    with pytest.raises(CredentialsRejectedError, match="HTTP 401"):
        download_competition(SLUG, tmp_path / "data")


def test_download_with_access_token(fake_kaggle, monkeypatch, tmp_path):
    monkeypatch.setenv("KAGGLE_API_TOKEN", TOKEN)

    download_competition(SLUG, tmp_path / "data")

    assert fake_kaggle.calls("IntrospectToken")
    assert fake_kaggle.calls("DownloadDataFiles")[0].headers["Authorization"] == f"Bearer {TOKEN}"


def test_fetch_offline_one_line(local_kaggle_api, api_key, monkeypatch, tmp_path, capsys):
    for name in ("HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(name, f"http://127.0.0.1:{closed_port()}")

    code = fetch_data.main(["--data-dir", str(tmp_path / "data")])

    captured = capsys.readouterr()
    assert code == 2
    assert captured.err.count("\n") == 1
    assert captured.err.startswith("error: Kaggle is unreachable: could not connect to localhost")
    assert captured.out == ""


@pytest.mark.parametrize("credentials", ["api key", "access token"])
def test_submit_offline_raises(local_kaggle_api, monkeypatch, tmp_path, credentials):
    for name in ("HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(name, f"http://127.0.0.1:{closed_port()}")
    if credentials == "api key":
        monkeypatch.setenv("KAGGLE_USERNAME", USERNAME)
        monkeypatch.setenv("KAGGLE_KEY", KEY)
    else:
        monkeypatch.setenv("KAGGLE_API_TOKEN", TOKEN)

    with pytest.raises(OfflineError, match="^Kaggle is unreachable: could not connect to localhost"):
        KaggleClient().submit(SLUG, submission_csv(tmp_path / "mine.csv"), "offline")


# --- Submit --------------------------------------------------------------------------------------


def test_submit_scored_after_two_polls(fake_kaggle, api_key, tracked_run, tmp_path, capsys):
    from mlflow.tracking import MlflowClient

    work_dir, data_dir, uri, run_id = tracked_run

    code = submit.main(["--run-id", run_id, "--data-dir", str(data_dir), "--work-dir", str(work_dir),
                        "--timeout", "10", "--poll-interval", "0.01"])

    assert code == 0
    assert len(fake_kaggle.calls("ListSubmissions")) == 3
    run = MlflowClient(uri).get_run(run_id)
    assert run.data.metrics["public_score"] == pytest.approx(0.21543)
    assert run.data.metrics["private_score"] == pytest.approx(0.22010)
    assert run.data.tags["kaggle_submission_id"] == "1001"
    assert run.data.tags["kaggle_submission_status"] == "complete"
    assert "Submission 1001 scored: public score 0.21543, private score 0.2201" in capsys.readouterr().out

    [upload] = fake_kaggle.uploads.values()
    assert upload == (work_dir / "submissions" / "resnet50-head.csv.gz").read_bytes()
    assert gzip.decompress(upload) == submission_csv(tmp_path / "expected.csv").read_bytes()
    assert fake_kaggle.submissions[0]["description"] == f"resnet50-head (MLflow run {run_id}, OOF log loss 0.31234)"


def test_submit_rejected_upload_raises(fake_kaggle, api_key, tmp_path):
    fake_kaggle.reject_uploads = True
    (tmp_path / "sample_submission.csv").write_bytes(sample_submission_csv())
    plan = plan_submission(SLUG, tmp_path, tmp_path / "work", file=submission_csv(tmp_path / "mine.csv"))

    with pytest.raises(SubmissionRejectedError, match="did not accept the upload of mine.csv.gz"):
        upload_and_wait(plan, KaggleClient(), timeout=1, poll_interval=0.01)

    assert fake_kaggle.calls("CreateSubmission") == []


def test_submit_scoring_error_raises_and_tags_run(fake_kaggle, api_key, tracked_run):
    from mlflow.tracking import MlflowClient

    work_dir, data_dir, uri, run_id = tracked_run
    fake_kaggle.scoring_error = "Submission has 4 rows; expected 5"
    plan = plan_submission(SLUG, data_dir, work_dir, run_id=run_id, tracking_uri=uri)

    with pytest.raises(SubmissionRejectedError, match="could not score submission 1001 .*expected 5"):
        upload_and_wait(plan, KaggleClient(), timeout=10, poll_interval=0.01)

    tags = MlflowClient(uri).get_run(run_id).data.tags
    assert tags["kaggle_submission_id"] == "1001"
    assert tags["kaggle_submission_status"] == "error"


def test_submit_timeout_leaves_pending(fake_kaggle, api_key, tracked_run, capsys):
    from mlflow.tracking import MlflowClient

    work_dir, data_dir, uri, run_id = tracked_run
    fake_kaggle.lists_until_scored = 1000

    code = submit.main(["--run-id", run_id, "--data-dir", str(data_dir), "--work-dir", str(work_dir),
                        "--timeout", "0"])

    assert code == 0
    assert len(fake_kaggle.calls("ListSubmissions")) == 1
    assert "Submission 1001 is still being scored after 0 s" in capsys.readouterr().out
    run = MlflowClient(uri).get_run(run_id)
    assert run.data.tags["kaggle_submission_status"] == "pending"
    assert "public_score" not in run.data.metrics


def test_submit_invalid_file_is_not_uploaded(fake_kaggle, api_key, tmp_path, capsys):
    (tmp_path / "sample_submission.csv").write_bytes(sample_submission_csv())
    short = tmp_path / "short.csv"
    short.write_text("\n".join(submission_csv(tmp_path / "full.csv").read_text().splitlines()[:-1]) + "\n")

    code = submit.main(["--file", str(short), "--data-dir", str(tmp_path), "--work-dir", str(tmp_path)])

    assert code == 2
    assert "test images from sample_submission.csv are missing" in capsys.readouterr().err
    assert fake_kaggle.requests == []


def test_dry_run_contacts_nobody(fake_kaggle, tracked_run, capsys):
    work_dir, data_dir, uri, run_id = tracked_run

    code = submit.main(["--dry-run", "--data-dir", str(data_dir), "--work-dir", str(work_dir)])

    out = capsys.readouterr().out
    upload = work_dir / "submissions" / "resnet50-head.csv.gz"
    assert code == 0
    assert not have_credentials()
    assert fake_kaggle.requests == []
    assert f"file:        {upload}" in out
    assert f"size:        {upload.stat().st_size} bytes" in out
    assert f"message:     resnet50-head (MLflow run {run_id}, OOF log loss 0.31234)" in out
    assert f"competition: {SLUG}" in out


@pytest.mark.parametrize("command", [["pipelines.fetch_data"], ["pipelines.submit", "--file", "mine.csv"]])
def test_command_without_credentials_one_line(clean_env, tmp_path, command):
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    submission_csv(tmp_path / "mine.csv")
    (tmp_path / "sample_submission.csv").write_bytes(sample_submission_csv())

    result = subprocess.run([sys.executable, "-m", *command, "--data-dir", str(tmp_path)], cwd=tmp_path,
                            env=environment, capture_output=True, text=True, timeout=120)

    assert result.returncode == 2
    assert result.stderr.startswith("error: No Kaggle credentials found: create an API token at "
                                    "https://www.kaggle.com/settings/api")
    assert result.stderr.count("\n") == 1
    assert result.stdout == ""


# --- Secrets -------------------------------------------------------------------------------------


@pytest.mark.parametrize("credentials", ["api key", "access token"])
def test_no_credentials_in_mlflow_or_logs(fake_kaggle, tracked_run, monkeypatch, caplog, capfd,
                                          local_kaggle_api, tmp_path, credentials):
    from mlflow.tracking import MlflowClient

    work_dir, data_dir, uri, run_id = tracked_run
    if credentials == "api key":
        monkeypatch.setenv("KAGGLE_USERNAME", USERNAME)
        monkeypatch.setenv("KAGGLE_KEY", KEY)
    else:
        monkeypatch.setenv("KAGGLE_API_TOKEN", TOKEN)
    # As if VERBOSE=1 was set when kaggle was imported: the client would print request headers.
    monkeypatch.setattr(local_kaggle_api, "args", ["--local", "--verbose"])
    caplog.set_level(logging.DEBUG)
    for name in ("kaggle", "kagglesdk", "urllib3", "requests"):
        caplog.set_level(logging.DEBUG, logger=name)

    download_competition(SLUG, tmp_path / "fetched")
    plan = plan_submission(SLUG, data_dir, work_dir, run_id=run_id, tracking_uri=uri)
    upload_and_wait(plan, KaggleClient(), timeout=10, poll_interval=0.01)

    run = MlflowClient(uri).get_run(run_id)
    recorded = [*run.data.params.items(), *run.data.tags.items(), *run.data.metrics.keys(), run.info.run_name]
    captured = capfd.readouterr()
    basic = base64.b64encode(f"{USERNAME}:{KEY}".encode()).decode()
    assert run.data.tags["kaggle_submission_id"] == "1001"
    assert caplog.records
    for secret in (KEY, TOKEN, basic):
        assert secret not in repr(recorded)
        assert secret not in caplog.text
        assert secret not in captured.out
        assert secret not in captured.err
        assert secret not in plan.message


def test_main_job_submits_when_enabled(fake_kaggle, api_key, tmp_path):
    from mlflow.tracking import MlflowClient

    from kaggle_sf.config import load_config
    from kaggle_sf.data.synthetic import generate_dataset
    from kaggle_sf.run import run
    from kaggle_sf.tracking import tracking_uri

    data_dir = generate_dataset(tmp_path / "data", n_train_subjects=3, n_test_subjects=1, frames_per_class=2,
                                image_size=(64, 48))
    work_dir = tmp_path / "work"
    config = load_config(None, ["folds.n_splits=3", "backbones.0.input_size=[64, 64]", "backbones.0.weights=none",
                                "train.head.max_epochs=3", "explain.enabled=false", "submit.enabled=true",
                                "submit.timeout_s=10", "submit.poll_interval_s=0.01", "run_name=synthetic-submit"])

    result = run(config, data_dir, work_dir)

    [upload] = fake_kaggle.uploads.values()
    assert gzip.decompress(upload) == result.submission_path.read_bytes()
    assert fake_kaggle.submissions[0]["description"].startswith(f"synthetic-submit (MLflow run {result.run_id}")
    stored = MlflowClient(tracking_uri(work_dir)).get_run(result.run_id)
    assert stored.data.metrics["public_score"] == pytest.approx(0.21543)
    assert stored.data.tags["kaggle_submission_id"] == str(fake_kaggle.submissions[0]["ref"])
