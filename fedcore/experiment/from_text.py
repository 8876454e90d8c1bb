"""Every way text becomes an `ExperimentConfig`: the CLI's flags, Flower's run config,
the page's address, a sweep's `--vary`, the app's `-- --flags`.

A setting is found by any of its spellings in one place (`find_setting`), and
its text is read in one place (`parse_value`); the config then validates the
values as it always does. Errors are `ConfigError`s with one line a user can act on.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from fedcore.experiment.config import RUN_CONFIG_KEYS, ExperimentConfig
from fedcore.experiment.settings import BY_NAME, SETTINGS, Setting
from fedcore.experiment.specs import ConfigError, parse_exclusions


def find_setting(spelling: str, what: str = "setting") -> Setting:
    """A setting by any of its spellings: the field name (`local_epochs`), the run-config
    key (`local-epochs`), the CLI flag with or without dashes (`--epochs`, `epochs`).

    Example
    -------
    >>> find_setting("--epochs").name == find_setting("local-epochs").name == "local_epochs"
    True
    """
    wanted = spelling.strip().removeprefix("--")
    for setting in SETTINGS:
        spellings = {setting.name, setting.key, setting.flag.removeprefix("--"), setting.dest}
        if wanted in spellings or wanted.replace("-", "_") in spellings:
            return setting
    known = ", ".join(s.key for s in SETTINGS if s.name != "data_dir")
    raise ConfigError(f"{what} {spelling}: no such setting (settings: {known})")


def parse_value(setting: Setting, text: str) -> Any:
    """One setting's text as its type (`"5"` -> 5 for the clients, exclusions as digit
    groups); texts of the split, strategy and privacy stay text for the config to
    parse into its specs."""
    text = text.strip()
    if setting.name == "excluded_digits":
        return parse_exclusions(text)
    if setting.kind is int:
        try:
            number = float(text)
        except ValueError:
            number = None
        if number is None or not number.is_integer():
            raise ConfigError(f"{setting.name} must be a whole number, got {text!r}")
        return int(number)
    if setting.kind is float:
        try:
            return float(text)
        except ValueError:
            raise ConfigError(f"{setting.name} must be a number, got {text!r}") from None
    return text


def config_from_text(
    values: Mapping[str, str], base: ExperimentConfig | None = None
) -> ExperimentConfig:
    """`base` (default: the reference) with settings changed from text, keyed by any
    spelling: `{"clients": "5", "split": "dirichlet:0.1"}`."""
    changes = {}
    for key, text in values.items():
        setting = find_setting(key)
        changes[setting.name] = parse_value(setting, str(text))
    return (base or ExperimentConfig()).replace(**changes)


# Settings that need each other (an attack its attackers, attackers an attack): applied
# as one change, where one at a time each would be refused without the other.
TOGETHER = (("attack", "attackers"),)


def lenient_config_from_text(
    pairs: Iterable[tuple[str, str]],
    base: ExperimentConfig,
    allowed: Iterable[str],
    what: str = "setting",
) -> tuple[ExperimentConfig, list[str]]:
    """Settings from text that a visitor typed (the page's address): every usable one
    applied in the settings table's order, the others left at `base`'s value with
    one line each saying why (the page shows them; the default stays)."""
    allowed = tuple(allowed)
    given: dict[str, tuple[str, str]] = {}
    problems: list[str] = []
    for key, text in pairs:
        try:
            setting = find_setting(key, what)
        except ConfigError:
            setting = None
        if setting is None or setting.name not in allowed:
            known = ", ".join(s.key for s in SETTINGS if s.name in allowed)
            problems.append(f"`{key}` is not a {what} (known: {known})")
            continue
        given[setting.name] = (key, text)
    config, applied = base, set()
    for setting in SETTINGS:  # in the table's order: the clients before the minimum of them
        if setting.name not in given or setting.name in applied:
            continue
        group = next((g for g in TOGETHER if setting.name in g), (setting.name,))
        names = [name for name in group if name in given]
        applied.update(names)
        try:
            config = config.replace(
                **{name: parse_value(BY_NAME[name], given[name][1]) for name in names}
            )
        except ConfigError as error:
            spelled = "&".join(f"{given[name][0]}={given[name][1]}" for name in names)
            problems.append(f"`{spelled}`: {str(error).rstrip('.')}")
    return config, problems


def config_from_run_config(run_config: Mapping[str, Any]) -> ExperimentConfig:
    """Flower's run config (`[tool.flwr.app.config]`, typed by TOML or `--run-config`);
    a mistyped key is an error, not ignored."""
    by_key = {key: name for name, key in RUN_CONFIG_KEYS.items()}
    unknown = sorted(set(run_config) - set(by_key))
    if unknown:
        raise ConfigError(
            f"unknown run-config key(s): {', '.join(unknown)}; "
            f"known keys: {', '.join(sorted(by_key))}"
        )
    values = {by_key[key]: value for key, value in run_config.items()}
    if "excluded_digits" in values:
        values["excluded_digits"] = parse_exclusions(values["excluded_digits"])
    if "learning_rate" in values and isinstance(values["learning_rate"], int):
        values["learning_rate"] = float(values["learning_rate"])
    return ExperimentConfig(**values)


def parse_vary(text: str) -> tuple[Setting, list[Any]]:
    """A sweep's `"local-epochs=1,5"` -> (its setting, [1, 5]). Values are separated by
    `,`, or by `|` when a value holds commas (`exclude=1,3,7;2,5,8;4,6,9|1;2;3`)."""
    name, equals, values = text.partition("=")
    if not equals or not values.strip():
        raise ConfigError(f"--vary {text!r}: write NAME=VALUE,VALUE,... (e.g. local-epochs=1,5)")
    setting = find_setting(name, "--vary")
    if setting.name == "data_dir":
        raise ConfigError("--vary data-dir: a sweep runs on one data folder (--data-dir)")
    items = [v.strip() for v in values.split("|" if "|" in values else ",") if v.strip()]
    try:  # exclusions stay text here: a cell is named by what was typed
        parsed = [setting.kind(item) for item in items]
    except ValueError:
        raise ConfigError(
            f"--vary {text!r}: {setting.key} takes {setting.kind.__name__} values"
        ) from None
    if len(set(parsed)) < len(parsed):
        raise ConfigError(f"--vary {text!r}: a value is given twice")
    return setting, parsed
