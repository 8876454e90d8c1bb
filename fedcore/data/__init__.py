"""The data: MNIST loaded once into tensors (and cached on disk), the clients'
partitions, and the files on disk (atomic writes, the cache folder)."""
