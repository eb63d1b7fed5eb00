"""Competition files from Kaggle: download with resume, verify, and extract zip archives safely.

``extract_archive`` extracts one level of a zip and never writes outside its destination. The
competition zip may contain ``imgs.zip`` and ``*.csv.zip``, which are left for the caller to extract.
``download_competition`` fetches the competition archive through :class:`~kaggle_sf.kaggle_client.KaggleClient`
into the hidden folder ``<data_dir>/.kaggle-download/``, where a partial download waits to be resumed.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import stat
import tempfile
import zipfile
import zlib
from pathlib import Path

from kaggle_sf.kaggle_client import KaggleClient, check_competition_slug, require_credentials

logger = logging.getLogger(__name__)

DOWNLOAD_FOLDER = ".kaggle-download"

# Errors zipfile raises for damaged or unsupported archives, besides BadZipFile.
_ZIP_READ_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError)


class ArchiveError(ValueError):
    """A zip archive is corrupt, not a zip, or holds a member that would land outside its destination."""


class DataDirNotEmptyError(FileExistsError):
    """The data directory already contains files, and replacing them was not requested."""


# --- Extraction ----------------------------------------------------------------------------------


def _unsafe_reason(member: zipfile.ZipInfo) -> str | None:
    name = member.filename
    if name.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", name):
        return "has an absolute path"
    if ".." in re.split(r"[\\/]", name):
        return "has a '..' path part"
    # Unix permission bits live in the high 16 bits of external_attr.
    if stat.S_ISLNK(member.external_attr >> 16):
        return "is a symbolic link"
    return None


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink()


def _move_into_place(extracted: Path, destination: Path) -> None:
    if not destination.exists():
        os.replace(extracted, destination)
        return
    for entry in sorted(extracted.iterdir()):
        target = destination / entry.name
        if target.exists() or target.is_symlink():
            _remove(target)
        os.replace(entry, target)


def extract_archive(archive: Path, destination: Path) -> None:
    """Extract one zip archive into ``destination``, all or nothing.

    Every member is checked before anything is written. The archive is extracted into a temporary
    folder beside ``destination`` and moved into place only when whole, so a failure leaves
    ``destination`` as it was. Top-level entries that already exist in ``destination`` are replaced.
    Archives inside the archive are left as files.

    Args:
        archive: the zip file.
        destination: the folder to extract into; created when missing.

    Raises:
        ArchiveError: the file is not a zip or is damaged, or a member has an absolute path,
            a ``..`` part, or is a symbolic link.
    """
    archive, destination = Path(archive), Path(destination)
    try:
        with zipfile.ZipFile(archive) as bundle:
            for member in bundle.infolist():
                reason = _unsafe_reason(member)
                if reason:
                    raise ArchiveError(f"{archive}: member {member.filename!r} {reason}; refusing to extract "
                                       f"an archive that could write outside {destination}")

            destination.parent.mkdir(parents=True, exist_ok=True)
            extracted = Path(tempfile.mkdtemp(dir=destination.parent, prefix=f".{destination.name}.extracting-"))
            try:
                bundle.extractall(extracted)
                _move_into_place(extracted, destination)
            finally:
                shutil.rmtree(extracted, ignore_errors=True)
    except _ZIP_READ_ERRORS as error:
        raise ArchiveError(f"{archive} is not a valid zip archive or is damaged ({error}); "
                           "delete it and download it again") from error
    logger.info("Extracted %s into %s", archive.name, destination)


# --- Download ------------------------------------------------------------------------------------


def verify_archive(archive: Path, expected_size: int | None) -> None:
    """Check a downloaded zip: its size against the announced one, then every member's CRC.

    Raises:
        ArchiveError: the size differs, the file is not a zip, or a member is damaged.
    """
    archive = Path(archive)
    size = archive.stat().st_size
    if expected_size is not None and size != expected_size:
        raise ArchiveError(f"{archive} has {size} bytes but Kaggle announced {expected_size}; "
                           "download it again")
    try:
        with zipfile.ZipFile(archive) as bundle:
            damaged = bundle.testzip()
    except _ZIP_READ_ERRORS as error:
        raise ArchiveError(f"{archive} is not a valid zip archive or is damaged ({error}); "
                           "download it again") from error
    if damaged is not None:
        raise ArchiveError(f"{archive}: member {damaged!r} fails its CRC check; download it again")


def _visible_entries(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(entry for entry in folder.iterdir() if not entry.name.startswith("."))


def _discard(archive: Path) -> None:
    archive.unlink(missing_ok=True)
    # The Kaggle client records what a partial download belongs to in this file.
    archive.with_name(archive.name + ".kaggle-partial").unlink(missing_ok=True)
    if archive.parent.is_dir() and not any(archive.parent.iterdir()):
        archive.parent.rmdir()


def download_competition(slug: str, data_dir: Path, *, client: KaggleClient | None = None,
                         force: bool = False, keep_archive: bool = False, show_progress: bool = False) -> Path:
    """Download a competition's files from Kaggle, verify the archive and extract it into ``data_dir``.

    A partial download from an earlier attempt is resumed. The archive is deleted once extracted,
    unless ``keep_archive``; a rejected archive is deleted so that the next attempt starts afresh.

    Args:
        slug: the competition, e.g. ``state-farm-distracted-driver-detection``.
        data_dir: where the files go. Hidden entries (``.gitkeep``, the download folder) do not count as files.
        client: the Kaggle client; a new :class:`KaggleClient` when None.
        force: download even when ``data_dir`` already holds files, replacing extracted entries.
        keep_archive: keep ``<data_dir>/.kaggle-download/<slug>.zip`` after extraction.
        show_progress: let the Kaggle client show a progress bar.

    Returns:
        ``data_dir``.

    Raises:
        MissingCredentialsError: no Kaggle credentials (checked first, when ``client`` is None).
        DataDirNotEmptyError: ``data_dir`` holds files and ``force`` is False.
        ArchiveError: the archive is damaged, has the wrong size, or holds an unsafe member.
        KaggleError: credentials, rules, slug or network problems (see ``kaggle_sf.kaggle_client``).
    """
    check_competition_slug(slug)
    if client is None:
        require_credentials()
        client = KaggleClient()
    data_dir = Path(data_dir)
    existing = _visible_entries(data_dir)
    if existing and not force:
        raise DataDirNotEmptyError(f"{data_dir} already contains {existing[0].name}"
                                   f"{f' and {len(existing) - 1} more entries' if len(existing) > 1 else ''}; "
                                   f"pass --force to download {slug} again and replace them")

    download = client.download_competition_archive(slug, data_dir / DOWNLOAD_FOLDER, show_progress=show_progress)

    logger.info("Verifying %s (%d bytes)", download.path.name, download.path.stat().st_size)
    try:
        verify_archive(download.path, download.expected_size)
        extract_archive(download.path, data_dir)
    except ArchiveError:
        _discard(download.path)
        raise

    if not keep_archive:
        _discard(download.path)
    logger.info("%s is ready in %s", slug, data_dir)
    return data_dir
