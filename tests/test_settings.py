"""The settings table: one row per setting, and every place that spells a setting reads it."""

import dataclasses

import pytest

from fedcore.cli.main import build_parser, config_from_args
from fedcore.experiment.config import ExperimentConfig
from fedcore.experiment.from_text import config_from_run_config
from fedcore.experiment.settings import SETTINGS, control_range
from fedcore.experiment.specs import ConfigError, default_exclusions, parse_exclusions

NUMBERS = [s for s in SETTINGS if s.kind in (int, float)]


def config_with(setting, value) -> ExperimentConfig:
    """The defaults with one setting changed (clients come with as many exclusions)."""
    changes = {setting.name: setting.kind(value)}
    if setting.name == "num_clients" and value >= 2:
        changes["excluded_digits"] = default_exclusions(int(value))
    if setting.name == "min_train_clients" and 3 < value <= 10_000:  # as many clients at least
        changes |= {"num_clients": int(value), "excluded_digits": default_exclusions(int(value))}
    return ExperimentConfig(**changes)


def test_one_row_per_config_field_with_the_config_defaults():
    assert [s.name for s in SETTINGS] == [f.name for f in dataclasses.fields(ExperimentConfig)]
    defaults = ExperimentConfig()
    for setting in SETTINGS:
        value = getattr(defaults, setting.name)
        if setting.name == "excluded_digits":
            assert value == parse_exclusions(setting.default)
        else:
            assert value == setting.default, setting.name
    assert len({s.flag for s in SETTINGS}) == len({s.key for s in SETTINGS}) == len(SETTINGS)


def test_cli_flags_and_run_config_keys_round_trip_every_setting(mnist_dir):
    changed = ExperimentConfig(
        num_clients=4, split="dirichlet:0.3", excluded_digits=(), model="2nn",
        strategy="fedprox:mu=0.5", privacy="server:noise=0.8", attack="noise:std=0.5",
        attackers="2,4", leakage="optimise", num_rounds=5, local_epochs=2, local_steps=3,
        batch_size=32, learning_rate=0.05, momentum=0.5, fraction_train=0.5,
        min_train_clients=2, dropout=0.1, target_accuracy=90.0, stop_at_target="yes", seed=7,
        data_dir=str(mnist_dir),
    )  # fmt: skip
    assert all(getattr(changed, s.name) != s.default for s in SETTINGS)
    with_exclusions = changed.replace(split="exclude", excluded_digits=((1,), (2, 3), (), (9,)))
    assert config_from_run_config(with_exclusions.to_run_config()) == with_exclusions
    run_config = changed.to_run_config()
    assert set(run_config) == {s.key for s in SETTINGS}
    assert config_from_run_config(run_config) == changed
    argv = ["run"]
    for setting in SETTINGS:
        argv += [setting.flag, str(run_config[setting.key])]
    assert config_from_args(build_parser().parse_args(argv)) == changed


@pytest.mark.parametrize("setting", NUMBERS, ids=lambda s: s.name)
def test_limits_come_from_the_table(setting):
    too_high = setting.high + (1 if setting.kind is int else 0.5)
    with pytest.raises(ConfigError, match=setting.name):
        config_with(setting, too_high)
    if setting.low_open:
        with pytest.raises(ConfigError, match=setting.name):
            config_with(setting, setting.low)


@pytest.mark.parametrize("setting", NUMBERS, ids=lambda s: s.name)
def test_the_apps_controls_span_exactly_what_the_config_accepts(setting):
    start, stop, step = control_range(setting)
    for value in (start, stop):
        assert getattr(config_with(setting, value), setting.name) == setting.kind(value)
    with pytest.raises(ConfigError):  # one step below the control is refused
        config_with(setting, setting.low if setting.low_open else start - step)
    assert stop == (setting.app_high or setting.high)
