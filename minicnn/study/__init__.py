"""The study: typed configs, training and pruning runs, sweeps, the results schema, the paper's claims
and the report."""
