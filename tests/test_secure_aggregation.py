"""The privacy settings that change what a client sends: Flower's SecAgg+ (`secagg`)
and Flower's LocalDpMod (`local`), on real MNIST.

Most runs go through Flower's simulation runtime in this process (`run_in_process`),
so that the test can see what the ServerApp sees and the global models; each
ClientApp call still crosses a pickle round trip both ways, as it crosses the pipe
to an engine worker. One run goes through the engine's own worker processes.
"""

import math
import pickle
import threading
import time
from concurrent.futures import Future

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.common import bytes_to_ndarray
from flwr.common.secure_aggregation.secaggplus_constants import RECORD_KEY_CONFIGS, Key
from flwr.supercore.task_identity import TaskIdentity

from fedcore.data.mnist import load_mnist
from fedcore.data.partition import partition_clients
from fedcore.engine.flower_runtime import run_server_main_on_pool
from fedcore.engine.pool import TaskError
from fedcore.engine.worker import run_client_app
from fedcore.experiment.progress import FederatedRunError
from fedcore.flower import rounds
from fedcore.flower.client_app import local_dp_mod
from fedcore.flower.strategies import flower_strategy, with_privacy
from fedcore.learning.local import drops_out

QUANTUM = 2 * 8.0 / 2**22  # one step of SecAgg+'s quantization (Flower's defaults)
MLP_PARAMETERS = 101_770


def _copied(value):
    return pickle.loads(pickle.dumps(value))


class InlinePool:
    """The engine's worker pool as `PoolRuntime` uses it, with one worker: this
    process. What goes to the worker and what comes back is a copy, so a ClientApp's
    updated context reaches its next message only if Flower's runtime stores it."""

    size = 1

    def submit(self, kind, args):
        future = Future()
        try:
            future.set_result(_copied(run_client_app(*_copied(args))))
        except Exception as error:
            future.set_exception(TaskError(str(error)))
        return future


@pytest.fixture
def global_models(monkeypatch):
    """round -> the global model's weights the server evaluated after that round."""
    seen = {}
    evaluate = rounds.GlobalEvaluation.__call__

    def spy(self, server_round, arrays):
        seen[server_round] = dict(zip(arrays.keys(), arrays.to_numpy_ndarrays(), strict=True))
        return evaluate(self, server_round, arrays)

    monkeypatch.setattr(rounds.GlobalEvaluation, "__call__", spy)
    return seen


def run_in_process(config, **hooks):
    """`run_federated` (with `hooks`: observe, on_progress, stop) in this process."""
    run_config = config.to_run_config() | {"data-dir": config.resolved_data_dir()}
    return run_server_main_on_pool(
        lambda grid: rounds.run_federated(grid, config, **hooks),
        run_config,
        config.num_clients,
        InlinePool(),
    )


def seed_where(config, dropped):
    """The first seed with which exactly `dropped` clients drop out in round 1."""
    return next(
        seed
        for seed in range(1000)
        if sum(drops_out(config.replace(seed=seed), c, 1) for c in range(1, 4)) == dropped
    )


def quantization_bound(config, clients):
    """SecAgg+'s worst error on the averaged weights: each client's weighted weights
    are off by under one quantum (stochastic rounding) plus half a float32 step at 8
    (Flower shifts float32 weights by the clipping range 8 before it scales them), and
    the sum is divided by the clients' weights, each its examples over the largest
    partition's."""
    sizes = [p.size for p in partition_clients(load_mnist(config).train_y, config)]
    per_client = QUANTUM + 2.0**-21
    return len(clients) * per_client / sum(sizes[c - 1] / max(sizes) for c in clients)


