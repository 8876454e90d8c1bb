"""The report: results as tables (one accuracy table, rendered for the terminal, HTML
and the page), altair charts, figures as files, the self-contained HTML report, and the
labels people read, in one place (labels.py)."""
