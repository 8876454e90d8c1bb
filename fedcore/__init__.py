"""fedcore."""
