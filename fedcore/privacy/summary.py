"""The privacy chapter's numbers from a run's results: what `python -m fedcore privacy`
writes, the sweep's leakage columns and the page's table all read them here."""

from __future__ import annotations

from typing import Any

from fedcore.experiment.config import ExperimentConfig
from fedcore.experiment.results import ClientLeakage, ExperimentResult, FederatedResult
from fedcore.experiment.specs import defense_name


def epsilon_spent(config: ExperimentConfig, federated: FederatedResult) -> tuple[float | None, str]:
    """The privacy budget and what it bounds. Central DP: Flower's RDP accountant over
    the whole run (the released model). Local DP: LocalDpMod's epsilon, which bounds
    each update on its own (rounds compose: a client that sends R updates spends up to
    R times it). None without differential privacy."""
    if config.privacy_kind in ("server", "client"):
        return federated.history[-1].epsilon, "the model after every round (Flower's accountant)"
    if config.privacy_kind == "local":
        return config.privacy_parameters["epsilon"], "each update a client sends (LocalDpMod)"
    return None, ""


def absent_in_round(client: ClientLeakage) -> list[int]:
    """The digits none of the images the client trained on in the round attacked shows:
    what its update can tell (all its images: the digits it holds no image of)."""
    return [digit for digit, count in enumerate(client.label_counts) if not count]


def named_exactly(client: ClientLeakage) -> bool:
    """The server named exactly the digits absent from the client's training that round."""
    return client.inferred_missing is not None and client.inferred_missing == absent_in_round(
        client
    )


def leakage_scores(federated: FederatedResult) -> dict[str, Any]:
    """The sweep's columns: clients whose missing digits the server named exactly (of
    those it attacked), and the best reconstruction of any client; empty without the
    leakage setting."""
    if federated.leakage is None:
        return {}
    scored = [c.psnr_db for c in federated.leakage if c.psnr_db is not None]
    similar = [c.ssim for c in federated.leakage if c.ssim is not None]
    return {
        "missing_named": sum(map(named_exactly, federated.leakage)),
        "clients_attacked": sum(c.inferred_missing is not None for c in federated.leakage),
        "best_psnr_db": max(scored, default=None),
        "best_ssim": max(similar, default=None),
        "images_recovered": sum(c.images_recovered or 0 for c in federated.leakage),
    }


def privacy_summary(result: ExperimentResult) -> dict[str, Any]:
    """The privacy command's JSON: the defense, the global model's accuracy, the
    epsilon, and per client what the server concluded from its own update."""
    config, federated = result.config, result.federated
    if federated is None or federated.leakage is None:
        raise ValueError("a privacy summary needs a federated run with the leakage setting")
    epsilon, bounds = epsilon_spent(config, federated)
    return {
        "defense": defense_name(config.privacy_spec),
        "accuracy": federated.accuracy,
        "epsilon": epsilon,
        "epsilon_bounds": bounds or None,
        "batch_size": config.batch_size,
        "local_steps": config.local_steps,
        "local_epochs": config.local_epochs,
        "rounds": config.num_rounds,
        **leakage_scores(federated),
        "clients": [
            {
                "client": c.client,
                "round": c.round,
                "true_missing": c.true_missing,
                "absent_in_round": absent_in_round(c),
                "inferred_missing": c.inferred_missing,
                "label_counts": c.label_counts,
                "label_counts_inferred": c.label_counts_inferred,
                "psnr_db": c.psnr_db,
                "ssim": c.ssim,
                "method": c.method,
                "images_recovered": c.images_recovered,
            }
            for c in federated.leakage
        ],
        "config": config.to_dict(),
    }
