"""Command-line entry points, one per stage, plus ``full_run``; argument parsing and nothing else."""

import os

# TensorFlow's C++ start-up messages drown the toolkit's progress lines; errors still show.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
