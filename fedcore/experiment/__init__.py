"""The experiment's description: the settings table, the config built from it (and
every path from text to a config), the results and the progress events."""
