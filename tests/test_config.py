import tomllib

import pytest

from fedcore.experiment.config import ExperimentConfig
from fedcore.experiment.from_text import config_from_run_config
from fedcore.experiment.specs import (
    REFERENCE_EXCLUSIONS,
    ConfigError,
    default_exclusions,
    format_exclusions,
    parse_exclusions,
)
from fedcore.flower.run_config import RESULTS_DIR_KEY, experiment_config

from .conftest import REPO


def test_defaults_are_the_reference_experiment():
    config = ExperimentConfig()
    assert config.num_clients == 3
    assert config.excluded_digits == ((1, 3, 7), (2, 5, 8), (4, 6, 9))
    assert (config.num_rounds, config.local_epochs, config.batch_size) == (3, 10, 64)
    assert (config.learning_rate, config.momentum, config.fraction_train) == (0.01, 0.9, 1.0)
    assert (config.split, config.model, config.min_train_clients) == ("exclude", "mlp", 1)
    assert config.excluded_by_all == ()


def test_run_config_round_trip_is_lossless():
    config = ExperimentConfig(
        num_clients=4,
        excluded_digits=((0,), (), (1, 2, 3), (9, 8)),
        num_rounds=5,
        local_epochs=2,
        batch_size=32,
        learning_rate=0.05,
        momentum=0.0,
        fraction_train=0.5,
        seed=7,
        data_dir="/data/mnist",
    )
    run_config = config.to_run_config()
    assert run_config["exclude"] == "0;;1,2,3;9,8"
    assert run_config["num-server-rounds"] == 5
    assert run_config["local-epochs"] == 2
    assert config_from_run_config(run_config) == config
    assert ExperimentConfig.from_dict(config.to_dict()) == config


def test_pyproject_run_config_is_the_config_default():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    app_config = dict(pyproject["tool"]["flwr"]["app"]["config"])
    assert app_config.pop(RESULTS_DIR_KEY) == "results"
    assert app_config == ExperimentConfig().to_run_config()
    assert experiment_config(pyproject["tool"]["flwr"]["app"]["config"]) == ExperimentConfig()


def test_a_run_config_is_parsed_once_and_a_bad_value_is_still_one_line():
    run_config = ExperimentConfig(split="iid", num_clients=5).to_run_config()
    first = experiment_config(run_config)
    assert experiment_config(dict(reversed(run_config.items()))) is first  # any key order
    assert experiment_config(run_config | {"num-clients": 6}).num_clients == 6
    with pytest.raises(ConfigError, match=r"num_clients must be a whole number, got \[1, 2\]"):
        experiment_config(run_config | {"num-clients": [1, 2]})  # unhashable: parsed, not cached
    with pytest.raises(ConfigError, match="unknown run-config key"):
        experiment_config(run_config | {"local-epoch": 3})


def test_unknown_run_config_key_is_named():
    with pytest.raises(ConfigError, match=r"unknown run-config key\(s\): local-epoch;"):
        config_from_run_config({"local-epoch": 3})


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"num_clients": 1, "excluded_digits": ((1,),)},
            "num_clients must be between 2 and 10000, got 1",
        ),
        ({"num_clients": 10_001}, "num_clients must be between 2 and 10000, got 10001"),
        ({"num_rounds": 0}, "num_rounds must be between 1 and 10000, got 0"),
        ({"local_epochs": 21}, "local_epochs must be between 1 and 20, got 21"),
        ({"local_epochs": 2.5}, "local_epochs must be a whole number, got 2.5"),
        ({"batch_size": 0}, "batch_size must be between 1 and 60000, got 0"),
        ({"learning_rate": 0.0}, r"learning_rate must be in \(0.0, 10.0\], got 0.0"),
        ({"learning_rate": "fast"}, "learning_rate must be a number, got 'fast'"),
        ({"momentum": 1.5}, r"momentum must be in \[0.0, 0.999\], got 1.5"),
        ({"fraction_train": 0.0}, r"fraction_train must be in \(0.0, 1.0\], got 0.0"),
        (
            {"excluded_digits": ((1,), (2,))},
            "excluded digits are given for 2 clients, but there are 3",
        ),
        (
            {"excluded_digits": ((1, 10), (2,), (3,))},
            "client 1: excluded digit 10 is not a digit 0-9",
        ),
        (
            {"excluded_digits": ((1, 1), (2,), (3,))},
            r"client 1: excluded digits \[1, 1\] repeat a digit",
        ),
        (
            {"excluded_digits": ((1,), tuple(range(10)), (3,))},
            "client 2 excludes all ten digits and would have nothing to train on",
        ),
    ],
)
def test_validation_messages(changes, message):
    with pytest.raises(ConfigError, match=message):
        ExperimentConfig(**changes)


