"""Offline diagnostics of the method's parts on the built-in world, apart from training:
``afd probe-disc`` (``afd.probes.disc``: how well a discriminator design ranks rollouts by their
exact physics) and ``afd probe-update`` (``afd.probes.update``: what a step of the student update
does). Both score with the world's exact measures, so they sit on the testbed side of the line."""
