"""The page's settings, read without a page: the lab's address and its controls."""

from fedcore.app.from_page import (
    lab_config_from_controls,
    lab_settings_from_url,
    lab_url,
    write_lab_url,
)
from fedcore.experiment.config import ExperimentConfig
from fedcore.experiment.specs import default_exclusions


class Address(dict):
    """What the lab reads of `mo.query_params()`: every value of a key, the last one wins."""

    def get_all(self, key):
        return self[key]

    def remove(self, key):
        del self[key]

    def __setitem__(self, key, value):
        super().__setitem__(key, value if isinstance(value, list) else [value])


def test_the_address_sets_the_lab_and_names_what_it_could_not_use():
    address = Address(
        {"split": ["classes:2"], "clients": ["4"], "local-epochs": ["1"], "seed": ["abc"]}
    )
    address |= {"kiosk": ["true"], "colour": ["red"]}  # marimo's own, and nonsense
    config, problems = lab_settings_from_url(address, ExperimentConfig())
    assert (config.split, config.num_clients, config.local_epochs) == ("classes:2", 4, 1)
    assert config.seed == 42 and config.excluded_digits == ()
    assert problems == [
        "`colour` is not a lab setting (known: num-clients, split, model, strategy, privacy, "
        "attack, attackers, num-server-rounds, local-epochs, fraction-train, "
        "min-train-clients, dropout, target-accuracy, seed)",
        "`seed=abc`: seed must be a whole number, got 'abc'",
    ]


def test_an_attack_and_its_attackers_in_the_address_are_applied_together():
    address = Address({"num-clients": ["5"], "attackers": ["2,4"], "attack": ["sign-flip"]})
    config, problems = lab_settings_from_url(address, ExperimentConfig())
    assert (config.attack, config.attacker_clients, problems) == ("sign-flip:scale=4", (2, 4), [])
    alone, problems = lab_settings_from_url(Address({"attack": ["noise"]}), ExperimentConfig())
    assert alone.attack == "none"
    assert problems == ["`attack=noise`: attack noise:std=1 needs attackers: --attackers K "
                        "(clients 1..K) or their numbers, e.g. '2,5,7'"]  # fmt: skip
    write_lab_url(address := Address(), config)
    assert lab_settings_from_url(address, ExperimentConfig()) == (config, [])


def test_the_lab_written_in_the_address_reads_back_the_same():
    config = ExperimentConfig(num_clients=5, split="dirichlet:0.1", strategy="fedprox:mu=0.5")
    address = Address({"clients": ["9"]})  # an alias: the run-config key replaces it
    write_lab_url(address, config)
    assert "clients" not in address and address["num-clients"] == ["5"]
    assert lab_settings_from_url(address, ExperimentConfig()) == (config, [])
    assert lab_url(config)["strategy"] == "fedprox:mu=0.5"


def test_the_controls_give_a_config_with_the_exclusions_cycled():
    kinds = {"split": "exclude", "strategy": "fedprox", "privacy": "off", "attack": "none"}
    parameters = {"split": {"dirichlet": 0.1}, "strategy": {"fedprox": "mu=0.5"}, "privacy": {},
                  "attack": {"backdoor": "target=3"}}  # fmt: skip
    values = {"num_clients": 5.0, "fraction_train": 0.30000000000000004, "seed": 7,
              "attackers": "2"}  # fmt: skip
    own = ExperimentConfig(excluded_digits=((1,), (2,), (3,)))  # `-- --exclude ...`
    config = lab_config_from_controls(kinds, parameters, values, own)
    assert config.excluded_digits == default_exclusions(5)  # the lab has no digit pickers
    assert (config.num_clients, config.fraction_train, config.strategy) == (
        5,
        0.3,
        "fedprox:mu=0.5",
    )
    assert (config.attack, config.attackers) == ("none", "0")  # no attack: no attackers
    attacked = lab_config_from_controls(kinds | {"attack": "backdoor"}, parameters, values, own)
    assert (attacked.attack, attacked.attacker_clients) == (
        "backdoor:target=3,share=0.5,boost=0",
        (1, 2),
    )
    dirichlet = lab_config_from_controls(kinds | {"split": "dirichlet"}, parameters, values, own)
    assert (dirichlet.split, dirichlet.excluded_digits) == ("dirichlet:0.1", ())
