"""Black-box teachers: the ``Teacher`` interface, its implementations, the cache and the
adapter to the student's format."""

from afd.teacher.adapter import to_student_format
from afd.teacher.base import Teacher, TeacherError
from afd.teacher.cache import CachedTeacher, CacheStats, TeacherBudgetExceeded
from afd.teacher.folder import FolderTeacher, ManifestError, read_manifest
from afd.teacher.world import WorldTeacher


def make_teacher(spec: str) -> Teacher:
    """Build a teacher from a short spec string (used by configs and the CLI):
    ``world`` / ``world:real`` / ``world:loose`` or ``folder:DIR`` (``folder:DIR:any-seed``)."""
    kind, _, arg = spec.partition(":")
    if kind == "world":
        return WorldTeacher(mode=arg or "real")
    if kind == "folder":
        if not arg:
            raise ValueError("teacher spec 'folder:' needs a directory, e.g. folder:clips/")
        if arg.endswith(":any-seed"):
            return FolderTeacher(arg[: -len(":any-seed")], match="any-seed")
        return FolderTeacher(arg)
    raise ValueError(f"unknown teacher spec {spec!r}; expected world[:real|loose] or folder:DIR[:any-seed]")


__all__ = [
    "Teacher", "TeacherError", "WorldTeacher", "FolderTeacher", "CachedTeacher", "CacheStats",
    "TeacherBudgetExceeded", "ManifestError", "read_manifest", "to_student_format", "make_teacher",
]
