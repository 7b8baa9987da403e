"""The string registries of the student seam, torch-free: which class a saved folder's format tag
names, and which class a student config's codec names. Classes are imported only when a folder or
config names them, so a backbone's or codec's dependencies (diffusers for the Wan student, the
testbed's renderer for the state codec) are needed only by those who use it."""

from __future__ import annotations

# config.json "format" tag -> "module:Class" with ``from_pretrained(directory)``.
STUDENT_FORMATS: dict[str, str] = {
    "afd-student": "afd.student.backbones.transformer:CausalVideoTransformer",
    "afd-wan-student": "afd.student.backbones.wan:CausalWanStudent",
}

# ``config.codec`` -> "module:Class" with ``for_student(config)`` (afd.student.codec.make_codec).
CODECS: dict[str, str] = {
    "pixel": "afd.student.codec:PixelCodec",
    "learned": "afd.student.codecs.learned:LearnedCodec",
    "wan-vae": "afd.student.codecs.wan_vae:WanVAECodec",
    # The testbed's: a frame is the built-in world's object state, drawn by the world's renderer.
    "state": "afd.world.state_codec:StateCodec",
}
