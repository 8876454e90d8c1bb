"""What a malicious client does instead of honest training: pure functions on its
data (before training) and on its update (after), so that the same attack runs
wherever the ClientApp runs (the engine, `flwr run .`, the deployment engine).

- `label-flip`: trains on its images with every label y replaced by 9 - y.
- `sign-flip:scale=S`: sends the global weights minus S x its honest update.
- `noise:std=S`: sends the global weights plus Gaussian noise of standard deviation S
  (its update is noise, nothing learned).
- `scale:factor=F`: sends its honest update boosted F times (model replacement).
- `backdoor:target=T,share=P,boost=B`: a trigger (a white square in the bottom-right
  corner, as BadNets, Gu et al. 2017) stamped on a share P of its images, relabelled
  T, the others kept, so that the model learns the trigger beside the task; the
  update boosted B times to survive averaging, as Bagdasaryan et al. 2020 ("How to
  backdoor federated learning") scale theirs by n / eta: B = 0 takes the clients per
  round over the attackers.

Only the floating-point weights change; every draw is seeded by the run's seed, the
client and the round.
"""

from __future__ import annotations

import random

import torch

from fedcore.data.mnist import IMAGE_SIDE
from fedcore.experiment.config import ExperimentConfig

TRIGGER_SIDE = 4  # the square's side, in pixels
TRIGGER_MARGIN = 1  # pixels between the square and the image's edge
TRIGGER_VALUE = 1.0  # white, in the normalized pixel range [-1, 1]


def trigger_pixels() -> torch.Tensor:
    """Indices (into a flattened 28x28 image) of the trigger square."""
    last = IMAGE_SIDE - TRIGGER_MARGIN
    rows = torch.arange(last - TRIGGER_SIDE, last)
    return (rows[:, None] * IMAGE_SIDE + rows[None, :]).ravel()


def stamp_trigger(images: torch.Tensor) -> torch.Tensor:
    """A copy of flattened images (n, 784) with the trigger stamped on each."""
    stamped = images.clone()
    stamped[:, trigger_pixels()] = TRIGGER_VALUE
    return stamped


def attack_generator(config: ExperimentConfig, client: int, server_round: int) -> torch.Generator:
    """A generator for one attacker's draws in one round, the same in every process."""
    seed = random.Random(f"attack-{config.seed}-{client}-{server_round}").getrandbits(63)
    return torch.Generator().manual_seed(seed)


def is_attacker(config: ExperimentConfig, client: int) -> bool:
    return client in config.attacker_clients  # none without an attack (the config's rule)


def poisoned_data(
    x: torch.Tensor, y: torch.Tensor, config: ExperimentConfig, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """What an attacker trains on: its images and labels as its attack changes them."""
    if config.attack_name == "label-flip":
        return x, 9 - y
    if config.attack_name == "backdoor":
        p = config.attack_parameters
        chosen = torch.randperm(len(y), generator=generator)[: round(p["share"] * len(y))]
        x, y = x.clone(), y.clone()
        x[chosen] = stamp_trigger(x[chosen])
        y[chosen] = int(p["target"])
    return x, y


def backdoor_boost(config: ExperimentConfig) -> float:
    """The backdoor's boost: its `boost`, or (0) the clients per round over the attackers."""
    boost = config.attack_parameters["boost"]
    return boost or config.clients_per_round / len(config.attacker_clients)


def crafted_weights(
    start: dict[str, torch.Tensor],
    trained: dict[str, torch.Tensor],
    config: ExperimentConfig,
    generator: torch.Generator,
) -> dict[str, torch.Tensor]:
    """The weights an attacker sends, from the round's global weights (`start`) and
    what its (possibly poisoned) training gave (`trained`)."""
    factor = update_factor(config)
    out = {}
    for key, honest in trained.items():
        if not honest.is_floating_point():
            out[key] = honest
        elif config.attack_name == "noise":
            noise = torch.randn(honest.shape, generator=generator, dtype=honest.dtype)
            out[key] = start[key] + config.attack_parameters["std"] * noise
        elif factor is not None:
            out[key] = start[key] + factor * (honest - start[key])
        else:  # label-flip: the poisoned training is the whole attack
            out[key] = honest
    return out


def update_factor(config: ExperimentConfig) -> float | None:
    """How many times its (possibly poisoned) update an attacker sends; None for the
    attacks that do not scale one (noise, label-flip)."""
    name, p = config.attack_name, config.attack_parameters
    if name == "sign-flip":
        return -p["scale"]
    if name == "scale":
        return p["factor"]
    if name == "backdoor":
        return backdoor_boost(config)
    return None
