"""The data: MNIST loaded once into tensors (and cached on disk), and the clients'
partitions."""
