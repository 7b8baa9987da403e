"""Training: the pretraining loop (and the adaptation trainer) plus shared pieces."""
