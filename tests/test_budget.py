"""What a run costs, and what a visitor of the page may run: the estimate, the page's
limits, the server's budget and its one-paragraph refusal (no engine, no page)."""

import pytest

from fedcore.app.budget import DEFAULT_MAX_RUN_MINUTES, Budget, beyond_page_limits
from fedcore.engine.cost import MODEL_COSTS, cli_command, duration_text, estimate_seconds
from fedcore.experiment.config import ExperimentConfig
from fedcore.experiment.specs import ConfigError
from fedcore.learning.models import MODELS

PAGE = ExperimentConfig()  # the settings a server starts from without flags
# What `?num-clients=100&num-server-rounds=1000&local-epochs=20&model=cnn` asks the lab for
FLOOD = PAGE.replace(num_clients=100, num_rounds=1000, local_epochs=20, model="cnn")


def test_every_model_has_a_cost():
    assert set(MODEL_COSTS) == set(MODELS)


def test_the_estimate_is_linear_in_the_rounds_and_the_epochs():
    small = ExperimentConfig(num_rounds=1, local_epochs=1)

    def seconds(**changes):
        return estimate_seconds(small.replace(**changes), "federated", cores=2)

    assert seconds(num_rounds=10) - seconds() == pytest.approx(
        9 * (seconds(num_rounds=2) - seconds())
    )
    assert seconds(local_epochs=10) - seconds() == pytest.approx(
        9 * (seconds(local_epochs=2) - seconds())
    )
    assert seconds(num_rounds=2) > seconds() and seconds(local_epochs=2) > seconds()


def test_the_estimate_follows_the_model_the_batches_the_cores_and_the_phase():
    small = ExperimentConfig(num_rounds=1, local_epochs=1)
    one = estimate_seconds(small, "federated", cores=2)
    assert estimate_seconds(small.replace(model="cnn"), "federated", cores=2) > one
    assert estimate_seconds(small.replace(batch_size=1), "federated", cores=2) > one
    assert estimate_seconds(small, "federated", cores=1) > one  # fewer cores, longer
    half = small.replace(num_clients=10, fraction_train=0.5)
    assert estimate_seconds(half, "federated") < estimate_seconds(
        half.replace(fraction_train=1.0), "federated"
    )
    # the baseline adds the rounds x epochs of one model trained alone
    assert estimate_seconds(small, "all") > estimate_seconds(small, "story")


def test_duration_text_is_rough():
    assert duration_text(12.2) == "about 13 s"
    assert duration_text(700) == "about 12 min"
    assert duration_text(3.5 * 3600) == "about 3.5 h"
    assert duration_text(3 * 86400) == "about 3 days"


def test_the_page_and_the_story_fit_the_default_budget():
    budget = Budget(DEFAULT_MAX_RUN_MINUTES, PAGE)
    assert budget.refusal(PAGE, "story") is None
    assert budget.refusal(PAGE, "all") is None
    assert budget.time_limit_seconds == 2 * 60 * DEFAULT_MAX_RUN_MINUTES


def test_a_flood_from_the_address_is_refused_with_what_it_asked_and_the_command():
    refusal = Budget(DEFAULT_MAX_RUN_MINUTES, PAGE).refusal(FLOOD, "all")
    assert refusal is not None
    print(refusal)
    cost = duration_text(estimate_seconds(FLOOD, "all"))
    assert refusal.startswith(
        "**This run was not queued.** You asked for exclude, 100 clients, cnn, 1000 rounds "
        f"of 20 epochs, batch size 64: {cost} of this machine, beyond the page's limits "
        "(clients up to 20; federated rounds up to 50) and over this server's budget of "
        "5 min per run. The command line has no such limits:"
    )
    assert refusal.endswith(f"`{cli_command(FLOOD, 'all')}`")
    assert "python -m fedcore run --phase all --clients 100" in refusal


def test_within_the_page_but_over_the_budget():
    heavy = PAGE.replace(num_clients=20, num_rounds=50, local_epochs=20, model="cnn")
    assert beyond_page_limits(heavy, PAGE) == []
    refusal = Budget(DEFAULT_MAX_RUN_MINUTES, PAGE).refusal(heavy, "story")
    assert refusal is not None
    assert "of this machine, over this server's budget of 5 min per run." in refusal
    assert Budget(10_000, PAGE).refusal(heavy, "story") is None  # a larger budget allows it


def test_the_operators_settings_widen_the_page():
    operator = PAGE.replace(num_rounds=200)  # `marimo run app.py -- --rounds 200`
    assert beyond_page_limits(PAGE.replace(num_rounds=200), operator) == []
    assert beyond_page_limits(PAGE.replace(num_rounds=201), operator) == [
        "federated rounds up to 200"
    ]


@pytest.mark.parametrize("minutes", ["soon", 0, -3, "inf", "nan", True])
def test_a_bad_budget_is_one_line(minutes):
    with pytest.raises(ConfigError, match=r"^--max-run-minutes must be a number of minutes "):
        Budget.from_cli(minutes, PAGE)


def test_the_budget_from_the_command_line():
    assert Budget.from_cli(10, PAGE).max_run_minutes == 10
    assert Budget.from_cli("2.5", PAGE).time_limit_seconds == 300


def test_the_page_says_what_a_run_costs():
    budget = Budget(DEFAULT_MAX_RUN_MINUTES, PAGE)
    assert (
        budget.cost_of(PAGE, "all")
        == f"{duration_text(estimate_seconds(PAGE, 'all'))} on this server"
    )
