"""Thin adapter around the Kaggle client (the ``kaggle`` package, 2.2): download, submit, list submissions.

``import kaggle`` authenticates at import time: it checks an access token over the network, and prints a
help text when it finds no credentials. So the package is imported only inside :class:`KaggleClient`,
after :func:`have_credentials` has found credentials, and the library stays free of side effects at import.

The Kaggle client reads the credentials itself. This module never logs, prints, stores or returns them:
:func:`credentials_source` names where they are, not what they are. Every failure is a
:class:`KaggleError` whose message is one line that names the fix.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import requests

logger = logging.getLogger(__name__)

API_TOKEN_PAGE = "https://www.kaggle.com/settings/api"
COMPETITION_URL = "https://www.kaggle.com/competitions/{competition}"
SLUG_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*")


class KaggleError(RuntimeError):
    """A Kaggle operation failed; the message names the next step."""


class MissingCredentialsError(KaggleError):
    """No Kaggle credentials were found."""


class CredentialsRejectedError(KaggleError):
    """Kaggle did not accept the credentials (invalid or expired token, wrong key)."""


class RulesNotAcceptedError(KaggleError):
    """Kaggle denied access to a competition (HTTP 403), usually because its rules were not accepted."""


class CompetitionNotFoundError(KaggleError):
    """Kaggle has no competition with this slug (HTTP 404)."""


class OfflineError(KaggleError):
    """Kaggle could not be reached: no network, no DNS, or a proxy that refuses the connection."""


class DownloadInterruptedError(KaggleError):
    """The connection dropped in the middle of a transfer; a download resumes on the next attempt."""


class SubmissionRejectedError(KaggleError):
    """Kaggle did not accept a submission, or could not score it."""


# --- Credentials ---------------------------------------------------------------------------------


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return ""


def _is_existing_path(value: str) -> bool:
    try:
        return Path(value).exists()
    except OSError:  # a token longer than the file-name limit, for example
        return False


def _access_token_source(home: Path) -> str | None:
    # kaggle 2.2 (kagglesdk.kaggle_env.get_access_token_from_env): a Kaggle notebook's token file, then
    # KAGGLE_API_TOKEN (the token, or the path of a file holding it), then ~/.kaggle/access_token(.txt).
    if os.environ.get("KAGGLE_KERNEL_RUN_TYPE") and os.environ.get("KAGGLE_DATA_PROXY_URL"):
        notebook_token = os.environ.get("KAGGLE_API_V1_TOKEN")
        if notebook_token and _read_text(Path(notebook_token)):
            return "KAGGLE_API_V1_TOKEN"

    token = os.environ.get("KAGGLE_API_TOKEN")
    if token:
        if _is_existing_path(token):
            # The client stops here even when the file is empty.
            return "the file named by KAGGLE_API_TOKEN" if _read_text(Path(token)) else None
        return "KAGGLE_API_TOKEN"

    for name in ("access_token", "access_token.txt"):
        if _read_text(home / ".kaggle" / name):
            return f"~/.kaggle/{name}"
    return None


def kaggle_config_dir() -> Path:
    """Return the folder where the Kaggle client looks for ``kaggle.json``.

    ``KAGGLE_CONFIG_DIR`` when set; otherwise ``~/.kaggle``, or on Linux, when that folder does not
    exist, ``$XDG_CONFIG_HOME/kaggle`` (default ``~/.config/kaggle``), as in kaggle 2.2.
    """
    configured = os.environ.get("KAGGLE_CONFIG_DIR")
    if configured:
        return Path(configured)
    home = Path(os.path.expanduser("~"))
    legacy = home / ".kaggle"
    if sys.platform.startswith("linux") and not legacy.exists():
        return Path(os.environ.get("XDG_CONFIG_HOME") or home / ".config") / "kaggle"
    return legacy


def _api_key_source() -> str | None:
    # Environment variables override the fields of kaggle.json, one by one.
    config_file = kaggle_config_dir() / "kaggle.json"
    try:
        stored = json.loads(_read_text(config_file) or "{}")
    except json.JSONDecodeError:
        stored = {}
    if not isinstance(stored, dict):
        stored = {}
    username = os.environ.get("KAGGLE_USERNAME") or stored.get("username")
    key = os.environ.get("KAGGLE_KEY") or stored.get("key")
    if not (username and key):
        return None
    if os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY"):
        return "KAGGLE_USERNAME and KAGGLE_KEY"
    return str(config_file)


def _oauth_source(home: Path) -> str | None:
    # Written by `kaggle auth login`; the client needs its refresh token.
    path = home / ".kaggle" / "credentials.json"
    try:
        stored = json.loads(_read_text(path) or "{}")
    except json.JSONDecodeError:
        return None
    if isinstance(stored, dict) and stored.get("refresh_token"):
        return "~/.kaggle/credentials.json (kaggle auth login)"
    return None


def credentials_source() -> str | None:
    """Name where the Kaggle client will find credentials, or return None when there are none.

    Checks, without importing ``kaggle`` and without network, the sources kaggle 2.2 reads:
    ``KAGGLE_API_TOKEN``, ``~/.kaggle/access_token``, ``KAGGLE_USERNAME``/``KAGGLE_KEY``,
    ``kaggle.json`` in :func:`kaggle_config_dir`, and the OAuth file of ``kaggle auth login``.
    A token found here may still be rejected by Kaggle.

    Returns:
        A description such as ``"KAGGLE_API_TOKEN"``, never a credential value.
    """
    home = Path(os.path.expanduser("~"))
    return _access_token_source(home) or _api_key_source() or _oauth_source(home)


def have_credentials() -> bool:
    """Return whether Kaggle credentials are set up (see :func:`credentials_source`)."""
    return credentials_source() is not None


def missing_credentials_message() -> str:
    """Return the one-line message for absent credentials, naming every way to set them up."""
    return (f"No Kaggle credentials found: create an API token at {API_TOKEN_PAGE} and set KAGGLE_API_TOKEN "
            "or save it to ~/.kaggle/access_token (or set KAGGLE_USERNAME and KAGGLE_KEY, or put kaggle.json "
            f"in {kaggle_config_dir()})")


def require_credentials() -> None:
    """Raise :class:`MissingCredentialsError` unless Kaggle credentials are set up."""
    if not have_credentials():
        raise MissingCredentialsError(missing_credentials_message())


def check_competition_slug(competition: str) -> None:
    """Raise ValueError unless ``competition`` looks like a Kaggle competition slug."""
    if not isinstance(competition, str) or not SLUG_PATTERN.fullmatch(competition):
        raise ValueError(f"competition slug {competition!r} is invalid: use the last part of "
                         f"{COMPETITION_URL.format(competition='<slug>')}, e.g. state-farm-distracted-driver-detection")


# --- Errors --------------------------------------------------------------------------------------


def _one_line(text: str, limit: int = 300) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[:limit - 3] + "..."


def _host_of(error: requests.exceptions.RequestException) -> str:
    request = getattr(error, "request", None)
    url = getattr(request, "url", None)
    return (urlsplit(url).hostname if url else None) or "Kaggle"


def _error_for_status(error: requests.exceptions.HTTPError, competition: str | None) -> KaggleError:
    status = error.response.status_code if error.response is not None else None
    detail = _one_line(str(error))
    if status == 401:
        return CredentialsRejectedError(
            f"Kaggle rejected the credentials from {credentials_source() or 'the environment'} (HTTP 401): "
            f"create a new API token at {API_TOKEN_PAGE} and set it up again")
    if status == 403 and competition:
        rules = COMPETITION_URL.format(competition=competition) + "/rules"
        return RulesNotAcceptedError(
            f"Kaggle denied access to competition '{competition}' (HTTP 403: {detail}): sign in to Kaggle, "
            f"accept the competition rules at {rules}, then run this again")
    if status == 404 and competition:
        return CompetitionNotFoundError(
            f"Competition '{competition}' was not found on Kaggle (HTTP 404): check the slug, the last part of "
            f"{COMPETITION_URL.format(competition='<slug>')}")
    if status == 429:
        return KaggleError("Kaggle rate-limited the request (HTTP 429): wait a few minutes and run this again")
    return KaggleError(f"Kaggle request failed (HTTP {status}): {detail}")


@contextlib.contextmanager
def _kaggle_errors(competition: str | None) -> Iterator[None]:
    """Turn the client's ``requests`` exceptions into :class:`KaggleError` subclasses."""
    try:
        yield
    except requests.exceptions.HTTPError as error:
        raise _error_for_status(error, competition) from error
    except (requests.exceptions.ChunkedEncodingError, requests.exceptions.ContentDecodingError) as error:
        raise DownloadInterruptedError(
            f"The connection to {_host_of(error)} dropped in the middle of a transfer: run this again; "
            "a download resumes where it stopped") from error
    except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as error:
        raise OfflineError(f"Kaggle is unreachable: could not connect to {_host_of(error)} "
                           "(network unreachable); check the connection and run this again") from error


