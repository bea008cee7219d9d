"""The search space file (sweep.toml): which of train's options a sweep varies, and how.

    lr = {low = 1e-3, high = 3e-2, log = true}   # a range: float, or int when both ends are
    layers = ["256", "512,256"]                  # a list of choices, written as on the command line
    dropout = {low = 0.0, high = 0.6}
    loss = ["corr", "mse"]

    epochs = 4                                   # a single value: fixed, every trial shares it

    [fixed]                                      # the same, as a table (either way works)
    batch-size = 4096

    [payout]                                     # weights of the payout objective (Numerai's, per round)
    corr = 0.5
    mmc = 2.0

    [cv]                                         # the folds of `sweep --cv` (numerflow cv's options)
    folds = 5

Keys are train's options (`batch-size` or `batch_size`). A scalar at the top level means a fixed
value, as in Ray Tune's param_space; an option cannot be both at the top level and in [fixed]. Everything is checked before a sweep
writes anything: unknown keys, empty choice lists, ranges with low > high, and each choice as a
train setting.
"""

from __future__ import annotations

import math
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path

from numerflow.config import TrainConfig
from numerflow.errors import ConfigError

# The built-in space of `sweep --cv` without --space, shipped in the package (pyproject's package-data)
# and printed by `sweep --show-space`.
DEFAULT_SPACE = Path(__file__).with_name("default_space.toml")
ALL_TARGETS = "all"  # a `targets` choice meaning every prepared target (train's default)
# Options a sweep owns itself: where the data is, where checkpoints go, resuming.
NOT_SWEPT = {"data", "out", "resume", "track"}  # track: the sweep's own --no-track
TABLES = {"fixed", "payout", "cv"}
DEFAULT_PAYOUT = {"corr": 0.5, "mmc": 2.0}
CV_KEYS = ("folds", "scheme", "embargo")  # `numerflow cv`'s fold options, for --cv


def train_options() -> dict[str, object]:
    """train's options a space may name, with their field types."""
    hints = typing.get_type_hints(TrainConfig)
    return {f.name: hints[f.name] for f in fields(TrainConfig) if f.name not in NOT_SWEPT}


def option_value(name: str, value):
    """A value as written in the space file ("512,256", "target,target_x") as TrainConfig takes it."""
    if name == "targets" and value == ALL_TARGETS:
        return None  # TrainConfig's default: every prepared target
    kind = str(train_options()[name])
    if "list" in kind and isinstance(value, str):
        items = [item.strip() for item in value.split(",") if item.strip()]
        if "int" in kind:
            try:
                return [int(item) for item in items]
            except ValueError:
                raise ConfigError(f"{name}: expected comma-separated integers, got '{value}'") from None
        return items
    if "float" in kind and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


@dataclass
class Space:
    """The parsed search space: `choices` and `ranges` are searched, `fixed` is shared by all trials."""
    source: Path
    choices: dict[str, list] = field(default_factory=dict)
    ranges: dict[str, dict] = field(default_factory=dict)  # name -> {low, high, log, step}
    fixed: dict = field(default_factory=dict)
    payout: dict = field(default_factory=lambda: dict(DEFAULT_PAYOUT))
    cv: dict = field(default_factory=dict)  # folds, scheme, embargo for --cv (CvConfig's defaults otherwise)
    notes: list[str] = field(default_factory=list)  # how the built-in space was fitted to the data

    @property
    def names(self) -> list[str]:
        return sorted([*self.choices, *self.ranges])

    def may_set(self, name: str) -> bool:
        """Whether some trial may give option `name` a value other than 0 (a choice, a range's
        high end or a fixed value), e.g. bmc_weight, which needs the prepared benchmark column."""
        values = [*self.choices.get(name, []), self.ranges.get(name, {}).get("high", 0), self.fixed.get(name, 0)]
        return any(values)

    def distributions(self) -> dict:
        """The space as Optuna distributions (also what Ray Tune's OptunaSearch takes)."""
        import optuna.distributions as od

        out = {name: od.CategoricalDistribution(values) for name, values in self.choices.items()}
        for name, r in self.ranges.items():
            if r["int"]:
                out[name] = od.IntDistribution(r["low"], r["high"], log=r["log"], step=r.get("step") or 1)
            else:
                out[name] = od.FloatDistribution(r["low"], r["high"], log=r["log"], step=r.get("step"))
        return dict(sorted(out.items()))

    def train_settings(self, params: dict, **sweep_owned) -> TrainConfig:
        """The TrainConfig of one trial: what the sweep sets (data, out, seed), overridden by the
        fixed options (a fixed seed wins), then the trial's parameters."""
        return TrainConfig(**{**sweep_owned, **{k: option_value(k, v) for k, v in {**self.fixed, **params}.items()}})

    def to_dict(self) -> dict:
        return {"choices": self.choices, "ranges": self.ranges, "fixed": self.fixed, "payout": self.payout,
                "cv": self.cv}

    def cv_settings(self, config: TrainConfig):
        """A trial's TrainConfig as `numerflow cv` settings, with the space's [cv] folds."""
        from numerflow.config import CvConfig

        return CvConfig(**{f.name: getattr(config, f.name) for f in fields(TrainConfig)}, **self.cv)


