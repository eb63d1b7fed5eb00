"""kaggle_sf: a Kaggle image-classification competition from raw files to a tracked, scored submission.

Importing the package has no side effects: no TensorFlow start-up, no Kaggle login, no file writes.
"""

__version__ = "0.1.0"