# --- Results -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DownloadedArchive:
    """A competition archive on disk, with the size Kaggle announced for it (None when not announced)."""

    path: Path
    expected_size: int | None


@dataclass(frozen=True)
class Submission:
    """One entry of a competition's submissions list."""

    ref: int
    status: str
    """``"pending"``, ``"complete"`` or ``"error"``."""
    public_score: float | None = None
    private_score: float | None = None
    error_description: str = ""
    file_name: str = ""
    description: str = ""


def _score(value: str | None) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except ValueError:
        return None


def _submission_from_api(entry) -> Submission:
    return Submission(ref=int(entry.ref), status=entry.status.name.lower(),
                      public_score=_score(entry.public_score), private_score=_score(entry.private_score),
                      error_description=_one_line(entry.error_description or ""),
                      file_name=entry.file_name or "", description=entry.description or "")


# --- Client --------------------------------------------------------------------------------------


class KaggleClient:
    """Competition downloads and submissions through the ``kaggle`` package's ``KaggleApi``.

    Args:
        download_retries: how often the client retries a dropped download, resuming from the bytes it
            already has, before giving up (kaggle's default: 5, with 2 s to 60 s between tries).
    """

    def __init__(self, download_retries: int = 5) -> None:
        if download_retries < 0:
            raise ValueError(f"download_retries must be >= 0; received {download_retries}")
        self._download_retries = download_retries
        self._api = None

    def _authenticated_api(self):
        if self._api is not None:
            return self._api
        require_credentials()

        # The client prints help texts and version warnings; keep them out of the caller's output.
        with _kaggle_errors(None), contextlib.redirect_stdout(io.StringIO()):
            from kaggle.api.kaggle_api_extended import KaggleApi

            api = KaggleApi()
            # With VERBOSE set, the client prints every request with its Authorization header.
            api.args = [arg for arg in KaggleApi.args if arg not in ("--verbose", "-v")]
            try:
                api.authenticate()
            except SystemExit:
                raise CredentialsRejectedError(
                    f"Kaggle did not accept the credentials from {credentials_source()}: the token is invalid "
                    f"or expired; create a new one at {API_TOKEN_PAGE}") from None
        self._api = api
        return api

    def download_competition_archive(self, competition: str, folder: Path, *,
                                     show_progress: bool = False) -> DownloadedArchive:
        """Download a competition's files as ``<folder>/<competition>.zip``, resuming a partial download.

        The client resumes with an HTTP Range request when ``folder`` contains a partial archive from an
        earlier attempt together with the client's ``.kaggle-partial`` marker, and skips the download
        when the archive is already complete and not older than Kaggle's copy.

        Raises:
            MissingCredentialsError, CredentialsRejectedError, RulesNotAcceptedError,
            CompetitionNotFoundError, OfflineError, DownloadInterruptedError, KaggleError.
        """
        check_competition_slug(competition)
        api = self._authenticated_api()
        from kagglesdk.competitions.types.competition_api_service import ApiDownloadDataFilesRequest

        # The client creates the folder when it starts writing.
        folder = Path(folder)
        archive = folder / f"{competition}.zip"
        request = ApiDownloadDataFilesRequest()
        request.competition_name = competition

        with _kaggle_errors(competition), api.build_kaggle_client() as kaggle:
            # The API returns a redirect to the file, so the response streams the file's body.
            response = kaggle.competitions.competition_api_client.download_data_files(request)
            try:
                length = response.headers.get("Content-Length")
                expected_size = int(length) if length and length.isdigit() else None
                if api.download_needed(response, str(archive), quiet=True):
                    size = f"{expected_size / 1e6:.1f} MB" if expected_size is not None else "size not announced"
                    logger.info("Downloading %s (%s) into %s", archive.name, size, folder)
                    api.download_file(response, str(archive), kaggle.http_client(), quiet=not show_progress,
                                      resume=True, max_retries=self._download_retries)
                else:
                    logger.info("%s is already complete; not downloading it again", archive)
            except ValueError as error:  # the client's size check after the transfer
                raise KaggleError(f"Download of {archive.name} is incomplete ({_one_line(str(error))}): "
                                  "run this again to resume it") from error
            finally:
                response.close()
        return DownloadedArchive(path=archive, expected_size=expected_size)

    def submit(self, competition: str, path: Path, message: str) -> int:
        """Upload a submission file with a description and return Kaggle's id (ref) for it.

        Raises:
            SubmissionRejectedError: the client reported a failed upload in its response, or Kaggle
                returned no submission id.
            MissingCredentialsError, CredentialsRejectedError, RulesNotAcceptedError,
            CompetitionNotFoundError, OfflineError, KaggleError.
        """
        check_competition_slug(competition)
        api = self._authenticated_api()
        path = Path(path)

        printed = io.StringIO()
        with _kaggle_errors(competition), contextlib.redirect_stdout(printed):
            response = api.competition_submit(str(path), message, competition, quiet=True)

        # competition_submit reports a failed upload in the response message instead of raising.
        output = _one_line(printed.getvalue())
        detail = f" (client output: {output})" if output else ""
        if response.message == api.COMPETITION_SUBMIT_UPLOAD_FAILED_MESSAGE:
            raise SubmissionRejectedError(f"Kaggle did not accept the upload of {path.name} to '{competition}': "
                                          f"{response.message}{detail}")
        if not response.ref:
            submissions = COMPETITION_URL.format(competition=competition) + "/submissions"
            raise SubmissionRejectedError(
                f"Kaggle returned no submission id for {path.name}: {_one_line(response.message) or 'no message'}"
                f"{detail}; check {submissions}")
        return int(response.ref)

    def list_submissions(self, competition: str) -> list[Submission]:
        """Return the latest page of the user's submissions to ``competition``, newest first."""
        check_competition_slug(competition)
        api = self._authenticated_api()
        with _kaggle_errors(competition):
            entries = api.competition_submissions(competition)
        return [_submission_from_api(entry) for entry in entries or [] if entry is not None]