def test_digit_excluded_by_every_client_is_allowed_and_reported():
    config = ExperimentConfig(excluded_digits=((1, 3), (3, 5), (3, 9)))
    assert config.excluded_by_all == (3,)


@pytest.mark.parametrize(
    ("text", "normal"),
    [("exclude", "exclude"), (" IID ", "iid"), ("dirichlet", "dirichlet:0.5"),
     ("dirichlet:0.10", "dirichlet:0.1"), ("classes:3", "classes:3"), ("shards", "shards:2"),
     ("sizes", "sizes:linear"), ("sizes:exponential", "sizes:exponential")],
)  # fmt: skip
def test_split_is_kept_in_its_normal_spelling(text, normal):
    config = ExperimentConfig(split=text, excluded_digits=())
    assert config.split == normal
    assert config_from_run_config(config.to_run_config()) == config


@pytest.mark.parametrize(
    ("split", "message"),
    [("zipf", "unknown kind 'zipf' \\(known: exclude, iid, dirichlet:0.5"),
     ("dirichlet:0", "alpha, > 0"), ("dirichlet:x", "alpha"), ("classes:11", "1-10"),
     ("shards:0", ">= 1"), ("iid:3", "iid takes no parameter"), ("sizes:cubic", "linear, square")],
)  # fmt: skip
def test_bad_splits_say_what_is_wrong(split, message):
    with pytest.raises(ConfigError, match=message):
        ExperimentConfig(split=split)


def test_exclusions_belong_to_the_exclude_split():
    # the default exclusions mean "none given" and are dropped for other splits
    assert ExperimentConfig(split="iid").excluded_digits == ()
    assert ExperimentConfig(num_clients=5, split="iid", excluded_digits=default_exclusions(5))
    with pytest.raises(ConfigError, match="exclude split only"):
        ExperimentConfig(split="iid", excluded_digits=((1,), (2,), (3, 4)))


def test_scale_limits_and_min_clients():
    config = ExperimentConfig(
        num_clients=10_000, split="iid", num_rounds=1000, batch_size=1, min_train_clients=10_000
    )
    assert (config.num_clients, config.num_rounds) == (10_000, 1000)
    assert config.clients_per_round == 10_000
    with pytest.raises(ConfigError, match="num_clients must be between 2 and 10000"):
        ExperimentConfig(num_clients=10_001, split="iid")
    with pytest.raises(ConfigError, match="min_train_clients must be between 1 and 10000"):
        ExperimentConfig(num_clients=10_000, split="iid", min_train_clients=10_001)
    with pytest.raises(ConfigError, match="min_train_clients \\(4\\) is more than the 3"):
        ExperimentConfig(min_train_clients=4)
    with pytest.raises(ConfigError, match="model must be one of mlp, 2nn, cnn"):
        ExperimentConfig(model="resnet")


def test_parse_exclusions():
    assert parse_exclusions("1,3,7;2,5,8;4,6,9") == REFERENCE_EXCLUSIONS
    assert parse_exclusions(" 1, 3 ;;9") == ((1, 3), (), (9,))
    assert format_exclusions(parse_exclusions("0;1,2")) == "0;1,2"
    with pytest.raises(ConfigError, match="client 2 has '12', which is not a digit 0-9"):
        parse_exclusions("1;12")
    with pytest.raises(ConfigError, match="client 1 has 'a'"):
        parse_exclusions("a")


def test_default_exclusions_cycle_the_reference():
    assert default_exclusions(3) == REFERENCE_EXCLUSIONS
    assert default_exclusions(5) == REFERENCE_EXCLUSIONS + REFERENCE_EXCLUSIONS[:2]
    assert default_exclusions(2) == REFERENCE_EXCLUSIONS[:2]


