"""Training: the pretraining loop (and, from issue 4, the adaptation trainer) plus shared pieces."""
