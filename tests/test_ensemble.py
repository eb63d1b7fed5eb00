import numpy as np
import pytest

from kaggle_sf.ensemble import (
    EnsembleError,
    fold_average,
    make_blend_inputs,
    make_member,
    oof_log_loss,
    out_of_fold,
    top_k_members,
    top_k_per_fold,
)
from kaggle_sf.metrics import log_loss
from kaggle_sf.train import prediction_table
from tests.blend_data import fold_results, labels_of, make_folds_table, noisy_predictions

TEST_IDS = [f"img_test_{i}.jpg" for i in range(5)]


def constant_test(value: float) -> np.ndarray:
    """Test predictions whose class-0 probability is ``value``, to tell fold models apart."""
    rows = np.full((len(TEST_IDS), 10), (1 - value) / 9)
    rows[:, 0] = value
    return rows


def shuffled(results, seed=0):
    """The same fold results with every table's rows in another order."""
    for result in results:
        result.oof = result.oof.sample(frac=1, random_state=seed).reset_index(drop=True)
        result.test = result.test.sample(frac=1, random_state=seed).reset_index(drop=True)
    return results


@pytest.fixture
def folds():
    return make_folds_table(n_subjects=6, n_folds=3)


def test_out_of_fold_matches_rows_by_id(folds):
    oof = noisy_predictions(labels_of(folds), 2.0, 1.0, np.random.default_rng(0))
    results = shuffled(fold_results(folds, oof, TEST_IDS, {f: constant_test(0.1) for f in range(3)}))

    table = out_of_fold(results, folds)

    assert table["img"].tolist() == folds["img"].tolist()
    assert table.iloc[:, 1:].to_numpy() == pytest.approx(oof)


def test_out_of_fold_rejects_missing_frame(folds):
    oof = noisy_predictions(labels_of(folds), 2.0, 1.0, np.random.default_rng(0))
    results = fold_results(folds, oof, TEST_IDS, {f: constant_test(0.1) for f in range(3)})
    results[1].oof = results[1].oof.iloc[1:]

    with pytest.raises(EnsembleError, match="no out-of-fold prediction"):
        out_of_fold(results, folds)


def test_fold_average_matches_test_rows_by_id(folds):
    oof = np.full((len(folds), 10), 0.1)
    results = shuffled(fold_results(folds, oof, TEST_IDS, {0: constant_test(0.1), 1: constant_test(0.4),
                                                           2: constant_test(0.7)}))

    average = fold_average(results, TEST_IDS)

    assert average["img"].tolist() == TEST_IDS
    assert average["c0"].to_numpy() == pytest.approx(np.full(5, 0.4))


def test_oof_log_loss_is_computed_by_id(folds):
    labels = labels_of(folds)
    probabilities = noisy_predictions(labels, 2.0, 1.0, np.random.default_rng(1))
    table = prediction_table(folds["img"], probabilities)

    by_position = log_loss(labels, probabilities)

    assert oof_log_loss(table, folds) == pytest.approx(by_position)
    assert oof_log_loss(table.iloc[::-1].reset_index(drop=True), folds) == pytest.approx(by_position)
    with pytest.raises(EnsembleError, match="no prediction"):
        oof_log_loss(table.iloc[1:], folds)


def test_member_rejects_wrong_fold_frames(folds):
    oof = np.full((len(folds), 10), 0.1)
    results = fold_results(folds, oof, TEST_IDS, {f: constant_test(0.1) for f in range(3)})
    results[0].oof, results[1].oof = results[1].oof, results[0].oof

    with pytest.raises(EnsembleError, match="fold 0 model's OOF predictions are not"):
        make_member("mobilenet", results, folds, TEST_IDS)


def test_member_rejects_missing_fold(folds):
    oof = np.full((len(folds), 10), 0.1)
    results = fold_results(folds, oof, TEST_IDS, {f: constant_test(0.1) for f in range(3)})

    with pytest.raises(EnsembleError, match=r"fold models for folds \[0, 1\]"):
        make_member("mobilenet", results[:2], folds, TEST_IDS)


