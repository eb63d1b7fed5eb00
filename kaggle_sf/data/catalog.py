"""The image catalog: every train and test frame of the competition, with its id, file, driver and class.

Reads a data directory in any layout Kaggle has shipped for State Farm: the competition zip, ``imgs.zip``,
or extracted ``train/`` + ``test/`` folders with or without an ``imgs/`` parent, and CSV files plain or
zipped. ``driver_imgs_list.csv`` is cross-checked against the files, so that a missing image or a
disagreeing class folder stops the run with a message instead of training on wrong labels.

Harmless damage to the tables is accepted: a byte-order mark, Windows line endings, blank lines,
surrounding spaces, upper-case headers or class names, extra columns, repeated identical rows. Anything
else stops the run with a message that names the file, the row and the fix. Row numbers are the file's
line numbers, as a spreadsheet or text editor shows them: the header is row 1.
"""

from __future__ import annotations

import logging
import zipfile
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


TABLE_NAMES = ("driver_imgs_list.csv", "sample_submission.csv")


def _locate_table(data_dir: Path, image_root: Path, name: str) -> Path | None:
    for folder in dict.fromkeys((data_dir, image_root, image_root.parent)):
        for candidate in (folder / name, folder / f"{name}.zip"):
            if candidate.is_file():
                return candidate
    return None


def _find_table(data_dir: Path, image_root: Path, name: str) -> Path:
    found = _locate_table(data_dir, image_root, name)
    if found is None:
        raise CatalogError(f"{name} not found in {data_dir}; place the competition's {name} (or {name}.zip) there")
    return found


def _find_image_root(data_dir: Path) -> Path | None:
    for root in (data_dir, data_dir / "imgs"):
        if (root / "train").is_dir() and (root / "test").is_dir():
            return root
    return None


def _is_extracted(archive: Path, data_dir: Path) -> bool:
    """Return whether every top-level entry of ``archive`` exists in ``data_dir``.

    Extraction moves each top-level entry into place whole, so an existing entry is complete. A run
    killed during extraction leaves some entries missing, and then the archive is extracted again.
    """
    try:
        with zipfile.ZipFile(archive) as bundle:
            names = {name.split("/")[0] for name in bundle.namelist() if name.split("/")[0]}
    except (zipfile.BadZipFile, OSError):
        return False  # extract_archive reports the damage
    return all((data_dir / name).exists() for name in names)


def _extract_archives(data_dir: Path) -> None:
    """Extract the competition zip, then ``imgs.zip``, until ``train/`` and ``test/`` exist."""
    from kaggle_sf.crash import crash_point
    from kaggle_sf.data.fetch import extract_archive

    # The competition zip may itself contain imgs.zip, so extraction can take two rounds.
    for _ in range(2):
        image_root = _find_image_root(data_dir)
        if image_root is not None and all(_locate_table(data_dir, image_root, name) for name in TABLE_NAMES):
            return
        archives = sorted(p for p in data_dir.glob("*.zip") if not p.name.endswith(".csv.zip"))
        pending = [p for p in archives if not _is_extracted(p, data_dir)]
        if image_root is not None:
            # The images are in place (perhaps under imgs/); only the tables are missing.
            pending = [p for p in pending if p.name != "imgs.zip"]
        if not pending:
            return
        # Outer archives first, so that an imgs.zip inside one is extracted in the next round.
        for archive in sorted(pending, key=lambda p: p.name == "imgs.zip"):
            logger.info("Extracting %s into %s", archive.name, data_dir)
            extract_archive(archive, data_dir)
            crash_point(f"extracted {archive.name}")


def _image_files(folder: Path) -> dict[str, Path]:
    files = {}
    for path in sorted(folder.iterdir()):
        if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES:
            files[path.name] = path
        elif path.is_file() and not path.name.startswith("."):
            logger.warning("Ignoring %s: not a .jpg image", path)
    return files


# --- Reading the tables --------------------------------------------------------------------------


def _row(index: int) -> int:
    """Return the file row of a table index: +1 for the header, +1 for 1-based numbering."""
    return int(index) + 2


def _missing_columns_message(path: Path, found: list[str], required: tuple[str, ...]) -> str:
    missing = [c for c in required if c not in found]
    message = (f"{path} lacks column(s) {', '.join(missing)}; found {', '.join(found)}. "
               f"Expected the competition's header {','.join(required)}")
    if len(found) == 1 and any(separator in found[0] for separator in (";", "\t")):
        message += "; the file seems to use another separator than commas, so save it as comma-separated"
    elif any(name.endswith((".jpg", ".jpeg")) for name in found):
        message += f"; the header row is missing, so add the line {','.join(required)} at the top"
    return message


