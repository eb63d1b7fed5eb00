"""Explain chosen frames with a run's fold models: each frame beside its class-activation heatmap, as PNG.

    python -m pipelines.explain --run-id ID --images FILE_OR_FOLDER [FILE_OR_FOLDER ...] [--work-dir DIR]
                                [--output-dir DIR] [--backbone LABEL] [--fold K] [--class cN]
                                [--method auto|cam|gradcam]

A parent run id explains with the average of its fold models. When the run has several backbones,
--backbone chooses one. A fold run id, or --fold, explains with one fold model. Writes ``<image stem>_cam.png`` per
frame and prints the predicted class and probability of each.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from pipelines.common import OutputPathError, main_guard, make_output_dir, setup_logging

BATCH_SIZE = 16


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m pipelines.explain", description=__doc__.splitlines()[0])
    parser.add_argument("--run-id", required=True, help="MLflow run of the main job, or one of its fold runs")
    parser.add_argument("--images", type=Path, nargs="+", required=True, metavar="FILE_OR_FOLDER",
                        help="frames to explain: image files, or folders whose images are all explained")
    parser.add_argument("--work-dir", type=Path, default=Path("."),
                        help="the main job's --work-dir, with its mlruns/ and cache/ (default: current directory)")
    parser.add_argument("--output-dir", type=Path, default=None,
                        help="where the PNG files go (default: <work-dir>/explain/<run-id>/)")
    parser.add_argument("--backbone", default=None, metavar="LABEL",
                        help="backbone label, e.g. mobilenet_0.25_224x224; needed when the run has several")
    parser.add_argument("--fold", type=int, default=None, help="explain with this fold model only")
    parser.add_argument("--class", dest="classname", default=None, choices=[f"c{i}" for i in range(10)],
                        help="show the heatmap of this class instead of the predicted one")
    parser.add_argument("--method", default="auto", choices=("auto", "cam", "gradcam"),
                        help="class-activation method; auto uses CAM when the head allows it (default: auto)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.verbose)

    from kaggle_sf.explain.cam import CamError
    from kaggle_sf.explain.fold_models import ExplainError
    from kaggle_sf.explain.frames import FrameError
    from kaggle_sf.models.backbones import WeightsError

    try:
        written = explain_images(args)
    except (ExplainError, FrameError, CamError, WeightsError, OutputPathError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"Wrote {len(written)} heatmap images to {written[0].parent}")
    return 0


def explain_images(args: argparse.Namespace) -> list[Path]:
    """Explain every requested frame and return the PNG files written."""
    import cv2
    import numpy as np

    from kaggle_sf.atomic import atomic_path
    from kaggle_sf.config import CLASSES
    from kaggle_sf.explain.cam import explain_frames
    from kaggle_sf.explain.fold_models import load_run_models, open_tracking_store
    from kaggle_sf.explain.frames import image_files, model_inputs, read_rgb
    from kaggle_sf.explain.video import compose_frame

    paths = image_files(args.images)
    output_dir = make_output_dir(args.output_dir or args.work_dir / "explain" / args.run_id, "--output-dir")
    open_tracking_store(args.work_dir)
    refs, models = load_run_models(args.run_id, backbone=args.backbone, fold=args.fold)
    print(f"Explaining {len(paths)} frames with {', '.join(ref.name for ref in refs)}")

    written = []
    for start in range(0, len(paths), BATCH_SIZE):
        batch = paths[start:start + BATCH_SIZE]
        inputs = model_inputs(batch, models[0].input_size)
        classes = None if args.classname is None else np.full(len(batch), CLASSES.index(args.classname))
        explanation = explain_frames(models, inputs, classes=classes, method=args.method)
        for path, heatmap, probabilities, index in zip(batch, explanation.heatmaps, explanation.probabilities,
                                                       explanation.classes):
            predicted = CLASSES[int(probabilities.argmax())]
            panel = compose_frame(read_rgb(path), heatmap, CLASSES[index], float(probabilities[index]), 1)
            target = output_dir / f"{path.stem}_cam.png"
            with atomic_path(target) as temporary:
                if not cv2.imwrite(str(temporary), panel):
                    raise OSError(f"could not write {target}")
            written.append(target)
            print(f"{path.name}: predicted {predicted} {probabilities.max():.3f}, heatmap of {CLASSES[index]} "
                  f"-> {target}")
    return written


if __name__ == "__main__":
    main_guard(main, interrupted="Interrupted.")
