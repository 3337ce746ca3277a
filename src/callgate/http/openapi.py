"""The OpenAPI 3.1 description, assembled from the fragments each route module registers.

A route module hands ``Api.route`` an operation fragment (operationId, summary, parameters,
request body, its own responses). This module adds what follows from the route's access level
(the bearer security requirement and the 401/403 answers) and the path parameters, so that the
published document matches what the service really does: the schemathesis test holds it to that.

The schemas of bodies that have a pydantic model (the policy document above all) are generated
from it (``OpenApi.add_type``), so that what is published is what is validated:
``tests/http_api/test_openapi_schema.py`` runs the policy tests' documents through the served
schema. OpenAPI 3.1's schema dialect is JSON Schema 2020-12, which is what pydantic writes.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from typing import Any

from pydantic import TypeAdapter
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaMode, JsonSchemaValue
from pydantic_core import CoreSchema, core_schema

from callgate import __version__
from callgate.http.auth import Access
from callgate.policy.syntax import CLIENT_ID_PATH_PATTERN, CLIENT_ID_RULE, EXTENSION_RULE
from callgate.policy.syntax import EXTENSION_PATTERN as EXTENSION_PATTERN  # route modules use it

JsonObject = dict[str, object]
"""A fragment of the OpenAPI document (it is JSON by nature; it never leaves this layer)."""

REF_TEMPLATE = "#/components/schemas/{model}"

CLIENT_ID_SCHEMA: JsonObject = {
    "type": "string",
    "pattern": CLIENT_ID_PATH_PATTERN,
    "description": CLIENT_ID_RULE,
}

EXTENSION_SCHEMA: JsonObject = {
    "type": "string",
    "pattern": EXTENSION_PATTERN,
    "description": EXTENSION_RULE,
}


class ComponentSchema(GenerateJsonSchema):
    """pydantic's JSON Schema, with the key checks it leaves out put back.

    pydantic checks the keys of a model's typed extra data (``eavesdrop_<ext>``) and of a
    ``dict`` whose key type has a pattern (group names), but its JSON Schema lets any key through:
    it writes ``additionalProperties`` for the former and a bare ``patternProperties`` for the
    latter. Here both become ``patternProperties`` with ``additionalProperties: false``, as
    strict as the model. Field titles are left out (they only repeat the field's name) and
    keywords stay in the order they were written.
    """

    def model_fields_schema(self, schema: core_schema.ModelFieldsSchema) -> JsonSchemaValue:
        json_schema = super().model_fields_schema(schema)
        keys = schema.get("extras_keys_schema")
        if keys is not None:
            target = self.resolve_ref_schema(json_schema)
            values = target.pop("additionalProperties", {})
            key_schema = self.generate_inner(keys)
            if "pattern" in key_schema:
                target["patternProperties"] = {key_schema["pattern"]: values}
                target["additionalProperties"] = False
            else:
                target["propertyNames"] = key_schema
                target["additionalProperties"] = values
        return json_schema

    def dict_schema(self, schema: core_schema.DictSchema) -> JsonSchemaValue:
        json_schema = super().dict_schema(schema)
        if "patternProperties" in json_schema:  # keys that miss the pattern are refused too
            json_schema.setdefault("additionalProperties", False)
        return json_schema

    def field_title_should_be_set(self, schema: CoreSchema | Any) -> bool:
        return False

    def sort(self, value: JsonSchemaValue, parent_key: str | None = None) -> JsonSchemaValue:
        return value  # in declaration order, examples included, as a person reads them


def type_schema(type_: Any, mode: JsonSchemaMode) -> tuple[JsonObject, dict[str, JsonObject]]:
    """The JSON Schema of ``type_`` (a model, or a union of them) and of the models it names.

    ``mode="validation"`` describes what the model accepts (a request body: fields with defaults
    may be left out); ``"serialization"`` what it writes (an answer).
    """
    schema: JsonObject = TypeAdapter(type_).json_schema(
        mode=mode, ref_template=REF_TEMPLATE, schema_generator=ComponentSchema
    )
    definitions = schema.pop("$defs", {})
    assert isinstance(definitions, dict)
    return schema, definitions


ERROR_SCHEMA: JsonObject = {
    "type": "object",
    "required": ["error", "message", "details"],
    "properties": {
        "error": {"type": "string", "description": "stable machine-readable code"},
        "message": {"type": "string"},
        "details": {
            "type": "array",
            "items": {"type": "object"},
            "description": 'for a document error: [{"loc": [...], "message": "..."}]',
        },
    },
}

_ERROR_TEXT = {
    400: "Malformed JSON (also inside the string form of call_control_groups)",
    401: "No token, a bad token, or no admin token configured",
    403: "The token belongs to another client, or is not the admin token",
    404: "Not found",
    409: "Conflict",
    412: "If-Match does not match the current ETag; nothing changed",
    413: "Request body over 2 MiB",
    415: "The body is not sent as JSON (Content-Type: application/json or application/*+json)",
    422: "Invalid input (a key given twice in a JSON body included): details locate each error",
    503: "The store is unavailable",
}


def error_response(status: int, description: str | None = None) -> JsonObject:
    return {
        "description": description or _ERROR_TEXT[status],
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def json_response(description: str, schema: JsonObject, **extra: object) -> JsonObject:
    content = {"application/json": {"schema": schema}}
    return {"description": description, "content": content, **extra}


def ref(name: str) -> JsonObject:
    return {"$ref": f"#/components/schemas/{name}"}


_PATH_PARAM = re.compile(r"\{(\w+)\}")


class OpenApi:
    def __init__(self, title: str = "callgate") -> None:
        self._title = title
        self._paths: dict[str, dict[str, JsonObject]] = {}
        self._schemas: dict[str, JsonObject] = {"Error": ERROR_SCHEMA}
        self._path_params: dict[str, JsonObject] = {"client_id": CLIENT_ID_SCHEMA}
        self._tags: dict[str, str] = {}

    def add_schema(self, name: str, schema: JsonObject) -> None:
        existing = self._schemas.get(name)
        if existing is not None and existing != schema:
            raise ValueError(f"two different schemas are named {name!r}")
        self._schemas[name] = schema

    def add_type(
        self, name: str, type_: Any, mode: JsonSchemaMode = "validation", **overrides: object
    ) -> None:
        """The schema generated from ``type_`` as ``name``, with the models it names beside it
        (under their own names). ``overrides`` replace top-level keywords (a title, a
        description that speaks to API users)."""
        schema, definitions = type_schema(type_, mode)
        for model_name, model_schema in definitions.items():
            self.add_schema(model_name, model_schema)
        self.add_schema(name, {**schema, **overrides})

    def add_path_param(self, name: str, schema: JsonObject) -> None:
        """The schema of ``{name}`` wherever it appears in a path."""
        self._path_params[name] = schema

    def add_tag(self, name: str, description: str) -> None:
        self._tags[name] = description

    def add_operation(
        self, method: str, path: str, access: Access, operation: Mapping[str, object]
    ) -> None:
        op: JsonObject = copy.deepcopy(dict(operation))
        responses = op.setdefault("responses", {})
        assert isinstance(responses, dict)
        params = op.setdefault("parameters", [])
        assert isinstance(params, list)
        named = {p.get("name") for p in params if isinstance(p, dict)}
        for name in _PATH_PARAM.findall(path):
            if name not in named:
                schema = self._path_params.get(name, {"type": "string"})
                params.insert(0, {"name": name, "in": "path", "required": True, "schema": schema})
        if access is Access.PUBLIC:
            op["security"] = []
        else:
            op["security"] = [{"bearer": []}]
            responses.setdefault("401", error_response(401))
            responses.setdefault("403", error_response(403))
            responses.setdefault("503", error_response(503))
        if "client_id" in _PATH_PARAM.findall(path) or "requestBody" in op:
            responses.setdefault("422", error_response(422))
        if "requestBody" in op:  # every body is read by callgate.http.body.read_json
            for status in (400, 413, 415):
                responses.setdefault(str(status), error_response(status))
        if not params:
            del op["parameters"]
        self._paths.setdefault(path, {})[method.lower()] = op

    def document(self) -> JsonObject:
        return {
            "openapi": "3.1.0",
            "info": {
                "title": self._title,
                "version": __version__,
                "description": (
                    "Call control group policies for Asterisk: pickup, listen, whisper and"
                    " phone replace, per client. Send 'Authorization: Bearer <token>'. A request"
                    " body is JSON sent with 'Content-Type: application/json' (415 otherwise);"
                    " an object that gives a key twice is a 422 duplicate_key."
                ),
            },
            "tags": [{"name": n, "description": d} for n, d in self._tags.items()],
            "paths": copy.deepcopy(self._paths),
            "components": {
                "schemas": copy.deepcopy(self._schemas),
                "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            },
            "security": [{"bearer": []}],
        }
