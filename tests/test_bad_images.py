"""Damaged and unusual image files: which are decoded, which are listed and skipped or fail the run."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from kaggle_sf.config import BackboneConfig, load_config
from kaggle_sf.data.catalog import load_catalog
from kaggle_sf.data.image_check import BadImageError, check_image, check_images, screen_catalog
from tests.main_job import keras_home, run_main_job, settings_arguments, stored_runs, synthetic_competition

# --- Files -----------------------------------------------------------------------------------------


def gradient(width: int, height: int) -> Image.Image:
    """An RGB frame whose red grows left to right and green top to bottom, so a wrong decode shows."""
    x = np.linspace(0, 255, width)[None, :] * np.ones((height, 1))
    y = np.linspace(0, 255, height)[:, None] * np.ones((1, width))
    pixels = np.stack([x, y, np.full_like(x, 128)], axis=-1).astype(np.uint8)
    return Image.fromarray(pixels)


def write_case(folder: Path, case: str) -> Path:
    """Write the file of one test case as ``<case>.jpg`` and return its path."""
    path = folder / f"{case}.jpg"
    folder.mkdir(parents=True, exist_ok=True)
    frame = gradient(64, 48)
    if case == "good":
        frame.save(path, format="JPEG", quality=90)
    elif case in ("truncated", "truncated_end_marker", "header_only"):
        write_case(folder, "good")
        whole = (folder / "good.jpg").read_bytes()
        kept = {"truncated": len(whole) // 2, "truncated_end_marker": len(whole) - 2, "header_only": 300}[case]
        path.write_bytes(whole[:kept])
    elif case == "missing":
        pass
    elif case == "empty":
        path.write_bytes(b"")
    elif case == "text":
        path.write_text("not an image\n")
    elif case == "html":
        path.write_text("<!DOCTYPE html><html><body>Too many requests</body></html>\n")
    elif case == "png":
        frame.save(path, format="PNG")
    elif case == "png_with_alpha":
        frame.convert("RGBA").save(path, format="PNG")
    elif case == "gif":
        frame.save(path, format="GIF")
    elif case == "bmp":
        frame.save(path, format="BMP")
    elif case == "webp":
        frame.save(path, format="WEBP", lossless=True)
    elif case == "tiff":
        frame.save(path, format="TIFF")
    elif case == "pcx":
        frame.save(path, format="PCX")
    elif case == "grayscale":
        frame.convert("L").save(path, format="JPEG", quality=95)
    elif case == "cmyk":
        frame.convert("CMYK").save(path, format="JPEG", quality=95)
    elif case == "odd_641x479":
        gradient(641, 479).save(path, format="JPEG", quality=90)
    elif case == "portrait":
        gradient(48, 64).save(path, format="JPEG", quality=90)
    elif case == "tiny_20x15":
        gradient(20, 15).save(path, format="JPEG", quality=95)
    elif case == "progressive":
        frame.save(path, format="JPEG", quality=90, progressive=True)
    else:
        raise ValueError(case)
    return path


BAD_CASES = {
    "missing": "file not found",
    "empty": "empty file (0 bytes)",
    "truncated": "truncated or damaged image data",
    "truncated_end_marker": "truncated or damaged image data",
    "header_only": "truncated or damaged image data",
    "text": "not an image file; it starts with b'not an image",
    "html": "not an image file; it starts with b'<!DOCTYPE html>",
    "pcx": "PCX image, which OpenCV cannot decode; convert it to JPEG",
}
DECODABLE_CASES = {
    "good": ("JPEG", "RGB", 64, 48),
    "png": ("PNG", "RGB", 64, 48),
    "png_with_alpha": ("PNG", "RGBA", 64, 48),
    "gif": ("GIF", "P", 64, 48),
    "bmp": ("BMP", "RGB", 64, 48),
    "webp": ("WEBP", "RGB", 64, 48),
    "tiff": ("TIFF", "RGB", 64, 48),
    "grayscale": ("JPEG", "L", 64, 48),
    "cmyk": ("JPEG", "CMYK", 64, 48),
    "odd_641x479": ("JPEG", "RGB", 641, 479),
    "portrait": ("JPEG", "RGB", 48, 64),
    "tiny_20x15": ("JPEG", "RGB", 20, 15),
    "progressive": ("JPEG", "RGB", 64, 48),
}


# --- The check -------------------------------------------------------------------------------------


@pytest.mark.parametrize("case, reason", sorted(BAD_CASES.items()))
def test_check_names_why_a_file_is_bad(tmp_path: Path, case: str, reason: str):
    report = check_image(write_case(tmp_path, case))
    assert report.problem is not None
    assert report.problem.startswith(reason)


@pytest.mark.parametrize("case, expected", sorted(DECODABLE_CASES.items()))
def test_check_accepts_decodable_files(tmp_path: Path, case: str, expected: tuple[str, str, int, int]):
    report = check_image(write_case(tmp_path, case))
    assert report.problem is None
    assert (report.format, report.mode, report.width, report.height) == expected


def test_check_result_is_cached_by_file_list(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    paths = [str(write_case(tmp_path / "images", case)) for case in ("good", "truncated", "png")]
    cache = tmp_path / "cache"
    first = check_images(paths, cache)
    assert [r.problem is None for r in first] == [True, False, True]
    assert len(list(cache.glob("images-*.json"))) == 1

    with caplog.at_level(logging.INFO, logger="kaggle_sf.data.image_check"):
        second = check_images(paths, cache)
    assert second == first
    assert "Reusing the check of 3 images" in caplog.text

    # Repairing a file changes its size and time, so the list is checked again.
    write_case(tmp_path / "scratch", "good").replace(paths[1])
    os.utime(paths[1], ns=(0, 0))
    third = check_images(paths, cache)
    assert [r.problem is None for r in third] == [True, True, True]
    assert len(list(cache.glob("images-*.json"))) == 2


def test_unreadable_check_cache_is_checked_again(tmp_path: Path):
    paths = [str(write_case(tmp_path / "images", "good"))]
    check_images(paths, tmp_path / "cache")
    cache_file = next((tmp_path / "cache").glob("images-*.json"))
    cache_file.write_text('[["half a rec')
    assert check_images(paths, tmp_path / "cache")[0].problem is None


# --- Screening a catalog ---------------------------------------------------------------------------


def _damage(competition: Path) -> tuple[Path, Path]:
    """Truncate one listed train frame and empty one test frame; return both paths."""
    train_frame = competition / "train" / "c3" / "img_6.jpg"
    train_frame.write_bytes(train_frame.read_bytes()[:200])
    sample = pd.read_csv(competition / "sample_submission.csv")
    test_frame = competition / "test" / sample["img"].iloc[2]
    test_frame.write_bytes(b"")
    return train_frame, test_frame


def test_fail_lists_every_bad_image_and_the_fix(tiny_competition: Path):
    train_frame, test_frame = _damage(tiny_competition)
    with pytest.raises(BadImageError) as raised:
        screen_catalog(load_catalog(tiny_competition), "fail")
    message = str(raised.value)
    assert message.startswith("2 of 86 images cannot be decoded:")
    assert f"{train_frame}: truncated or damaged image data" in message
    assert f"{test_frame}: empty file (0 bytes)" in message
    assert "set data.on_bad_image=skip" in message


def test_skip_keeps_every_test_id(tiny_competition: Path):
    train_frame, test_frame = _damage(tiny_competition)
    catalog = load_catalog(tiny_competition)
    screened = screen_catalog(catalog, "skip")

    assert len(screened.catalog.train) == 79
    assert "img_6.jpg" not in set(screened.catalog.train["img"])
    assert len(screened.catalog.test) == 5
    assert screened.test_ids == catalog.test["img"].tolist()
    assert screened.skipped_test_ids == [test_frame.name]
    assert screened.bad_images[["split", "img"]].to_numpy().tolist() == [["train", "img_6.jpg"],
                                                                         ["test", test_frame.name]]


def test_skip_with_every_test_image_bad_fails(tiny_competition: Path):
    for frame in (tiny_competition / "test").iterdir():
        frame.write_text("gone")
    with pytest.raises(BadImageError, match="none of the 6 test images can be decoded"):
        screen_catalog(load_catalog(tiny_competition), "skip")


def test_unusual_images_are_kept_and_counted(tiny_competition: Path, caplog: pytest.LogCaptureFixture):
    write_case(tiny_competition / "scratch", "grayscale").replace(tiny_competition / "train" / "c0" / "img_0.jpg")
    write_case(tiny_competition / "scratch", "png").replace(tiny_competition / "train" / "c0" / "img_1.jpg")
    with caplog.at_level(logging.INFO, logger="kaggle_sf.data.image_check"):
        screened = screen_catalog(load_catalog(tiny_competition), "fail")
    assert len(screened.catalog.train) == 80
    assert "1 with PNG data in a .jpg file" in caplog.text
    assert "1 with L colour mode" in caplog.text


def test_non_image_file_in_class_folder_is_ignored(tiny_competition: Path, caplog: pytest.LogCaptureFixture):
    (tiny_competition / "train" / "c2" / "notes.txt").write_text("camera 2 was dirty")
    (tiny_competition / "train" / "c2" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    with caplog.at_level(logging.WARNING, logger="kaggle_sf.data.catalog"):
        catalog = load_catalog(tiny_competition)
    assert len(catalog.train) == 80
    assert "notes.txt: not a .jpg image" in caplog.text
    assert ".DS_Store" not in caplog.text


# --- The decoder ----------------------------------------------------------------------------------


def _decode(path: Path, size: tuple[int, int]) -> np.ndarray:
    from kaggle_sf.data.images import read_image

    return read_image(str(path), size).astype(np.float32)


def _reference(path: Path, size: tuple[int, int]) -> np.ndarray:
    """Decode with Pillow at full size and resize with the toolkit's resize."""
    from kaggle_sf.data.images import resize_image

    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB"))
    return resize_image(pixels, size).astype(np.float32)


