"""Results to share: the run's charts as files (figures.py) and one self-contained
HTML report that opens anywhere, offline included (html.py)."""
