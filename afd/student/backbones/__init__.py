"""Student backbones behind the ``StudentModel`` seam (afd.student.base): afd's own block-causal
transformer (``transformer``) and the causal Wan student on diffusers (``wan``, the ``wan`` extra),
each with its config; a saved folder's format tag names its class (afd.student.formats)."""
