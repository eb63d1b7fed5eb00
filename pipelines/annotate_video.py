"""Annotate a video or camera stream with a run's predictions: each frame beside its heatmap, labelled.

    python -m pipelines.annotate_video --run-id ID --input VIDEO_OR_CAMERA --output OUT.mp4 [--smooth N]
                                       [--show] [--work-dir DIR] [--backbone LABEL] [--fold K]
                                       [--method auto|cam|gradcam] [--batch-size N] [--max-frames N]
                                       [--predictions CSV]

--input is a video file or a camera index (0 is the first camera). Runs without a window unless --show
is given; prints the number of frames and the frames per second at the end.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipelines.common import OutputPathError, main_guard, make_output_dir, setup_logging


def _at_least_one(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m pipelines.annotate_video",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--run-id", required=True, help="MLflow run of the main job, or one of its fold runs")
    parser.add_argument("--input", required=True, metavar="VIDEO_OR_CAMERA",
                        help="video file, or camera index such as 0")
    parser.add_argument("--output", type=Path, required=True, help="annotated video to write (.mp4 or .avi)")
    parser.add_argument("--smooth", type=_at_least_one, default=1, metavar="N",
                        help="average the probabilities of the last N frames for the label (default: 1, none)")
    parser.add_argument("--show", action="store_true",
                        help="also show the annotated frames in a window (needs OpenCV with GUI support)")
    parser.add_argument("--work-dir", type=Path, default=Path("."),
                        help="the main job's --work-dir, with its mlruns/ and cache/ (default: current directory)")
    parser.add_argument("--backbone", default=None, metavar="LABEL",
                        help="backbone label, e.g. mobilenet_0.25_224x224; needed when the run has several")
    parser.add_argument("--fold", type=int, default=None, help="annotate with this fold model only")
    parser.add_argument("--method", default="auto", choices=("auto", "cam", "gradcam"),
                        help="class-activation method; auto uses CAM when the head allows it (default: auto)")
    parser.add_argument("--batch-size", type=_at_least_one, default=None, metavar="N",
                        help="frames per forward pass (default: 8 for a file, 1 for a camera)")
    parser.add_argument("--max-frames", type=_at_least_one, default=None, metavar="N",
                        help="stop after N frames (default: the whole video; a camera runs until stopped)")
    parser.add_argument("--predictions", type=Path, default=None, metavar="CSV",
                        help="also write the per-frame predictions: frame, classname, probability, c0..c9")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.verbose)

    from kaggle_sf.atomic import atomic_path
    from kaggle_sf.explain.cam import CamError
    from kaggle_sf.explain.fold_models import ExplainError, load_run_models, open_tracking_store
    from kaggle_sf.explain.video import (
        VideoError,
        annotate_video,
        check_video_file,
        check_window_support,
        video_codec,
    )
    from kaggle_sf.models.backbones import WeightsError

    camera = args.input.isdigit()
    try:
        # Check the input, the output and the window before the models load, which takes a while.
        video_codec(args.output)
        make_output_dir(args.output.parent, "--output")
        if args.predictions is not None:
            make_output_dir(args.predictions.parent, "--predictions")
        if args.show:
            check_window_support()
        if not camera:
            check_video_file(args.input)
        open_tracking_store(args.work_dir)
        refs, models = load_run_models(args.run_id, backbone=args.backbone, fold=args.fold)
        print(f"Annotating {'camera ' if camera else ''}{args.input} with {', '.join(ref.name for ref in refs)}")
        report = annotate_video(models, int(args.input) if camera else args.input, args.output,
                                smooth=args.smooth, show=args.show, batch_size=args.batch_size or (1 if camera else 8),
                                max_frames=args.max_frames, method=args.method)
    except (VideoError, ExplainError, CamError, WeightsError, OutputPathError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    if args.predictions is not None:
        with atomic_path(args.predictions) as temporary:
            report.predictions.to_csv(temporary, index=False, float_format="%.6g")
    print(f"Annotated {report.frames} frames in {report.seconds:.1f} s ({report.frames_per_second:.1f} frames "
          f"per second): {report.output}")
    return 0


if __name__ == "__main__":
    main_guard(main, interrupted="Interrupted.")
