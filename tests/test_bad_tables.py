"""Damaged competition tables: harmless damage is accepted, the rest names the file, the row and the fix."""

from __future__ import annotations

import logging
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from kaggle_sf.data.catalog import CatalogError, load_catalog

HEADER = "subject,classname,img"


def driver_lines(competition: Path) -> list[str]:
    """The data rows of the fixture's driver_imgs_list.csv, as text."""
    return (competition / "driver_imgs_list.csv").read_text().splitlines()[1:]


def write_driver_list(competition: Path, text: str, encoding: str = "utf-8") -> None:
    (competition / "driver_imgs_list.csv").write_bytes(text.encode(encoding))


# --- Accepted --------------------------------------------------------------------------------------


def test_loose_header_is_accepted(tiny_competition: Path):
    table = pd.read_csv(tiny_competition / "driver_imgs_list.csv")
    table = table.loc[:, ["img", "classname", "subject"]].assign(note="x")
    table.columns = [" IMG", "ClassName ", "Subject", "note"]
    table.to_csv(tiny_competition / "driver_imgs_list.csv", index=False)
    catalog = load_catalog(tiny_competition)
    assert len(catalog.train) == 80
    assert catalog.subjects == ["p001", "p002", "p003", "p004"]


def test_upper_case_class_names_are_accepted(tiny_competition: Path):
    lines = driver_lines(tiny_competition)
    assert lines[5] == "p001,c2,img_5.jpg"
    lines[5] = "p001,C2,img_5.jpg"
    write_driver_list(tiny_competition, "\n".join([HEADER, *lines]) + "\n")
    catalog = load_catalog(tiny_competition)
    assert catalog.train.set_index("img").loc["img_5.jpg", "classname"] == "c2"


def test_repeated_rows_are_used_once_with_a_warning(tiny_competition: Path, caplog: pytest.LogCaptureFixture):
    lines = driver_lines(tiny_competition)
    write_driver_list(tiny_competition, "\n".join([HEADER, *lines, lines[0], lines[7]]) + "\n")
    with caplog.at_level(logging.WARNING, logger="kaggle_sf.data.catalog"):
        catalog = load_catalog(tiny_competition)
    assert len(catalog.train) == 80
    assert "repeats 2 rows, e.g. row 82 (img_0.jpg)" in caplog.text


def test_blank_lines_keep_row_numbers(tiny_competition: Path):
    lines = driver_lines(tiny_competition)
    assert lines[9] == "p001,c4,img_9.jpg"
    lines[9] = "p001,c11,img_9.jpg"  # row 11 before the blank lines, row 13 after
    text = "\r\n".join([HEADER, lines[0], "", " ", *lines[1:]]) + "\r\n"
    write_driver_list(tiny_competition, "\ufeff" + text)
    with pytest.raises(CatalogError, match=r"driver_imgs_list\.csv row 13: unknown class 'c11' for img_9\.jpg"):
        load_catalog(tiny_competition)


def test_sample_submission_repeats_are_used_once(tiny_competition: Path, caplog: pytest.LogCaptureFixture):
    sample = pd.read_csv(tiny_competition / "sample_submission.csv")
    pd.concat([sample, sample.iloc[[1]]]).to_csv(tiny_competition / "sample_submission.csv", index=False)
    with caplog.at_level(logging.WARNING, logger="kaggle_sf.data.catalog"):
        catalog = load_catalog(tiny_competition)
    assert catalog.test["img"].tolist() == sample["img"].tolist()
    assert f"lists 1 images more than once, e.g. {sample['img'].iloc[1]} in row 8" in caplog.text


def test_unlisted_test_image_is_left_out(tiny_competition: Path, caplog: pytest.LogCaptureFixture):
    sample = pd.read_csv(tiny_competition / "sample_submission.csv")
    sample.iloc[1:].to_csv(tiny_competition / "sample_submission.csv", index=False)
    with caplog.at_level(logging.WARNING, logger="kaggle_sf.data.catalog"):
        catalog = load_catalog(tiny_competition)
    assert catalog.test["img"].tolist() == sample["img"].iloc[1:].tolist()
    assert f"1 images in {tiny_competition / 'test'} are not in sample_submission.csv" in caplog.text


def test_hidden_folder_in_train_is_ignored(tiny_competition: Path):
    (tiny_competition / "train" / ".ipynb_checkpoints").mkdir()
    assert len(load_catalog(tiny_competition).train) == 80


# --- Rejected, with the row and the fix ------------------------------------------------------------


@pytest.mark.parametrize("header, message", [
    ("classname,img", r"lacks column\(s\) subject; found classname, img"),
    ("driver,classname,img", r"lacks column\(s\) subject; found driver, classname, img\. "
                             r"Expected the competition's header subject,classname,img"),
    ("subject,class,image", r"lacks column\(s\) classname, img"),
])
def test_missing_or_renamed_column_is_named(tiny_competition: Path, header: str, message: str):
    lines = driver_lines(tiny_competition)
    if header.count(",") == 1:
        lines = [line.split(",", 1)[1] for line in lines]
    write_driver_list(tiny_competition, "\n".join([header, *lines]) + "\n")
    with pytest.raises(CatalogError, match=message):
        load_catalog(tiny_competition)


