"""The prompt-conditioned video discriminator D_phi(x0, y) (docs/method.md section 4).

    from afd.disc import Discriminator, DiscConfig, bt_loss, pairwise_accuracy, r_phi
    d = Discriminator(DiscConfig())                      # conv backbone (default)
    text = get_text_encoder().encode(prompts)
    loss = bt_loss(d(teacher_clips, text), d(student_clips, text))   # paper Eq. 1

Clips are finished videos in the student format, (B, 16, 3, 32, 32) in [-1, 1]; scores are
(B,) float32 logits. ``DiscConfig(backbone="efficientnet")`` selects the frozen
EfficientNet-Lite0 + LoRA variant (imports peft lazily).
"""

from afd.disc.augment import augment, augment_pair, flip_allowed
from afd.disc.config import DiscConfig
from afd.disc.losses import bt_loss, gan_loss, pairwise_accuracy, r1_penalty, r_phi
from afd.disc.model import Discriminator, read_disc_meta

__all__ = [
    "DiscConfig",
    "Discriminator",
    "augment",
    "augment_pair",
    "bt_loss",
    "flip_allowed",
    "gan_loss",
    "pairwise_accuracy",
    "r1_penalty",
    "r_phi",
    "read_disc_meta",
]
