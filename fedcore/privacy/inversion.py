"""What a curious server can rebuild of a client's images from one FedAvg update.

The server sent the global model (`before`) and got the client's trained model
back (`after`); it also set the training recipe itself. Two attacks:

- `analytic_inversion`: closed form, for models whose first layer is a
  `Linear` on the 784 pixels (the MLPs). For that layer `dL/dW_i = dL/db_i * x`
  for every image, so after one step of batch 1 each row of the weight change
  divided by its bias change *is* the image (Phong et al. 2017, "Privacy-
  Preserving Deep Learning via Additively Homomorphic Encryption"). With
  batches and several steps, a row that only one image ever activated (a ReLU
  unit off for the rest of the data) still gives that image exactly; Fowl et
  al. 2022 ("Robbing the Fed", ICLR) build a malicious first layer to make that
  happen for many images, here we only use what an honest model leaks.
- `optimisation_attack`: gradient inversion in the style of DLG (Zhu et al.
  2019, "Deep Leakage from Gradients") and Inverting Gradients (Geiping et al.
  2020): dummy images are optimised so that replaying the client's local
  training on them (the recipe's SGD steps, differentiably, with
  `torch.func.functional_call`) from `before` reproduces the observed update,
  measured by cosine distance, plus a total-variation image prior.

Both work on state_dicts and tensors only; nothing here trains through Flower.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from fedcore.learning.models import CNN, MLP, NUM_CLASSES

if TYPE_CHECKING:
    from fedcore.experiment.config import ExperimentConfig

StateDict = Mapping[str, torch.Tensor]
IMAGE_SIDE = 28
PIXELS = IMAGE_SIDE * IMAGE_SIDE


@dataclass(frozen=True)
class Recipe:
    """The local training the server asked for: what a client runs in a round.

    `local_steps` 0 means every one of the client's images once per epoch; N > 0
    means N batches (N x `batch_size` images, drawn afresh each round) per epoch.
    """

    learning_rate: float = 0.01
    momentum: float = 0.9
    batch_size: int = 64
    local_epochs: int = 1
    local_steps: int = 0

    @classmethod
    def from_config(cls, config: ExperimentConfig) -> Recipe:
        """The recipe an experiment's server sets for every client."""
        return cls(
            learning_rate=float(config.learning_rate),
            momentum=float(config.momentum),
            batch_size=int(config.batch_size),
            local_epochs=int(config.local_epochs),
            local_steps=int(getattr(config, "local_steps", 0)),
        )

    def trained_examples(self, num_examples: int) -> int:
        """How many images a client trained on per epoch: with local steps the
        reported `num-examples` is still its partition's size, not the sample's."""
        return self.local_steps * self.batch_size if self.local_steps else num_examples


def module_for(state: StateDict) -> nn.Module:
    """A module with `state`'s architecture (any MLP widths, or the CNN), holding `state`."""
    weights = [value for key, value in state.items() if key.endswith("weight")]
    if any(w.dim() == 4 for w in weights):
        module: nn.Module = CNN()
    else:
        module = MLP(hidden=tuple(int(w.shape[0]) for w in weights[:-1]))
    module.load_state_dict({key: value.detach() for key, value in state.items()})
    return module


def output_bias_key(state: StateDict) -> str:
    """The key of the logits' bias: the last 10-long bias of the state_dict."""
    keys = [k for k, v in state.items() if k.endswith("bias") and v.shape == (NUM_CLASSES,)]
    if not keys:
        raise ValueError("the model has no 10-class output bias")
    return keys[-1]


# ------------------------------------------------------------ analytic inversion


def _first_linear_keys(state: StateDict, model_name: str) -> tuple[str, str] | None:
    if model_name == "cnn":
        return None
    weight_key = next(iter(k for k in state if k.endswith("weight")))
    if state[weight_key].dim() != 2 or state[weight_key].shape[1] != PIXELS:
        return None
    return weight_key, weight_key[: -len("weight")] + "bias"


