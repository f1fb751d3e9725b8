"""The OpenAPI 3.1 document of the operator's API (backend/api.py), served at
/api/v1/openapi.json. Written by hand next to the route table; tests/test_api.py
checks that both list the same operations and that real responses match the
schemas here (OpenAPI 3.1 schemas are JSON Schema 2020-12)."""
from __future__ import annotations

from backend.push import SECTIONS

VERSION = "1.0.0"


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict, desc: str = "OK") -> dict:
    return {"description": desc, "content": {"application/json": {"schema": schema}}}


def _err(*codes: int) -> dict:
    text = {400: "bad request", 401: "no account (a token or a session is needed)",
            403: "the account's role is too low", 404: "not found", 409: "refused in the current state",
            413: "body too large", 422: "the document breaks the box's rules", 502: "the broker failed",
            503: "not available on this server"}
    return {str(c): _json(_ref("Error"), text[c]) for c in codes}


def _page(item: str) -> dict:
    return {"type": "object", "required": ["limit", "offset", "items"],
            "properties": {"total": {"type": "integer", "minimum": 0}, "limit": {"type": "integer"},
                           "offset": {"type": "integer"}, "items": {"type": "array", "items": _ref(item)}}}


def _box_page() -> dict:
    p = _page("BoxSummary")
    p["required"] = ["total", "total_capped", "limit", "offset", "next", "items"]
    p["properties"].update({"total_capped": {"type": "boolean", "description": "true: more than `total` match"},
                            "next": {"type": ["string", "null"],
                                     "description": "`after` for the next page (keyset), null at the end"}})
    return p


_LIMIT = [{"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 500,
                                                      "default": 50}},
          {"name": "offset", "in": "query", "schema": {"type": "integer", "minimum": 0, "default": 0}}]


def _path(name: str, desc: str, schema: dict | None = None) -> dict:
    return {"name": name, "in": "path", "required": True, "description": desc,
            "schema": schema or {"type": "string", "minLength": 1}}


NUM = {"type": ["number", "null"]}
STR = {"type": ["string", "null"]}

