import shutil
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from kaggle_sf.data.catalog import CatalogError, load_catalog


def test_extracted_layout_gives_train_and_test_tables(tiny_competition: Path):
    catalog = load_catalog(tiny_competition)
    assert list(catalog.train.columns) == ["img", "path", "subject", "classname"]
    assert len(catalog.train) == 4 * 10 * 2
    assert catalog.subjects == ["p001", "p002", "p003", "p004"]
    assert list(catalog.test.columns) == ["img", "path"]
    sample = pd.read_csv(tiny_competition / "sample_submission.csv")
    assert list(catalog.test["img"]) == list(sample["img"])
    for img, path, classname in catalog.train[["img", "path", "classname"]].itertuples(index=False):
        assert Path(path) == tiny_competition / "train" / classname / img


def test_imgs_parent_folder_and_zipped_csv(tiny_competition: Path):
    (tiny_competition / "imgs").mkdir()
    shutil.move(tiny_competition / "train", tiny_competition / "imgs" / "train")
    shutil.move(tiny_competition / "test", tiny_competition / "imgs" / "test")
    csv = tiny_competition / "driver_imgs_list.csv"
    with zipfile.ZipFile(tiny_competition / "driver_imgs_list.csv.zip", "w") as archive:
        archive.write(csv, "driver_imgs_list.csv")
    csv.unlink()
    catalog = load_catalog(tiny_competition)
    assert len(catalog.train) == 80
    assert all("/imgs/train/" in p for p in catalog.train["path"])


def _zip_folder(folder: Path, archive_path: Path, prefix: str = "") -> None:
    with zipfile.ZipFile(archive_path, "w") as archive:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                archive.write(path, prefix + str(path.relative_to(folder)))


def test_competition_zip_is_extracted(tiny_competition: Path, tmp_path: Path):
    packed = tmp_path / "packed"
    packed.mkdir()
    _zip_folder(tiny_competition, packed / "state-farm-distracted-driver-detection.zip")
    catalog = load_catalog(packed)
    assert len(catalog.train) == 80
    assert len(catalog.test) == 6


def test_imgs_zip_beside_csv_files(tiny_competition: Path, tmp_path: Path):
    packed = tmp_path / "packed"
    packed.mkdir()
    images = tmp_path / "images_only"
    shutil.copytree(tiny_competition / "train", images / "train")
    shutil.copytree(tiny_competition / "test", images / "test")
    _zip_folder(images, packed / "imgs.zip")
    shutil.copy(tiny_competition / "driver_imgs_list.csv", packed)
    shutil.copy(tiny_competition / "sample_submission.csv", packed)
    catalog = load_catalog(packed)
    assert len(catalog.train) == 80


def test_listed_image_that_is_missing_names_the_file(tiny_competition: Path):
    (tiny_competition / "train" / "c3" / "img_6.jpg").unlink()
    with pytest.raises(CatalogError, match=r"lists img_6\.jpg \(c3\) but .*train/c3/img_6\.jpg does not exist"):
        load_catalog(tiny_competition)


def test_image_in_wrong_class_folder(tiny_competition: Path):
    shutil.move(tiny_competition / "train" / "c3" / "img_6.jpg", tiny_competition / "train" / "c4" / "img_6.jpg")
    with pytest.raises(CatalogError, match=r"lists img_6\.jpg as c3 but the file is in .*train/c4"):
        load_catalog(tiny_competition)


def test_unknown_class_in_csv_names_row(tiny_competition: Path):
    table = pd.read_csv(tiny_competition / "driver_imgs_list.csv")
    table.loc[4, "classname"] = "c10"
    table.to_csv(tiny_competition / "driver_imgs_list.csv", index=False)
    with pytest.raises(CatalogError, match=r"row 6: unknown class 'c10'"):
        load_catalog(tiny_competition)


def test_unknown_class_folder(tiny_competition: Path):
    (tiny_competition / "train" / "c10").mkdir()
    with pytest.raises(CatalogError, match=r"train/c10 is not a class folder"):
        load_catalog(tiny_competition)


def test_empty_test_set(tiny_competition: Path):
    for path in (tiny_competition / "test").iterdir():
        path.unlink()
    with pytest.raises(CatalogError, match="test set is empty"):
        load_catalog(tiny_competition)


def test_missing_driver_list(tiny_competition: Path):
    (tiny_competition / "driver_imgs_list.csv").unlink()
    with pytest.raises(CatalogError, match=r"driver_imgs_list\.csv not found"):
        load_catalog(tiny_competition)


def test_renamed_column_is_named(tiny_competition: Path):
    table = pd.read_csv(tiny_competition / "driver_imgs_list.csv").rename(columns={"subject": "driver"})
    table.to_csv(tiny_competition / "driver_imgs_list.csv", index=False)
    with pytest.raises(CatalogError, match="lacks column.*subject"):
        load_catalog(tiny_competition)


def test_image_listed_twice_with_different_classes(tiny_competition: Path):
    table = pd.read_csv(tiny_competition / "driver_imgs_list.csv")
    conflict = table.iloc[[0]].assign(classname="c5")
    pd.concat([table, conflict]).to_csv(tiny_competition / "driver_imgs_list.csv", index=False)
    with pytest.raises(CatalogError, match="img_0.jpg more than once with different labels"):
        load_catalog(tiny_competition)


def test_bom_crlf_blank_lines_and_duplicate_rows_are_accepted(tiny_competition: Path):
    table = pd.read_csv(tiny_competition / "driver_imgs_list.csv")
    lines = ["subject,classname,img"] + [",".join(row) for row in table.astype(str).to_numpy()]
    lines.insert(5, "")
    lines.append(lines[3])
    (tiny_competition / "driver_imgs_list.csv").write_bytes(("\ufeff" + "\r\n".join(lines) + "\r\n").encode())
    assert len(load_catalog(tiny_competition).train) == 80


def test_sample_submission_listing_missing_test_file(tiny_competition: Path):
    victim = sorted((tiny_competition / "test").iterdir())[0]
    victim.unlink()
    with pytest.raises(CatalogError, match=f"missing from .*test, e.g. {victim.name}"):
        load_catalog(tiny_competition)


def test_missing_data_dir(tmp_path: Path):
    with pytest.raises(CatalogError, match="not found; pass --data-dir"):
        load_catalog(tmp_path / "nowhere")


def test_real_fullres_frames(fullres_data: Path):
    catalog = load_catalog(fullres_data)
    assert len(catalog.train) == 1171
    assert len(catalog.subjects) == 15
    assert len(catalog.test) == 233