def _stripes(width: int) -> np.ndarray:
    """A frame of one-pixel black and white columns: the finest detail a frame can hold."""
    stripes = np.zeros((40, width, 3), np.uint8)
    stripes[:, ::2] = 255
    return stripes


@pytest.mark.parametrize("width, target", [(320, 224), (640, 299), (100, 40)])
def test_resize_averages_away_fine_detail(width: int, target: int):
    import cv2

    from kaggle_sf.data.images import resize_image

    # The widths a 640x480 frame shrinks by at 224x224 (after the 1/2 DCT reduction) and at 299x299,
    # and the largest shrink resized by supersampling alone. Plain bilinear sampling interpolates
    # between two neighbouring columns, so it keeps at least half of the stripes' 127.5 amplitude.
    shrunk = resize_image(_stripes(width), (40, target)).astype(np.float32)
    sampled = cv2.resize(_stripes(width), (target, 40), interpolation=cv2.INTER_LINEAR).astype(np.float32)
    assert shrunk.shape == (40, target, 3)
    assert np.abs(sampled - 127.5).max() >= 63
    assert np.abs(shrunk - 127.5).max() <= 0.55 * np.abs(sampled - 127.5).max()


def test_resize_area_averages_a_large_shrink():
    from kaggle_sf.data.images import resize_image

    # 1000 columns to 100: the first step averages every 5 columns into one, which leaves a flat grey.
    shrunk = resize_image(_stripes(1000), (40, 100)).astype(np.float32)
    assert np.abs(shrunk - 127.5).max() <= 1.0


