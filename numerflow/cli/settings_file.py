"""numerflow.toml's command tables as click defaults (they rank below flags and NUMERFLOW_*)."""

from __future__ import annotations

from numerflow import config_base
from numerflow.errors import ConfigError

# numerflow.toml's tables that are not a command's defaults: `numerflow round`'s
# [models.<numerai model name>] tables and [tracking] (where MLflow runs go, read by numerflow/tracking.py).
OTHER_TABLES = ("models", "tracking")


def toml_defaults(settings: config_base.SettingsFile, commands: dict) -> dict:
    """numerflow.toml's command tables as click defaults. Keys are the options' long names
    (`round`, `model`, `json`; `aux-targets` and `aux_targets` both work). A table or key that
    matches no command or option is an error (a typo must not be ignored silently), and so is a
    parameter's internal name where it differs from its option's (`models`: use `model`).
    A TOML list for a comma-separated option (layers = [512, 256]) is joined; one value for a
    repeatable option (model = "a.pt") is a list of one."""
    source = settings.path
    defaults = {}
    for name, table in settings.tables.items():
        if name in OTHER_TABLES:
            continue
        command = commands.get(name.replace("_", "-"))
        if command is None:
            raise ConfigError(f"{source}: unknown table [{name}] (tables: {', '.join(sorted(commands))}, "
                              f"{', '.join(OTHER_TABLES)})")
        if not isinstance(table, dict):
            raise ConfigError(f"{source}: '{name}' must be a table: [{name}] with option = value lines")
        params = option_keys(command)
        table = {key.replace("-", "_"): value for key, value in table.items()}
        internal = {param.name: key for key, param in params.items() if param.name != key}
        misnamed = sorted(set(table) & set(internal))
        if misnamed:
            key = internal[misnamed[0]]
            raise ConfigError(f"{source}: [{name}]: '{misnamed[0]}' is an internal name; write {key} = ... "
                              f"(keys are named like the options: --{key.replace('_', '-')})")
        unknown = sorted(set(table) - set(params))
        if unknown:
            raise ConfigError(f"{source}: [{name}]: unknown key(s) {', '.join(unknown)} "
                              f"(allowed: {', '.join(sorted(set(params) - negations(command)))})")
        defaults[command.name] = {params[key].name: toml_value(params[key], value, negated=key in negations(command))
                                  for key, value in table.items()}
    return defaults


def negations(command) -> set[str]:
    """The keys that name a flag's off switch (`no_report = true` for --write-report/--no-report)."""
    return {opt.removeprefix("--").replace("-", "_") for param in command.params
            for opt in getattr(param, "secondary_opts", []) if opt.startswith("--")}


def option_keys(command) -> dict:
    """numerflow.toml key → the command's parameter: an option's first long name, `-` as `_`
    (validate's --json is `json`, its parameter `as_json`), and a flag's off switch
    (`no_report` for --write-report/--no-report)."""
    keys = {}
    for param in command.params:
        long_names = [opt for opt in getattr(param, "opts", []) if opt.startswith("--")]
        off_switches = [opt for opt in getattr(param, "secondary_opts", []) if opt.startswith("--")]
        for name in long_names[:1] + off_switches:
            keys[name.removeprefix("--").replace("-", "_")] = param
    return keys


def toml_value(param, value, negated: bool = False):
    if negated:  # `no_report = true` is --write-report off
        return not value
    if param.multiple:
        return value if isinstance(value, list) else [value]
    return ",".join(map(str, value)) if isinstance(value, list) else value


