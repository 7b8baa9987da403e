"""Typed configs for the training commands: dataclass defaults, then a YAML file, then ``key=value``.

A config is a ``@dataclass`` whose annotations are the schema; sections are nested dataclasses::

    @dataclass
    class OptimConfig:
        lr: float = 3e-4
        betas: tuple[float, float] = (0.9, 0.99)

    @dataclass
    class PretrainConfig:
        steps: int = 10_000
        optim: OptimConfig = field(default_factory=OptimConfig)

    cfg = load_config(PretrainConfig, "configs/pretrain/pretrain.yaml", ["optim.lr=1e-3", "steps=500"])

Layers are applied in that order and later ones win key by key, so a file only needs the keys it
changes. A file may start from another with ``extends: other.yaml`` (relative to the file), which
is applied first. The YAML file is a mapping whose keys are field names (sections are nested mappings);
an override's key is a dotted path and its value is parsed as YAML, so ``1e-3``, ``true``,
``[1, 2]`` and ``null`` mean what they look like.

Supported field types: ``int``, ``float``, ``str``, ``bool``, ``pathlib.Path``, ``Literal[...]``,
``X | None`` and other unions (the first member that accepts the value wins, so put the more
specific type first), ``list[X]``, ``tuple[X, ...]``, ``tuple[X, Y]``, ``dict[K, V]``, ``Any``,
and nested dataclasses (also ``Sub | None``: ``null`` turns the section off, setting any key in
it turns it back on from its defaults).

Checks are strict because a silently mistyped hyperparameter wastes a whole run: unknown keys
are errors, ``bool`` is not an ``int``, a ``float`` is not an ``int``. The conversions that are
allowed are the ones YAML forces on us: an ``int`` is accepted for a ``float`` field, a string
that parses as a float is too (YAML 1.1 reads ``1e-3`` as a string because it has no dot), and a
``str`` field given on the command line takes the text as typed (``name=2024`` is ``"2024"``,
not an int).

Every problem is a :class:`ConfigError` (a ``ValueError``) naming its source (the file path,
``command line`` or e.g. ``checkpoint``), the dotted key, what was expected and what was got::

    configs/pretrain/pretrain.yaml: optim.lr: expected float, got 'abc' (str)
    command line: unknown key 'optim.lrr' (valid: lr, betas)

``ValueError`` raised by a dataclass's ``__post_init__`` is re-raised as a ``ConfigError`` that
names the section and the source(s) that set keys in it. A config class whose fields include
``Literal`` choices calls :func:`check_choices` in its ``__post_init__``, so that a config built
directly in code is held to the same choices as one read from a file.

:func:`config_to_dict` / :func:`config_from_dict` and :func:`save_config` / :func:`load_config`
round-trip a config to an equal object, so the resolved config of a run can be stored next to
it and inside its checkpoints.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import reprlib
import types
import typing
import uuid
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path, PurePath
from typing import Any, Literal, TypeVar, Union

import yaml

__all__ = [
    "ConfigError",
    "apply_overrides",
    "check_choices",
    "config_from_dict",
    "config_to_dict",
    "load_config",
    "read_config_file",
    "save_config",
]

T = TypeVar("T")

COMMAND_LINE = "command line"


class ConfigError(ValueError):
    """A bad config file, key or value; the message says where it came from and what is wrong."""


# --------------------------------------------------------------------------------------------
# Public API


def load_config(cls: type[T], path: str | Path | None = None, overrides: Iterable[str] = ()) -> T:
    """Build a ``cls`` from its defaults, then the YAML file at ``path`` (if any), then the
    ``key=value`` strings in ``overrides`` (applied in order, so the last one wins)."""
    _check_config_class(cls)
    overrides = _check_overrides(overrides)
    resolver = _Resolver(cls, _default_tree(cls))
    if path is not None:
        for file, data in _read_with_bases(Path(path)):
            resolver.merge(data, source=str(file))
    for text in overrides:
        resolver.override(text, source=COMMAND_LINE)
    return resolver.build()


EXTENDS_KEY = "extends"


def _read_with_bases(path: Path, seen: tuple[Path, ...] = ()) -> list[tuple[Path, dict[str, Any]]]:
    """The file at ``path`` preceded by the files it ``extends:`` (a path relative to it), base
    first, so a derived file (e.g. configs/train/sft.yaml) only states what differs from its base."""
    if path.resolve() in seen:
        chain = " -> ".join(str(p) for p in (*seen, path.resolve()))
        raise ConfigError(f"{path}: '{EXTENDS_KEY}' forms a cycle ({chain})")
    data = read_config_file(path)
    base = data.pop(EXTENDS_KEY, None)
    if base is None:
        return [(path, data)]
    if not isinstance(base, str) or not base:
        raise ConfigError(f"{path}: {EXTENDS_KEY}: expected a config file path, got {_describe(base)}")
    return [*_read_with_bases(path.parent / base, (*seen, path.resolve())), (path, data)]


def config_from_dict(cls: type[T], d: Mapping[str, Any], source: str = "checkpoint", *,
                     base: T | None = None, may_omit: Collection[str] | None = None) -> T:
    """Build a ``cls`` from a (possibly partial) nested dict such as :func:`config_to_dict` makes.

    Missing keys keep their defaults (or ``base``'s values, if given), so a checkpoint saved
    before a field was added still loads; unknown keys and wrong types are errors, as for a file.

    ``may_omit``: when given, only these top-level fields may be missing from ``d``; any other
    missing one is an error naming it. For files whose omissions would otherwise go unnoticed,
    e.g. a student checkpoint's architecture, where a silent default builds a different model."""
    _check_config_class(cls)
    if base is not None and not isinstance(base, cls):
        raise TypeError(f"base must be a {cls.__name__}, got {type(base).__name__}")
    resolver = _Resolver(cls, _default_tree(cls) if base is None else _instance_tree(base))
    resolver.merge(d, source=source)
    if may_omit is not None:
        missing = [name for name in _field_types(cls) if name not in d and name not in may_omit]
        if missing:
            raise ConfigError(f"{source}: missing required key {missing[0]!r}"
                              + (f" (and {', '.join(map(repr, missing[1:]))})" if len(missing) > 1 else ""))
    return resolver.build()


def check_choices(cfg: Any) -> None:
    """Check the fields of ``cfg`` whose type holds a ``Literal`` (``Literal[...]``,
    ``tuple[Literal[...], ...]``, ``Literal[...] | None``), normalising them to their type in place
    (a list given for a tuple field becomes a tuple).

    :func:`load_config` and friends check every field already; a config class calls this in its
    ``__post_init__`` so that a config built directly in code (``DiscConfig(backbone="vit")``)
    is refused with the same message instead of failing later, far from the typo.
    Raises ValueError: ``backbone: expected one of 'conv', 'efficientnet', got 'vit' (str)``."""
    if not _is_dataclass_instance(cfg):
        raise TypeError(f"check_choices expects a dataclass instance, got {type(cfg).__name__}")
    for name, tp in _field_types(type(cfg)).items():
        if not _holds_literal(tp):
            continue
        try:
            value = _coerce(getattr(cfg, name), tp)
        except _Mismatch as m:
            raise ValueError(f"{name}{m.where}: expected {_type_name(m.tp)}, got {_describe(m.value)}") from None
        # object.__setattr__ so that frozen configs (APISpec) are normalised too.
        object.__setattr__(cfg, name, value)


def apply_overrides(cfg: T, overrides: Iterable[str], source: str = COMMAND_LINE) -> T:
    """A copy of ``cfg`` with ``key=value`` overrides applied, e.g. on top of a config restored
    from a checkpoint. ``cfg`` itself is left unchanged."""
    _check_config_class(type(cfg))
    overrides = _check_overrides(overrides)
    resolver = _Resolver(type(cfg), _instance_tree(cfg))
    for text in overrides:
        resolver.override(text, source=source)
    return resolver.build()


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """``cfg`` as plain nested dicts, lists and scalars (JSON- and YAML-safe), in field order.

    Unlike ``dataclasses.asdict`` this turns tuples into lists and paths into strings (so the
    result is safe for ``yaml.safe_dump`` and ``json``) and leaves out ``init=False`` fields,
    which are derived and could not be passed back in."""
    if not _is_dataclass_instance(cfg):
        raise TypeError(f"config_to_dict expects a dataclass instance, got {type(cfg).__name__}")
    return {f.name: _plain(getattr(cfg, f.name)) for f in dataclasses.fields(cfg) if f.init}


def save_config(cfg: Any, path: str | Path) -> None:
    """Write ``cfg`` to ``path`` as YAML that :func:`load_config` reads back to an equal object.

    The write is atomic (temporary file + ``os.replace``): a crash mid-write must not leave a
    truncated config next to a run that someone later tries to resume."""
    path = Path(path)
    text = yaml.dump(
        config_to_dict(cfg), Dumper=_Dumper, sort_keys=False, default_flow_style=False, allow_unicode=True
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    # Unique per writer so concurrent saves cannot clobber each other's temporary file; opened
    # with "x" rather than mkstemp so the final file gets normal umask permissions, not 0600.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "x", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


# --------------------------------------------------------------------------------------------
# Resolution: values are gathered in a "tree" (a dict per dataclass, field name -> value) and
# instances are only built at the end, so that __post_init__ checks see the final combination
# of all layers rather than a half-applied one.


class _Required:
    """Placeholder for a field without a default that no layer has set (yet)."""

    def __repr__(self) -> str:
        return "<required>"


_REQUIRED = _Required()


class _Resolver:
    def __init__(self, cls: type, tree: dict[str, Any]):
        self.cls = cls
        self.tree = tree
        # Which source last set each dotted key, to blame the right file or command line when
        # a section's __post_init__ rejects the result.
        self.set_by: dict[str, str] = {}
        self.sources: list[str] = []

    def merge(self, data: Any, source: str) -> None:
        """Apply a nested mapping (a YAML file, a checkpoint's dict)."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"{source}: expected a mapping of config keys, got {_describe(data)}")
        self._use(source)
        self._merge(self.cls, self.tree, data, source, prefix="")

    def override(self, text: str, source: str) -> None:
        """Apply one ``dotted.key=value`` string."""
        key, sep, raw = text.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"{source}: override {text!r} is not of the form key=value (e.g. optim.lr=1e-3)")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            # Not YAML (e.g. "[1, 2"): keep the text; a str field takes it as is and any other
            # type reports it as a plain wrong-type error, which is the clearer message.
            value = raw
        self._use(source)
        cls, tree, prefix = self.cls, self.tree, ""
        *sections, leaf = key.split(".")
        for name in sections:
            hints = _field_types(cls)
            if name not in hints:
                raise ConfigError(f"{source}: unknown key {prefix + name!r} (valid: {_valid(cls)})")
            sub = _section_class(hints[name])
            if sub is None:
                kind = _type_name(hints[name])
                raise ConfigError(f"{source}: unknown key {key!r} ({prefix + name!r} has type {kind}, not a section)")
            cls, tree, prefix = sub, _open_section(tree, name, sub), f"{prefix}{name}."
        self._set(cls, tree, leaf, value, source, prefix, raw=raw)

    def build(self) -> Any:
        return self._build(self.cls, self.tree, prefix="")

    # -- internals --

    def _use(self, source: str) -> None:
        if source not in self.sources:
            self.sources.append(source)

    def _merge(self, cls: type, tree: dict, data: Mapping, source: str, prefix: str) -> None:
        for key, value in data.items():
            self._set(cls, tree, str(key), value, source, prefix)

    def _set(self, cls: type, tree: dict, key: str, value: Any, source: str, prefix: str, raw: str | None = None):
        hints = _field_types(cls)
        dotted = prefix + key
        removed = getattr(cls, "REMOVED_FIELDS", {})
        if key not in hints and key in removed:
            # The compatibility rule for removed knobs (docs/training.md, "Configs"): a file that
            # still names one loads if it holds the value every run used (the knob did nothing),
            # and is an error otherwise, since that setting no longer exists.
            if value == removed[key] and type(value) is type(removed[key]):
                return
            raise ConfigError(f"{source}: {dotted} was removed; only {dotted}: {_plain(removed[key])!r} "
                              f"(what it did by default) still loads, got {_describe(value)}")
        if key not in hints:
            raise ConfigError(f"{source}: unknown key {dotted!r} (valid: {_valid(cls)})")
        tp = hints[key]
        sub = _section_class(tp)
        if sub is not None:
            if value is None and _allows_none(tp):
                tree[key] = None
            elif isinstance(value, Mapping):
                # Merge rather than replace: `model: {dim: 256}` changes dim and keeps the rest.
                self._merge(sub, _open_section(tree, key, sub), value, source, prefix=dotted + ".")
            else:
                expected = f"a mapping of {sub.__name__} keys" + (" or null" if _allows_none(tp) else "")
                raise ConfigError(f"{source}: {dotted}: expected {expected}, got {_describe(value)}")
        else:
            try:
                tree[key] = _coerce(value, tp, raw)
            except _Mismatch as m:
                raise ConfigError(
                    f"{source}: {dotted}{m.where}: expected {_type_name(m.tp)}, got {_describe(m.value)}"
                ) from None
        self.set_by[dotted] = source

    def _build(self, cls: type, tree: dict, prefix: str) -> Any:
        hints = _field_types(cls)
        kwargs = {}
        for name, value in tree.items():
            dotted = prefix + name
            if value is _REQUIRED:
                where = " + ".join(self.sources) or "config"
                raise ConfigError(f"{where}: missing required key {dotted!r}")
            sub = _section_class(hints[name])
            if sub is not None and isinstance(value, dict):
                value = self._build(sub, value, prefix=dotted + ".")
            kwargs[name] = value
        try:
            return cls(**kwargs)
        except ConfigError:
            raise
        except ValueError as e:
            section = prefix.rstrip(".")
            raise ConfigError(f"{self._blame(prefix)}: {section + ': ' if section else ''}{e}") from e

    def _blame(self, prefix: str) -> str:
        """The sources that set anything in the section at ``prefix``, in the order applied."""
        section = prefix.rstrip(".")
        touched = {src for key, src in self.set_by.items() if key.startswith(prefix) or key == section}
        return " + ".join(s for s in self.sources if s in touched) or "defaults"


def _default_tree(cls: type) -> dict[str, Any]:
    tree = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        if f.default is not dataclasses.MISSING:
            tree[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            tree[f.name] = f.default_factory()
        else:
            tree[f.name] = _REQUIRED
    return tree


def _instance_tree(obj: Any) -> dict[str, Any]:
    # Shallow on purpose: nested sections stay instances until a layer writes into them
    # (_open_section), and untouched ones are passed through to the constructor as they are.
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj) if f.init}


def _open_section(tree: dict, name: str, sub: type) -> dict:
    """The sub-tree for section ``name``, made editable: a default instance becomes its fields,
    and an unset or ``None`` (switched-off) section starts again from ``sub``'s defaults."""
    value = tree[name]
    if not isinstance(value, dict):
        tree[name] = _instance_tree(value) if isinstance(value, sub) else _default_tree(sub)
    return tree[name]


def read_config_file(path: str | Path) -> dict[str, Any]:
    """The mapping at the top of the YAML (or JSON) file at ``path``, unchecked, with this
    module's one-line errors for a missing, unreadable or malformed file; for a file whose keys
    are shared out over more than one config class (e.g. a teacher API file)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read config file: {e}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        problem = getattr(e, "problem", None) or str(e)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: invalid YAML{at}: {problem}") from None
    if data is None:  # an empty (or all-comments) file changes nothing
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys at the top level, got {_describe(data)}")
    return data


# --------------------------------------------------------------------------------------------
# Types


@functools.cache
def _field_types(cls: type) -> dict[str, Any]:
    """Resolved annotations of ``cls``'s init fields, in declaration order."""
    try:
        # get_type_hints because config modules use `from __future__ import annotations`,
        # which leaves every annotation as a string.
        hints = typing.get_type_hints(cls)
    except Exception as e:
        # A bug in the config class (e.g. a name only imported under TYPE_CHECKING), not in
        # the user's input: hence not a ConfigError.
        raise TypeError(f"cannot resolve the type annotations of {cls.__qualname__}: {e}") from e
    return {f.name: hints[f.name] for f in dataclasses.fields(cls) if f.init}


def _is_dataclass_instance(obj: Any) -> bool:
    return dataclasses.is_dataclass(obj) and not isinstance(obj, type)


def _is_union(tp: Any) -> bool:
    return typing.get_origin(tp) in (Union, types.UnionType)


def _allows_none(tp: Any) -> bool:
    return tp is type(None) or (_is_union(tp) and type(None) in typing.get_args(tp))


def _section_class(tp: Any) -> type | None:
    """The dataclass if a field of type ``tp`` is a nested section (``Sub`` or ``Sub | None``)."""
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return tp
    if _is_union(tp):
        members = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(members) == 1 and isinstance(members[0], type) and dataclasses.is_dataclass(members[0]):
            return members[0]
    return None


def _holds_literal(tp: Any) -> bool:
    """Whether ``tp`` is a ``Literal`` or a container or union with one inside."""
    if typing.get_origin(tp) is Literal:
        return True
    return any(_holds_literal(a) for a in typing.get_args(tp) if a is not Ellipsis)


class _Mismatch(Exception):
    """A value does not fit a type; ``where`` locates it inside the field (``[2]``, ``.key``)."""

    def __init__(self, tp: Any, value: Any, where: str = ""):
        super().__init__()
        self.tp, self.value, self.where = tp, value, where

    def inside(self, where: str) -> _Mismatch:
        return _Mismatch(self.tp, self.value, where + self.where)


def _coerce(value: Any, tp: Any, raw: str | None = None) -> Any:
    """``value`` checked against (and where allowed, converted to) ``tp``; raises _Mismatch.

    ``raw`` is the command-line text the value was parsed from, if any: a ``str`` field takes
    it verbatim, so ``name=2024`` or ``prompt=a: b`` don't need shell-proof YAML quoting."""
    if tp is Any or tp is object:
        return value
    if _is_union(tp):
        members = typing.get_args(tp)
        # None first: otherwise `str | None` would take "null" from the command line verbatim.
        if value is None and type(None) in members:
            return None
        for member in members:
            if member is type(None):
                continue
            with contextlib.suppress(_Mismatch):
                return _coerce(value, member, raw)
        raise _Mismatch(tp, value)

    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        # Compare types too, or True would match Literal[1].
        if any(value == a and type(value) is type(a) for a in args):
            return value
    elif tp is type(None):
        if value is None:
            return None
    elif tp is bool:
        if isinstance(value, bool):
            return value
    elif tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            with contextlib.suppress(ValueError):
                return float(value)
    elif tp is str:
        if isinstance(value, str):
            return value
        if raw is not None:
            return raw.strip()
    elif isinstance(tp, type) and issubclass(tp, PurePath):
        if isinstance(value, (str, PurePath)):
            return tp(value)
    elif tp is list or origin is list:
        if isinstance(value, (list, tuple)):
            item = args[0] if args else Any
            return [_coerce_item(v, item, f"[{i}]") for i, v in enumerate(value)]
    elif tp is tuple or origin is tuple:
        if isinstance(value, (list, tuple)):
            if not args:
                return tuple(value)
            if len(args) == 2 and args[1] is Ellipsis:
                return tuple(_coerce_item(v, args[0], f"[{i}]") for i, v in enumerate(value))
            if len(value) == len(args):
                return tuple(_coerce_item(v, a, f"[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    elif tp is dict or origin is dict:
        if isinstance(value, Mapping):
            kt, vt = args if args else (Any, Any)
            return {_coerce_item(k, kt, f".{k}"): _coerce_item(v, vt, f".{k}") for k, v in value.items()}
    else:
        raise TypeError(f"unsupported config field type {_type_name(tp)}")
    raise _Mismatch(tp, value)


def _coerce_item(value: Any, tp: Any, where: str) -> Any:
    try:
        return _coerce(value, tp)
    except _Mismatch as m:
        raise m.inside(where) from None


def _type_name(tp: Any) -> str:
    """``tp`` spelled the way it is written in the config class (``list[int]``, ``float | None``)."""
    if tp is type(None):
        return "None"
    if _is_union(tp):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin is not None:
        inner = ", ".join("..." if a is Ellipsis else _type_name(a) for a in args)
        return f"{getattr(origin, '__name__', repr(origin))}[{inner}]"
    return getattr(tp, "__name__", repr(tp))


# Long lists or prompts in an error message would bury the message itself.
_short = reprlib.Repr()
_short.maxstring = _short.maxother = 80
_short.maxlist = _short.maxtuple = _short.maxdict = 8


def _describe(value: Any) -> str:
    return f"{_short.repr(value)} ({type(value).__name__})"


def _valid(cls: type) -> str:
    return ", ".join(_field_types(cls))


def _check_config_class(cls: Any) -> None:
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"expected a dataclass config class, got {cls!r}")


def _check_overrides(overrides: Iterable[str]) -> list[str]:
    # A bare string is iterable too, and would otherwise fail as one override per character.
    if isinstance(overrides, str):
        raise TypeError("overrides must be a list of 'key=value' strings, not a single string")
    return list(overrides)


# --------------------------------------------------------------------------------------------
# Serialisation


def _plain(value: Any) -> Any:
    if _is_dataclass_instance(value):
        return config_to_dict(value)
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, PurePath):
        return str(value)
    return value


class _Dumper(yaml.SafeDumper):
    """Block-style mappings (one key per line, diff-friendly), but lists of scalars on one line
    (``betas: [0.9, 0.99]``) instead of one item per line."""


def _represent_list(dumper: yaml.SafeDumper, data: list) -> yaml.Node:
    flat = all(v is None or isinstance(v, (str, int, float, bool)) for v in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flat)


_Dumper.add_representer(list, _represent_list)
