"""The learning code, free of Flower: the models, one `train()` (the fast path or
the textbook loop), evaluation, a client's local training and the baselines."""