SCHEMAS = {
    "Error": {"type": "object", "required": ["error", "message"],
              "properties": {"error": {"type": "string"}, "message": {"type": "string"},
                             "violations": {"type": "array", "items": {
                                 "type": "object", "required": ["field", "rule"],
                                 "properties": {"field": {"type": "string"}, "rule": {"type": "string"}}}}}},
    "Me": {"type": "object", "required": ["name", "role"],
           "properties": {"name": {"type": "string"}, "role": _ref("Role")}},
    "Role": {"enum": ["viewer", "operator", "admin"]},
    "BoxSummary": {"type": "object", "required": ["box", "state", "last_seen", "alarms"],
                   "properties": {"box": {"type": "string"}, "state": {"type": "string"}, "last_seen": NUM,
                                  "fw": STR, "boot": {"type": ["integer", "null"]},
                                  "address": STR, "building": STR,
                                  "alarms": {"type": "integer", "minimum": 0}}},
    "Inventory": {"type": ["object", "null"], "description": "the bench's record (no secret) and the place",
                  "properties": {"box": {"type": "string"}, "mac": STR, "chip": STR, "flash_size": STR,
                                 "verdict": STR, "tested_at": NUM, "checks_passed": {"type": ["integer", "null"]},
                                 "checks_failed": {"type": ["integer", "null"]}, "labelled": {"type": "boolean"},
                                 "address": STR, "building": STR, "imported_at": {"type": "number"}}},
    "Place": {"type": "object", "properties": {"address": {"type": "string", "maxLength": 200},
                                               "building": {"type": "string", "maxLength": 200}}},
    "BoxAlarm": {"type": "object", "required": ["code", "detail"],
                 "description": "an active alarm (with its id, severity and acknowledgement), or one computed "
                                "on read that ingest has not raised (no id)",
                 "properties": {"code": {"type": "string"}, "detail": {"type": "string"}, "id": {"type": "integer"},
                                "severity": {"type": "string"}, "raised_at": NUM, "acknowledged_by": STR,
                                "acknowledged_at": NUM}},
    "BoxDetail": {"type": "object",
                  "required": ["box", "state", "last_seen", "alarms", "latest", "desired_documents",
                               "reported_documents", "tags", "pending", "versions"],
                  "properties": {
                      "box": {"type": "string"}, "state": {"type": "string"}, "last_seen": NUM,
                      "fw": STR, "boot": {"type": ["integer", "null"]}, "epoch": {"type": ["integer", "null"]},
                      "alarms": {"type": "array", "items": _ref("BoxAlarm")},
                      "alarm_history": {"type": "array", "items": _ref("Alarm"),
                                        "description": "the box's last 20 alarms, cleared ones included"},
                      "latest": {"type": "object", "description": "newest message per kind (and per event:TYPE)",
                                 "additionalProperties": _ref("Sample")},
                      "desired_documents": {"type": "array", "items": {
                          "type": "object", "required": ["section", "version", "source", "document"],
                          "properties": {"section": {"type": "string"}, "version": {"type": "integer"},
                                         "source": {"type": "string"},
                                         "document": {"type": ["object", "null"]}}}},
                      "reported_documents": {"type": "array", "items": {
                          "type": "object", "required": ["section", "document"],
                          "properties": {"section": {"type": "string"},
                                         "version": {"type": ["integer", "null"]},
                                         "status": STR, "document": {"type": "object"},
                                         "received_at": NUM}}},
                      "tags": {"type": "array", "items": {"type": "string"}},
                      "pending": {"type": "array", "items": {"type": "string"}},
                      "versions": {"type": "object"},
                      "speed_ratio": NUM, "weak_share": NUM, "inventory": _ref("Inventory")}},
    "Sample": {"type": "object", "required": ["boot", "seq", "received_at", "data"],
               "properties": {"boot": {"type": "integer"}, "seq": {"type": "integer"},
                              "ts": {"type": ["integer", "null"]}, "received_at": {"type": "number"},
                              "data": {}}},
    "Telemetry": {"type": "object", "required": ["box", "kind", "items"],
                  "properties": {"box": {"type": "string"}, "kind": {"type": "string"},
                                 "items": {"type": "array", "items": _ref("Sample")}}},
    "Alarm": {"type": "object", "required": ["id", "box", "kind", "code", "severity", "detail", "raised_at",
                                             "cleared_at", "active", "acknowledged_by", "acknowledged_at"],
              "description": "one raise of an alarm (backend/alarms.py): active until cleared_at",
              "properties": {"id": {"type": "integer"}, "box": {"type": "string"}, "kind": {"type": "string"},
                             "code": {"type": "string", "description": "the same as kind"},
                             "severity": {"enum": ["info", "warning", "critical"]},
                             "detail": {"type": "string"}, "raised_at": {"type": "number"},
                             "updated_at": {"type": "number"}, "cleared_at": NUM,
                             "active": {"type": "boolean"}, "acknowledged_by": STR, "acknowledged_at": NUM}},
    "AlarmPage": {"type": "object", "required": ["total", "total_capped", "limit", "offset", "next", "items"],
                  "properties": {"total": {"type": "integer", "minimum": 0},
                                 "total_capped": {"type": "boolean",
                                                  "description": "true: more than `total` match"},
                                 "limit": {"type": "integer"}, "offset": {"type": "integer"},
                                 "next": {"type": ["string", "null"],
                                          "description": "the cursor of the next page (keyset), null at the end"},
                                 "items": {"type": "array", "items": _ref("Alarm")}}},
    "Thresholds": {"type": "object", "required": ["plan", "effective"],
                   "properties": {"plan": {"type": "string"}, "speed_min_ratio": NUM, "weak_share": NUM,
                                  "backlog_max": NUM, "tic_bad_share": NUM, "gap_missing_min": NUM,
                                  "effective": {"type": "object", "additionalProperties": {"type": "number"}}}},
    "ThresholdsChange": {"type": "object", "description": "a value, or null for the default",
                         "properties": {k: NUM for k in ("speed_min_ratio", "weak_share", "backlog_max",
                                                         "tic_bad_share", "gap_missing_min")}},
    "PushResult": {"type": "object", "required": ["box", "section", "version", "status", "message", "signed"],
                   "properties": {"box": {"type": "string"}, "section": {"enum": list(SECTIONS)},
                                  "version": {"type": "integer"},
                                  "status": {"enum": ["applied", "rejected", "timeout"]},
                                  "message": {"type": "string"}, "signed": {"type": "boolean"}}},
    "Tags": {"type": "object", "required": ["box", "tags"],
             "properties": {"box": {"type": "string"}, "tags": {"type": "array", "items": {"type": "string"}}}},
    "TagChange": {"type": "object", "properties": {
        "add": {"type": "array", "items": {"type": "string", "minLength": 1, "maxLength": 64}},
        "remove": {"type": "array", "items": {"type": "string", "minLength": 1, "maxLength": 64}}}},
    "Campaign": {"type": "object", "required": ["id", "section", "state", "target", "waves", "author"],
                 "properties": {"id": {"type": "string"}, "section": {"type": "string"},
                                "state": {"enum": ["created", "running", "paused", "completed", "aborted"]},
                                "target": {"type": "object"}, "template": {"type": "object"},
                                "waves": {"type": "array", "items": {"type": "integer"}},
                                "wave": {"type": "integer"}, "reason": STR, "author": {"type": "string"},
                                "counts": {"type": "object", "additionalProperties": {"type": "integer"}},
                                "boxes": {"type": "array", "items": {"type": "object"}},
                                "wave_stats": {"type": "array", "items": {"type": "object"}},
                                "driven": {"type": "boolean"}}},
    "CampaignNew": {"type": "object", "required": ["section", "document", "target"],
                    "properties": {"section": {"enum": list(SECTIONS)}, "document": {"type": "object"},
                                   "target": {"type": "object", "description":
                                              "{boxes: [ids]} | {tag: T} | {plan: P} | {all: true}"},
                                   "name": {"type": "string"}, "canary": {"type": "number"},
                                   "waves": {"type": "array", "items": {"type": "number"}},
                                   "success": {"type": "number"}, "abort": {"type": "number"},
                                   "rate": {"type": "number"}, "box_timeout": {"type": "number"}}},
    "Account": {"type": "object", "required": ["name", "role", "disabled"],
                "properties": {"name": {"type": "string"}, "role": _ref("Role"),
                               "disabled": {"type": "boolean"}, "created_at": {"type": "number"}}},
    "AccountNew": {"type": "object", "required": ["name", "role", "password"],
                   "properties": {"name": {"type": "string"}, "role": _ref("Role"),
                                  "password": {"type": "string", "minLength": 10, "writeOnly": True}}},
    "AccountChange": {"type": "object", "properties": {"role": _ref("Role"), "disabled": {"const": True}}},
    "Token": {"type": "object", "required": ["token", "account", "role"],
              "properties": {"token": {"type": "string", "pattern": "^hbt_"}, "account": {"type": "string"},
                             "role": _ref("Role")}},
    "AuditEntry": {"type": "object", "required": ["id", "at", "author", "action", "target", "detail"],
                   "properties": {"id": {"type": "integer"}, "at": {"type": "number"},
                                  "author": {"type": "string"}, "action": {"type": "string"},
                                  "target": {"type": "string"}, "detail": {"type": "object"}}},
}


