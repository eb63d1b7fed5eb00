import dataclasses

import numpy as np
import pandas as pd
import pytest

from kaggle_sf.config import CLASSES, EnsembleConfig
from kaggle_sf.ensemble import make_blend_inputs, oof_log_loss
from kaggle_sf.selection import choose_blend, driver_halves, feature_space, fit_candidates, summarise
from tests.blend_data import fold_results, labels_of, make_folds_table, noisy_predictions, video_features

N_TEST = 40
TEST_IDS = [f"img_test_{i}.jpg" for i in range(N_TEST)]
FAST = EnsembleConfig(neighbours=(1, 3, 7), neighbour_weights=(0.3, 0.6, 0.9), held_out_repeats=2)


def make_case(seed: int = 0):
    """Two backbones of different strength on 8 drivers in 4 folds, with video-like features."""
    folds = make_folds_table(n_subjects=8, frames_per_video=6, n_folds=4)
    rng = np.random.default_rng(seed)
    labels = labels_of(folds)
    test_labels = rng.integers(0, 10, size=N_TEST)
    results = {}
    for name, strength in (("strong", 1.5), ("weak", 0.8)):
        oof = noisy_predictions(labels, strength, 1.2, rng)
        tests = {f: noisy_predictions(test_labels, strength, 1.2, rng) for f in range(4)}
        results[name] = fold_results(folds, oof, TEST_IDS, tests)
    features = video_features(folds, rng)
    space = feature_space(features, folds["fold"].to_numpy(), rng.standard_normal((N_TEST, 32)), 7)
    labels_table = pd.DataFrame({"img": TEST_IDS, "classname": [f"c{c}" for c in test_labels]})
    return folds, results, {"strong": space}, labels_table


@pytest.fixture(scope="module")
def case():
    return make_case()


@pytest.fixture(scope="module")
def result(case):
    folds, results, spaces, test_labels = case
    inputs = make_blend_inputs(results, folds, TEST_IDS)
    return choose_blend(inputs, folds, FAST, seed=0, spaces=spaces, test_labels=test_labels)


def test_table_lists_every_step(result):
    names = set(result.candidates["candidate"])
    for combination in ("backbone/strong", "backbone/weak", "top1_backbones", "top2_backbones", "top1_per_fold",
                        "blend_arithmetic", "blend_geometric", "per_class_selection"):
        assert combination in names
        assert f"{combination}+calibration" in names
        assert f"{combination}+smoothing" in names
        assert f"{combination}+smoothing+calibration" in names
    assert len(names) == 32
    assert set(result.candidates["step"]) == {"fold average", "top-k backbones", "top-k fold models per fold",
                                              "blend", "per-class selection", "smoothing", "calibration"}


def test_fixed_candidates_score_the_same_held_out(result):
    table = result.candidates.set_index("candidate")
    for name in ("backbone/strong", "backbone/weak", "top2_backbones"):
        assert table.loc[name, "held_out_log_loss"] == pytest.approx(table.loc[name, "oof_log_loss"])


def test_chosen_candidate_has_lowest_held_out_loss(result):
    assert result.chosen == result.candidates["candidate"].iloc[0]
    assert result.chosen_row["held_out_log_loss"] == result.candidates["held_out_log_loss"].min()


def test_chosen_candidate_beats_best_backbone(result):
    table = result.candidates.set_index("candidate")
    best_backbone = min(table.loc["backbone/strong", "oof_log_loss"], table.loc["backbone/weak", "oof_log_loss"])

    assert "+smoothing" in result.chosen
    assert result.chosen_row["oof_log_loss"] < best_backbone - 0.1
    assert result.chosen_row["held_out_log_loss"] < best_backbone - 0.1


def test_chosen_predictions_are_tables_by_id(case, result):
    folds = case[0]
    assert oof_log_loss(result.oof, folds) == pytest.approx(result.chosen_row["oof_log_loss"])
    assert result.test["img"].tolist() == TEST_IDS
    assert result.test.loc[:, list(CLASSES)].sum(axis=1).to_numpy() == pytest.approx(np.ones(N_TEST))


def test_test_log_loss_is_reported_for_every_candidate(result):
    assert result.candidates["test_log_loss"].notna().all()
    assert (result.candidates["test_log_loss"] > 0).all()


def test_candidate_losses_are_computed_by_id(case, result):
    folds, results, spaces, test_labels = case
    # New FoldResults with reordered rows; the module's fixture stays as it was.
    reordered = {name: [type(r)(r.fold, r.oof.iloc[::-1].reset_index(drop=True),
                                r.test.sample(frac=1, random_state=3).reset_index(drop=True), r.history, r.metrics)
                        for r in fold_models] for name, fold_models in results.items()}
    inputs = make_blend_inputs(reordered, folds, TEST_IDS)

    again = choose_blend(inputs, folds, FAST, seed=0, spaces=spaces, test_labels=test_labels)

    columns = ["candidate", "oof_log_loss", "held_out_log_loss", "test_log_loss"]
    pd.testing.assert_frame_equal(again.candidates[columns], result.candidates[columns])


def test_selection_rows_report_each_half(result):
    assert len(result.selection) == 2 * FAST.held_out_repeats
    assert set(result.selection["fitted_on"]) == {"first", "second"}
    assert (result.selection["winner_held_out_log_loss"] >= result.selection["best_held_out_log_loss"]).all()


