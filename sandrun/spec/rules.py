"""What JobSpec's validators enforce across fields (one program, code or a repository,
no volumes with consensus...), said in its JSON schema too, so a client that checks a
body against the schema sends only what the server accepts."""

from __future__ import annotations

from typing import Any

from sandrun.spec.text import forbid_nul_in_schema

# What JobSpec's validators enforce across fields, said in the schema too.
_PROGRAM_RULES: dict[str, Any] = {
    "oneOf": [
        {"required": [field], "properties": {field: {"type": kind}}}
        for field, kind in (("command", "array"), ("shell", "string"), ("script", "string"))
    ],
    "if": {"required": ["interpreter"], "properties": {"interpreter": {"type": "string"}}},
    "then": {"required": ["script"], "properties": {"script": {"type": "string"}}},
    "allOf": [
        {  # a consensus job's replicas run apart: none mounts a volume
            "not": {
                "required": ["volumes", "consensus"],
                "properties": {
                    "volumes": {"type": "array", "minItems": 1},
                    "consensus": {"type": ["string", "integer", "object"]},
                },
            }
        },
        {
            "not": {
                "required": ["code", "repository"],
                "properties": {
                    "code": {"type": "string"},
                    "repository": {"type": ["string", "object"]},
                },
            }
        },
        {
            "if": {"required": ["working_dir"], "properties": {"working_dir": {"type": "string"}}},
            "then": {
                "properties": {
                    "inputs": {"maxProperties": 0},
                    "inputs_from": {"maxProperties": 0},
                    "code": {"type": "null"},
                    "repository": {"type": "null"},
                }
            },
        },
    ],
}


def program_rules(schema: dict[str, Any]) -> None:
    forbid_nul_in_schema(schema)
    schema.update(_PROGRAM_RULES)
