"""The prompt-conditioned video discriminator D_phi(x0, y) (docs/method.md section 4).

    from afd.disc import Discriminator, DiscConfig, bt_loss, pairwise_accuracy, r_phi
    d = Discriminator(DiscConfig())                      # conv backbone (default)
    text = get_text_encoder().encode(prompts)
    loss = bt_loss(d(teacher_clips, text), d(student_clips, text))   # paper Eq. 1

Clips are finished videos in the student format, (B, 16, 3, 32, 32) in [-1, 1]; scores are
(B,) float32 logits. ``DiscConfig(backbone="efficientnet")`` selects the frozen
EfficientNet-Lite0 + LoRA variant (imports peft lazily).
"""

from afd.lazy import lazy_exports

# Resolved on first use: reading a DiscConfig (afd.disc.config) must not load torch. The function
# ``augment`` is not re-exported: ``afd.disc.augment`` is its module (once imported, the package
# attribute is the module), so it is ``from afd.disc.augment import augment``.
__getattr__ = lazy_exports(__name__, {
    "augment_pair": "afd.disc.augment", "flip_allowed": "afd.disc.augment",
    "DiscConfig": "afd.disc.config", "bt_loss": "afd.disc.losses", "gan_loss": "afd.disc.losses",
    "pairwise_accuracy": "afd.disc.losses", "r1_penalty": "afd.disc.losses", "r_phi": "afd.disc.losses",
    "Discriminator": "afd.disc.model", "read_disc_meta": "afd.disc.model",
})

__all__ = [
    "DiscConfig",
    "Discriminator",
    "augment_pair",
    "bt_loss",
    "flip_allowed",
    "gan_loss",
    "pairwise_accuracy",
    "r1_penalty",
    "r_phi",
    "read_disc_meta",
]
