"""How to talk to one video API: the small adapter that lets ``HTTPTeacher`` reach a real
(commercial) text-to-video service by configuration alone.

Two shapes are supported:

* ``sync``: one request returns the clip, either as the response body (any content type but
  JSON) or as JSON holding a download URL at ``video_url_field``.
* ``jobs``: ``POST submit_path`` returns a job id at ``job_id_field``; ``GET status_path``
  (with ``{job_id}``) is polled every ``poll_interval`` s until ``status_field`` is one of
  ``done_values`` (then ``video_url_field`` is downloaded) or ``failed_values`` (then
  ``error_field`` is reported).

Field paths are dotted (``output.0.url``). ``body`` is the JSON request body; any string in it
equal to ``"{prompt}"`` or ``"{seed}"`` becomes the prompt (string) or seed (integer), and
these placeholders inside longer strings are replaced as text.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Literal
from urllib.parse import quote

from afd.config import check_choices, config_from_dict

# The environment variable holding the bearer token, for both the client and `afd teacher serve`.
DEFAULT_TOKEN_ENV = "AFD_TEACHER_TOKEN"


@dataclass(frozen=True)
class APISpec:
    """Endpoints and JSON field paths of one video API (see the module docstring)."""

    mode: Literal["sync", "jobs"] = "sync"
    submit_path: str = "/v1/videos"
    submit_method: str = "POST"
    body: Any = field(default_factory=lambda: {"prompt": "{prompt}", "seed": "{seed}"})
    headers: dict[str, str] = field(default_factory=dict)
    auth_header: str = "Authorization"
    auth_scheme: str = "Bearer"
    idempotency_header: str | None = "Idempotency-Key"
    job_id_field: str = "id"
    status_path: str = "/v1/jobs/{job_id}"
    status_field: str = "status"
    # A single string is one value; matched case-insensitively.
    done_values: tuple[str, ...] | str = ("succeeded",)
    failed_values: tuple[str, ...] | str = ("failed", "error", "cancelled", "canceled", "expired")
    error_field: str = "error.message"
    video_url_field: str = "video_url"
    poll_interval: float = 2.0

    def __post_init__(self):
        check_choices(self)
        for name in ("submit_path", "submit_method", "auth_header", "job_id_field", "status_path",
                     "status_field", "error_field", "video_url_field"):
            v = getattr(self, name)
            if not isinstance(v, str) or not v:
                raise ValueError(f"API field {name!r} must be a non-empty string, got {v!r}")
        if not isinstance(self.auth_scheme, str):
            raise ValueError(f"API field 'auth_scheme' must be a string (may be empty), got {self.auth_scheme!r}")
        if self.idempotency_header is not None and not isinstance(self.idempotency_header, str):
            raise ValueError(f"API field 'idempotency_header' must be a string or null, "
                             f"got {self.idempotency_header!r}")
        if not isinstance(self.headers, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                         for k, v in self.headers.items()):
            raise ValueError(f"API field 'headers' must map strings to strings, got {self.headers!r}")
        for name in ("done_values", "failed_values"):
            v = getattr(self, name)
            v = (v,) if isinstance(v, str) else v
            if not isinstance(v, (list, tuple)) or not v or not all(isinstance(x, str) for x in v):
                raise ValueError(f"API field {name!r} must be a non-empty list of strings, got {v!r}")
            object.__setattr__(self, name, tuple(x.lower() for x in v))
        if isinstance(self.poll_interval, bool) or not isinstance(self.poll_interval, (int, float)) \
                or not self.poll_interval > 0:
            raise ValueError(f"API field 'poll_interval' must be a number > 0 (seconds), got {self.poll_interval!r}")
        if self.mode == "jobs" and "{job_id}" not in self.status_path:
            raise ValueError(f"API field 'status_path' must contain '{{job_id}}', got {self.status_path!r}")

    def status_url(self, job_id: str) -> str:
        # The id comes from the server: quote it so it cannot steer the path elsewhere.
        return self.status_path.replace("{job_id}", quote(job_id, safe=""))

    def request_body(self, prompt: str, seed: int) -> Any:
        return render_template(self.body, prompt, seed)


PRESETS = {
    "afd-sync": APISpec(),
    "afd-jobs": APISpec(mode="jobs", submit_path="/v1/jobs"),
}
SPEC_KEYS = tuple(f.name for f in fields(APISpec))


def get_spec(api: APISpec | str | dict | None, source: str = "api") -> APISpec:
    """An APISpec from a spec, a preset name, or a dict of fields (with optional ``preset``, the
    spec the fields change; default ``afd-sync``). ``source`` names the dict in errors."""
    if api is None:
        return PRESETS["afd-sync"]
    if isinstance(api, APISpec):
        return api
    if isinstance(api, str):
        if api not in PRESETS:
            raise ValueError(f"unknown API preset {api!r}; choose from {', '.join(PRESETS)}")
        return PRESETS[api]
    if isinstance(api, dict):
        api = dict(api)
        base = get_spec(api.pop("preset", "afd-sync"))
        return config_from_dict(APISpec, api, source=source, base=base)
    raise ValueError(f"api must be a preset name, a dict or an APISpec, got {type(api).__name__}")


def render_template(template: Any, prompt: str, seed: int) -> Any:
    """``template`` with "{prompt}" / "{seed}" placeholders filled (see the module docstring)."""
    if isinstance(template, str):
        if template == "{prompt}":
            return prompt
        if template == "{seed}":
            return seed
        return template.replace("{prompt}", prompt).replace("{seed}", str(seed))
    if isinstance(template, dict):
        return {k: render_template(v, prompt, seed) for k, v in template.items()}
    if isinstance(template, list):
        return [render_template(v, prompt, seed) for v in template]
    return template


class FieldMissing(KeyError):
    """A dotted field path that does not resolve; ``str()`` says where it stopped."""

    def __str__(self) -> str:
        return self.args[0]


def get_field(obj: Any, path: str) -> Any:
    """``obj`` at dotted ``path`` (dict keys, list indices); FieldMissing if absent."""
    cur = obj
    for i, part in enumerate(path.split(".")):
        if isinstance(cur, dict) and part in cur:
            cur = cur[part]
        elif isinstance(cur, list) and part.lstrip("-").isdigit() and -len(cur) <= int(part) < len(cur):
            cur = cur[int(part)]
        else:
            where = ".".join(path.split(".")[:i]) or "the top level"
            have = f"keys {sorted(cur)[:12]}" if isinstance(cur, dict) else f"a {type(cur).__name__}"
            raise FieldMissing(f"no field {part!r} at {where} (found {have})")
        if cur is None:
            raise FieldMissing(f"field {'.'.join(path.split('.')[:i + 1])!r} is null")
    return cur