def test_missing_header_row_says_so(tiny_competition: Path):
    write_driver_list(tiny_competition, "\n".join(driver_lines(tiny_competition)) + "\n")
    with pytest.raises(CatalogError, match="the header row is missing, so add the line subject,classname,img"):
        load_catalog(tiny_competition)


def test_semicolon_separated_file_says_so(tiny_competition: Path):
    lines = [line.replace(",", ";") for line in [HEADER, *driver_lines(tiny_competition)]]
    write_driver_list(tiny_competition, "\n".join(lines) + "\n")
    with pytest.raises(CatalogError, match="another separator than commas"):
        load_catalog(tiny_competition)


def test_empty_table_file_says_so(tiny_competition: Path):
    write_driver_list(tiny_competition, "")
    with pytest.raises(CatalogError, match=r"driver_imgs_list\.csv is empty \(0 bytes\); download or extract"):
        load_catalog(tiny_competition)


@pytest.mark.parametrize("last_line, message", [
    ("p004,c9,img_7", r"row 82: img 'img_7' is not a \.jpg file name \(a truncated file ends like this\)"),
    ("p004,c9", r"row 82 has an empty subject, classname or img \(a truncated file ends like this\)"),
])
def test_truncated_table_names_the_last_row(tiny_competition: Path, last_line: str, message: str):
    write_driver_list(tiny_competition, "\n".join([HEADER, *driver_lines(tiny_competition), last_line]))
    with pytest.raises(CatalogError, match=message):
        load_catalog(tiny_competition)


def test_damaged_zipped_table_says_to_download_again(tiny_competition: Path):
    csv = tiny_competition / "driver_imgs_list.csv"
    with zipfile.ZipFile(tiny_competition / "driver_imgs_list.csv.zip", "w") as archive:
        archive.write(csv, "driver_imgs_list.csv")
    csv.unlink()
    zipped = tiny_competition / "driver_imgs_list.csv.zip"
    zipped.write_bytes(zipped.read_bytes()[:100])
    with pytest.raises(CatalogError, match=r"driver_imgs_list\.csv\.zip could not be read as CSV .*download"):
        load_catalog(tiny_competition)


def test_conflicting_labels_name_both_rows(tiny_competition: Path):
    lines = driver_lines(tiny_competition)
    write_driver_list(tiny_competition, "\n".join([HEADER, *lines, "p003,c5,img_0.jpg"]) + "\n")
    with pytest.raises(CatalogError, match=r"lists img_0\.jpg more than once with different labels "
                                           r"\(row 2: p001 c0, row 82: p003 c5\); keep the correct row"):
        load_catalog(tiny_competition)


def test_unknown_class_names_row_and_classes(tiny_competition: Path):
    lines = driver_lines(tiny_competition)
    assert lines[3] == "p001,c1,img_3.jpg"
    lines[3] = "p001,talking,img_3.jpg"
    write_driver_list(tiny_competition, "\n".join([HEADER, *lines]) + "\n")
    with pytest.raises(CatalogError, match=r"row 5: unknown class 'talking' for img_3\.jpg; classes are c0, c1"):
        load_catalog(tiny_competition)


def test_missing_listed_images_are_counted(tiny_competition: Path):
    for name in ("img_6.jpg", "img_7.jpg"):
        (tiny_competition / "train" / "c3" / name).unlink()
    with pytest.raises(CatalogError, match=r"row 8 lists img_6\.jpg \(c3\) but .*train/c3/img_6\.jpg does not "
                                           r"exist \(and 1 more listed images\); restore the files"):
        load_catalog(tiny_competition)


def test_image_in_another_class_folder_names_the_row(tiny_competition: Path):
    (tiny_competition / "train" / "c3" / "img_6.jpg").rename(tiny_competition / "train" / "c4" / "img_6.jpg")
    with pytest.raises(CatalogError, match=r"row 8 lists img_6\.jpg as c3 but the file is in .*train/c4; move it"):
        load_catalog(tiny_competition)


def test_absent_test_image_names_row(tiny_competition: Path):
    sample = pd.read_csv(tiny_competition / "sample_submission.csv")
    (tiny_competition / "test" / sample["img"].iloc[3]).unlink()
    with pytest.raises(CatalogError, match=rf"sample_submission\.csv lists 1 images missing from .*test, e\.g\. "
                                           rf"{sample['img'].iloc[3]} in row 5; restore them"):
        load_catalog(tiny_competition)


def test_sample_submission_without_rows_is_rejected(tiny_competition: Path):
    (tiny_competition / "sample_submission.csv").write_text("img,c0,c1,c2,c3,c4,c5,c6,c7,c8,c9\n")
    with pytest.raises(CatalogError, match="lists no test images; use the sample submission that came with"):
        load_catalog(tiny_competition)


def test_sample_submission_with_renamed_id_column_is_rejected(tiny_competition: Path):
    sample = pd.read_csv(tiny_competition / "sample_submission.csv").rename(columns={"img": "id"})
    sample.to_csv(tiny_competition / "sample_submission.csv", index=False)
    with pytest.raises(CatalogError, match=r"sample_submission\.csv lacks column\(s\) img; found id, c0"):
        load_catalog(tiny_competition)