# Unequal partitions (10k, 20k, 30k images): a mean that did not weigh by examples
# would be off by 0.02 here, the bound is about 6e-6.
@pytest.mark.parametrize("dropped", [0, 1])
def test_secagg_is_fedavg_up_to_its_quantization(small_config, global_models, dropped):
    config = small_config.replace(split="sizes:linear", dropout=0.3 if dropped else 0.0)
    config = config.replace(seed=seed_where(config, dropped)) if dropped else config
    plain = run_in_process(config)
    plain_model = global_models[1]
    events = []
    secure = run_in_process(config.replace(privacy="secagg"), on_progress=events.append)
    secure_model = global_models[1]

    trained = [c for c in (1, 2, 3) if not drops_out(config, c, 1)]
    assert len(trained) == 3 - dropped and len(secure.failures) == dropped
    bound = quantization_bound(config, trained)
    for key, weights in plain_model.items():
        assert secure_model[key].dtype == weights.dtype  # float32, not SecAgg+'s float64
        assert np.abs(secure_model[key] - weights).max() < bound + 1e-7  # + float32 rounding
    assert abs(secure.accuracy - plain.accuracy) <= 0.001  # 10 of the 10,000 test images
    assert secure.accuracy > secure.history[0].accuracy + 0.3  # it learned

    done = secure.history[1]
    assert done.update_norm == {} and done.update_cosine == {}  # SecAgg+ hides each update
    assert done.client_loss == plain.history[1].client_loss  # sent in plain: recorded
    assert list(done.client_loss) == [str(c) for c in trained]
    assert done.messages_sent == 4 * 3 - dropped  # four exchanges; none to the dropped after
    assert done.messages_received == 4 * 3 - 2 * dropped
    assert done.bytes_received > len(trained) * MLP_PARAMETERS * 8  # masked vectors: int64
    assert done.epsilon is None
    assert sorted(e.client for e in events if e.kind == "client-done") == trained


def test_the_server_sees_only_masked_vectors(small_config):
    seen = []
    run_in_process(small_config.replace(privacy="secagg"), observe=lambda m, r: seen.append(r))
    assert len(seen) == 4 * 3  # every reply of the four stages
    assert all(len(a) == 0 for r in seen for a in r.content.array_records.values())
    masked = [r for r in seen if Key.MASKED_PARAMETERS in r.content[RECORD_KEY_CONFIGS]]
    assert len(masked) == 3
    for reply in masked:
        vectors = reply.content[RECORD_KEY_CONFIGS][Key.MASKED_PARAMETERS]
        values = np.concatenate([bytes_to_ndarray(v).ravel() for v in vectors[1:]])
        assert values.size == MLP_PARAMETERS
        # Unmasked, the quantized weights (near 0, within +-8) would sit near 2**21;
        # masked they are uniform over [0, 2**32).
        assert abs(values.mean() / 2**32 - 0.5) < 0.01


def test_secagg_keeps_the_model_when_too_few_clients_are_left(small_config, global_models):
    config = small_config.replace(privacy="secagg", dropout=0.3)
    config = config.replace(seed=seed_where(config, dropped=2))  # 1 of 3 left; it needs 2
    result = run_in_process(config)
    assert len(result.failures) == 3  # the two dropouts, and the round SecAgg+ gave up
    assert "too few clients left for SecAgg+" in result.failures[-1]
    assert result.history[1].accuracy == result.history[0].accuracy
    assert all(np.array_equal(global_models[0][k], global_models[1][k]) for k in global_models[0])


def _client_manager_threads():
    return [t for t in threading.enumerate() if "_update_client_manager" in t.name]


def test_stop_ends_a_secagg_round_and_its_threads(small_config):
    stop = threading.Event()

    def on_progress(event):
        if event.kind == "client-done":
            stop.set()

    with pytest.raises(FederatedRunError, match="stopped"):
        run_in_process(small_config.replace(privacy="secagg"), on_progress=on_progress, stop=stop)
    deadline = time.monotonic() + 7  # Flower's client-manager thread looks every 5 s
    while _client_manager_threads() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _client_manager_threads() == []


