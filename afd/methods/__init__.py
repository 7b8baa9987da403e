"""Adaptation methods (AFD and the baselines) and the pieces they share."""
