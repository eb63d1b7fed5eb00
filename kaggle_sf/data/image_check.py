"""Image checks: find the frames that cannot be decoded before any model reads them.

A damaged frame (a truncated or empty download, an HTML error page saved as ``.jpg``) would otherwise
stop feature extraction or training half-way. Each image is decoded by the pipeline's own decoder,
``kaggle_sf.data.images.decode_image`` (TurboJPEG, or OpenCV for what TurboJPEG does not take), at
the smallest size it offers: a JPEG at 1/8 scale through libjpeg's DCT scaling, which still reads the
whole entropy-coded stream and so finds truncation. A file passes exactly when the pipeline can
decode it. Pillow reads only the header, for the summary and for the reason a file fails.

Decodable but unusual frames (grayscale or CMYK JPEGs, PNG, GIF, BMP, WebP or TIFF data named ``.jpg``,
other sizes) are kept: the decoder converts them to RGB at the model's input size. The check counts
them in one log line.

Results are cached by the list of files with their sizes and modification times, so a re-run on the
same files reads one JSON file instead of decoding again.
"""

from __future__ import annotations

import collections
import hashlib
import io
import json
import logging
import os
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd
from PIL import Image
from tqdm import tqdm

from kaggle_sf.atomic import write_text_atomic
from kaggle_sf.data.catalog import Catalog, CatalogError

logger = logging.getLogger(__name__)

CHECK_VERSION = "opencv-decode-v3"
"""Changes whenever the check changes, so that results cached by an older check are not reused."""

DECODABLE_FORMATS = ("JPEG", "MPO", "PNG", "GIF", "BMP", "WEBP", "TIFF", "JPEG2000", "PPM")
"""Pillow's names of formats that OpenCV's ``imdecode`` reads (OpenCV 5.1), whatever the file's extension.

A file of another format that fails to decode is reported as a format to convert, not as damaged."""

MAX_LISTED = 10
"""Bad images listed one per line in an error or warning; the rest are counted."""


class BadImageError(CatalogError):
    """Competition images cannot be decoded and ``data.on_bad_image`` is ``fail``."""


@dataclass(frozen=True)
class ImageReport:
    """Result of checking one image file."""

    path: str
    problem: str | None
    """Reason the file cannot be decoded, or None when it can."""
    format: str = ""
    mode: str = ""
    """Pillow's colour mode: ``RGB``, ``L`` (grayscale), ``CMYK``, ``P`` (palette), ..."""
    width: int = 0
    height: int = 0


# --- One image -----------------------------------------------------------------------------------


def _identify(path: Path, data: bytes) -> tuple[ImageReport, str | None]:
    """Read the format, colour mode and size from the header with Pillow, without decoding the pixels.

    Returns the report and the reason Pillow cannot read the header, or None when it can. A file too
    large to decode safely comes back as a report with a problem.
    """
    with warnings.catch_warnings():
        # A decompression-bomb warning is not a reason to reject a file; the error above its limit is.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data)) as image:
                return ImageReport(str(path), None, image.format or "", image.mode, *image.size), None
        except Image.DecompressionBombError as error:
            return ImageReport(str(path), f"too large to decode safely ({error}); resize it to the size of the "
                                          "other frames"), None
        except Image.UnidentifiedImageError:
            return ImageReport(str(path), None), f"not an image file; it starts with {data[:16]!r}"
        except (OSError, SyntaxError, ValueError) as error:
            # Pillow raises OSError for truncated data and SyntaxError or ValueError for broken headers.
            return ImageReport(str(path), None), f"truncated or damaged image data ({error})"


def check_image(path: Path) -> ImageReport:
    """Decode one image file as the pipeline does, at the smallest size, and report why it fails if it does.

    ``kaggle_sf.data.images.decode_image`` decodes the file, a JPEG at 1/8 scale, so a file passes
    exactly when the pipeline can decode it. Pillow only reads the header, for the format,
    colour mode and size that the summary reports and for the reason a file fails.
    """
    from kaggle_sf.data.images import ImageDecodeError, decode_image

    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return ImageReport(str(path), "file not found; it was deleted or moved after the catalog was read")
    if not data:
        return ImageReport(str(path), "empty file (0 bytes)")

    found, header_problem = _identify(path, data)
    if found.problem is not None:
        return found
    try:
        decoded = decode_image(data, (1, 1), name=str(path))
    except ImageDecodeError as error:
        if header_problem is not None:
            return replace(found, problem=header_problem)
        if found.format not in DECODABLE_FORMATS:
            return replace(found, problem=f"{found.format} image, which OpenCV cannot decode; convert it to JPEG")
        return replace(found, problem=f"truncated or damaged image data ({error.reason})")
    if header_problem is not None:
        # OpenCV reads data that Pillow does not: report the decoded size.
        return replace(found, format="unknown", mode="RGB", width=decoded.shape[1], height=decoded.shape[0])
    return found


# --- Many images, cached -------------------------------------------------------------------------


def _files_digest(paths: list[str]) -> str:
    digest = hashlib.sha256(CHECK_VERSION.encode())
    for path in paths:
        try:
            stat = os.stat(path)
            digest.update(f"\n{path}\t{stat.st_size}\t{stat.st_mtime_ns}".encode())
        except FileNotFoundError:
            digest.update(f"\n{path}\tmissing".encode())
    return digest.hexdigest()[:16]


