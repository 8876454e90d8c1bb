"""What a curious FedAvg server can learn about a client from one update.

- `label_leakage.infer_labels`: the digits a client lacks and its label counts;
- `inversion.analytic_inversion` / `inversion.optimisation_attack`: its images;
- `image_scores`: how close a reconstruction is to a real image (PSNR, SSIM);
- `curious_server`: the ServerApp's observer that runs them on each client's first
  update (the `leakage` setting) and scores them against the truth;
- `summary`: the privacy chapter's numbers from a run's results.

Pure functions on state_dicts and tensors: the server's view is the model it
sent, the model it got back, the reported example count and its own recipe.
"""

from fedcore.privacy.image_scores import Match, best_match, psnr_db, ssim
from fedcore.privacy.inversion import (
    Recipe,
    analytic_inversion,
    looks_single,
    optimisation_attack,
)
from fedcore.privacy.label_leakage import LabelInference, infer_labels

__all__ = [
    "LabelInference",
    "Match",
    "Recipe",
    "analytic_inversion",
    "best_match",
    "infer_labels",
    "looks_single",
    "optimisation_attack",
    "psnr_db",
    "ssim",
]
