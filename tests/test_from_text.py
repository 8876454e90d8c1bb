"""Every path from text to a config finds settings the same way and reads them the same way."""

import pytest

from fedcore.cli.main import build_parser, config_from_args
from fedcore.experiment.config import ExperimentConfig
from fedcore.experiment.from_text import (
    config_from_run_config,
    config_from_text,
    find_setting,
    lenient_config_from_text,
)
from fedcore.experiment.settings import SETTINGS
from fedcore.experiment.specs import ConfigError, default_exclusions


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.name)
def test_every_spelling_of_a_setting_finds_it(setting):
    for spelling in (setting.name, setting.key, setting.flag, setting.flag.removeprefix("--")):
        assert find_setting(spelling) is setting


def test_an_unknown_spelling_names_the_known_ones():
    with pytest.raises(ConfigError, match="colour: no such setting \\(settings: num-clients"):
        find_setting("colour")


def test_cli_flags_run_config_and_text_give_the_same_config():
    text = {"clients": "5", "split": "dirichlet:0.1", "epochs": "2", "lr": "0.05", "seed": "7"}
    from_text = config_from_text(text)
    argv = ["run", "--clients", "5", "--split", "dirichlet:0.1", "--epochs", "2", "--lr", "0.05"]
    from_flags = config_from_args(build_parser().parse_args([*argv, "--seed", "7"]))
    assert from_text == from_flags == config_from_run_config(from_text.to_run_config())
    assert from_text.local_epochs == 2 and from_text.learning_rate == 0.05


def test_a_cli_flag_with_bad_text_is_one_line_from_the_reader(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--clients", "five"])
    assert "argument --clients: num_clients must be a whole number, got 'five'" in (
        capsys.readouterr().err
    )


def test_lenient_text_applies_what_it_can_and_says_why_for_the_rest():
    pairs = [("num-clients", "4"), ("local-epochs", "0"), ("colour", "red"), ("seed", "x")]
    config, problems = lenient_config_from_text(
        pairs, ExperimentConfig(), ["num_clients", "local_epochs", "seed"], "lab setting"
    )
    assert config.num_clients == 4 and config.excluded_digits == default_exclusions(4)
    assert config.local_epochs == ExperimentConfig().local_epochs
    assert len(problems) == 3
    assert problems[0].startswith("`colour` is not a lab setting")
    assert "`local-epochs=0`: local_epochs must be between 1 and 20" in problems[1]
    assert "`seed=x`: seed must be a whole number" in problems[2]