def load_space(path: str | Path) -> Space:
    """Read and check a space file; every problem is a ConfigError naming the file and the key."""
    import tomllib

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: file not found")
    try:
        table = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: invalid TOML ({exc})") from None
    return space_of(path, table)


def load_default_space() -> Space:
    """The built-in space. Where the tabm package is not installed, TabM is left out of `arch`
    (a note says so): a user without the extra still gets the rest of the search."""
    import tomllib

    from numerflow.model import import_tabm

    table = tomllib.loads(default_space_text())
    try:
        import_tabm()
    except ConfigError:
        table["arch"] = [arch for arch in table.get("arch", []) if arch != "tabm"]
        space = space_of(DEFAULT_SPACE, table)
        space.notes.append("the tabm package is not installed: arch tabm not searched (pip install tabm)")
        return space
    return space_of(DEFAULT_SPACE, table)


def space_of(path: Path, table: dict) -> Space:
    """A parsed space file (`path` names it in errors) as a checked Space."""
    space = Space(path)
    for name, value in table.items():
        if name in TABLES:
            continue
        _add(space, _option_name(path, name), value)
    if not space.names:
        raise ConfigError(f"{path}: nothing to search: give at least one option with a list of choices or a range")
    in_table = {_option_name(path, k, "[fixed] "): v for k, v in _table(path, table, "fixed").items()}
    twice = sorted(set(in_table) & set(space.fixed))
    if twice:
        raise ConfigError(f"{path}: {', '.join(twice)} given both at the top level and in [fixed]")
    space.fixed.update(in_table)
    searched_and_fixed = sorted(set(space.fixed) & set(space.names))
    if searched_and_fixed:
        raise ConfigError(f"{path}: {', '.join(searched_and_fixed)} both searched and in [fixed]")
    space.payout = _payout(path, _table(path, table, "payout"))
    space.cv = {k.replace("-", "_"): v for k, v in _table(path, table, "cv").items()}
    unknown = sorted(set(space.cv) - set(CV_KEYS))
    if unknown:
        raise ConfigError(f"{path}: [cv]: unknown key(s) {', '.join(unknown)} ({', '.join(CV_KEYS)})")
    _check_settings(space)
    return space


def _table(path: Path, table: dict, name: str) -> dict:
    value = table.get(name, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: '{name}' must be a table: [{name}] with option = value lines")
    return value


def _option_name(path: Path, key: str, where: str = "") -> str:
    name = key.replace("-", "_")
    if name not in train_options():
        allowed = ", ".join(sorted(n.replace("_", "-") for n in train_options()))
        raise ConfigError(f"{path}: {where}unknown option '{key}' (train's options: {allowed})")
    return name


def _add(space: Space, name: str, value) -> None:
    where = f"{space.source}: {name}"
    if isinstance(value, list):
        if not value:
            raise ConfigError(f"{where}: empty list of choices")
        if len({repr(v) for v in value}) != len(value):
            raise ConfigError(f"{where}: repeated choice")
        if not all(isinstance(v, (str, int, float, bool)) for v in value):
            raise ConfigError(f"{where}: choices must be strings, numbers or booleans "
                              "(write a list option as a string: layers = [\"256\", \"512,256\"])")
        space.choices[name] = value
    elif isinstance(value, dict):
        space.ranges[name] = _range(where, name, value)
    elif isinstance(value, (str, int, float, bool)):
        space.fixed[name] = value  # a single value is fixed, as in Ray Tune's param_space
    else:
        raise ConfigError(f"{where}: give a value, a list of choices or a range {{low = ..., high = ...}}")


def _range(where: str, name: str, value: dict) -> dict:
    unknown = sorted(set(value) - {"low", "high", "log", "step"})
    if unknown or "low" not in value or "high" not in value:
        raise ConfigError(f"{where}: a range is {{low = ..., high = ..., log = true|false, step = ...}}"
                          + (f" (unknown key(s) {', '.join(unknown)})" if unknown else ""))
    low, high, log, step = value["low"], value["high"], value.get("log", False), value.get("step")
    numbers = [v for v in (low, high, step) if v is not None]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in numbers):
        raise ConfigError(f"{where}: low, high and step must be finite numbers")
    if not isinstance(log, bool):
        raise ConfigError(f"{where}: log must be true or false")
    if low > high:
        raise ConfigError(f"{where}: low ({low}) > high ({high})")
    if log and low <= 0:
        raise ConfigError(f"{where}: a log range needs low > 0")
    if step is not None and (step <= 0 or log):
        raise ConfigError(f"{where}: step must be > 0, and cannot be combined with log")
    kind = str(train_options()[name])
    if not any(t in kind for t in ("int", "float")) or "list" in kind:
        raise ConfigError(f"{where}: a range needs a numeric option; give a list of choices instead")
    is_int = "int" in kind and "float" not in kind
    if is_int and not all(isinstance(v, int) for v in numbers):
        raise ConfigError(f"{where}: {name} is an integer option: low, high and step must be integers")
    return {"low": low, "high": high, "log": log, "step": step, "int": is_int}


