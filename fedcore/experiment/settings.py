"""Every setting of an experiment, described once.

`ExperimentConfig` takes its defaults and limits from here and validates with
them, the CLI makes its flags from here, Flower's run config its keys, and the
app its controls (`control_range`). A new setting is one more row.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Control = Literal["slider", "number", "own"]  # "own": the app draws a control of its own


@dataclass(frozen=True)
class Setting:
    """One setting: its field in `ExperimentConfig`, where it is spelled elsewhere, its limits."""

    name: str  # the ExperimentConfig field
    kind: type  # int, float or str
    default: object
    key: str  # Flower's run-config key (`[tool.flwr.app.config]`)
    flag: str  # the CLI flag (also `marimo run app.py -- FLAG VALUE`)
    label: str  # the app's label
    help: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False  # `low` itself is not allowed
    control: Control = "number"
    step: float | None = None  # the app's step (numbers: also its lowest value when `low_open`)
    app_high: float | None = None  # the app's control stops here (see `APP_LIMITS_WHY`)
    choices: tuple[str, ...] = ()  # the values a text setting may take (empty: any)

    @property
    def dest(self) -> str:
        """The attribute argparse gives the flag."""
        return self.flag.removeprefix("--").replace("-", "_")

    def describe_range(self) -> str:
        """`", in (0, 10]"` or `", 2-10"`, for help texts; empty without limits."""
        if self.low is None or self.high is None:
            return ""
        if self.kind is float:
            return f", in {'(' if self.low_open else '['}{self.low:g}, {self.high:g}]"
        return f", {int(self.low)}-{int(self.high)}"


SETTINGS: tuple[Setting, ...] = (
    Setting("num_clients", int, 3, "num-clients", "--clients", "Clients",
            "how many clients share the MNIST training set", 2, 10_000, control="slider",
            app_high=20),
    Setting("split", str, "exclude", "split", "--split", "Data split",
            "how the training set is split: exclude (IID, then each client's --exclude digits "
            "removed), iid, dirichlet:ALPHA (label skew), classes:K (K digits per client), "
            "shards:K (K label-sorted shards per client), sizes[:linear|square|exponential] "
            "(unequal sizes)", control="own"),
    Setting("excluded_digits", str, "1,3,7;2,5,8;4,6,9", "exclude", "--exclude",
            "Which digits does each client not have?",
            "excluded digits per client, ';' between clients (default: the reference, cycled; "
            "the exclude split only)", control="own"),
    Setting("model", str, "mlp", "model", "--model", "Model",
            "mlp (784-128-10), 2nn (784-200-200-10, McMahan et al.), cnn (McMahan et al.), "
            "lenet (conv 6, conv 16, 120, 84: NIID-Bench's simple CNN) or logreg (784-10 "
            "logistic regression, FLUTE's)",
            control="own", choices=("mlp", "2nn", "cnn", "lenet", "logreg")),
    Setting("strategy", str, "fedavg", "strategy", "--strategy", "Strategy",
            "Flower's aggregation rule and its main parameters: fedavg, fedprox:mu=0.1, "
            "fedavgm:lr=1,momentum=0.9, fedadam:eta=0.1,tau=0.001, fedyogi:eta=0.01,tau=0.001, "
            "fedadagrad:eta=0.1,tau=0.001, fedmedian, fedtrimmedavg:beta=0.2, krum:f=0, "
            "multikrum:f=0,m=1; and, written on Flower's FedAvg, scaffold:lr=1 (SCAFFOLD's "
            "control variates, lr the server's learning rate; Karimireddy et al. 2020) and "
            "fednova (updates normalized by each client's local steps; Wang et al. 2020) "
            "(parameters left out take these values)", control="own"),
    Setting("privacy", str, "off", "privacy", "--privacy", "Differential privacy",
            "off; central DP, Flower's fixed-clipping DP wrapper with its accountant (fedavg "
            "or fedprox): server:noise=1,clip=1,delta=1e-05 (the server clips every update) or "
            "client:noise=1,clip=1,delta=1e-05 (each client clips its own); local DP, Flower's "
            "LocalDpMod: local:epsilon=10,clip=1,delta=1e-05 (each client clips its update and "
            "adds Gaussian noise before sending it); secagg (Flower's SecAgg+: the server sees "
            "only the sum of the updates; fedavg)",
            control="own"),
    Setting("attack", str, "none", "attack", "--attack", "Attack",
            "what the attacking clients send: none, label-flip (it trains on labels 9 - y), "
            "sign-flip:scale=4 (-scale x its honest update), noise:std=1 (Gaussian noise as its "
            "update), scale:factor=10 (its honest update boosted: model replacement), "
            "backdoor:target=0,share=0.5,boost=0 (a trigger stamped on that share of its images, "
            "relabelled target, the update boosted; boost 0: the clients per round over the "
            "attackers, Bagdasaryan et al. 2020)", control="own"),
    Setting("attackers", str, "0", "attackers", "--attackers", "Attackers",
            "which clients attack: K (clients 1..K) or their numbers (e.g. '2,5,7'; one client: "
            "'4,'); 0 with no attack", control="own"),
    Setting("leakage", str, "off", "leakage", "--leakage", "What the server learns",
            "the curious server's attacks on each client's first update: off; analytic (which "
            "digits it holds, and how many, from the output layer; its images from the first "
            "layer); optimise (also an optimisation attack in the style of DLG: small batches "
            "and few local steps only)", control="own", choices=("off", "analytic", "optimise")),
    Setting("num_rounds", int, 3, "num-server-rounds", "--rounds", "Federated rounds",
            "federated rounds", 1, 10_000, control="slider", app_high=50),
    Setting("local_epochs", int, 10, "local-epochs", "--epochs", "Local epochs",
            "epochs each client trains per round, and the isolated models' epochs", 1, 20,
            control="slider"),
    Setting("batch_size", int, 64, "batch-size", "--batch-size", "Batch size",
            "SGD batch size", 1, 60_000, step=1),
    Setting("local_steps", int, 0, "local-steps", "--local-steps", "Local steps",
            "0: each client trains on all its images; N > 0: on N batches of them (N x "
            "batch-size images) drawn afresh each round, so a round is N x local-epochs SGD "
            "steps (what the privacy chapter's attacks read from)", 0, 10_000, step=1),
    Setting("learning_rate", float, 0.01, "learning-rate", "--lr", "Learning rate",
            "SGD learning rate", 0.0, 10.0, low_open=True, step=0.0001),
    Setting("momentum", float, 0.9, "momentum", "--momentum", "Momentum",
            "SGD momentum", 0.0, 0.999, step=0.001),
    Setting("fraction_train", float, 1.0, "fraction-train", "--fraction",
            "Fraction of clients per round", "fraction of clients that train in each round",
            0.0, 1.0, low_open=True, control="slider", step=0.1),
    Setting("min_train_clients", int, 1, "min-train-clients", "--min-clients",
            "At least this many clients per round",
            "fewest clients that train in a round, whatever the fraction", 1, 10_000, step=1,
            app_high=20),
    Setting("dropout", float, 0.0, "dropout", "--dropout", "Client dropout",
            "probability that a sampled client fails to answer in a round (drawn from the seed)",
            0.0, 0.9, control="slider", step=0.05),
    Setting("target_accuracy", float, 97.0, "target-accuracy", "--target",
            "Target test accuracy (%)",
            "the results say after how many rounds the global model first reached this test "
            "accuracy (percent)", 0.0, 100.0, low_open=True, step=0.5),
    Setting("stop_at_target", str, "no", "stop-at-target", "--stop-at-target",
            "Stop at the target", "yes: the federated run ends after the first round that "
            "reaches the target accuracy (rounds-to-target tables need no more)",
            control="own", choices=("no", "yes")),
    Setting("seed", int, 42, "seed", "--seed", "Seed",
            "seeds the split, the initial weights, the batch order and client sampling",
            0, 2**31 - 1, step=1),
    Setting("data_dir", str, "", "data-dir", "--data-dir", "Data folder",
            "folder with the four MNIST IDX files (default: $FEDCORE_DATA_DIR, else the "
            "Hugging Face Hub)", control="own"),
)  # fmt: skip

BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}

APP_LIMITS_WHY = (
    "The page's sliders stop at 20 clients and 50 rounds: beyond that a run takes minutes "
    "and its charts stop being readable. The CLI, sweeps and `flwr run .` take up to 10,000 "
    "clients and 10,000 rounds."
)


def control_range(setting: Setting) -> tuple[float, float, float]:
    """`(start, stop, step)` of the app's control: the setting's own limits, an
    open lower limit starting one step above it."""
    if setting.low is None or setting.high is None:
        raise ValueError(f"{setting.name} has no range")
    step = setting.step or 1
    start = setting.low + step if setting.low_open else setting.low
    return start, setting.app_high or setting.high, step