def test_resize_keeps_a_ramp_in_place():
    from kaggle_sf.data.images import resize_image

    # Bilinear interpolation and 2x2 averaging both keep a linear ramp linear, so a result shifted by
    # a fraction of a pixel would differ from the ramp sampled at the output pixel centres. In float32
    # the two agree exactly; in uint8 OpenCV's rounding adds up to one level.
    width, target, slope = 320, 224, 0.75
    ramp = np.repeat((np.arange(width) * slope)[None, :, None], 240, axis=0).repeat(3, axis=2)
    centres = ((np.arange(target) + 0.5) * width / target - 0.5) * slope
    interior = slice(4, target - 4)

    shrunk = resize_image(ramp.astype(np.float32), (224, target))
    np.testing.assert_allclose(shrunk[100, interior, 0], centres[interior], atol=1e-3)
    shrunk_uint8 = resize_image(np.rint(ramp).astype(np.uint8), (224, target)).astype(np.float32)
    assert np.abs(shrunk_uint8[100, interior, 0] - centres[interior]).max() <= 1.0


def test_resize_grows_a_small_frame_bilinearly():
    import tensorflow as tf

    from kaggle_sf.data.images import resize_image

    frame = np.random.default_rng(0).integers(0, 256, (15, 20, 3), dtype=np.uint8)
    grown = resize_image(frame, (60, 80))
    assert grown.shape == (60, 80, 3)
    assert grown.dtype == np.uint8
    # OpenCV interpolates in fixed point and rounds to uint8, TensorFlow in float32.
    expected = tf.image.resize(frame, (60, 80), method="bilinear").numpy()
    np.testing.assert_allclose(grown.astype(np.float32), expected, atol=1.0)


