"""Black-box teachers: the ``Teacher`` interface, its implementations, the cache and the
adapter to the student's format."""

from afd.teacher.adapter import to_student_format
from afd.teacher.base import Teacher, TeacherError
from afd.teacher.cache import CachedTeacher, CacheStats, TeacherBudgetExceeded
from afd.teacher.folder import FolderTeacher, ManifestError, read_manifest
from afd.teacher.world import WorldTeacher


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
        return WorldTeacher(mode=arg or "real")
    if kind == "folder":
        if not arg:
            raise ValueError("teacher spec 'folder:' needs a directory, e.g. folder:clips/")
        if arg.endswith(":any-seed"):
            return FolderTeacher(arg[: -len(":any-seed")], match="any-seed")
        return FolderTeacher(arg)
    raise ValueError(f"unknown teacher spec {spec!r}; expected world[:real|loose], folder:DIR[:any-seed], "
                     f"http(s)://HOST[:PORT] or api:FILE.yaml")


__all__ = [
    "Teacher", "TeacherError", "WorldTeacher", "FolderTeacher", "CachedTeacher", "CacheStats",
    "TeacherBudgetExceeded", "ManifestError", "read_manifest", "to_student_format", "make_teacher",
]
