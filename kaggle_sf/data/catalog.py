"""The image catalog: every train and test frame of the competition, with its id, file, driver and class.

Reads a data directory in any layout Kaggle has shipped for State Farm: the competition zip, ``imgs.zip``,
or extracted ``train/`` + ``test/`` folders with or without an ``imgs/`` parent, and CSV files plain or
zipped. ``driver_imgs_list.csv`` is cross-checked against the files, so that a missing image or a
disagreeing class folder stops the run with a message instead of training on wrong labels.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from kaggle_sf.config import CLASSES

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".jpg", ".jpeg")
TRAIN_COLUMNS = ("subject", "classname", "img")


class CatalogError(ValueError):
    """The competition files are missing, inconsistent or in an unknown layout."""


@dataclass(frozen=True)
class Catalog:
    """The competition's frames.

    Attributes:
        train: one row per labelled frame, columns ``img, path, subject, classname``, sorted by ``img``.
        test: one row per test frame, columns ``img, path``, in ``sample_submission.csv``'s order.
        data_dir: the folder the catalog was read from.
    """

    train: pd.DataFrame
    test: pd.DataFrame
    data_dir: Path

    @property
    def subjects(self) -> list[str]:
        """The training drivers, sorted."""
        return sorted(self.train["subject"].unique())


# --- Locating the files --------------------------------------------------------------------------


def _find_table(data_dir: Path, image_root: Path, name: str) -> Path:
    for folder in dict.fromkeys((data_dir, image_root, image_root.parent)):
        for candidate in (folder / name, folder / f"{name}.zip"):
            if candidate.is_file():
                return candidate
    raise CatalogError(f"{name} not found in {data_dir}; place the competition's {name} (or {name}.zip) there")


def _find_image_root(data_dir: Path) -> Path | None:
    for root in (data_dir, data_dir / "imgs"):
        if (root / "train").is_dir() and (root / "test").is_dir():
            return root
    return None


def _extract_archives(data_dir: Path) -> None:
    """Extract the competition zip, then ``imgs.zip``, until ``train/`` and ``test/`` exist."""
    # The competition zip may itself contain imgs.zip, so extraction can take two rounds.
    for _ in range(2):
        if _find_image_root(data_dir) is not None:
            return
        archives = sorted(p for p in data_dir.glob("*.zip") if not p.name.endswith(".csv.zip"))
        if not archives:
            return
        preferred = [p for p in archives if p.name == "imgs.zip"] or archives
        from kaggle_sf.data.fetch import extract_archive

        for archive in preferred:
            logger.info("Extracting %s into %s", archive.name, data_dir)
            extract_archive(archive, data_dir)


def _image_files(folder: Path) -> dict[str, Path]:
    files = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
            files[path.name] = path
        elif path.is_file() and not path.name.startswith("."):
            logger.warning("Ignoring %s: not a .jpg image", path)
    return files


# --- Reading the tables --------------------------------------------------------------------------


def _read_csv(path: Path, required: tuple[str, ...]) -> pd.DataFrame:
    try:
        # utf-8-sig drops a byte-order mark; pandas accepts Windows line endings and blank lines.
        table = pd.read_csv(path, dtype=str, encoding="utf-8-sig", skip_blank_lines=True)
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError, OSError) as error:
        raise CatalogError(f"{path} could not be read as CSV: {error}") from error
    table.columns = [str(c).strip() for c in table.columns]
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise CatalogError(f"{path} lacks column(s) {', '.join(missing)}; found {', '.join(table.columns)}. "
                           f"Expected the competition's header {','.join(required)}")
    table = table.dropna(how="all")
    for column in required:
        table[column] = table[column].str.strip()
    return table


def _read_driver_list(path: Path) -> pd.DataFrame:
    table = _read_csv(path, TRAIN_COLUMNS).loc[:, list(TRAIN_COLUMNS)]

    incomplete = table[table.isna().any(axis=1)]
    if len(incomplete):
        row = incomplete.index[0] + 2  # +1 for the header, +1 for 1-based numbering
        raise CatalogError(f"{path} row {row} has an empty subject, classname or img; fill it in or delete the row")
    unknown = table[~table["classname"].isin(CLASSES)]
    if len(unknown):
        row = unknown.index[0] + 2
        raise CatalogError(f"{path} row {row}: unknown class {unknown['classname'].iloc[0]!r} for "
                           f"{unknown['img'].iloc[0]}; classes are {', '.join(CLASSES)}")

    table = table.drop_duplicates()
    conflicting = table[table["img"].duplicated(keep=False)]
    if len(conflicting):
        img = conflicting["img"].iloc[0]
        listed = conflicting.loc[conflicting["img"] == img, ["subject", "classname"]].to_numpy().tolist()
        raise CatalogError(f"{path} lists {img} more than once with different labels {listed}; keep one row")
    return table


# --- The catalog ---------------------------------------------------------------------------------


def _train_table(image_root: Path, driver_list: Path) -> pd.DataFrame:
    table = _read_driver_list(driver_list)
    train_dir = image_root / "train"

    found: dict[str, tuple[str, Path]] = {}
    for folder in sorted(p for p in train_dir.iterdir() if p.is_dir()):
        if folder.name not in CLASSES:
            raise CatalogError(f"{folder} is not a class folder; train/ may only hold {', '.join(CLASSES)}. "
                               "Move or delete it")
        for name, path in _image_files(folder).items():
            if name in found:
                raise CatalogError(f"{name} appears in both train/{found[name][0]} and train/{folder.name}; "
                                   "keep the one that matches driver_imgs_list.csv")
            found[name] = (folder.name, path)

    paths = []
    for img, classname in zip(table["img"], table["classname"]):
        if img not in found:
            raise CatalogError(f"{driver_list.name} lists {img} ({classname}) but "
                               f"{train_dir / classname / img} does not exist; restore the file or delete its row")
        folder, path = found[img]
        if folder != classname:
            raise CatalogError(f"{driver_list.name} lists {img} as {classname} but the file is in "
                               f"{train_dir / folder}; move it or correct the row")
        paths.append(str(path))
    table = table.assign(path=paths)

    unlisted = sorted(set(found).difference(table["img"]))
    if unlisted:
        logger.warning("%d images under %s are not in %s and are left out (driver unknown), e.g. %s",
                       len(unlisted), train_dir, driver_list.name, unlisted[0])
    if table.empty:
        raise CatalogError(f"{driver_list} lists no training images; check that it is the competition's file")
    return table.loc[:, ["img", "path", "subject", "classname"]].sort_values("img", ignore_index=True)


def _test_table(image_root: Path, sample_submission: Path) -> pd.DataFrame:
    test_dir = image_root / "test"
    files = _image_files(test_dir)
    if not files:
        raise CatalogError(f"{test_dir} holds no .jpg images; the test set is empty. "
                           "Re-extract the competition files")

    ids = _read_csv(sample_submission, ("img",))["img"].dropna()
    repeated = ids[ids.duplicated()]
    if len(repeated):
        raise CatalogError(f"{sample_submission} lists {repeated.iloc[0]} more than once; keep one row per image")
    missing = [img for img in ids if img not in files]
    if missing:
        raise CatalogError(f"{sample_submission.name} lists {len(missing)} images missing from {test_dir}, "
                           f"e.g. {missing[0]}; restore them or use the sample submission that came with them")
    unlisted = sorted(set(files).difference(ids))
    if unlisted:
        logger.warning("%d images in %s are not in %s and will not be predicted, e.g. %s",
                       len(unlisted), test_dir, sample_submission.name, unlisted[0])
    return pd.DataFrame({"img": list(ids), "path": [str(files[img]) for img in ids]})


def load_catalog(data_dir: Path) -> Catalog:
    """Read the competition files in ``data_dir`` into a catalog, extracting archives when needed.

    Raises:
        CatalogError: a file is missing, a table disagrees with the files, or the layout is unknown.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise CatalogError(f"data directory {data_dir} not found; pass --data-dir with the competition files")
    _extract_archives(data_dir)

    image_root = _find_image_root(data_dir)
    if image_root is None:
        raise CatalogError(f"{data_dir} holds neither train/ and test/ folders (also looked under imgs/) nor an "
                           "archive with them; download the competition files into it")
    train = _train_table(image_root, _find_table(data_dir, image_root, "driver_imgs_list.csv"))
    test = _test_table(image_root, _find_table(data_dir, image_root, "sample_submission.csv"))

    logger.info("Catalog: %d train frames of %d drivers, %d test frames", len(train),
                train["subject"].nunique(), len(test))
    return Catalog(train=train, test=test, data_dir=data_dir)
