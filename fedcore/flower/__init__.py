"""The Flower app: the ClientApp, the ServerApp, the rounds it drives through the
grid, the strategies with their recording wrapper, and the run-config glue
(`[tool.flwr.app.components]` points here)."""
