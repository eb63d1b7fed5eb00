"""The benchmark code runs on a tiny input and prints well-formed rows; no number is checked here."""

import json
import logging
from pathlib import Path

import numpy as np
import pytest

from benchmarks.common import Result, Timing, interleave, rate_result
from benchmarks.input_pipeline import run_input_pipeline
from benchmarks.plain import plain_batches
from kaggle_sf.data.augment import AugmentConfig

ROW_KEYS = ["name", "value", "unit", "ratio", "frames", "seconds", "settings"]


def test_result_prints_one_json_line_with_all_fields():
    line = Result("input_pipeline/toolkit", 123.456789, "frames/s", 2.5, 96, 1.23456, {"size": [224, 224]}).to_json()
    row = json.loads(line)
    assert list(row) == ROW_KEYS
    assert row["value"] == 123.4568
    assert "\n" not in line


def test_interleave_rotates_order_and_rates_each_round():
    calls = []
    variants = {name: (lambda round_number, name=name: calls.append((round_number, name)) or 10) for name in "abc"}
    timings = interleave(variants, rounds=3, warm_up=["a"])
    assert calls[0] == (-1, "a")
    assert [name for _, name in calls[1:4]] == ["a", "b", "c"]
    assert [name for _, name in calls[4:7]] == ["b", "c", "a"]
    assert all(len(rounds) == 3 for rounds in timings.values())


def test_rate_result_takes_median_ratio_of_rounds():
    timings = {"toolkit": [Timing(100, 1.0, 2.0), Timing(100, 2.0, 2.0), Timing(100, 1.0, 2.0)],
               "plain": [Timing(10, 1.0, 1.0), Timing(10, 1.0, 1.0), Timing(10, 0.5, 0.5)]}
    result = rate_result("x", timings, "toolkit", "plain", {})
    assert result.value == 100.0
    assert result.ratio == 5.0
    assert result.settings["ratio_range"] == [5.0, 10.0]
    assert result.settings["rate_per_cpu_second"] == 50.0
    assert result.settings["cpu_ratio"] == 5.0
    assert result.frames == 300


def test_plain_batches_cover_every_frame_once(tiny_competition: Path):
    paths = sorted(str(p) for p in (tiny_competition / "train").glob("*/*.jpg"))[:10]
    batches = list(plain_batches(paths, list(range(10)), (24, 32), 4, augment=AugmentConfig(), seed=1))
    assert [len(frames) for frames, _ in batches] == [4, 4, 2]
    assert batches[0][0].shape == (4, 24, 32, 3)
    assert sorted(np.concatenate([labels for _, labels in batches]).tolist()) == list(range(10))


def test_input_pipeline_benchmark_runs_on_tiny_frames(tiny_competition: Path):
    results = run_input_pipeline(tiny_competition, [(24, 32)], n_frames=8, rounds=1)
    names = {result.name for result in results}
    assert "input_pipeline/toolkit" in names
    assert "input_pipeline/toolkit_share_of_decode_limit" in names
    for result in results:
        assert list(json.loads(result.to_json())) == ROW_KEYS
        assert result.value > 0


def test_resize_quality_benchmark_runs_on_tiny_frames(tiny_competition: Path):
    from benchmarks.resize_quality import run_resize_quality

    results = run_resize_quality(tiny_competition, seeds=1, timed_frames=4, weights="none")
    by_name = {result.name: result for result in results}
    assert sorted(by_name) == ["resize_quality/opencv_area", "resize_quality/opencv_bilinear",
                               "resize_quality/tensorflow_antialiased_bilinear", "resize_quality/toolkit"]
    for result in results:
        assert list(json.loads(result.to_json())) == ROW_KEYS
        assert 0 < result.value < 10
        assert result.settings["milliseconds_per_frame"] > 0
    assert by_name["resize_quality/toolkit"].settings["difference_from_toolkit"] == [0.0]


def test_gpu_benchmark_runs_on_cpu(tiny_competition: Path):
    from benchmarks.gpu import run_gpu

    results = run_gpu(tiny_competition, steps=1, rounds=1, backbone_name="mobilenet", size=(32, 32), batch_size=4,
                      require_gpu=False)
    by_name = {result.name: result for result in results}
    assert sorted(by_name) == ["gpu/float32_in_memory", "gpu/float32_pipeline", "gpu/mixed_in_memory",
                               "gpu/mixed_pipeline"]
    for result in results:
        assert list(json.loads(result.to_json())) == ROW_KEYS
        assert result.value > 0
        assert result.frames == 4
    assert by_name["gpu/mixed_in_memory"].settings["ratio_of"] == "mixed_in_memory / float32_in_memory"


def test_gpu_benchmark_fails_without_gpu(tiny_competition: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture):
    from benchmarks.run import main

    with caplog.at_level(logging.ERROR, logger="benchmarks"):
        code = main(["--data-dir", str(tiny_competition), "--only", "gpu", "--work-dir", str(tmp_path / "work")])
    assert code == 2
    assert "Benchmark gpu: TensorFlow finds no GPU on this machine" in caplog.text
