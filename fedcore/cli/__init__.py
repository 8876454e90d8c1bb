"""`python -m fedcore`: run, sweep, report and deploy from the command line."""
