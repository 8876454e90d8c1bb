"""The literature reproduced: the papers' published tables (transcribed once, in
`published.toml`), each row as an experiment, and the tables run through the sweep
machinery with the published figure beside each measured one."""
