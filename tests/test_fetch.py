"""Safe zip extraction, archive verification and the data-directory check of kaggle_sf.data.fetch."""

from __future__ import annotations

import io
import stat
import zipfile
from pathlib import Path

import pytest

from kaggle_sf.data.fetch import (
    ArchiveError,
    DataDirNotEmptyError,
    download_competition,
    extract_archive,
    verify_archive,
)


def zip_bytes(members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as bundle:
        for name, data in members.items():
            bundle.writestr(zipfile.ZipInfo(name), data)
    return buffer.getvalue()


def write_zip(path: Path, members: dict[str, bytes], compression: int = zipfile.ZIP_DEFLATED) -> Path:
    path.write_bytes(zip_bytes(members, compression))
    return path


def tree(folder: Path) -> dict[str, bytes | None]:
    """Every path under ``folder`` with its content (None for folders)."""
    return {str(p.relative_to(folder)): (p.read_bytes() if p.is_file() else None) for p in sorted(folder.rglob("*"))}


COMPETITION_MEMBERS = {
    "driver_imgs_list.csv": b"subject,classname,img\np002,c0,img_1.jpg\n",
    "sample_submission.csv": b"img,c0,c1,c2,c3,c4,c5,c6,c7,c8,c9\nimg_9.jpg,.1,.1,.1,.1,.1,.1,.1,.1,.1,.1\n",
    "imgs.zip": zip_bytes({"train/c0/img_1.jpg": b"jpeg", "test/img_9.jpg": b"jpeg"}),
}


# --- extract_archive -----------------------------------------------------------------------------


def test_extract_creates_missing_destination(tmp_path):
    archive = write_zip(tmp_path / "competition.zip", COMPETITION_MEMBERS)

    extract_archive(archive, tmp_path / "data")

    assert tree(tmp_path / "data") == COMPETITION_MEMBERS
    assert sorted(p.name for p in tmp_path.iterdir()) == ["competition.zip", "data"]


def test_extract_leaves_nested_archives_as_files(tmp_path):
    archive = write_zip(tmp_path / "competition.zip", COMPETITION_MEMBERS)

    extract_archive(archive, tmp_path / "data")

    assert (tmp_path / "data" / "imgs.zip").is_file()
    assert not (tmp_path / "data" / "train").exists()


def test_extract_into_archive_folder_replaces_entries(tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / ".gitkeep").touch()
    archive = write_zip(data_dir / "imgs.zip", {"train/c0/img_1.jpg": b"new", "test/img_9.jpg": b"new"})
    (data_dir / "train").mkdir()
    (data_dir / "train" / "stale.jpg").write_bytes(b"old")

    extract_archive(archive, data_dir)

    assert tree(data_dir) == {
        ".gitkeep": b"",
        "imgs.zip": archive.read_bytes(),
        "test": None,
        "test/img_9.jpg": b"new",
        "train": None,
        "train/c0": None,
        "train/c0/img_1.jpg": b"new",
    }


@pytest.mark.parametrize(("member", "reason"), [
    ("/etc/evil.txt", "absolute path"),
    ("C:/evil.txt", "absolute path"),
    ("../evil.txt", "'..' path part"),
    ("imgs/../../evil.txt", "'..' path part"),
    ("..\\evil.txt", "'..' path part"),
])
def test_extract_rejects_member_outside_destination(tmp_path, member, reason):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "kept.csv").write_text("a\n")
    archive = write_zip(tmp_path / "bad.zip", {"sample_submission.csv": b"img\n", member: b"x"})

    with pytest.raises(ArchiveError) as caught:
        extract_archive(archive, data_dir)

    message = str(caught.value)
    assert str(archive) in message
    assert repr(member) in message
    assert reason in message
    assert tree(data_dir) == {"kept.csv": b"a\n"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.zip", "data"]


def test_extract_rejects_symlink_member(tmp_path):
    link = zipfile.ZipInfo("train/c0/link.jpg")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    archive = tmp_path / "links.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        bundle.writestr("train/c0/img_1.jpg", b"jpeg")
        bundle.writestr(link, "/etc/passwd")

    with pytest.raises(ArchiveError, match=r"'train/c0/link\.jpg' is a symbolic link"):
        extract_archive(archive, tmp_path / "data")

    assert not (tmp_path / "data").exists()


def test_extract_rejects_non_zip_file(tmp_path):
    archive = tmp_path / "competition.zip"
    archive.write_text("<html>Sign in to Kaggle</html>")

    with pytest.raises(ArchiveError, match="not a valid zip archive"):
        extract_archive(archive, tmp_path / "data")

    assert not (tmp_path / "data").exists()


def test_extract_rejects_truncated_zip(tmp_path):
    whole = zip_bytes(COMPETITION_MEMBERS)
    archive = tmp_path / "competition.zip"
    archive.write_bytes(whole[: len(whole) // 2])

    with pytest.raises(ArchiveError, match=str(archive)):
        extract_archive(archive, tmp_path / "data")

    assert not (tmp_path / "data").exists()


def test_extract_damaged_member_keeps_destination(tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "kept.csv").write_text("a\n")
    # Stored (uncompressed) members, so one flipped byte in the second member fails only its CRC.
    content = zip_bytes({"first.csv": b"a" * 100, "second.csv": b"b" * 100}, zipfile.ZIP_STORED)
    position = content.rindex(b"b" * 100) + 50
    damaged = content[:position] + b"X" + content[position + 1:]
    archive = tmp_path / "damaged.zip"
    archive.write_bytes(damaged)

    with pytest.raises(ArchiveError, match="second.csv"):
        extract_archive(archive, data_dir)

    assert tree(data_dir) == {"kept.csv": b"a\n"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["damaged.zip", "data"]


# --- verify_archive ------------------------------------------------------------------------------


def test_verify_accepts_whole_archive(tmp_path):
    archive = write_zip(tmp_path / "competition.zip", COMPETITION_MEMBERS)

    verify_archive(archive, archive.stat().st_size)
    verify_archive(archive, None)


def test_verify_rejects_wrong_size(tmp_path):
    archive = write_zip(tmp_path / "competition.zip", COMPETITION_MEMBERS)
    size = archive.stat().st_size

    with pytest.raises(ArchiveError, match=f"has {size} bytes but Kaggle announced {size + 10}"):
        verify_archive(archive, size + 10)


def test_verify_rejects_crc_failure(tmp_path):
    content = zip_bytes({"driver_imgs_list.csv": b"c" * 200}, zipfile.ZIP_STORED)
    position = content.index(b"c" * 200) + 10
    archive = tmp_path / "competition.zip"
    archive.write_bytes(content[:position] + b"X" + content[position + 1:])

    with pytest.raises(ArchiveError, match="'driver_imgs_list.csv' fails its CRC check"):
        verify_archive(archive, archive.stat().st_size)


# --- download_competition ------------------------------------------------------------------------


class UnusedClient:
    """A Kaggle client that must not be called."""

    def download_competition_archive(self, *args, **kwargs):
        raise AssertionError("the Kaggle client was called")


def test_download_refuses_data_dir_with_files(tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "driver_imgs_list.csv").write_text("subject,classname,img\n")

    with pytest.raises(DataDirNotEmptyError, match="already contains driver_imgs_list.csv; pass --force"):
        download_competition("state-farm-distracted-driver-detection", data_dir, client=UnusedClient())


def test_download_rejects_invalid_slug(tmp_path):
    with pytest.raises(ValueError, match="competition slug '../etc' is invalid"):
        download_competition("../etc", tmp_path / "data", client=UnusedClient())