def check_images(paths: list[str], cache_dir: Path | None = None) -> list[ImageReport]:
    """Check image files, reusing the cached result for the same files when ``cache_dir`` is given.

    Args:
        paths: image files.
        cache_dir: folder of the cached results, one JSON file per list of files; None disables caching.

    Returns:
        One report per path, in the order of ``paths``.
    """
    paths = [str(p) for p in paths]
    cache_file = None
    if cache_dir is not None:
        cache_file = Path(cache_dir) / f"images-{_files_digest(paths)}.json"
        if cache_file.is_file():
            try:
                rows = json.loads(cache_file.read_text(encoding="utf-8"))
                reports = [ImageReport(*row) for row in rows]
            except (OSError, ValueError, TypeError) as error:
                logger.warning("Ignoring unreadable image check cache %s (%s); checking again", cache_file, error)
            else:
                if [report.path for report in reports] == paths:
                    logger.info("Reusing the check of %d images from %s", len(paths), cache_file)
                    return reports
                logger.warning("Image check cache %s lists other files; checking again", cache_file)

    reports = [check_image(Path(path))
               for path in tqdm(paths, desc="Checking images", unit="img", disable=None, mininterval=2)]
    if cache_file is not None:
        rows = [[r.path, r.problem, r.format, r.mode, r.width, r.height] for r in reports]
        write_text_atomic(cache_file, json.dumps(rows))
    return reports


# --- The catalog ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScreenedCatalog:
    """A catalog without the images that cannot be decoded, and the list of those images.

    Attributes:
        catalog: train and test tables holding decodable images only.
        bad_images: one row per left-out image: ``split, img, path, reason``.
        test_ids: every test id of ``sample_submission.csv``, left-out ones included, in its order.
    """

    catalog: Catalog
    bad_images: pd.DataFrame
    test_ids: list[str]

    @property
    def skipped_test_ids(self) -> list[str]:
        """Test images that have no prediction of their own and need a fallback row in the submission."""
        return self.bad_images.loc[self.bad_images["split"] == "test", "img"].tolist()


def _describe_unusual(reports: list[ImageReport]) -> str | None:
    good = [r for r in reports if r.problem is None]
    if not good:
        return None
    common_size = collections.Counter((r.width, r.height) for r in good).most_common(1)[0][0]
    kinds = collections.Counter()
    for report in good:
        if report.format != "JPEG":
            kinds[f"{report.format} data in a .jpg file"] += 1
        if report.mode not in ("RGB", "YCbCr"):
            kinds[f"{report.mode} colour mode"] += 1
        if (report.width, report.height) != common_size:
            kinds[f"a size other than {common_size[0]}x{common_size[1]}"] += 1
    if not kinds:
        return None
    return "; ".join(f"{count} with {kind}" for kind, count in kinds.most_common())


def _bad_image_lines(bad: pd.DataFrame) -> str:
    lines = [f"  {row.path}: {row.reason}" for row in bad.head(MAX_LISTED).itertuples()]
    if len(bad) > MAX_LISTED:
        lines.append(f"  ... and {len(bad) - MAX_LISTED} more")
    return "\n".join(lines)


def screen_catalog(catalog: Catalog, on_bad_image: str, cache_dir: Path | None = None) -> ScreenedCatalog:
    """Check every image of a catalog and leave out those that cannot be decoded, or fail.

    Args:
        catalog: the competition's frames.
        on_bad_image: ``fail`` raises BadImageError listing every bad image; ``skip`` logs them and
            leaves them out.
        cache_dir: folder of cached check results; None checks every time.

    Returns:
        The screened catalog. Its test table lacks the skipped test images, which still need a row in
        the submission (see :attr:`ScreenedCatalog.skipped_test_ids`).

    Raises:
        BadImageError: an image cannot be decoded and ``on_bad_image`` is ``fail``, or every train
            or every test image is bad.
    """
    tables = {"train": catalog.train, "test": catalog.test}
    paths = [path for table in tables.values() for path in table["path"]]
    reports = {report.path: report for report in check_images(paths, cache_dir)}

    bad_rows = []
    for split, table in tables.items():
        for img, path in zip(table["img"], table["path"]):
            problem = reports[str(path)].problem
            if problem is not None:
                bad_rows.append((split, img, str(path), problem))
    bad = pd.DataFrame(bad_rows, columns=["split", "img", "path", "reason"])

    unusual = _describe_unusual(list(reports.values()))
    if unusual:
        logger.info("Decodable images converted to RGB at the input size: %s", unusual)

    if bad.empty:
        logger.info("All %d images can be decoded", len(paths))
        return ScreenedCatalog(catalog, bad, catalog.test["img"].tolist())
    if on_bad_image == "fail":
        raise BadImageError(f"{len(bad)} of {len(paths)} images cannot be decoded:\n{_bad_image_lines(bad)}\n"
                            "Replace them with good copies (download or extract the competition files again), "
                            "or set data.on_bad_image=skip to leave them out")

    logger.warning("Leaving out %d of %d images that cannot be decoded (data.on_bad_image=skip):\n%s",
                   len(bad), len(paths), _bad_image_lines(bad))
    decodable = {split: table[~table["img"].isin(bad.loc[bad["split"] == split, "img"])].reset_index(drop=True)
                 for split, table in tables.items()}
    for split, table in decodable.items():
        if table.empty:
            raise BadImageError(f"none of the {len(tables[split])} {split} images can be decoded, e.g. "
                                f"{bad.loc[bad['split'] == split, 'path'].iloc[0]}; download or extract the "
                                "competition files again")
    screened = Catalog(train=decodable["train"], test=decodable["test"], data_dir=catalog.data_dir)
    return ScreenedCatalog(screened, bad, catalog.test["img"].tolist())
