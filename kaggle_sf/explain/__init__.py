"""Pictures of what the models learn and where they look.

* ``cam``: class-activation maps (CAM and Grad-CAM) of a classifier, and heatmaps overlaid on frames.
* ``fold_models``: finds the fold models of an MLflow run and loads them ready for class-activation maps.
* ``frames``: reads frames from image files and resizes them to a backbone's input size.
* ``charts``: matplotlib figures of the data and the out-of-fold results.
* ``report``: the charts and class-activation grids that the main job logs to MLflow.
* ``video``: a video or camera stream annotated with predictions and heatmaps.

Importing this package starts neither TensorFlow nor matplotlib.
"""

CLASS_DESCRIPTIONS = {
    "c0": "safe driving",
    "c1": "texting - right",
    "c2": "talking on the phone - right",
    "c3": "texting - left",
    "c4": "talking on the phone - left",
    "c5": "operating the radio",
    "c6": "drinking",
    "c7": "reaching behind",
    "c8": "hair and makeup",
    "c9": "talking to passenger",
}
"""The competition's class names, as its data page lists them."""
