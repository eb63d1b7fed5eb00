import gzip

import numpy as np
import pandas as pd
import pytest

from kaggle_sf.submission import (
    SubmissionError,
    build_submission,
    clip_and_normalise,
    read_submission,
    validate_submission,
    write_submission,
)

CLASSES = [f"c{i}" for i in range(10)]
SAMPLE_IDS = [f"img_{i}.jpg" for i in (5, 1, 9)]


def _submission(ids=SAMPLE_IDS, value=0.1) -> pd.DataFrame:
    return pd.DataFrame({"img": ids, **{c: value for c in CLASSES}})


def test_valid_submission_passes():
    validate_submission(_submission(), SAMPLE_IDS)


@pytest.mark.parametrize("mutate, message", [
    (lambda f: f.rename(columns={"c9": "c10"}), "header is img,c0,.*c10"),
    (lambda f: f.iloc[:2], "1 test images .* are missing, e.g. img_9.jpg"),
    (lambda f: pd.concat([f, f.iloc[[0]]]), "appear more than once, e.g. img_5.jpg"),
    (lambda f: f.assign(img=["img_5.jpg", "img_1.jpg", "img_77.jpg"]), "missing, e.g. img_9.jpg"),
    (lambda f: f.assign(c0=[np.nan, 0.1, 0.1]), "NaN or infinite"),
    (lambda f: f.assign(c0=[1.5, 0.1, 0.1]), r"must lie in \[0, 1\]"),
    (lambda f: f.assign(c0=[0.2, 0.1, 0.1]), "do not sum to 1, e.g. img_5.jpg sums to 1.1"),
])
def test_bad_submissions_are_rejected(mutate, message):
    with pytest.raises(SubmissionError, match=message):
        validate_submission(mutate(_submission()), SAMPLE_IDS)


def test_build_submission_orders_by_id_not_position():
    ids = ["img_9.jpg", "img_5.jpg", "img_1.jpg"]
    probabilities = np.eye(10)[[9, 5, 1]]
    submission = build_submission(ids, probabilities, SAMPLE_IDS)
    assert list(submission["img"]) == SAMPLE_IDS
    assert list(submission[CLASSES].to_numpy().argmax(axis=1)) == [5, 1, 9]


def test_build_submission_missing_prediction():
    with pytest.raises(SubmissionError, match="have no prediction, e.g. img_9.jpg"):
        build_submission(["img_5.jpg", "img_1.jpg"], np.full((2, 10), 0.1), SAMPLE_IDS)


def test_clip_and_normalise_bounds_and_sums():
    clipped = clip_and_normalise(np.eye(10)[:3], clip=0.01)
    assert np.allclose(clipped.sum(axis=1), 1)
    assert clipped.min() > 0.009
    assert clipped.max() < 0.92


def test_write_submission_round_trips_with_gzip(tmp_path):
    frame = build_submission(SAMPLE_IDS, clip_and_normalise(np.random.default_rng(0).random((3, 10)), 1e-3),
                             SAMPLE_IDS)
    csv_path, gz_path = write_submission(frame, tmp_path / "run.csv", SAMPLE_IDS)
    assert gz_path.name == "run.csv.gz"
    read_back = read_submission(csv_path)
    validate_submission(read_back, SAMPLE_IDS)
    assert np.allclose(read_back[CLASSES].to_numpy(), frame[CLASSES].to_numpy(), atol=1e-8)
    with gzip.open(gz_path, "rt") as handle:
        assert handle.read() == csv_path.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.csv", "run.csv.gz"]


def test_invalid_submission_is_not_written(tmp_path):
    with pytest.raises(SubmissionError):
        write_submission(_submission(value=0.5), tmp_path / "run.csv", SAMPLE_IDS)
    assert list(tmp_path.iterdir()) == []


def test_text_in_probability_column_is_named():
    submission = _submission().astype({"c3": object})
    submission.loc[1, "c3"] = "abc"
    with pytest.raises(SubmissionError, match=rf"1 rows hold values that are not numbers, e.g. {SAMPLE_IDS[1]} "
                                              r"has 'abc' in c3"):
        validate_submission(submission, SAMPLE_IDS)


def test_score_skips_labelled_images_without_prediction(caplog):
    from kaggle_sf.run import score

    predictions = _submission(value=0.1)
    labels = pd.DataFrame({"img": [*SAMPLE_IDS, "img_unlisted.jpg"], "classname": "c0"})
    with caplog.at_level("WARNING", logger="kaggle_sf.run"):
        loss, accuracy = score(predictions, labels)
    assert loss == pytest.approx(-np.log(0.1))
    assert "1 of 4 labelled test images have no prediction" in caplog.text
