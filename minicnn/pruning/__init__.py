"""Pruning: masks and criteria, compaction, and the analytic FLOP counter."""