def _read_csv(path: Path, required: tuple[str, ...]) -> pd.DataFrame:
    """Read a competition table with text columns, trimmed and lower-cased header names, blank rows dropped.

    The returned index keeps the file's numbering (see :func:`_row`), blank lines included.
    """
    try:
        if path.stat().st_size == 0:
            raise CatalogError(f"{path} is empty (0 bytes); download or extract the competition files again")
        # utf-8-sig drops a byte-order mark; pandas accepts Windows line endings. Blank lines are kept
        # as empty rows here so that index and file rows stay aligned, and dropped below.
        table = pd.read_csv(path, dtype=str, encoding="utf-8-sig", skip_blank_lines=False)
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError, OSError, zipfile.BadZipFile, EOFError) as error:
        if isinstance(error, CatalogError):
            raise
        raise CatalogError(f"{path} could not be read as CSV ({error}); download or extract it again") from error
    table.columns = [str(c).strip().lower() for c in table.columns]
    if any(c not in table.columns for c in required):
        raise CatalogError(_missing_columns_message(path, list(table.columns), required))
    # Cells holding only spaces count as empty, so a line of spaces is a blank line.
    table = table.apply(lambda column: column.str.strip()).replace("", None).dropna(how="all")
    return table


def _read_driver_list(path: Path) -> pd.DataFrame:
    table = _read_csv(path, TRAIN_COLUMNS).loc[:, list(TRAIN_COLUMNS)]

    incomplete = table[table.isna().any(axis=1)]
    if len(incomplete):
        raise CatalogError(f"{path} row {_row(incomplete.index[0])} has an empty subject, classname or img "
                           "(a truncated file ends like this); fill it in or delete the row")
    table["classname"] = table["classname"].str.lower()
    unknown = table[~table["classname"].isin(CLASSES)]
    if len(unknown):
        raise CatalogError(f"{path} row {_row(unknown.index[0])}: unknown class {unknown['classname'].iloc[0]!r} "
                           f"for {unknown['img'].iloc[0]}; classes are {', '.join(CLASSES)}")
    not_jpeg = table[~table["img"].str.lower().str.endswith(IMAGE_SUFFIXES)]
    if len(not_jpeg):
        raise CatalogError(f"{path} row {_row(not_jpeg.index[0])}: img {not_jpeg['img'].iloc[0]!r} is not a .jpg "
                           "file name (a truncated file ends like this); correct the row or download the file again")

    repeated = table[table.duplicated()]
    if len(repeated):
        logger.warning("%s repeats %d rows, e.g. row %d (%s); using each once", path, len(repeated),
                       _row(repeated.index[0]), repeated["img"].iloc[0])
        table = table.drop_duplicates()
    conflicting = table[table["img"].duplicated(keep=False)]
    if len(conflicting):
        img = conflicting["img"].iloc[0]
        rows = conflicting[conflicting["img"] == img]
        listed = ", ".join(f"row {_row(i)}: {subject} {classname}"
                           for i, subject, classname in zip(rows.index, rows["subject"], rows["classname"]))
        raise CatalogError(f"{path} lists {img} more than once with different labels ({listed}); "
                           "keep the correct row and delete the others")
    return table


# --- The catalog ---------------------------------------------------------------------------------


def _train_table(image_root: Path, driver_list: Path) -> pd.DataFrame:
    table = _read_driver_list(driver_list)
    train_dir = image_root / "train"

    found: dict[str, tuple[str, Path]] = {}
    # Hidden folders (.ipynb_checkpoints, a Finder's metadata) are not data.
    for folder in sorted(p for p in train_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if folder.name not in CLASSES:
            raise CatalogError(f"{folder} is not a class folder; train/ may only hold {', '.join(CLASSES)}. "
                               "Move or delete it")
        for name, path in _image_files(folder).items():
            if name in found:
                raise CatalogError(f"{name} appears in both train/{found[name][0]} and train/{folder.name}; "
                                   "keep the one that matches driver_imgs_list.csv")
            found[name] = (folder.name, path)

    absent = table[~table["img"].isin(found)]
    if len(absent):
        img, classname = absent["img"].iloc[0], absent["classname"].iloc[0]
        others = f" (and {len(absent) - 1} more listed images)" if len(absent) > 1 else ""
        raise CatalogError(f"{driver_list.name} row {_row(absent.index[0])} lists {img} ({classname}) but "
                           f"{train_dir / classname / img} does not exist{others}; restore the files (extract the "
                           "competition files again) or delete their rows")
    paths = []
    for index, img, classname in zip(table.index, table["img"], table["classname"]):
        folder, path = found[img]
        if folder != classname:
            raise CatalogError(f"{driver_list.name} row {_row(index)} lists {img} as {classname} but the file is "
                               f"in {train_dir / folder}; move it or correct the row")
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
    if ids.empty:
        raise CatalogError(f"{sample_submission} lists no test images; use the sample submission that came with "
                           "the competition files")
    repeated = ids[ids.duplicated()]
    if len(repeated):
        logger.warning("%s lists %d images more than once, e.g. %s in row %d; the submission has one row each",
                       sample_submission, len(repeated), repeated.iloc[0], _row(repeated.index[0]))
        ids = ids.drop_duplicates()
    missing = ids[~ids.isin(files)]
    if len(missing):
        raise CatalogError(f"{sample_submission.name} lists {len(missing)} images missing from {test_dir}, "
                           f"e.g. {missing.iloc[0]} in row {_row(missing.index[0])}; restore them or use the "
                           "sample submission that came with them")
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