def _payout(path: Path, table: dict) -> dict:
    unknown = sorted(set(table) - set(DEFAULT_PAYOUT))
    if unknown:
        raise ConfigError(f"{path}: [payout]: unknown key(s) {', '.join(unknown)} (corr, mmc)")
    weights = {**DEFAULT_PAYOUT, **table}
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in weights.values()):
        raise ConfigError(f"{path}: [payout]: weights must be finite numbers")
    return {k: float(v) for k, v in weights.items()}


def _check_settings(space: Space) -> None:
    """Each choice, and both ends of each range, with the fixed options as a train setting:
    an unknown loss or a negative dropout fails here, not in trial 17."""
    from numerflow.training.settings import check_config

    for params in _corners(space):
        try:
            config = space.train_settings(params)
            check_config(config)
        except ConfigError as exc:
            raise ConfigError(f"{space.source}: {exc}") from None
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{space.source}: {params or space.fixed}: {exc}") from None
    try:
        space.cv_settings(space.train_settings({}))  # CvConfig applies --folds' and --embargo's bounds
    except (ConfigError, TypeError) as exc:
        raise ConfigError(f"{space.source}: [cv]: {exc}") from None


def check_against_data(space: Space, manifest: dict, source: Path, cv: bool = False) -> None:
    """The space on the prepared data it will train on (`manifest`, read from `source`), before any
    trial: every target a choice or the fixed options name must be prepared, and with `cv` the
    [cv] folds must leave every fold training eras. A trial would fail on each, one by one."""
    from numerflow.training.data import choose_targets

    for params in _corners(space):
        choose_targets(space.train_settings(params), manifest, source)
    eras = list(manifest.get("eras_train") or [])  # (older manifests: the trials' folds check it)
    if cv and eras:
        from numerflow.training.folds import plan_folds

        folds = space.cv_settings(space.train_settings({}))
        plan_folds(eras, folds.folds, folds.scheme, folds.embargo,
                   source.parent / "train.parquet")


def default_space_text() -> str:
    """The built-in space file, as `numerflow sweep --show-space` prints it."""
    return DEFAULT_SPACE.read_text()


def fit_default_space(space: Space, manifest: dict) -> Space:
    """The built-in space on the prepared data it will search: `targets` becomes the main target
    (as prepared) or all of them, and is dropped when only the main one is prepared; `bmc_weight`
    is dropped when no benchmark column is prepared. Each change is a note for the user."""
    prepared = list(manifest.get("targets") or [])
    if "targets" in space.choices:
        if len(prepared) > 1:
            space.choices["targets"] = [prepared[0], ALL_TARGETS]
        else:
            del space.choices["targets"]
            space.notes.append("only the main target is prepared: targets not searched "
                               "(`numerflow prepare` keeps the auxiliary ones by default)")
    if space.may_set("bmc_weight") and not manifest.get("benchmark"):
        space.choices.pop("bmc_weight", None)
        space.notes.append("no benchmark column prepared: bmc_weight not searched")
    return space


def _corners(space: Space) -> list[dict]:
    """The fixed options alone, each choice, and both ends of each range: between them every
    value a trial can take of each option."""
    corners = [{}]
    corners += [{name: v} for name, values in space.choices.items() for v in values]
    corners += [{name: r[end]} for name, r in space.ranges.items() for end in ("low", "high")]
    return corners
