"""fedcore: a reactive federated-learning lab on MNIST, with Flower.

Importing fedcore switches off Flower's usage telemetry for this process and
every process it starts, before Flower itself is imported (Flower reads the
setting once, at import): a lab for people who care where data goes sends
nothing anywhere unless they ask for it (`FLWR_TELEMETRY_ENABLED=1`).
"""

import os

os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
