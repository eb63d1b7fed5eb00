"""Download the competition files from Kaggle into the data directory.

    python -m pipelines.fetch_data [--competition SLUG] [--data-dir DIR] [--force] [--keep-archive]

Needs Kaggle credentials (KAGGLE_API_TOKEN, ~/.kaggle/access_token, KAGGLE_USERNAME/KAGGLE_KEY or
kaggle.json) and the competition's rules accepted on its Kaggle page. A partial download is resumed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipelines.common import main_guard, setup_logging

DEFAULT_COMPETITION = "state-farm-distracted-driver-detection"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m pipelines.fetch_data", description=__doc__.splitlines()[0])
    parser.add_argument("--competition", default=DEFAULT_COMPETITION, metavar="SLUG",
                        help=f"Kaggle competition slug (default: {DEFAULT_COMPETITION})")
    parser.add_argument("--data-dir", type=Path, default=Path("data"),
                        help="where the extracted files go (default: data/)")
    parser.add_argument("--force", action="store_true",
                        help="download even when the data directory already contains files, replacing them")
    parser.add_argument("--keep-archive", action="store_true",
                        help="keep the downloaded zip in <data-dir>/.kaggle-download/ after extracting it")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.verbose)

    from kaggle_sf.data.fetch import ArchiveError, DataDirNotEmptyError, download_competition
    from kaggle_sf.kaggle_client import KaggleError

    try:
        data_dir = download_competition(args.competition, args.data_dir, force=args.force,
                                        keep_archive=args.keep_archive, show_progress=sys.stderr.isatty())
    except (KaggleError, ArchiveError, DataDirNotEmptyError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"Competition files of {args.competition} are in {data_dir}")
    return 0


if __name__ == "__main__":
    main_guard(main, interrupted="Interrupted.")