def analytic_inversion(
    before: StateDict,
    after: StateDict,
    model_name: str,
    *,
    rounding_limit: float = 0.05,
    duplicate_tolerance: float = 1e-2,
) -> torch.Tensor | None:
    """Candidate images `(k, 784)` in the data's normalized scale ([-1, 1]), or None
    for models whose first layer is not a `Linear` on the pixels (the CNN).

    Row i of the first layer's weight change over its bias change: for a unit
    only one image activated during the round, both are that image's summed
    `dL/db_i` times (the image, 1), so the ratio is the image exactly (Phong et
    al. 2017); for a unit several images activated it is a weighted mix of them
    (weights of either sign: often outside the pixel range).

    Ranked by how much a candidate looks like one image rather than a mix:
    first those whose pixels sit on the 8-bit grid the images were stored in
    (`k / 127.5 - 1`: one image's pixels do, up to rounding; a weighted mix's
    mostly do not), then the others that stay in [-1, 1] (a mix with weights of
    both signs does not), then the rest; each group by `|db_i|` (a larger bias
    change, less rounding noise). Units whose bias moved too little for the
    ratio to be exact are skipped: the weights are float32, so a change is
    known to about `eps * |w|`, and a row is kept when that error over `|db_i|`
    (its pixels' rounding error) is under `rounding_limit` (dead units, whose
    change is 0, go with them). A candidate within `duplicate_tolerance` plus
    both rounding errors (largest pixel difference) of a better-ranked one is
    dropped, since several units often isolate the same image. Not clamped
    (a mix's values outside [-1, 1] are evidence; `image_scores` and a display
    clamp them).
    """
    keys = _first_linear_keys(before, model_name)
    if keys is None:
        return None
    weight_key, bias_key = keys
    d_weight = (after[weight_key].double() - before[weight_key].double()).detach()
    d_bias = (after[bias_key].double() - before[bias_key].double()).detach()
    size = d_bias.abs()
    eps = torch.finfo(before[weight_key].dtype).eps
    magnitude = torch.maximum(before[weight_key].abs(), after[weight_key].abs()).amax(dim=1)
    magnitude = magnitude.double() + torch.maximum(before[bias_key].abs(), after[bias_key].abs())
    rounding = eps * magnitude / size  # inf where the bias did not move
    rows = (rounding < rounding_limit).nonzero().flatten()
    if len(rows) == 0:
        return torch.empty(0, PIXELS)
    candidates = d_weight[rows] / d_bias[rows, None]
    group = torch.where(_in_range(candidates), 1, 2)
    group[looks_single(candidates)] = 0
    order = sorted(range(len(rows)), key=lambda i: (int(group[i]), -float(size[rows[i]])))
    candidates, rounding = candidates[order], rounding[rows[order]]
    kept: list[int] = []
    for i in range(len(candidates)):
        if kept:
            gap = (candidates[kept] - candidates[i]).abs().amax(dim=1)
            if bool((gap < duplicate_tolerance + rounding[kept] + rounding[i]).any()):
                continue
        kept.append(i)
    return candidates[kept].float()


def looks_single(candidates: torch.Tensor, tolerance: float = 0.05) -> torch.Tensor:
    """Per candidate (normalized scale), whether it looks like one stored image
    rather than a mix: its pixels within [-1, 1] and on the 8-bit grid (mean
    distance under `tolerance` of a level). `analytic_inversion` ranks these first."""
    return _in_range(candidates) & (_off_grid(candidates) < tolerance)


def _in_range(candidates: torch.Tensor) -> torch.Tensor:
    return (candidates.abs() - 1).clamp(min=0).amax(dim=1) < 1e-3


def _off_grid(candidates: torch.Tensor) -> torch.Tensor:
    """Mean distance, in 8-bit levels (0 to 0.5), of each candidate's unsaturated
    pixels to the nearest stored level; 0 for a candidate with none."""
    levels = (candidates.double().clamp(-1, 1) + 1) * 127.5
    distance = (levels - levels.round()).abs()
    inside = (levels > 1e-3) & (levels < 255 - 1e-3)
    counted = inside.sum(dim=1)
    return torch.where(counted > 0, (distance * inside).sum(dim=1) / counted.clamp(min=1), 0.0)


# ------------------------------------------------------------ optimisation attack


def total_variation(images: torch.Tensor) -> torch.Tensor:
    """Mean absolute difference of neighbouring pixels of `(n, 784)` images:
    Rudin-Osher-Fatemi's TV, the prior Geiping et al. 2020 add to favour images
    made of flat regions over noise."""
    grid = images.reshape(-1, IMAGE_SIDE, IMAGE_SIDE)
    across = (grid[:, :, 1:] - grid[:, :, :-1]).abs().mean()
    down = (grid[:, 1:, :] - grid[:, :-1, :]).abs().mean()
    return across + down


