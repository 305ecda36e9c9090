"""Files: CIFAR-10 (dataset: in memory; archive: the official files; cache: the HDF5 cache; data: loading
and normalising), checkpoints, and atomic writes (files)."""
