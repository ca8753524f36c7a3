"""Experiments: the runs answered, feedback on them, and the Bayesian verdict per arm and key."""
