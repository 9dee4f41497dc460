"""Turns an algorithm name, an env id and hyperparameters into a ready SB3 model."""
