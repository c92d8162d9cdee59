"""JSON values in a result: SQL NULL and JSON's `null` kept apart.

A JSON column's SQL NULL is None, as in every other object column; the JSON text `null` (a value that is
there) is `JSON_NULL`, so `frame["doc"].isna()` marks exactly the rows where the column is NULL. Inside an
object or array a JSON null is None, as `json.loads` gives it (there it cannot be taken for a missing value).
Every dialect decodes JSON through `loads_json`, so the convention is the same whichever server sent it.
"""

from __future__ import annotations

import json


class JsonNull:
    """The JSON value `null` as a whole column value (one instance, `JSON_NULL`): falsy, not NA for pandas,
    equal only to itself, and the same object after copy or pickle."""

    _instance: JsonNull | None = None

    def __new__(cls) -> JsonNull:
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "JSON_NULL"

    def __bool__(self) -> bool:
        return False

    def __reduce__(self) -> tuple[type[JsonNull], tuple[()]]:
        return JsonNull, ()


JSON_NULL = JsonNull()


def loads_json(text: str | bytes | bytearray) -> object:
    """A JSON document as Python objects (json.loads), with a top-level `null` as JSON_NULL rather than None.
    Raises ValueError (json.JSONDecodeError, UnicodeDecodeError) for text that is not JSON."""
    value = json.loads(text)
    return JSON_NULL if value is None else value


def dumps_json(value: object) -> str:
    """A value as JSON text for a driver parameter: JSON_NULL as `null`, anything else through json.dumps."""
    return "null" if value is JSON_NULL else json.dumps(value)
