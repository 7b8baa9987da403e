"""Black-box teachers: the ``Teacher`` interface, its implementations, the cache and the
adapter to the student's format."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from afd.lazy import lazy_exports

if TYPE_CHECKING:
    from afd.teacher.base import Teacher

# Resolved on first use, so that light modules of this package (errors, URL helpers, constants)
# can be imported by the CLI parser without loading torch.
__getattr__ = lazy_exports(__name__, {
    "to_student_format": "afd.teacher.adapter", "Teacher": "afd.teacher.base", "TeacherError": "afd.teacher.base",
    "CachedTeacher": "afd.teacher.cache", "CacheStats": "afd.teacher.cache",
    "TeacherBudgetExceeded": "afd.teacher.cache", "FolderTeacher": "afd.teacher.folder",
    "ManifestError": "afd.teacher.folder", "read_manifest": "afd.teacher.folder",
})


def make_teacher(spec: str) -> Teacher:
    """Build a teacher from a short spec string (used by configs and the CLI):
    ``world`` / ``world:real`` / ``world:loose``, ``folder:DIR`` (``folder:DIR:any-seed``),
    ``http://HOST:PORT`` / ``https://...`` (an afd teacher server, or any API speaking its
    synchronous protocol) or ``api:FILE.yaml`` (any HTTP video API, see ``afd.teacher.api``)."""
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"teacher spec must be a non-empty string, got {spec!r}")
    if spec.startswith(("http://", "https://")):
        from afd.teacher.http import HTTPTeacher

        return HTTPTeacher(spec)
    kind, _, arg = spec.partition(":")
    if kind == "api":
        from afd.teacher.http import HTTPTeacher

        if not arg:
            raise ValueError("teacher spec 'api:' needs a config file, e.g. api:teacher_api.yaml")
        return HTTPTeacher.from_config(arg)
    if kind == "world":
        # The built-in world's sampler lives on the testbed side (afd.world.teacher), named here by
        # module path like a student format, so the teacher package never imports the world.
        world_teacher = getattr(importlib.import_module("afd.world.teacher"), "WorldTeacher")
        return world_teacher(mode=arg or "real")
    if kind == "folder":
        from afd.teacher.folder import FolderTeacher

        if not arg:
            raise ValueError("teacher spec 'folder:' needs a directory, e.g. folder:clips/")
        if arg.endswith(":any-seed"):
            return FolderTeacher(arg[: -len(":any-seed")], match="any-seed")
        return FolderTeacher(arg)
    from afd.teacher.urls import redact_text

    raise ValueError(f"unknown teacher spec {redact_text(spec)!r}; expected world[:real|loose], folder:DIR[:any-seed], "
                     f"http(s)://HOST[:PORT] or api:FILE.yaml")


__all__ = [
    "Teacher", "TeacherError", "FolderTeacher", "CachedTeacher", "CacheStats",
    "TeacherBudgetExceeded", "ManifestError", "read_manifest", "to_student_format", "make_teacher",
]
