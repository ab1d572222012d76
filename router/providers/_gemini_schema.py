"""JSON Schema -> Gemini's ``Schema`` (a subset of OpenAPI 3.0), for tools and JSON output.

Keywords Gemini lacks are dropped; constructs it cannot express raise ``Incompatible``, and
the caller decides: refuse the tool (400), or fall back to plain JSON mode.
"""

from __future__ import annotations

from typing import Any

_TYPES = {"string", "number", "integer", "boolean", "array", "object"}
# Schema fields both APIs accept (an OpenAPI 3.0 subset); the others are dropped or rejected.
_SCHEMA_SCALARS = ("title", "description", "nullable", "required", "minItems", "maxItems",
                   "minLength", "maxLength", "pattern", "minimum", "maximum", "minProperties",
                   "maxProperties", "propertyOrdering")
_FORMATS = {"enum", "date-time", "int32", "int64", "float", "double"}  # what the Gemini API takes


class Incompatible(Exception):
    """A JSON Schema construct Gemini's Schema cannot express."""


def gemini_schema(root: Any) -> dict[str, Any]:
    """The whole conversion, with ``root``'s ``$defs`` / ``definitions`` resolved."""
    return _schema(root, _defs(root) if isinstance(root, dict) else {}, frozenset())


def _defs(root: dict[str, Any]) -> dict[str, Any]:
    defs = {**(root.get("definitions") or {}), **(root.get("$defs") or {})}
    return defs if all(isinstance(v, dict) for v in defs.values()) else {}


def _schema(node: Any, defs: dict[str, Any], seen: frozenset[str]) -> dict[str, Any]:
    """Gemini's ``Schema`` (a subset of OpenAPI 3.0) for a JSON Schema node."""
    if not isinstance(node, dict):
        raise Incompatible("a schema must be an object")
    if "$ref" in node:
        ref = str(node["$ref"])
        name = ref.rsplit("/", 1)[-1]
        if not ref.startswith(("#/$defs/", "#/definitions/")) or name not in defs:
            raise Incompatible(f"unresolvable $ref {ref!r}")
        if name in seen:
            raise Incompatible(f"recursive $ref {ref!r}")
        merged = {**defs[name], **{k: v for k, v in node.items() if k != "$ref"}}
        return _schema(merged, defs, seen | {name})
    if isinstance(node.get("allOf"), list) and len(node["allOf"]) == 1:
        rest = {k: v for k, v in node.items() if k != "allOf"}
        return _schema({**node["allOf"][0], **rest}, defs, seen)
    if "allOf" in node:
        raise Incompatible("allOf")
    out: dict[str, Any] = {}
    kind = node.get("type")
    if isinstance(kind, list):
        kinds = [k for k in kind if k != "null"]
        if len(kinds) < len(kind):
            out["nullable"] = True
        if len(kinds) == 1:
            kind = kinds[0]
        elif kinds:
            out["anyOf"] = [_schema({**node, "type": k}, defs, seen) for k in kinds]
            kind = None
        else:
            raise Incompatible("a type that is only null")
    if kind == "null":
        raise Incompatible("a type that is only null")
    if kind is not None:
        if kind not in _TYPES:
            raise Incompatible(f"type {kind!r}")
        out["type"] = kind.upper()
    for key in _SCHEMA_SCALARS:
        if key in node:
            out[key] = node[key]
    if node.get("format") in _FORMATS:
        out["format"] = node["format"]
    enum = [node["const"]] if "const" in node else node.get("enum")
    if enum is not None:
        if not isinstance(enum, list) or not all(isinstance(v, str) for v in enum):
            raise Incompatible("an enum of non-string values")
        out["enum"] = enum
        out.setdefault("type", "STRING")
    if isinstance(node.get("properties"), dict):
        out["properties"] = {k: _schema(v, defs, seen) for k, v in node["properties"].items()}
    if "items" in node:
        if not isinstance(node["items"], dict):
            raise Incompatible("tuple items")
        out["items"] = _schema(node["items"], defs, seen)
    variants = node.get("anyOf", node.get("oneOf"))
    if isinstance(variants, list) and "anyOf" not in out:
        nulls = [v for v in variants if isinstance(v, dict) and v.get("type") == "null"]
        others = [v for v in variants if v not in nulls]
        if nulls:
            out["nullable"] = True
        if len(others) == 1:
            out.update(_schema(others[0], defs, seen))
        elif others:
            out["anyOf"] = [_schema(v, defs, seen) for v in others]
    return out
