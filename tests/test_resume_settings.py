"""Resuming compares the saved run's settings with this one's (training/settings.changed_settings,
shared by train's resume file and cv's finished folds)."""

from numerflow.config import CvConfig, TrainConfig
from numerflow.training.settings import changed_settings, config_dict
from numerflow.training.state import RESUMABLE_CHANGES


def test_a_run_saved_before_an_option_existed_had_its_default_and_resumes():
    now = config_dict(TrainConfig(epochs=3))
    saved = {k: v for k, v in now.items() if k not in ("bmc_weight", "arch", "k")}  # an older numerflow's file
    assert changed_settings(saved, now, RESUMABLE_CHANGES) == []


def test_a_new_option_set_away_from_its_default_is_a_change():
    now = config_dict(TrainConfig(epochs=3, bmc_weight=0.5))
    saved = {k: v for k, v in now.items() if k != "bmc_weight"}
    assert changed_settings(saved, now, RESUMABLE_CHANGES) == ["bmc_weight (0.0 → 0.5)"]


def test_cv_settings_fill_in_cv_defaults():
    now = config_dict(CvConfig(folds=3))
    saved = {k: v for k, v in now.items() if k != "cpus_per_task"}
    assert changed_settings(saved, now, set(), CvConfig) == []
    assert changed_settings({**saved, "folds": 4}, now, set(), CvConfig) == ["folds (4 → 3)"]
