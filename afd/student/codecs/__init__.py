"""Latent codecs behind the ``Codec`` seam (afd.student.codec): the learned per-frame autoencoder
(``learned``) and the Wan VAE (``wan_vae``). The pixel codec is the seam's own identity; the
testbed's state codec lives with the world (afd.world.state_codec)."""
