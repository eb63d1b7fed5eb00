"""Optuna search for learning rates and head settings, on one machine or as workers sharing a database.

- ``studies``: storage, seeded TPE sampling, median pruning, and the trial budget shared by workers.
- ``head_objective``: heads on cached bottleneck features, scored by out-of-fold log loss.
- ``finetune_objective``: short fine-tuning runs over the backbone learning rate.
- ``trial_runs``: MLflow child runs per trial and the study's artifacts.
- ``stage``: one backbone's search inside a parent run (``search_backbone``).
- ``job``: the search on its own (``run_search``), behind ``python -m pipelines.search_lr``.

Import from the modules; ``studies`` and ``trial_runs`` do not import TensorFlow, so a process that only
inspects or manages studies stays light.
"""
