"""The marimo page's helpers, and the only package of fedcore that imports marimo.

`app.py` at the repository root holds the words, the controls' places and the
pictures; what it calls lives here, one job a module:

- `controls`: the controls, made from the settings table (`fedcore.experiment.settings`).
- `from_page`: the story's and the lab's settings, from the controls and the page's
  address, to an `ExperimentConfig` (plain functions, no marimo).
- `runs`: the one run a section shows, its progress and Stop (`RunSlot`, `start_run`).
- `views`: pieces of the page made from settings and results (callouts, the lab's
  tables and charts, the views inside the rounds).
- `share`: the story's downloads; `compare`: the runs kept and set side by side.
"""