def test_resize_writes_into_a_given_frame():
    from kaggle_sf.data.images import resize_image

    batch = np.zeros((2, 30, 40, 3), np.uint8)
    result = resize_image(np.full((60, 80, 3), 200, np.uint8), (30, 40), out=batch[1])
    assert result is batch[1] or np.shares_memory(result, batch)
    assert (batch[1] == 200).all()
    assert (batch[0] == 0).all()


@pytest.mark.parametrize("case", sorted(DECODABLE_CASES))
def test_decoder_reads_every_decodable_case(tmp_path: Path, case: str):
    path = write_case(tmp_path, case)
    decoded = _decode(path, (32, 32))
    assert decoded.shape == (32, 32, 3)
    # JPEG decoders differ by a few levels (DCT method, reduced decoding), while a wrong decode is off
    # by tens.
    assert np.abs(decoded - _reference(path, (32, 32))).mean() < 4


def test_decoder_keeps_small_frame_full_size(tmp_path: Path):
    path = write_case(tmp_path, "tiny_20x15")
    decoded = _decode(path, (224, 224))
    assert np.abs(decoded - _reference(path, (224, 224))).mean() < 2


def test_grayscale_frame_becomes_three_equal_channels(tmp_path: Path):
    decoded = _decode(write_case(tmp_path, "grayscale"), (32, 32))
    assert np.array_equal(decoded[..., 0], decoded[..., 1])
    assert np.array_equal(decoded[..., 1], decoded[..., 2])


@pytest.mark.parametrize("case", ["good", "progressive", "odd_641x479", "portrait", "grayscale", "cmyk"])
def test_jpeg_size_matches_pillow(tmp_path: Path, case: str):
    from kaggle_sf.data.images import jpeg_size

    path = write_case(tmp_path, case)
    with Image.open(path) as image:
        assert jpeg_size(path.read_bytes()) == (image.height, image.width)


@pytest.mark.parametrize("case", ["png", "gif", "empty", "text"])
def test_jpeg_size_is_none_without_a_frame_header(tmp_path: Path, case: str):
    from kaggle_sf.data.images import jpeg_size

    assert jpeg_size(write_case(tmp_path, case).read_bytes()) is None


def test_dct_reduction_keeps_the_target_covered():
    from kaggle_sf.data.images import dct_reduction

    assert dct_reduction((480, 640), (224, 224)) == 2
    assert dct_reduction((480, 640), (192, 256)) == 2
    assert dct_reduction((480, 640), (299, 299)) == 1
    assert dct_reduction((480, 640), (60, 80)) == 8
    assert dct_reduction((60, 80), (224, 224)) == 1
    assert dct_reduction(None, (32, 32)) == 1