def test_data_dir_falls_back_to_environment(monkeypatch):
    monkeypatch.setenv("FEDCORE_DATA_DIR", "/from/env")
    assert ExperimentConfig().resolved_data_dir() == "/from/env"
    assert ExperimentConfig(data_dir="/given").resolved_data_dir() == "/given"
    monkeypatch.chdir("/tmp")
    assert ExperimentConfig(data_dir="rel/mnist").resolved_data_dir() == "/tmp/rel/mnist"


def test_exclusions_not_given_are_the_reference_cycled_and_follow_the_clients():
    five = ExperimentConfig(num_clients=5)
    assert five.excluded_digits == default_exclusions(5)
    assert five.replace(num_clients=4).excluded_digits == default_exclusions(4)
    assert ExperimentConfig().replace(split="iid").replace(split="exclude") == ExperimentConfig()
    own = ExperimentConfig(excluded_digits=((1,), (2,), (3,)))
    with pytest.raises(ConfigError, match="given for 3 clients, but there are 4"):
        own.replace(num_clients=4)  # given exclusions are kept, never silently cycled


def test_split_strategy_and_privacy_are_parsed_once_into_frozen_specs():
    config = ExperimentConfig(
        split="dirichlet:0.10", strategy="fedprox:mu=0.5", privacy="server:noise=2"
    )
    assert (config.split_spec.kind, config.split_spec.value) == ("dirichlet", 0.1)
    assert config.strategy_spec.parameters == {"mu": 0.5}
    assert config.privacy_spec.parameters == {"noise": 2.0, "clip": 1.0, "delta": 1e-5}
    assert (config.split, config.strategy) == ("dirichlet:0.1", "fedprox:mu=0.5")
    with pytest.raises(AttributeError):
        config.split_spec.kind = "iid"  # frozen
    assert ExperimentConfig.from_dict(config.to_dict()) == config
    assert "split_spec" not in config.to_dict()


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"strategy": "krum:f=10"},
            "^strategy 'krum:f=10': Krum needs n >= 2f \\+ 3 clients a round to tolerate f "
            "faulty ones; this run has 3 clients a round, f must be at most 0",
        ),
        (
            {"strategy": "krum", "num_clients": 2},
            "this run has 2 clients a round, fewer than Krum's 3",
        ),
        (  # the clients of a round, not of the run
            {"strategy": "multikrum:f=2,m=1", "num_clients": 10, "fraction_train": 0.6},
            "this run has 6 clients a round, f must be at most 1",
        ),
        (
            {"strategy": "multikrum:m=5"},
            "^strategy 'multikrum:f=0,m=5': MultiKrum averages the m best of the n - f updates "
            "it trusts; with 3 clients a round and f=0, m must be at most 3",
        ),
        (
            {"strategy": "fedtrimmedavg"},
            "^strategy 'fedtrimmedavg:beta=0.2': with 3 clients a round it trims "
            "int\\(0.2 x 3\\) = 0 updates at each end, a plain mean; beta must be at least "
            "0.34 \\(or 0\\)",
        ),
        (
            {"strategy": "fedtrimmedavg:beta=0.3", "num_clients": 2},
            "beta must be 0: 2 updates cannot be trimmed",
        ),
        (
            {"strategy": "fedtrimmedavg:beta=0.5"},
            "^strategy 'fedtrimmedavg:beta=0.5': beta must be in \\[0, 0.5\\), got 0.5",
        ),
    ],
)
def test_a_robust_rule_that_cannot_work_for_the_clients_is_refused(changes, message):
    with pytest.raises(ConfigError, match=f"{message}$"):
        ExperimentConfig(**changes)


def test_robust_rules_within_their_limits():
    for strategy, clients in [("krum:f=1", 5), ("multikrum:f=1,m=4", 5), ("krum", 3),
                              ("fedtrimmedavg:beta=0.34", 3), ("fedtrimmedavg", 5),
                              ("fedtrimmedavg:beta=0", 2)]:  # fmt: skip
        config = ExperimentConfig(num_clients=clients, split="iid", strategy=strategy)
        assert config.clients_per_round == clients
    assert ExperimentConfig(num_clients=10, fraction_train=0.25, min_train_clients=3,
                            split="iid").clients_per_round == 3  # fmt: skip
