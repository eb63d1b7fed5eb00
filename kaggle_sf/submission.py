"""Submission files: checked against ``sample_submission.csv`` and written atomically.

A submission has the header ``img,c0,...,c9``, one row per test image in ``sample_submission.csv``'s
order, finite probabilities in [0, 1], and rows that sum to 1.
"""

from __future__ import annotations

import gzip
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from kaggle_sf.atomic import atomic_path
from kaggle_sf.config import CLASSES

logger = logging.getLogger(__name__)

COLUMNS = ("img", *CLASSES)
ROW_SUM_TOLERANCE = 1e-5


class SubmissionError(ValueError):
    """A submission does not match the competition's expected format."""


def validate_submission(frame: pd.DataFrame, sample_ids: Sequence[str], *, source: str = "submission") -> None:
    """Check a submission table against the test ids of ``sample_submission.csv``.

    Args:
        frame: the submission, columns ``img,c0..c9``.
        sample_ids: the ``img`` column of ``sample_submission.csv``.
        source: how to name the submission in messages (usually its file path).

    Raises:
        SubmissionError: wrong header, missing, extra or repeated ids, a wrong row count, or
            probabilities that are not finite, outside [0, 1], or rows not summing to 1.
    """
    if tuple(frame.columns) != COLUMNS:
        raise SubmissionError(f"{source}: header is {','.join(map(str, frame.columns))}; "
                              f"expected {','.join(COLUMNS)}")

    ids = frame["img"].astype(str)
    repeated = ids[ids.duplicated()].unique()
    if len(repeated):
        raise SubmissionError(f"{source}: {len(repeated)} img values appear more than once, e.g. {repeated[0]}")
    expected = set(map(str, sample_ids))
    missing = expected.difference(ids)
    if missing:
        raise SubmissionError(f"{source}: {len(missing)} test images from sample_submission.csv are missing, "
                              f"e.g. {sorted(missing)[0]}")
    extra = set(ids).difference(expected)
    if extra:
        raise SubmissionError(f"{source}: {len(extra)} img values are not in sample_submission.csv, "
                              f"e.g. {sorted(extra)[0]}")
    if len(frame) != len(sample_ids):
        raise SubmissionError(f"{source}: {len(frame)} rows; sample_submission.csv has {len(sample_ids)}")

    cells = frame.loc[:, list(CLASSES)]
    numbers = cells.apply(pd.to_numeric, errors="coerce")
    not_numbers = (numbers.isna() & cells.notna()).to_numpy()
    if not_numbers.any():
        row, column = np.argwhere(not_numbers)[0]
        raise SubmissionError(f"{source}: {int(not_numbers.any(axis=1).sum())} rows hold values that are not "
                              f"numbers, e.g. {ids.iloc[row]} has {cells.iat[row, column]!r} in {CLASSES[column]}")
    values = numbers.to_numpy(dtype=np.float64, na_value=np.nan)
    bad_rows = ~np.isfinite(values).all(axis=1)
    if bad_rows.any():
        raise SubmissionError(f"{source}: {int(bad_rows.sum())} rows hold NaN or infinite probabilities, "
                              f"e.g. {ids.iloc[int(np.argmax(bad_rows))]}")
    if (values < 0).any() or (values > 1).any():
        raise SubmissionError(f"{source}: probabilities must lie in [0, 1]; found range "
                              f"[{values.min():.4g}, {values.max():.4g}]")
    sums = values.sum(axis=1)
    off = np.abs(sums - 1) > ROW_SUM_TOLERANCE
    if off.any():
        row = int(np.argmax(off))
        raise SubmissionError(f"{source}: {int(off.sum())} rows do not sum to 1, e.g. {ids.iloc[row]} sums to "
                              f"{sums[row]:.6f}")


def clip_and_normalise(probabilities: np.ndarray, clip: float) -> np.ndarray:
    """Clip probabilities to [clip, 1 - clip] and divide each row by its sum.

    Clipping bounds the loss of a confident mistake, which dominates log loss on unseen drivers.
    """
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if clip > 0:
        probabilities = np.clip(probabilities, clip, 1 - clip)
    return probabilities / probabilities.sum(axis=1, keepdims=True)


def build_submission(ids: Sequence[str], probabilities: np.ndarray, sample_ids: Sequence[str]) -> pd.DataFrame:
    """Arrange predictions, matched by id, into ``sample_submission.csv``'s row order.

    Raises:
        SubmissionError: an id of the sample submission has no prediction, or an id is predicted twice.
    """
    predicted = pd.DataFrame(np.asarray(probabilities, dtype=np.float64), columns=list(CLASSES))
    predicted.insert(0, "img", [str(i) for i in ids])
    if predicted["img"].duplicated().any():
        raise SubmissionError(f"test image {predicted['img'][predicted['img'].duplicated()].iloc[0]} "
                              "was predicted more than once")
    ordered = predicted.set_index("img").reindex([str(i) for i in sample_ids])
    missing = ordered.index[ordered.isna().any(axis=1)]
    if len(missing):
        raise SubmissionError(f"{len(missing)} test images of sample_submission.csv have no prediction, "
                              f"e.g. {missing[0]}")
    return ordered.reset_index()


def write_submission(frame: pd.DataFrame, path: Path, sample_ids: Sequence[str]) -> tuple[Path, Path]:
    """Validate a submission, then write it as ``path`` (CSV) and ``path.gz`` (for upload), atomically.

    Returns:
        The CSV path and the gzip path.
    """
    path = Path(path)
    validate_submission(frame, sample_ids, source=str(path))
    with atomic_path(path) as temporary:
        frame.to_csv(temporary, index=False, float_format="%.8g")
    compressed = path.with_name(path.name + ".gz")
    with atomic_path(compressed) as temporary:
        with open(path, "rb") as source, gzip.open(temporary, "wb") as target:
            shutil.copyfileobj(source, target)
    logger.info("Wrote submission %s (%d rows) and %s", path, len(frame), compressed.name)
    return path, compressed


def read_submission(path: Path) -> pd.DataFrame:
    """Read a submission CSV (plain or gzip), keeping ``img`` as text."""
    path = Path(path)
    if not path.is_file():
        raise SubmissionError(f"submission file {path} not found")
    return pd.read_csv(path, dtype={"img": str})
