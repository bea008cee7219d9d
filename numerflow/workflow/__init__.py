"""The floor under the stages: what several stages share, so that no stage imports another.

- `validation_rows`: which validation files, their frozen description, reading their rows and
  matching ids (validate, compare), and reading an id,prediction file (validate, compare, diagnostics).
- `model_scores`: a set of checkpoints scored on a feature matrix as one rank-averaged prediction
  (predict, validate, compare, export).
- `oof_files`: a cv run's out-of-fold file and its names (cv writes it; compare and ensemble read it).
- `round_inputs`: the round's live file and the account's model id (predict, submit, export).
- `postprocess`: numpy/pandas-only ranking within eras, neutralisation and float-unit detection:
  the exported pickle carries these functions by value.
"""
