"""Which digits a client holds, and roughly how many of each, read off one FedAvg update.

Missing digits: a sign test on the output layer. With softmax cross-entropy,
the gradient of the logits of class c for image i is `p_ic - y_ic`. For a class
the client has no image of, `y_ic = 0` in every step, so:

- the bias gradient `mean_i p_ic` is strictly positive in every step (iDLG's
  observation, Zhao et al. 2020, "iDLG: Improved Deep Leakage from Gradients");
- the output weight row's gradient `mean_i p_ic * h_i` is >= 0 entrywise,
  since the layer's inputs `h_i` come out of a ReLU (iDLG reads the label of a
  single image from the signs of these rows).

SGD with momentum (`v = m v + g`, `w -= lr v`, no weight decay: the update
`fedcore.learning.fast_path` writes out) only ever moves such parameters
down, however many steps and epochs the round has, and float rounding cannot
move them up (`fl(w - a) <= w` for `a >= 0`). So over a whole round a missing
class's bias goes down and no entry of its output row goes up. A digit the
client holds breaks the second condition as soon as its images pull some
hidden unit's weight up, which a few images do in practice (a digit held by
only 1-4 images can fail to, and is then called missing); the bias alone is
not enough (a held digit the model over-predicts, like the 1s at the seeded
initial model, also ends with a lower bias). Both conditions are therefore
required. Measured: exact for the story's three clients in rounds 1-3 (MLP
and 2NN, 1 and 10 epochs, with local steps too); 28 of 30 updates exact
under Dirichlet(0.5) splits of 3 clients (5 seeds, 2 rounds), the 2 misses
digits held by 4 and 1 images.

Counts. Wainakh et al. 2022 ("User-Level Label Leakage from Gradients in
Federated Learning", LLG) and Geng et al. 2021 ("Towards General Deep Leakage
in Federated Learning") estimate counts from the size of the bias change,
which needs the mean softmax the model had over the local training. Over one
FedAvg round of hundreds of momentum steps that mean moves so much that the
estimate is mostly noise: we tried replaying the round on public images and
solving the resulting linear system (the fixed point is unstable) and do not
use it. What is used instead is what the client's trained model has absorbed
of its label prior (a label-shift view, cf. Saerens et al. 2002): the digits
the client holds get `num_examples` in proportion to the mean softmax the
returned model gives public images of those digits. It is a coarse estimate:
about 5-10% mean absolute error per digit on the story's balanced clients,
about 50% under Dirichlet(0.5) label skew.

Assumption: the server holds public same-domain images. In this lab it does:
it evaluates centrally on the MNIST test set, so `reference_x`/`reference_y`
are those. Labels are only used to drop the images of the digits already
found missing; without them every public image counts; without images the
count is split evenly over the held digits.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from torch.func import functional_call
from torch.nn import functional as F

from fedcore.learning.models import NUM_CLASSES
from fedcore.privacy.inversion import Recipe, module_for, output_bias_key

StateDict = Mapping[str, torch.Tensor]


@dataclass(frozen=True)
class LabelInference:
    """What the server concludes about one client's labels from one update.

    `missing`: the digits it concludes the client trained on no image of, ascending.
    `counts`: its estimate of the client's images per digit: 10 integers summing
    to the reported `num_examples`, 0 for every missing digit.
    `bias_change`: the output bias change (after - before) per digit.
    `rises`: per digit, how many entries of its output weight row went up
    (0 for every missing digit: the sign test's evidence).
    """

    missing: tuple[int, ...]
    counts: tuple[int, ...]
    bias_change: tuple[float, ...]
    rises: tuple[int, ...]

    def labels(self, n: int) -> torch.Tensor:
        """`n` labels in the estimated proportions, digits ascending: what
        `fedcore.privacy.inversion.optimisation_attack` takes for a batch whose
        labels the server inferred (e.g. `n = batch_size` for one step)."""
        shares = _round_to_total(np.asarray(self.counts, dtype=np.float64), n)
        return torch.repeat_interleave(torch.arange(NUM_CLASSES), torch.tensor(shares))


def infer_labels(
    before: StateDict,
    after: StateDict,
    num_examples: int,
    recipe: Recipe | None = None,
    reference_x: torch.Tensor | None = None,
    reference_y: torch.Tensor | None = None,
) -> LabelInference:
    """Infer a client's missing digits and label counts from its update (see the module).

    `before`: the global model the server sent; `after`: the model the client
    returned; `num_examples`: the size it reported; `recipe`: the local
    training the server set: the sign test holds for any learning rate > 0,
    momentum >= 0, batch size, steps and epochs, so it is only checked. With
    `recipe.local_steps` the client trained on a sample of `local_steps x
    batch_size` of its images, so `missing` is about that sample (a held digit
    can be missing from it) and the counts are the sample's proportions scaled
    to `num_examples`. `reference_x` (n, 784, normalized like the training
    data) and `reference_y`: public images of the domain, e.g. the server's
    test set.

    Valid for plain SGD with momentum on cross-entropy (this lab's clients):
    a proximal term (FedProx), client-side DP noise or a malicious client
    break the sign test's premise.
    """
    if recipe is not None and (recipe.learning_rate <= 0 or recipe.momentum < 0):
        raise ValueError("the sign test needs a positive learning rate and momentum >= 0")
    bias_key = output_bias_key(before)
    weight_key = bias_key[: -len("bias")] + "weight"
    d_bias = (after[bias_key].double() - before[bias_key].double()).detach()
    d_weight = (after[weight_key].double() - before[weight_key].double()).detach()
    rises = (d_weight > 0).sum(dim=1)
    missing = tuple(c for c in range(NUM_CLASSES) if d_bias[c] < 0 and rises[c] == 0)
    held = [c for c in range(NUM_CLASSES) if c not in missing]
    weights = np.zeros(NUM_CLASSES)
    if held:
        weights[held] = _held_weights(after, held, reference_x, reference_y)
    counts = _round_to_total(weights, num_examples) if held else (0,) * NUM_CLASSES
    return LabelInference(
        missing=missing,
        counts=counts,
        bias_change=tuple(float(d) for d in d_bias),
        rises=tuple(int(r) for r in rises),
    )


def _held_weights(
    after: StateDict,
    held: list[int],
    reference_x: torch.Tensor | None,
    reference_y: torch.Tensor | None,
) -> np.ndarray:
    """The returned model's mean softmax over public images of the held digits,
    on the held digits (equal weights without public images)."""
    if reference_x is None or len(reference_x) == 0:
        return np.ones(len(held))
    images = reference_x
    if reference_y is not None:
        keep = torch.isin(reference_y, torch.tensor(held, dtype=reference_y.dtype))
        images = reference_x[keep] if bool(keep.any()) else reference_x
    module = module_for(after)
    params = {key: value.detach().float() for key, value in after.items()}
    with torch.no_grad():
        probs = F.softmax(functional_call(module, params, (images.float(),)), dim=1)
    mean = probs.mean(dim=0).double().numpy()[held]
    return mean if mean.sum() > 0 else np.ones(len(held))


def _round_to_total(values: np.ndarray, total: int) -> tuple[int, ...]:
    """Non-negative integers summing to `total`, in proportion to `values`
    (largest remainder); zero stays zero."""
    values = np.clip(np.asarray(values, dtype=np.float64), 0, None)
    if values.sum() <= 0:
        raise ValueError("no positive weight to share the count over")
    values = values / values.sum() * total
    floors = np.floor(values).astype(int)
    short = total - int(floors.sum())
    for i in np.argsort(-(values - floors), kind="stable")[:short]:
        floors[i] += 1
    return tuple(int(v) for v in floors)
