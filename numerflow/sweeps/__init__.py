"""Hyperparameter sweeps: the search space file (space.py), one trial as a function call on
in-memory data (trial.py), the objective a trial is scored by (objective.py), and the two ways
trials run: Optuna with worker processes on one machine (local.py) and Ray Tune (ray.py). The
stage that ties them together is numerflow/stages/sweep.py."""
