"""The teacher API file (``api:FILE.yaml``) is read by the config engine: presets, the ``api`` key
and top-level fields layer as documented, and bad keys, types and choices are one line naming the
file and the key."""

from __future__ import annotations

import inspect
import re

import pytest

from afd.teacher.api import PRESETS, APISpec, get_spec
from afd.teacher.api_file import CLIENT_KEYS, read_api_file
from afd.teacher.http import HTTPTeacher


def api_file(tmp_path, text: str):
    path = tmp_path / "api.yaml"
    path.write_text(text)
    return path


def test_fields_layer_over_the_preset_and_only_set_client_keys_are_passed(tmp_path):
    path = api_file(tmp_path, "url: http://h:1\napi: {preset: afd-jobs, poll_interval: 3}\n"
                              "poll_interval: 0.5\ndone_values: Completed\nretries: 2\ntoken_env: null\n")
    url, spec, kwargs = read_api_file(path)
    assert url == "http://h:1"
    assert spec == APISpec(mode="jobs", submit_path="/v1/jobs", poll_interval=0.5, done_values=("completed",))
    assert kwargs == {"retries": 2, "token_env": None}  # absent keys keep HTTPTeacher's defaults
    assert read_api_file(api_file(tmp_path, "url: http://h:1\npreset: afd-jobs\n"))[1] == PRESETS["afd-jobs"]
    assert read_api_file(api_file(tmp_path, "url: http://h:1\napi: afd-jobs\n"))[1] == PRESETS["afd-jobs"]


@pytest.mark.parametrize("text, msg", [
    ("url: http://h:1\nmode: batch\n", "api.yaml: mode: expected one of 'sync', 'jobs', got 'batch' (str)"),
    ("url: http://h:1\npoll_interval: soon\n", "api.yaml: poll_interval: expected float, got 'soon' (str)"),
    ("url: http://h:1\nheaders: {X-Key: 3}\n", "api.yaml: headers.X-Key: expected str, got 3 (int)"),
    ("url: http://h:1\nconcurrency: 2.5\n", "api.yaml: concurrency: expected int | None, got 2.5 (float)"),
    ("url: http://h:1\napi: {mdoe: jobs}\n", "api.yaml: unknown key 'mdoe'"),
    ("url: http://h:1\npreset: openai\n", "api.yaml: unknown API preset 'openai'"),
    ("url: http://h:1\nmode: jobs\nstatus_path: /s\n", "api.yaml: API field 'status_path' must contain '{job_id}'"),
    ("- url\n", "api.yaml: expected a mapping of config keys at the top level"),
])
def test_bad_files_are_one_line_naming_file_and_key(tmp_path, text, msg):
    with pytest.raises(ValueError, match=re.escape(msg)) as e:
        read_api_file(api_file(tmp_path, text))
    assert "\n" not in str(e.value)


def test_get_spec_checks_a_dict_like_a_file():
    assert get_spec({"preset": "afd-jobs", "poll_interval": 1}).poll_interval == 1.0
    with pytest.raises(ValueError, match=re.escape("api: idempotency_header: expected str | None, got 5 (int)")):
        get_spec({"idempotency_header": 5})


def test_client_keys_are_the_constructor_keywords():
    """Every HTTPTeacher keyword can be set from a file, and the file knows no other (``api`` is
    the spec; ``transport`` is for tests only)."""
    params = inspect.signature(HTTPTeacher.__init__).parameters
    keywords = {n for n, p in params.items() if p.kind is p.KEYWORD_ONLY} - {"transport"}
    assert set(CLIENT_KEYS) - {"url"} == keywords
