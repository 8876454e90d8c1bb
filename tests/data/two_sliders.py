"""A page of two sliders in one `mo.ui.dictionary` and a cell that keeps the kernel
busy for 3 s after every change: `tests/test_marimo_fixes.py` moves both sliders
while it is busy and reads what the kernel saw from the server's output. With
FEDCORE_MARIMO_FIX=1 the page applies `fedcore.app.marimo_fixes`, as app.py does."""

import marimo

app = marimo.App()

with app.setup:
    import os
    import time

    import marimo as mo

    if os.environ.get("FEDCORE_MARIMO_FIX") == "1":
        from fedcore.app import marimo_fixes

        marimo_fixes.apply()


@app.cell
def _():
    sliders = mo.ui.dictionary(
        {"a": mo.ui.slider(0, 10, label="a"), "b": mo.ui.slider(0, 10, label="b")}
    )
    sliders
    return (sliders,)


@app.cell
def _(sliders):
    time.sleep(3)  # the kernel is busy: changes sent meanwhile are queued, then merged
    print("kernel sees", sliders.value, flush=True)
    return


if __name__ == "__main__":
    app.run()
