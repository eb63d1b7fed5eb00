import pandas as pd
import pytest

from kaggle_sf.data.folds import FoldsError, make_folds


def _train(n_subjects: int = 10, per_class: int = 3) -> pd.DataFrame:
    rows = [(f"img_{s}_{c}_{i}.jpg", f"p{s:03d}", f"c{c}")
            for s in range(n_subjects) for c in range(10) for i in range(per_class)]
    return pd.DataFrame(rows, columns=["img", "subject", "classname"])


def test_folds_never_share_a_driver():
    folds = make_folds(_train(), n_splits=5, seed=1)
    fold_count_per_subject = folds.groupby("subject")["fold"].nunique()
    assert (fold_count_per_subject == 1).all()
    assert sorted(folds["fold"].unique()) == [0, 1, 2, 3, 4]


def test_every_frame_is_validated_exactly_once():
    train = _train()
    folds = make_folds(train, n_splits=5, seed=1)
    assert len(folds) == len(train)
    assert list(folds["img"]) == list(train["img"])
    assert (folds["fold"] >= 0).all()


def test_folds_keep_classes_balanced():
    folds = make_folds(_train(), n_splits=5, seed=3)
    shares = pd.crosstab(folds["fold"], folds["classname"], normalize="index")
    assert shares.to_numpy().min() == pytest.approx(0.1)
    assert shares.to_numpy().max() == pytest.approx(0.1)


def test_same_seed_same_folds_other_seed_other_folds():
    train = _train(n_subjects=12)
    first = make_folds(train, n_splits=4, seed=7)["fold"]
    assert first.equals(make_folds(train, n_splits=4, seed=7)["fold"])
    assert not first.equals(make_folds(train, n_splits=4, seed=8)["fold"])


def test_more_folds_than_drivers_is_rejected():
    with pytest.raises(FoldsError, match="only 3 drivers"):
        make_folds(_train(n_subjects=3), n_splits=5)


def test_explicit_validation_drivers():
    folds = make_folds(_train(n_subjects=5), validation_subjects=[["p000", "p001"], ["p002"]])
    assert set(folds.loc[folds["fold"] == 0, "subject"]) == {"p000", "p001"}
    assert set(folds.loc[folds["fold"] == 1, "subject"]) == {"p002"}
    assert set(folds.loc[folds["fold"] == -1, "subject"]) == {"p003", "p004"}


def test_explicit_unknown_driver_is_rejected():
    with pytest.raises(FoldsError, match=r"\['p999'\]"):
        make_folds(_train(n_subjects=3), validation_subjects=[["p999"]])