def test_reduced_decode_matches_a_full_decode(tmp_path: Path):
    from kaggle_sf.data.images import read_image

    # 641x479 is decoded at 1/2 for 224x224 and at full size for 239x320: the results agree closely.
    path = write_case(tmp_path, "odd_641x479")
    reduced = read_image(str(path), (224, 224)).astype(np.float32)
    full = _reference(path, (224, 224))
    assert np.abs(reduced - full).mean() < 2


@pytest.mark.parametrize("case", ["truncated", "truncated_end_marker", "header_only", "empty", "text", "missing"])
def test_decoder_names_the_file_it_cannot_decode(tmp_path: Path, case: str):
    from kaggle_sf.data.images import ImageDecodeError, read_image

    path = write_case(tmp_path, case)
    with pytest.raises(ImageDecodeError, match=str(path)):
        read_image(str(path), (32, 32))


@pytest.mark.parametrize("case", ["good", "grayscale", "cmyk", "progressive", "odd_641x479", "portrait"])
@pytest.mark.parametrize("ratio", [1, 2, 4, 8])
def test_turbojpeg_decode_equals_opencv(tmp_path: Path, case: str, ratio: int):
    from kaggle_sf.data import images

    data = write_case(tmp_path, case).read_bytes()
    frame_size = images.jpeg_size(data)
    fast, message = images._turbojpeg_decode(data, ratio, frame_size)
    assert message == ""
    assert fast.shape == (-(-frame_size[0] // ratio), -(-frame_size[1] // ratio), 3)
    assert np.array_equal(fast, images._imdecode(data, ratio, "frame"))


def test_decoder_falls_back_to_opencv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from kaggle_sf.data import images

    opened = []
    opencv_decode = images._imdecode
    monkeypatch.setattr(images, "_imdecode", lambda data, ratio, name: opened.append(name) or opencv_decode(
        data, ratio, name))
    for case in ("good", "cmyk", "png", "truncated"):
        try:
            images.decode_image(write_case(tmp_path, case).read_bytes(), (24, 32), name=case)
        except images.ImageDecodeError:
            pass
    assert opened == ["png", "truncated"]


def test_turbojpeg_leaves_oversized_jpegs_to_opencv(tmp_path: Path):
    from kaggle_sf.data import images

    data = write_case(tmp_path, "good").read_bytes()
    assert images._turbojpeg_decode(data, 1, (48, images.OPENCV_MAX_SIDE + 1)) == (None, "")
    assert images._turbojpeg_decode(data, 1, (1 << 16, 1 << 15)) == (None, "")
    # A size other than the one decoded, as when the header scanner and libjpeg disagree.
    assert images._turbojpeg_decode(data, 1, (96, 128)) == (None, "")


def test_recovered_jpeg_logged_by_name(tmp_path: Path, caplog: pytest.LogCaptureFixture):
    from kaggle_sf.data.images import read_image

    # Junk before the start-of-scan marker: libjpeg skips it with a warning that names no file.
    whole = write_case(tmp_path, "good").read_bytes()
    scan = whole.index(b"\xff\xda")
    path = tmp_path / "junk.jpg"
    path.write_bytes(whole[:scan] + b"\x12\x34\x56" + whole[scan:])
    with caplog.at_level(logging.WARNING, logger="kaggle_sf.data.images"):
        frame = read_image(str(path), (24, 32))
        read_image(str(path), (24, 32))
    assert frame.shape == (24, 32, 3)
    warnings = [record.getMessage() for record in caplog.records]
    assert warnings == [f"{path}: libjpeg reported 'Corrupt JPEG data: 3 extraneous bytes before marker 0xda' "
                        "and decoded it anyway; check the file if its frames look damaged"]


def test_unsupported_jpeg_logs_at_debug(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        caplog: pytest.LogCaptureFixture):
    from kaggle_sf.data import images

    def reject(*args, **kwargs):
        raise ValueError("Could not determine subsampling level")

    monkeypatch.setattr(images.simplejpeg, "decode_jpeg", reject)
    path = write_case(tmp_path, "good")
    with caplog.at_level(logging.DEBUG, logger="kaggle_sf.data.images"):
        frame = images.read_image(str(path), (24, 32))
    assert frame.shape == (24, 32, 3)
    assert [record.levelname for record in caplog.records] == ["DEBUG"]
    assert "TurboJPEG cannot decode it (Could not determine subsampling level)" in caplog.text


def test_real_frames_decode_alike(fullres_data: Path):
    from kaggle_sf.data import images

    paths = [*sorted((fullres_data / "train").glob("c*/*.jpg"))[::60],
             *sorted((fullres_data / "test").glob("*.jpg"))[::20]]
    assert len(paths) >= 20
    for path in paths:
        data = path.read_bytes()
        for ratio in (1, 2):
            fast, message = images._turbojpeg_decode(data, ratio, images.jpeg_size(data))
            assert message == "", path
            assert np.array_equal(fast, images._imdecode(data, ratio, str(path))), path


def test_jpeg_size_skips_junk_bytes(tmp_path: Path):
    from kaggle_sf.data.images import jpeg_size

    # libjpeg skips "FF 00" and the junk after it, so the 4000x4000 start-of-frame below lies inside
    # the APP1 segment that follows, and the real 64x48 frame header is the one it reads.
    real = write_case(tmp_path, "good").read_bytes()
    hidden = (b"\xff\x00\x00\x06" + b"\xff\xe1\x00\x10" + b"\xff\xc0\x00\x11\x08"
              + (4000).to_bytes(2, "big") * 2 + b"\0" * 5)
    assert jpeg_size(real[:2] + hidden + real[2:]) == (48, 64)


def test_decoder_handles_a_wrong_header_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from kaggle_sf.data import images

    path = write_case(tmp_path, "good")
    monkeypatch.setattr(images, "jpeg_size", lambda data: (4000, 4000))
    decoded = images.decode_image(path.read_bytes(), (32, 32))
    assert decoded.shape == (48, 64, 3)


def test_decoder_names_file_on_opencv_error(tmp_path: Path):
    from kaggle_sf.data.images import ImageDecodeError, read_image

    # OpenCV raises, instead of returning nothing, for a side over 2**20 pixels.
    path = tmp_path / "wide.jpg"
    Image.new("L", (1_100_000, 1), 100).save(path, format="BMP")
    with pytest.raises(ImageDecodeError, match=rf"{path}: OpenCV cannot decode it: .*width"):
        read_image(str(path), (32, 32))


def test_check_rejects_a_cut_png(tmp_path: Path):
    # Pillow does not verify the end of a PNG, so a download cut short by a few bytes opens in Pillow.
    whole = write_case(tmp_path, "png").read_bytes()
    path = tmp_path / "cut.jpg"
    path.write_bytes(whole[:-20])
    report = check_image(path)
    assert report.problem is not None
    assert report.problem.startswith("truncated or damaged image data (OpenCV cannot decode it")


def test_check_accepts_a_multi_picture_jpeg(tmp_path: Path):
    path = tmp_path / "mpo.jpg"
    gradient(64, 48).save(path, format="MPO", save_all=True, append_images=[gradient(64, 48)])
    report = check_image(path)
    assert report.problem is None
    assert (report.format, report.width, report.height) == ("MPO", 64, 48)


def test_dataset_decode_error_names_file(tmp_path: Path):
    from kaggle_sf.data.images import ImageDecodeError, decode_errors_named, image_dataset

    paths = [str(write_case(tmp_path, "good")), str(write_case(tmp_path, "truncated"))]
    with pytest.raises(ImageDecodeError, match=rf"{tmp_path / 'truncated.jpg'}: OpenCV cannot decode it"):
        with decode_errors_named():
            for _ in image_dataset(paths, (32, 32), 1):
                pass


def test_features_name_undecodable_file(tmp_path: Path):
    from kaggle_sf.features import extract_features

    folder = tmp_path / "images"
    paths = [write_case(folder, case) for case in ("good", "png", "progressive", "truncated")]
    images = pd.DataFrame({"img": [p.name for p in paths], "path": [str(p) for p in paths]})
    backbone = load_config(None, ["backbones.0.weights=none", "backbones.0.input_size=[32, 32]"]).backbones[0]
    assert isinstance(backbone, BackboneConfig)

    with pytest.raises(BadImageError, match=rf"{folder / 'truncated.jpg'}: OpenCV cannot decode it"):
        extract_features(backbone, images, tmp_path / "cache", split="train", batch_size=2)
    assert list((tmp_path / "cache").glob("*.h5")) == []
    assert [p.name for p in (tmp_path / "cache").iterdir() if p.name.startswith(".tmp-")] == []


# --- The main job ----------------------------------------------------------------------------------


def _damaged_copy(source: Path, destination: Path) -> tuple[str, str]:
    """Copy a dataset, truncate one train frame and empty one test frame; return their ids."""
    shutil.copytree(source, destination)
    train = pd.read_csv(destination / "driver_imgs_list.csv")
    train_img = train["img"].iloc[0]
    train_frame = destination / "train" / train["classname"].iloc[0] / train_img
    train_frame.write_bytes(train_frame.read_bytes()[:300])
    test_img = pd.read_csv(destination / "sample_submission.csv")["img"].iloc[4]
    (destination / "test" / test_img).write_bytes(b"")
    return train_img, test_img


def test_main_job_fails_listing_bad_images(tmp_path_factory: pytest.TempPathFactory,
                                           capsys: pytest.CaptureFixture):
    from pipelines.common import main_guard
    from pipelines.full_run import main

    data_dir = tmp_path_factory.mktemp("failing") / "data"
    train_img, test_img = _damaged_copy(synthetic_competition(tmp_path_factory.getbasetemp()), data_dir)
    work_dir = data_dir.parent / "work"
    with pytest.raises(SystemExit) as exited:
        main_guard(lambda: main(["--data-dir", str(data_dir), "--work-dir", str(work_dir), *settings_arguments()]))
    stderr = capsys.readouterr().err
    assert exited.value.code == 2
    assert "error: 2 of 100 images cannot be decoded:" in stderr
    assert f"{train_img}: truncated or damaged image data" in stderr
    assert f"{test_img}: empty file (0 bytes)" in stderr
    assert "Traceback" not in stderr
    assert not (work_dir / "cache" / "features").exists()


def test_main_job_skips_bad_images(tmp_path_factory: pytest.TempPathFactory):
    base = tmp_path_factory.getbasetemp()
    home = keras_home(base)
    data_dir = tmp_path_factory.mktemp("skipping") / "data"
    train_img, test_img = _damaged_copy(synthetic_competition(base), data_dir)
    work_dir = data_dir.parent / "work"

    finished = run_main_job(data_dir, work_dir, home, run_name="skip", extra=["data.on_bad_image=skip"])
    assert finished.returncode == 0, finished.stderr[-3000:]
    assert "Leaving out 2 of 100 images that cannot be decoded" in finished.stderr

    # Every test id has a row. The empty frame's row is the add-one-smoothed class prior of the 79 kept
    # train frames, which are 8 per class and 7 in the truncated frame's class.
    submission = pd.read_csv(work_dir / "submissions" / "skip.csv")
    sample = pd.read_csv(data_dir / "sample_submission.csv")
    assert submission["img"].tolist() == sample["img"].tolist()
    train = pd.read_csv(data_dir / "driver_imgs_list.csv")
    counts = train[train["img"] != train_img]["classname"].value_counts().reindex(submission.columns[1:])
    prior = (counts.to_numpy() + 1) / (counts.sum() + 10)
    assert np.allclose(submission.set_index("img").loc[test_img].to_numpy(), prior, atol=1e-8)
    assert np.allclose(submission.iloc[:, 1:].sum(axis=1), 1)

    [run] = [r for r in stored_runs(work_dir, "state-farm-distracted-driver-detection")
             if "mlflow.parentRunId" not in r.data.tags]
    assert run.data.params["n_bad_images"] == "2"
    bad_table = Path(run.info.artifact_uri.removeprefix("file://")) / "bad_images.csv"
    assert pd.read_csv(bad_table)["img"].tolist() == [train_img, test_img]
