"""Files: CIFAR-10 (archives, the HDF5 cache, preprocessing) and checkpoints."""