def test_secagg_on_the_engines_workers(engine, small_config):
    """Two rounds across the worker processes: each SecAgg+ stage finds the state
    the previous one left in the node's context, and round 2 starts over."""
    config = small_config.replace(num_rounds=2, batch_size=256)
    plain = engine.submit(config, "federated", use_cache=False).result().federated
    secure = engine.submit(config.replace(privacy="secagg"), "federated", use_cache=False)
    secure = secure.result().federated
    assert secure.failures == []
    assert [len(r.client_loss) for r in secure.history] == [0, 3, 3]
    assert abs(secure.accuracy - plain.accuracy) < 0.005


# ------------------------------------------------------------------ local DP


def gaussian_std(epsilon, clip, delta):
    """Flower's LocalDpMod std with sensitivity 2C (`local_dp_mod`)."""
    return 2 * clip * math.sqrt(2 * math.log(1.25 / delta)) / epsilon


@pytest.fixture
def task_identity(monkeypatch):
    """What a ServerApp process has: Flower stamps it on every message it makes."""
    for name, value in (("_task_id", 1), ("_run_id", 1), ("_node_id", 0)):
        monkeypatch.setattr(TaskIdentity, name, value)


def test_local_dp_clips_to_c_then_adds_flowers_noise(task_identity, small_config):
    config = small_config.replace(privacy="local:epsilon=2,clip=0.5,delta=1e-5")
    rng = np.random.default_rng(0)
    start = rng.normal(size=200_000).astype(np.float32)
    update = rng.normal(size=start.size).astype(np.float32)
    update *= 1000 / np.linalg.norm(update)  # 2000 times the clipping norm
    sent = Message(
        RecordDict({"arrays": ArrayRecord({"w": Array(start)}), "config": ConfigRecord()}),
        dst_node_id=1,
        message_type="train",
    )

    def train(msg, context):
        trained = msg.content["arrays"].to_numpy_ndarrays()[0] + update
        content = RecordDict(
            {
                "arrays": ArrayRecord({"w": Array(trained)}),
                "metrics": MetricRecord({"num-examples": 100}),
                "client": ConfigRecord({"client": 1, "epoch-losses": [0.5]}),
            }
        )
        return Message(content, reply_to=msg)

    context = Context(1, 1, {}, RecordDict(), config.to_run_config())
    reply = local_dp_mod(sent, context, train)
    noise = reply.content["arrays"].to_numpy_ndarrays()[0] - start - update * 0.5 / 1000
    std = gaussian_std(2, 0.5, 1e-5)
    assert noise.std() == pytest.approx(std, rel=0.01)
    assert abs(noise.mean()) < 5 * std / math.sqrt(noise.size)
    # nothing of the unclipped update is left in it (clipped first, then noised; noised
    # first, the clipping would have shrunk the noise too, far below its std)
    direction = update / np.linalg.norm(update)
    assert abs(noise @ direction) < 5 * std
    assert list(reply.content.config_records) == ["client"]  # the other records pass


def test_local_dp_in_a_run(small_config):
    """What the server receives: the update clipped to C plus noise of Flower's std
    (a small noise here, so that the clipped update shows: |d|^2 = C^2 + std^2 n)."""
    config = small_config.replace(privacy="local:epsilon=1000,clip=0.5,delta=1e-5")
    seen = []
    result = run_in_process(config, observe=lambda m, r: seen.append((m, r)))
    assert result.failures == [] and len(seen) == 3
    noise_power = gaussian_std(1000, 0.5, 1e-5) ** 2 * MLP_PARAMETERS
    for sent, reply in seen:
        before = np.concatenate([a.ravel() for a in sent.content["arrays"].to_numpy_ndarrays()])
        after = np.concatenate([a.ravel() for a in reply.content["arrays"].to_numpy_ndarrays()])
        moved = float(((after - before).astype(np.float64) ** 2).sum())
        assert moved == pytest.approx(0.5**2 + noise_power, abs=0.06)  # 5 sd of the estimate


def test_local_dp_leaves_the_strategy_plain(small_config):
    config = small_config.replace(privacy="local")
    strategy = flower_strategy(config)
    assert strategy.weighted_by_key == "num-examples"  # no accountant to need uniform weights
    assert with_privacy(strategy, config) is strategy
