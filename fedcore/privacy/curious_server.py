"""The curious server: what a ServerApp can learn from the replies Flower delivers it.

It is honest but curious: it runs the protocol as written and looks at each client's
first update, as Flower hands it to the ServerApp (a model, or under SecAgg+ only
masked vectors it cannot read). From the update alone, with what the server already
knows (the global model it sent, the training recipe it set, the client's reported
number of examples, and public images of the same kind: the test set it evaluates
on), it infers which digits the client holds and how many (`label_leakage`) and
reconstructs training images (`inversion`).

Scoring is not part of the attack: to say how well it did, fedcore, which also knows
the split, compares each guess with the client's real data of that round.
"""

from __future__ import annotations

import threading

import torch
from flwr.app import Message

from fedcore.data.mnist import MnistData
from fedcore.data.partition import ClientPartition
from fedcore.experiment.config import ExperimentConfig
from fedcore.experiment.results import ClientLeakage
from fedcore.learning.local import round_sample
from fedcore.privacy.image_scores import best_match, proxies, recovered, shortlist, to_pixels
from fedcore.privacy.inversion import Recipe, analytic_inversion, optimisation_attack
from fedcore.privacy.label_leakage import infer_labels

# The optimisation attack replays the client's training: already at batch 8 its best
# image is a blur (about 19 dB, docs/privacy.md), and each step more costs another replay.
OPTIMISE_MAX_BATCH = 8
OPTIMISE_MAX_STEPS = 4
OPTIMISE_ITERATIONS = 300
MAX_PSNR_DB = 100.0  # identical images score infinity: written as this
# The public images the server estimates label shares on (the first of its test set):
# enough for a mean softmax to a few per mille, few enough to cost milliseconds.
REFERENCE_IMAGES = 2000


def image_bytes(image: torch.Tensor) -> list[int]:
    """A normalized-scale image as its 784 pixel values 0-255 (what the results keep)."""
    return (to_pixels(image)[0] * 255).round().int().tolist()


class CuriousServer:
    """`observe(sent, reply)` for every reply the ServerApp receives; `leakage()` at the
    end: per client, what it concluded from that client's first update."""

    def __init__(
        self,
        config: ExperimentConfig,
        data: MnistData,
        partitions: list[ClientPartition],
        stop: threading.Event | None = None,
    ) -> None:
        self.config, self.data, self.partitions = config, data, partitions
        self.stop = stop or threading.Event()
        self.found: dict[int, ClientLeakage] = {}
        self._proxies: torch.Tensor | None = None  # of every training image, for scoring

    def observe(self, sent: Message, reply: Message) -> None:
        """A client's reply to `sent`. Only a reply that carries a model (our ClientApp's
        `arrays` beside its `client` number) is one the server can read; SecAgg+'s
        messages carry masked shares instead, and are left alone."""
        content = reply.content
        if "arrays" not in content.array_records or "client" not in content.config_records:
            return
        client = int(content["client"]["client"])
        if client in self.found or "arrays" not in sent.content.array_records:
            return
        server_round = int(sent.content["config"]["server-round"])
        before = sent.content["arrays"].to_torch_state_dict()
        after = content["arrays"].to_torch_state_dict()
        num_examples = int(content["metrics"]["num-examples"])
        self.found[client] = self.attack(client, server_round, before, after, num_examples)

    def attack(
        self,
        client: int,
        server_round: int,
        before: dict[str, torch.Tensor],
        after: dict[str, torch.Tensor],
        num_examples: int,
    ) -> ClientLeakage:
        """The attacks on one update, then their scores against the truth."""
        config, recipe = self.config, Recipe.from_config(self.config)
        trained = recipe.trained_examples(num_examples)  # its images in this round
        public = slice(REFERENCE_IMAGES)
        labels = infer_labels(
            before, after, trained, recipe, self.data.test_x[public], self.data.test_y[public]
        )
        candidates, method = analytic_inversion(before, after, config.model), "analytic"
        if config.leakage == "optimise" and self._small_enough():
            method = "optimisation"
            candidates = optimisation_attack(
                before, after, config.model, labels.labels(trained), recipe,
                iterations=OPTIMISE_ITERATIONS, seed=config.seed + client,
                should_stop=self.stop.is_set,
            )  # fmt: skip
        indices = self._truth(client, server_round)
        fields: dict[str, object] = {"psnr_db": None, "ssim": None}
        if candidates is not None and len(candidates):
            near = indices[shortlist(candidates, self.proxies()[indices])]
            x = self.data.train_x[near]
            match = best_match(candidates, x)
            fields = {
                "psnr_db": min(match.psnr_db, MAX_PSNR_DB),
                "ssim": match.ssim,
                "method": method,
                "images_recovered": recovered(candidates, x),
                "reconstruction": image_bytes(candidates[match.candidate]),
                "matched": image_bytes(x[match.truth]),
            }
        return ClientLeakage(
            client=client,
            round=server_round,
            true_missing=self._missing(self.partitions[client - 1]),
            label_counts=torch.bincount(self.data.train_y[indices], minlength=10).tolist(),
            inferred_missing=list(labels.missing),
            label_counts_inferred=list(labels.counts),
            **fields,  # type: ignore[arg-type]
        )

    def _small_enough(self) -> bool:
        steps = (self.config.local_steps or 10**9) * self.config.local_epochs
        return self.config.batch_size <= OPTIMISE_MAX_BATCH and steps <= OPTIMISE_MAX_STEPS

    def _truth(self, client: int, server_round: int) -> torch.Tensor:
        """Where the images the client trained on in that round are in the training set."""
        partition = self.partitions[client - 1]
        return partition.indices[round_sample(partition.size, self.config, client, server_round)]

    def proxies(self) -> torch.Tensor:
        """Every training image's proxy (`image_scores.proxies`), made at the first use."""
        if self._proxies is None:
            self._proxies = proxies(self.data.train_x)
        return self._proxies

    def leakage(self) -> list[ClientLeakage]:
        """Every client, those whose update the server never read (SecAgg+) included."""
        return [self.found.get(p.client) or self._unseen(p) for p in self.partitions]

    def _missing(self, partition: ClientPartition) -> list[int]:
        """The digits the client holds no image of."""
        held = torch.bincount(self.data.train_y[partition.indices], minlength=10)
        return [d for d in range(10) if not held[d]]

    def _unseen(self, partition: ClientPartition) -> ClientLeakage:
        return ClientLeakage(
            client=partition.client,
            round=0,
            true_missing=self._missing(partition),
            label_counts=torch.bincount(
                self.data.train_y[self._truth(partition.client, 1)], minlength=10
            ).tolist(),
            inferred_missing=None,
            label_counts_inferred=None,
            psnr_db=None,
            ssim=None,
        )