def simulate_update(
    module: nn.Module,
    start: dict[str, torch.Tensor],
    images: torch.Tensor,
    labels: torch.Tensor,
    recipe: Recipe,
) -> dict[str, torch.Tensor]:
    """The weight change of `recipe`'s local training from `start` on `images`
    in order (batches of `recipe.batch_size`, the last one possibly short, for
    `recipe.local_epochs` epochs), differentiable in the images (`create_graph`):
    the client's local training replayed. The update is `fedcore.learning.fast_path`'s
    (`torch.optim.SGD`'s): `v = m * v + g; w -= lr * v`, mean cross-entropy of
    the batch, no weight decay, the velocity kept across epochs. `start`'s
    tensors must require grad."""
    params = dict(start)
    velocity = {key: torch.zeros_like(value) for key, value in params.items()}
    b = recipe.batch_size
    for _ in range(recipe.local_epochs):
        for first in range(0, len(images), b):
            x, y = images[first : first + b], labels[first : first + b]
            loss = F.cross_entropy(functional_call(module, params, (x,)), y)
            grads = torch.autograd.grad(loss, list(params.values()), create_graph=True)
            for (key, value), grad in zip(list(params.items()), grads, strict=True):
                velocity[key] = recipe.momentum * velocity[key] + grad
                params[key] = value - recipe.learning_rate * velocity[key]
    return {key: params[key] - start[key] for key in params}


class _Adam:
    """Adam (Kingma & Ba 2015) on one tensor, in place. Written out because
    `torch.optim`'s first step imports `torch._dynamo`: about 3 s in a fresh
    process, most of this attack's budget (see `fedcore.learning.fast_path`)."""

    def __init__(self, tensor: torch.Tensor, betas: tuple[float, float] = (0.9, 0.999)) -> None:
        self.tensor, self.betas, self.t = tensor, betas, 0
        self.mean = torch.zeros_like(tensor)
        self.square = torch.zeros_like(tensor)

    def step(self, grad: torch.Tensor, rate: float, eps: float = 1e-8) -> None:
        (b1, b2), self.t = self.betas, self.t + 1
        self.mean.mul_(b1).add_(grad, alpha=1 - b1)
        self.square.mul_(b2).addcmul_(grad, grad, value=1 - b2)
        mean_hat = self.mean / (1 - b1**self.t)
        root = (self.square / (1 - b2**self.t)).sqrt_().add_(eps)
        self.tensor.sub_(rate * mean_hat / root)


def optimisation_attack(
    before: StateDict,
    after: StateDict,
    model_name: str,
    labels: torch.Tensor,
    recipe: Recipe,
    iterations: int = 300,
    seed: int = 0,
    on_step: Callable[[int, int], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
    *,
    tv_weight: float = 1e-4,
    step_size: float = 0.03,
    signed: bool = True,
) -> torch.Tensor:
    """Images `(len(labels), 784)` in the normalized scale whose replayed training
    best explains the update `after - before` (DLG, Zhu et al. 2019; Inverting
    Gradients, Geiping et al. 2020).

    `labels`: one label per image the client trained on in the round, in step
    order (`recipe.local_steps` x `recipe.batch_size` of them with local steps;
    e.g. `infer_labels(...).labels(n)`). Which image sat in which step is unknown
    to the server, so images fill the steps in order (`recipe.batch_size` a
    step) and every epoch replays that order: exact for one epoch; with more,
    the client reshuffled and the replay is an approximation.

    Loss: `1 - cos(simulated update, observed update)` over all parameters
    (Geiping et al.'s choice: insensitive to the update's scale, which the
    learning rate and momentum set) `+ tv_weight * TV`. Adam on the images with
    signed gradients (as Geiping et al.), `step_size` decayed by 10x at 3/8, 5/8
    and 7/8 of the run, pixels clamped to [-1, 1] after every step.
    `on_step(i, iterations)` after each iteration; `should_stop()` True ends the
    run early with the images so far. Runs on one thread in the caller's process.
    """
    if labels.dim() != 1 or len(labels) == 0:
        raise ValueError("labels must be a non-empty 1-D tensor, one per trained image")
    module = module_for(before)
    start = {key: value.detach().float().requires_grad_(True) for key, value in before.items()}
    observed = torch.cat([(after[k].float() - before[k].float()).reshape(-1) for k in start])
    generator = torch.Generator().manual_seed(seed)
    dummy = (torch.rand(len(labels), PIXELS, generator=generator) * 2 - 1).requires_grad_(True)
    milestones = [int(iterations * f) for f in (3 / 8, 5 / 8, 7 / 8)]
    adam = _Adam(dummy)
    labels = labels.long()
    for i in range(1, iterations + 1):
        if should_stop is not None and should_stop():
            break
        update = simulate_update(module, start, dummy, labels, recipe)
        flat = torch.cat([update[key].reshape(-1) for key in start])
        loss = 1 - F.cosine_similarity(flat, observed, dim=0) + tv_weight * total_variation(dummy)
        (grad,) = torch.autograd.grad(loss, [dummy])
        rate = step_size * 0.1 ** sum(i > m for m in milestones)
        with torch.no_grad():
            adam.step(grad.sign() if signed else grad, rate)
            dummy.clamp_(-1, 1)
        if on_step is not None:
            on_step(i, iterations)
    return dummy.detach().clone()