def test_smoothing_off_leaves_smoothing_out(case):
    folds, results, spaces, _ = case
    inputs = make_blend_inputs(results, folds, TEST_IDS)
    config = EnsembleConfig(smoothing=False, held_out_repeats=1)

    blended = choose_blend(inputs, folds, config, seed=0, spaces=spaces)

    assert not blended.candidates["candidate"].str.contains("smoothing").any()
    assert "test_log_loss" not in blended.candidates


def test_select_by_oof_picks_lowest_oof_loss(case):
    folds, results, spaces, _ = case
    inputs = make_blend_inputs(results, folds, TEST_IDS)
    config = EnsembleConfig(neighbours=(1, 3), neighbour_weights=(0.5,), held_out_repeats=1, select_by="oof")

    blended = choose_blend(inputs, folds, config, seed=0, spaces=spaces)

    assert blended.chosen_row["oof_log_loss"] == blended.candidates["oof_log_loss"].min()


def test_single_backbone_has_no_combinations(case):
    folds, results, spaces, _ = case
    inputs = make_blend_inputs({"strong": results["strong"]}, folds, TEST_IDS)

    blended = choose_blend(inputs, folds, EnsembleConfig(held_out_repeats=1), seed=0, spaces=spaces)

    assert set(blended.candidates["candidate"]) == {
        "backbone/strong", "backbone/strong+calibration", "backbone/strong+smoothing",
        "backbone/strong+smoothing+calibration"}


def test_driver_halves_split_every_fold(case):
    folds, results, _, _ = case
    inputs = make_blend_inputs(results, folds, TEST_IDS)
    rng = np.random.default_rng(0)

    for _ in range(5):
        first = driver_halves(inputs, rng)
        first_drivers = set(inputs.subject[first])
        second_drivers = set(inputs.subject[~first])
        assert not first_drivers & second_drivers
        assert len(first_drivers) == len(second_drivers) == 4
        for fold in inputs.folds:
            assert first[inputs.fold == fold].any()
            assert (~first[inputs.fold == fold]).any()


def test_fit_candidates_ignores_labels_outside_rows(case):
    # Held-out scores rely on this: a frame's own label never shapes its prediction when it is scored.
    folds, results, spaces, _ = case
    inputs = make_blend_inputs(results, folds, TEST_IDS)
    rows = driver_halves(inputs, np.random.default_rng(1))
    scrambled_labels = inputs.labels.copy()
    scrambled_labels[~rows] = (scrambled_labels[~rows] + 3) % 10
    scrambled = dataclasses.replace(inputs, labels=scrambled_labels)

    fitted = fit_candidates(inputs, rows, spaces, FAST)
    fitted_scrambled = fit_candidates(scrambled, rows, spaces, FAST)

    assert fitted.keys() == fitted_scrambled.keys()
    for name, prediction in fitted.items():
        assert np.array_equal(prediction.oof, fitted_scrambled[name].oof), name
        assert np.array_equal(prediction.test, fitted_scrambled[name].test), name


def test_summary_names_best_of_each_step(result):
    lines = summarise(result)

    assert any(line.startswith("best smoothing: ") for line in lines)
    assert any(line.startswith("best fold average: backbone/strong ") for line in lines)
    assert lines[-1].startswith("Choosing by in-sample loss on half of the drivers scores")


def test_main_job_records_chosen_blend(tiny_competition, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    from kaggle_sf.config import load_config
    from kaggle_sf.run import run

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    config_file = tmp_path / "two_backbones.yaml"
    config_file.write_text(
        "run_name: blend-test\n"
        "folds: {n_splits: 2}\n"
        "backbones:\n"
        "  - {name: mobilenet, alpha: 0.25, input_size: [64, 64], weights: none}\n"
        "  - {name: mobilenet, alpha: 0.25, input_size: [32, 32], weights: none}\n"
        "train: {head: {max_epochs: 3, patience: 2}}\n"
        "ensemble: {neighbours: [1, 2], neighbour_weights: [0.5], held_out_repeats: 1}\n"
        "explain: {enabled: false}\n")
    config = load_config(config_file)

    result = run(config, tiny_competition, tmp_path / "work", config_file)

    client = MlflowClient()
    parent = client.get_run(result.run_id)
    candidates = pd.read_csv(client.download_artifacts(result.run_id, "ensemble/candidates.csv", str(tmp_path)))
    assert parent.data.tags["ensemble.chosen"] == result.ensemble_chosen
    assert parent.data.params["ensemble.chosen"] == result.ensemble_chosen
    assert result.ensemble_chosen in set(candidates["candidate"])
    assert len(candidates) == 32
    chosen = candidates.set_index("candidate").loc[result.ensemble_chosen]
    assert parent.data.metrics["oof_log_loss"] == pytest.approx(chosen["oof_log_loss"])
    assert result.oof_log_loss == pytest.approx(chosen["oof_log_loss"])
    assert "oof_log_loss_mobilenet_0.25_64x64" in parent.data.metrics
    submission = pd.read_csv(result.submission_path)
    assert submission.loc[:, list(CLASSES)].sum(axis=1).to_numpy() == pytest.approx(np.ones(6))
