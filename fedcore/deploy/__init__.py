"""The experiment on Flower's deployment engine: a secure federation on this machine
(`python -m fedcore deploy`), and the pieces the fault tests drive."""

from fedcore.deploy.federation import Federation, RunOutcome

__all__ = ["Federation", "RunOutcome"]
