"""Sampling follows partitions, not node ids: one seed trains the same clients under
`flwr run .` (random node ids, partitions in registration order) as in the engine.

The server asks every SuperNode once which partition it holds (a query message that
every mod passes through) and the strategies sample from the nodes in partition order.
"""

import json
import random
import threading
from dataclasses import dataclass
from uuid import uuid4

import pytest
from flwr.app import Context, Error, Message, MessageType, RecordDict

from fedcore.experiment.progress import FederatedRunError
from fedcore.flower import rounds
from fedcore.flower.client_app import build_client_app

from .test_flwr_run import flwr, local_flower_home
from .test_strategies import task_identity  # noqa: F401  (a fixture)

NUM_CLIENTS = 10
SAMPLING = "split='iid' exclude='' fraction-train=0.3 num-server-rounds=2 local-epochs=1"


def query(node: int) -> Message:
    return Message(RecordDict(), dst_node_id=node, message_type=MessageType.QUERY)


@dataclass
class Node:
    node_id: int
    name: str = ""


class FakeGrid:
    """A federation of `partitions` (node id -> partition id) whose ClientApps (ours,
    with every mod) answer in this process; nodes in `silent` never answer."""

    def __init__(self, partitions, run_config, silent=(), num_partitions=None):
        self.partitions, self.silent = partitions, set(silent)
        self.num_partitions = num_partitions or {}
        self.app = build_client_app(run_config)
        self.replies: dict[str, Message] = {}
        self.pushed: list[Message] = []

    def get_node_ids(self):
        return list(self.partitions)

    def get_nodes(self):
        return [Node(n) for n in self.partitions]

    def push_messages(self, messages):
        ids = []
        for message in messages:
            message.metadata.__dict__["_message_id"] = str(uuid4())
            self.pushed.append(message)
            node = message.metadata.dst_node_id
            if node not in self.silent:
                self.replies[message.metadata.message_id] = self._answer(message, node)
            ids.append(message.metadata.message_id)
        return ids

    def _answer(self, message, node):
        node_config = {
            "partition-id": self.partitions[node],
            "num-partitions": self.num_partitions.get(node, len(self.partitions)),
        }
        try:
            return self.app(message, Context(1, node, node_config, RecordDict(), {}))
        except Exception as error:  # as Flower's runtimes answer a ClientApp that raised
            return Message(Error(code=1, reason=str(error)), reply_to=message)

    def pull_messages(self, message_ids):
        return [self.replies.pop(i) for i in list(message_ids) if i in self.replies]


def random_federation(seed: int) -> dict[int, int]:
    """Node id -> partition, node ids random and partitions in registration order (as
    under `flwr run .`)."""
    rng = random.Random(seed)
    return {rng.getrandbits(63): partition for partition in range(NUM_CLIENTS)}


@pytest.mark.parametrize(
    "privacy", ["off", "local:epsilon=1,clip=1,delta=1e-5", "client:noise=1,clip=1,delta=1e-5",
                "secagg"],
)  # fmt: skip
def test_sampling_picks_the_same_partitions_whatever_the_node_ids(
    task_identity,  # noqa: F811
    small_config,
    privacy,
):
    """The query goes through every privacy mod untouched, and a seeded sample of
    the node ids so ordered is the same partitions in two federations."""
    config = small_config.replace(num_clients=NUM_CLIENTS, split="iid", privacy=privacy)
    sampled = []
    for seed in (1, 2):
        federation = random_federation(seed)
        grid = FakeGrid(federation, config.to_run_config())
        partitions = rounds.partition_order(grid, threading.Event())
        assert partitions == federation
        assert all(m.metadata.message_type == MessageType.QUERY for m in grid.pushed)
        assert len(grid.pushed) == NUM_CLIENTS  # once each
        ordered = rounds.ReportingGrid(grid, len, threading.Event(), partitions=partitions)
        nodes = ordered.get_node_ids()
        assert [federation[n] for n in nodes] == list(range(NUM_CLIENTS))
        random.seed(config.seed)
        sampled.append([federation[n] for n in random.sample(nodes, 3)])
    assert sampled[0] == sampled[1]
    # without the order, the sorted random node ids sample other partitions
    unordered = [
        random.seed(config.seed) or [f[n] for n in random.sample(sorted(f), 3)]
        for f in map(random_federation, (1, 2))
    ]
    assert unordered[0] != unordered[1]


def test_nodes_that_do_not_say_their_partition_are_named(
    task_identity,  # noqa: F811
    small_config,
    monkeypatch,
):
    monkeypatch.setattr(rounds, "PARTITION_QUERY_SECONDS", 0.3)
    config = small_config.replace(num_clients=NUM_CLIENTS, split="iid")
    federation = random_federation(3)
    silent, other = sorted(federation)[:2]
    grid = FakeGrid(federation, config.to_run_config(), silent=[silent], num_partitions={other: 7})
    with pytest.raises(FederatedRunError) as raised:
        rounds.partition_order(grid, threading.Event())
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith("2 of 10 SuperNodes did not say which partition they hold: ")
    assert f"SuperNode {silent}: no answer in 0.3 s" in message
    assert f"SuperNode {other}: this SuperNode is partition {federation[other]} of 7, " in message


def test_the_engines_grid_is_not_asked():
    """The engine registers its nodes with partitions in node-id order."""
    from fedcore.engine.flower_runtime import PushingGrid

    assert rounds.lists_partitions_in_order(PushingGrid.__new__(PushingGrid)) is False
    grid = PushingGrid.__new__(PushingGrid)
    grid.replies_arrived = threading.Event()
    assert rounds.lists_partitions_in_order(grid)
    assert not rounds.lists_partitions_in_order(FakeGrid({}, {}))


# ------------------------------------------------------------------ flwr run .


@pytest.fixture(scope="module")
def flwr_home_10(tmp_path_factory, mnist_dir):
    """A fresh Flower home with a 10-SuperNode local simulation; everything stopped after."""
    home = tmp_path_factory.mktemp("flwr-home-10")
    with local_flower_home(home, mnist_dir, NUM_CLIENTS) as env:
        yield env


def test_flwr_run_with_sampling_is_the_engines_run_every_time(
    flwr_home_10, tmp_path, engine, small_config
):
    config = small_config.replace(
        num_clients=NUM_CLIENTS, split="iid", excluded_digits=(), fraction_train=0.3, num_rounds=2
    )
    expected = engine.submit(config, "federated", use_cache=False).result().federated
    runs = []
    for attempt in (1, 2):
        results = tmp_path / f"results-{attempt}"
        done = flwr(
            flwr_home_10, "run", ".", "--stream", "--run-config",
            f"num-clients={NUM_CLIENTS} {SAMPLING} results-dir='{results}'",
        )  # fmt: skip
        assert done.returncode == 0, done.stdout + done.stderr
        runs.append(json.loads((results / "latest.json").read_text())["federated"])
    for federated in runs:
        assert federated["accuracy"] == expected.accuracy
        assert federated["confusion"] == expected.confusion
        for got, want in zip(federated["history"], expected.history, strict=True):
            assert set(got["client_loss"]) == set(want.client_loss)  # the same clients
            assert got["messages_sent"] == want.messages_sent  # no query in a round's count
            assert got["messages_received"] == want.messages_received
    assert [len(r["client_loss"]) for r in runs[0]["history"]] == [0, 3, 3]