def test_blend_inputs_skip_never_validated_drivers(folds):
    folds.loc[folds["subject"] == "p005", "fold"] = -1
    validated = folds[folds["fold"] >= 0].reset_index(drop=True)
    oof = np.full((len(validated), 10), 0.1)
    results = fold_results(validated, oof, TEST_IDS, {f: constant_test(0.1) for f in range(3)})

    inputs = make_blend_inputs({"mobilenet": results}, folds, TEST_IDS)

    assert len(inputs.ids) == len(validated)
    assert "p005" not in set(inputs.subject)


def members_good_on_different_folds(folds):
    """Member ``a`` is sharp on fold 0 and poor elsewhere; member ``b`` the reverse."""
    labels = labels_of(folds)
    rng = np.random.default_rng(2)
    sharp = noisy_predictions(labels, 4.0, 0.5, rng)
    poor = noisy_predictions(labels, 0.5, 0.5, rng)
    in_fold_0 = (folds["fold"] == 0).to_numpy()[:, None]
    a = np.where(in_fold_0, sharp, poor)
    b = np.where(in_fold_0, poor, sharp)
    tests_a = {0: constant_test(0.9), 1: constant_test(0.1), 2: constant_test(0.2)}
    tests_b = {0: constant_test(0.3), 1: constant_test(0.5), 2: constant_test(0.7)}
    return {"a": shuffled(fold_results(folds, a, TEST_IDS, tests_a)),
            "b": shuffled(fold_results(folds, b, TEST_IDS, tests_b), seed=1)}, a, b


def test_top_k_per_fold_picks_fold_best(folds):
    results, a, b = members_good_on_different_folds(folds)
    inputs = make_blend_inputs(results, folds, TEST_IDS)
    all_rows = np.ones(len(inputs.ids), dtype=bool)

    oof, test, chosen = top_k_per_fold(inputs, all_rows, k=1)

    assert chosen == {0: ["a"], 1: ["b"], 2: ["b"]}
    in_fold_0 = inputs.fold == 0
    assert oof[in_fold_0] == pytest.approx(a[in_fold_0])
    assert oof[~in_fold_0] == pytest.approx(b[~in_fold_0])
    # The test prediction averages the chosen fold models: a's fold 0, b's folds 1 and 2.
    assert test[:, 0] == pytest.approx(np.full(5, (0.9 + 0.5 + 0.7) / 3))


def test_top_k_per_fold_uses_given_rows(folds):
    results, _, _ = members_good_on_different_folds(folds)
    inputs = make_blend_inputs(results, folds, TEST_IDS)
    # Only fold 0's rows are given: the other folds fall back to ranking on them, where a wins.
    rows = inputs.fold == 0

    _, _, chosen = top_k_per_fold(inputs, rows, k=1)

    assert chosen == {0: ["a"], 1: ["a"], 2: ["a"]}


def test_top_k_members_averages_best_whole_backbones(folds):
    labels = labels_of(folds)
    rng = np.random.default_rng(3)
    strengths = {"weak": 0.5, "strong": 3.0, "middle": 1.5}
    predictions = {name: noisy_predictions(labels, s, 0.5, rng) for name, s in strengths.items()}
    results = {name: fold_results(folds, p, TEST_IDS, {f: constant_test(s / 10) for f in range(3)})
               for (name, p), s in zip(predictions.items(), strengths.values())}
    inputs = make_blend_inputs(results, folds, TEST_IDS)

    oof, test, chosen = top_k_members(inputs, np.ones(len(inputs.ids), dtype=bool), k=2)

    assert chosen == ["strong", "middle"]
    assert oof == pytest.approx((predictions["strong"] + predictions["middle"]) / 2)
    assert test[:, 0] == pytest.approx(np.full(5, (0.3 + 0.15) / 2))
