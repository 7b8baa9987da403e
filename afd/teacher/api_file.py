"""The teacher API file behind ``api:FILE.yaml``: one flat mapping whose keys are shared out
between the HTTP client (``ClientOptions``) and the API it talks to (``afd.teacher.api.APISpec``).

Example (docs/teachers.md)::

    url: https://video.example.com
    mode: jobs
    status_path: /v2/generations/{job_id}
    token_env: VIDEO_API_KEY
    concurrency: 4

API fields start from ``preset`` (a name from ``afd.teacher.api.PRESETS``, default ``afd-sync``)
or from ``api`` (a preset name, or a mapping of API fields with its own optional ``preset``);
fields at the top level win over both. Both halves are checked by the config engine, so a wrong
key or type is one line naming the file, the key, what was expected and what was got.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from typing import Any

from afd.config import ConfigError, config_from_dict, read_config_file
from afd.teacher.api import SPEC_KEYS, APISpec, get_spec


@dataclass
class ClientOptions:
    """The client half of an API file: ``url`` and ``HTTPTeacher``'s keyword arguments.

    Only the keys a file sets are passed on, so the ``None`` defaults here never stand in for
    HTTPTeacher's own (which it documents and may change); ``null`` in a file is passed as is."""

    url: str
    api: str | dict[str, Any] | None = None
    id: str | None = None
    concurrency: int | None = None
    connect_timeout: float | None = None
    read_timeout: float | None = None
    retries: int | None = None
    backoff: float | None = None
    max_backoff: float | None = None
    deadline: float | None = None
    token_env: str | None = None
    journal: str | None = None
    max_bytes: int | None = None
    max_frames: int | None = None


CLIENT_KEYS = tuple(f.name for f in fields(ClientOptions))
API_KEYS = ("preset", *SPEC_KEYS)


def read_api_file(path: str | os.PathLike) -> tuple[str, APISpec, dict[str, Any]]:
    """``(url, spec, kwargs)`` for ``HTTPTeacher(url, api=spec, **kwargs)`` from the YAML (or JSON)
    file at ``path``; ``kwargs`` holds the client keys the file sets. Raises ConfigError."""
    data = read_config_file(path)
    unknown = sorted(set(data) - set(CLIENT_KEYS) - set(API_KEYS))
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(map(repr, unknown))}; "
                          f"client keys: {', '.join(CLIENT_KEYS)}; API keys: {', '.join(API_KEYS)}")
    client = config_from_dict(ClientOptions, {k: v for k, v in data.items() if k in CLIENT_KEYS}, source=str(path))
    base = {"preset": client.api} if isinstance(client.api, str) else dict(client.api or {})
    try:
        spec = get_spec({**base, **{k: v for k, v in data.items() if k in API_KEYS}}, source=str(path))
    except ConfigError:
        raise
    except ValueError as e:  # an unknown preset name: the file is not named yet
        raise ConfigError(f"{path}: {e}") from None
    kwargs = {k: getattr(client, k) for k in data if k in CLIENT_KEYS and k not in ("url", "api")}
    return client.url, spec, kwargs