def _op(op_id: str, summary: str, role: str, responses: dict, *, params=None, body: str | None = None,
        errors=(401, 403), security=None) -> dict:
    o = {"operationId": op_id, "summary": summary, "x-role": role, "responses": dict(responses)}
    o["responses"].update(_err(*errors))
    if params:
        o["parameters"] = params
    if body:
        o["requestBody"] = {"required": True, "content": {"application/json": {"schema": _ref(body)}}}
    if security is not None:
        o["security"] = security
    return o


def document() -> dict:
    box = _path("box", "box id (its serial)")
    paths = {
        "/api/v1/openapi.json": {"get": _op("openapi", "this document", "viewer",
                                            {"200": _json({"type": "object"})})},
        "/api/v1/me": {"get": _op("me", "the calling account", "viewer", {"200": _json(_ref("Me"))})},
        "/api/v1/boxes": {"get": _op(
            "boxes", "search boxes (SQL, paginated)", "viewer", {"200": _json(_box_page())},
            params=[{"name": "q", "in": "query", "schema": {"type": "string"},
                     "description": "part of the id (serial), the address or the building"},
                    {"name": "building", "in": "query", "schema": {"type": "string"}},
                    {"name": "tag", "in": "query", "schema": {"type": "string"},
                     "description": "a building or tower tag"},
                    {"name": "plan", "in": "query", "schema": {"type": "string"},
                     "description": "speed_tier of the options document"},
                    {"name": "alarm", "in": "query", "schema": {"type": "string"},
                     "description": "an alarm code (never_connected: in the inventory, never seen), or 'any'"},
                    {"name": "online", "in": "query", "schema": {"enum": ["true", "false"]}},
                    {"name": "after", "in": "query", "schema": {"type": "string"},
                     "description": "keyset paging: the `next` of the previous page"}] + _LIMIT,
            errors=(400, 401, 403))},
        "/api/v1/boxes/{box}": {"get": _op("box", "one box: state, alarms, documents, latest telemetry",
                                           "viewer", {"200": _json(_ref("BoxDetail"))}, params=[box],
                                           errors=(401, 403, 404))},
        "/api/v1/boxes/{box}/telemetry/{kind}": {"get": _op(
            "telemetry", "a box's history of one kind, oldest first", "viewer", {"200": _json(_ref("Telemetry"))},
            params=[box, _path("kind", "kind", {"enum": ["coverage", "speed", "consumption", "health",
                                                         "event"]})] + _LIMIT,
            errors=(400, 401, 403, 404))},
        "/api/v1/boxes/{box}/desired/{section}": {"put": _op(
            "push_doc", "sign, record and publish a section document; wait for the box's report "
            "(backend/push.py)", "operator", {"200": _json(_ref("PushResult"))},
            params=[box, _path("section", "section", {"enum": list(SECTIONS)}),
                    {"name": "wait", "in": "query", "schema": {"type": "number", "minimum": 0, "maximum": 60},
                     "description": "seconds to wait for the report (default: the server's)"}],
            body="Document", errors=(400, 401, 403, 404, 413, 422, 502, 503))},
        "/api/v1/boxes/{box}/tags": {"put": _op("set_tags", "add or remove tags (buildings, towers)", "operator",
                                                {"200": _json(_ref("Tags"))}, params=[box], body="TagChange",
                                                errors=(400, 401, 403, 404))},
        "/api/v1/boxes/{box}/place": {"put": _op("set_place", "the box's address and building (inventory)",
                                                 "operator", {"200": _json(_ref("Inventory"))}, params=[box],
                                                 body="Place", errors=(400, 401, 403, 404))},
        "/api/v1/alarms": {"get": _op(
            "alarms", "alarms raised by ingest, newest raise first (SQL, keyset paging with `cursor`)", "viewer",
            {"200": _json(_ref("AlarmPage"))},
            params=[{"name": "state", "in": "query", "schema": {"enum": ["active", "cleared", "all"],
                                                                "default": "active"}},
                    {"name": "kind", "in": "query", "schema": {"type": "string"}, "description": "e.g. slow_line"},
                    {"name": "code", "in": "query", "schema": {"type": "string"}, "description": "= kind"},
                    {"name": "severity", "in": "query", "schema": {"enum": ["info", "warning", "critical"]}},
                    {"name": "box", "in": "query", "schema": {"type": "string"}},
                    {"name": "acknowledged", "in": "query", "schema": {"enum": ["true", "false"]}},
                    {"name": "cursor", "in": "query", "schema": {"type": "string"},
                     "description": "`next` of the previous page"}] + _LIMIT, errors=(400, 401, 403))},
        "/api/v1/alarms/{id}/ack": {"post": _op(
            "alarm_ack", "acknowledge an alarm (audited); clears retained_cleared and boot_counter_reset",
            "operator", {"200": _json(_ref("Alarm"))}, params=[_path("id", "alarm id", {"type": "string",
                                                                                       "pattern": "^[0-9]{1,18}$"})],
            errors=(401, 403, 404, 409))},
        "/api/v1/alarm-thresholds": {"get": _op(
            "thresholds", "alarm thresholds per plan (the options' speed_tier; '*': the default)", "viewer",
            {"200": _json({"type": "object", "required": ["items"],
                           "properties": {"items": {"type": "array", "items": _ref("Thresholds")}}})})},
        "/api/v1/alarm-thresholds/{plan}": {"put": _op(
            "thresholds_set", "set a plan's thresholds (audited)", "operator", {"200": _json(_ref("Thresholds"))},
            params=[_path("plan", "a speed_tier, or * for the default")], body="ThresholdsChange",
            errors=(400, 401, 403))},
        "/api/v1/campaigns": {
            "get": _op("campaigns", "campaigns (backend/campaign.py)", "viewer", {"200": _json(_page("Campaign"))},
                       params=_LIMIT, errors=(400, 401, 403)),
            "post": _op("campaign_create", "create a campaign (state created)", "operator",
                        {"201": _json(_ref("Campaign"), "created")}, body="CampaignNew",
                        errors=(400, 401, 403, 409, 422))},
        "/api/v1/campaigns/{id}": {"get": _op("campaign_get", "a campaign, its waves and a page of its boxes",
                                              "viewer", {"200": _json(_ref("Campaign"))},
                                              params=[_path("id", "campaign id")] + _LIMIT,
                                              errors=(400, 401, 403, 404))},
        "/api/v1/campaigns/{id}/{action}": {"post": _op(
            "campaign_action", "start, pause, resume or abort; start and resume drive it from this server",
            "operator", {"200": _json(_ref("Campaign"))},
            params=[_path("id", "campaign id"),
                    _path("action", "action", {"enum": ["start", "pause", "resume", "abort"]})],
            errors=(401, 403, 404, 409))},
        "/api/v1/accounts": {
            "get": _op("accounts_list", "accounts", "admin",
                       {"200": _json({"type": "object", "required": ["items"],
                                      "properties": {"items": {"type": "array", "items": _ref("Account")}}})}),
            "post": _op("accounts_add", "create an account", "admin",
                        {"201": _json(_ref("Me"), "created")}, body="AccountNew", errors=(400, 401, 403, 409))},
        "/api/v1/accounts/{name}": {"patch": _op("accounts_change", "change a role, or disable (revokes tokens)",
                                                 "admin", {"200": _json(_ref("Account"))},
                                                 params=[_path("name", "account name")], body="AccountChange",
                                                 errors=(400, 401, 403, 409))},
        "/api/v1/tokens": {"post": _op(
            "token_create", "a new bearer token for the calling account (shown once); takes Basic auth",
            "viewer", {"201": _json(_ref("Token"), "created")},
            security=[{"bearer": []}, {"basic": []}, {"session": []}])},
        "/api/v1/audit": {"get": _op("audit", "who did what, newest first", "admin",
                                     {"200": _json(_page("AuditEntry"))},
                                     params=[{"name": "author", "in": "query", "schema": {"type": "string"}}]
                                     + _LIMIT, errors=(400, 401, 403))},
    }
    schemas = dict(SCHEMAS)
    schemas["Document"] = {"type": "object", "description": "a section document (docs/contract/schemas/"
                                                            "desired-SECTION.json); version and sig are set here"}
    return {
        "openapi": "3.1.0",
        "info": {"title": "homebox operator API", "version": VERSION,
                 "description": "Boxes, alarms, desired documents, campaigns and accounts. Roles: viewer < "
                                "operator < admin (x-role on each operation). Every change is in the audit log."},
        "servers": [{"url": "/"}],
        "security": [{"bearer": []}, {"session": []}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "a token from POST /api/v1/tokens"},
                "basic": {"type": "http", "scheme": "basic", "description": "only to get a token"},
                "session": {"type": "apiKey", "in": "cookie", "name": "hb_session",
                            "description": "the web console's session"},
            },
        },
    }
