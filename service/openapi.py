"""The OpenAPI 3.1 document for the lead service, built from the same pydantic models that
validate requests, so the document and the validation cannot drift apart."""

from __future__ import annotations

from functools import cache
from typing import Any

from latency_lab.core.toggles import EAGER_LOADERS, LOADER_HEADER, Toggle
from latency_lab.core.world import World
from latency_lab.service.schemas import MAX_LIMIT, LeadCreate, LeadPatch

REF = "#/components/schemas/{model}"


def _error(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": REF.format(model="Error")}}},
    }


def _json(schema_ref: str, description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": REF.format(model=schema_ref)}}},
    }


def _body(model: str) -> dict[str, Any]:
    return {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": REF.format(model=model)}}},
    }


LEAD_ID = {
    "name": "lead_id",
    "in": "path",
    "required": True,
    "schema": {"type": "integer", "minimum": 1},
}
LOADER = {
    "name": LOADER_HEADER,
    "in": "header",
    "description": "With eager_loading on, how leads are loaded (loopback or admin token): "
    "joined (one JOIN, the article's fix), selectin (4 statements), rows (3, no ORM objects) "
    "or json (the database builds the document; the default). The JSON is the same.",
    "schema": {"type": "string", "enum": list(EAGER_LOADERS)},
}


@cache
def openapi_document() -> dict[str, Any]:
    schemas: dict[str, Any] = {
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {
                "error": {"type": "string"},
                "status": {"type": "integer"},
                "fields": {"type": "array", "items": {"type": "object"}},
            },
        },
        "Lead": {"type": "object", "description": "A lead with owner, tags and metadata embedded"},
        "LeadPage": {
            "type": "object",
            "required": ["leads", "total"],
            "properties": {
                "leads": {"type": "array", "items": {"$ref": REF.format(model="Lead")}},
                "total": {"type": "integer"},
            },
        },
        "Stats": {"type": "object"},
        "Toggles": {
            "type": "object",
            "additionalProperties": False,
            "properties": {t.value: {"type": "boolean"} for t in Toggle},
        },
    }
    for model in (LeadCreate, LeadPatch, World):
        schema = model.model_json_schema(ref_template=REF)
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    bad = _error("bad input (the body names the problem)")
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Latency Lab lead service",
            "version": "0.1.0",
            "description": "Every response carries Server-Timing and traceresponse.",
        },
        "paths": {
            "/api/leads": {
                "get": {
                    "summary": "A page of leads",
                    "parameters": [
                        {
                            "name": "limit",
                            "in": "query",
                            "schema": {
                                "type": "integer",
                                "minimum": 1,
                                "maximum": MAX_LIMIT,
                                "default": 100,
                            },
                        },
                        {
                            "name": "offset",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 0, "default": 0},
                        },
                        {"name": "status", "in": "query", "schema": {"type": "string"}},
                        {"name": "tag", "in": "query", "schema": {"type": "string"}},
                        LOADER,
                    ],
                    "responses": {"200": _json("LeadPage", "leads and total"), "400": bad},
                },
                "post": {
                    "summary": "Create a lead (email, analytics, enrichment follow)",
                    "requestBody": _body("LeadCreate"),
                    "responses": {
                        "201": _json("Lead", "created"),
                        "400": bad,
                        "413": _error("body too large"),
                        "415": bad,
                        "422": _error("validation failed"),
                    },
                },
            },
            "/api/leads/{lead_id}": {
                "parameters": [LEAD_ID],
                "get": {
                    "summary": "One lead",
                    "parameters": [LOADER],
                    "responses": {
                        "200": _json("Lead", "the lead"),
                        "400": bad,
                        "404": _error("no such lead"),
                    },
                },
                "patch": {
                    "summary": "Change status or score",
                    "requestBody": _body("LeadPatch"),
                    "responses": {
                        "200": _json("Lead", "updated"),
                        "400": bad,
                        "404": _error("no such lead"),
                        "422": _error("validation failed"),
                    },
                },
            },
            "/api/stats": {
                "get": {
                    "summary": "Aggregates (L2-cached when app_cache is on)",
                    "responses": {"200": _json("Stats", "aggregates")},
                }
            },
            "/admin/toggles": {
                "get": {
                    "summary": "Shared toggles",
                    "responses": {"200": {"description": "toggles"}, "403": _error("not allowed")},
                },
                "put": {
                    "summary": "Change toggles",
                    "requestBody": _body("Toggles"),
                    "responses": {
                        "200": {"description": "toggles"},
                        "400": bad,
                        "401": _error("token required"),
                        "403": _error("not allowed"),
                    },
                },
            },
            "/admin/world": {
                "get": {
                    "summary": "The simulated world",
                    "responses": {"200": _json("World", "world"), "403": _error("not allowed")},
                },
                "put": {
                    "summary": "Change the world",
                    "requestBody": _body("World"),
                    "responses": {
                        "200": _json("World", "world"),
                        "400": bad,
                        "401": _error("token required"),
                        "403": _error("not allowed"),
                    },
                },
            },
            "/healthz": {
                "get": {
                    "summary": "Liveness and telemetry counters",
                    "responses": {
                        "200": {"description": "healthy"},
                        "503": {"description": "degraded"},
                    },
                }
            },
            "/": {
                "get": {
                    "summary": "The lead browser page",
                    "responses": {"200": {"description": "HTML"}},
                }
            },
        },
        "components": {"schemas": schemas},
    }
