//! The OpenAPI 3 description of location-ingest's routes; the binary merges it with the
//! other services' into the one document served at `/openapi.json`.

use serde_json::{json, Value};

fn problem(description: &str) -> Value {
    json!({"description": description, "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}})
}

fn ok(schema: &str) -> Value {
    json!({"description": "OK", "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}})
}

fn driver_id() -> Value {
    json!({"name": "driver_id", "in": "path", "required": true,
           "schema": {"type": "string", "pattern": "^[A-Za-z0-9_.:-]{1,64}$"}})
}

/// `paths` entries of this service.
pub fn paths() -> Value {
    let auth_errors = |mut responses: Value| {
        responses["401"] = problem("missing, malformed, forged, expired or wrong-audience token (missing_token, invalid_token, expired_token)");
        responses["403"] = problem("the token may not act on this driver (forbidden)");
        responses
    };
    json!({
        "/v1/drivers/{driver_id}/location": {"put": {
            "summary": "Push one location report",
            "security": [{"bearer": []}],
            "parameters": [driver_id()],
            "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Location"}}}},
            "responses": auth_errors(json!({
                "200": ok("PushAnswer"),
                "400": problem("malformed JSON or driver id (invalid_json, invalid_driver_id)"),
                "413": problem("body too large (payload_too_large)"),
                "422": problem("invalid_latitude, invalid_longitude, invalid_heading, invalid_speed, invalid_accuracy, timestamp_in_future, invalid_timestamp, invalid_seq, implausible_jump, invalid_body"),
                "429": problem("rate_limited; see Retry-After"),
                "503": problem("store_unavailable (Redis mode); see Retry-After"),
            }))
        }},
        "/v1/profiles/{profile_id}/location": {"put": {
            "summary": "Push a people-nearby profile's location (kind profile in the index)",
            "description": "The same rules as a driver's report (validation, rate limit, ordering, plausibility). The token is the person's own (role rider, subject = profile id), or service/admin.",
            "security": [{"bearer": []}],
            "parameters": [{"name": "profile_id", "in": "path", "required": true,
                            "schema": {"type": "string", "pattern": "^[A-Za-z0-9_.:-]{1,64}$"}}],
            "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Location"}}}},
            "responses": auth_errors(json!({
                "200": ok("PushAnswer"),
                "400": problem("malformed JSON or profile id (invalid_json, invalid_profile_id)"),
                "422": problem("invalid_latitude, invalid_longitude, invalid_heading, invalid_speed, invalid_accuracy, timestamp_in_future, invalid_timestamp, invalid_seq, implausible_jump, invalid_body"),
                "429": problem("rate_limited; see Retry-After"),
                "503": problem("store_unavailable (Redis mode); see Retry-After"),
            }))
        }},
        "/v1/locations/batch": {"post": {
            "summary": "Push many reports at once (fleet gateways); one result per item",
            "security": [{"bearer": []}],
            "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Batch"}}}},
            "responses": auth_errors(json!({
                "200": ok("BatchAnswer"),
                "413": problem("more items than ingest.max_batch (batch_too_large), or body too large"),
                "422": problem("empty_batch"),
            }))
        }},
        "/v1/drivers/{driver_id}/status": {"put": {
            "summary": "Go online (available, with vehicle class and seats) or offline",
            "security": [{"bearer": []}],
            "parameters": [driver_id()],
            "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/StatusChange"}}}},
            "responses": auth_errors(json!({
                "200": ok("Driver"),
                "409": problem("no location pushed yet (location_required)"),
                "422": problem("unknown_vehicle_class, invalid_seats"),
            }))
        }},
        "/v1/drivers/{driver_id}": {"get": {
            "summary": "The driver's current state",
            "security": [{"bearer": []}],
            "parameters": [driver_id()],
            "responses": auth_errors(json!({"200": ok("Driver"), "404": problem("driver_not_found")}))
        }},
        "/v1/drivers/{driver_id}/stream": {"get": {
            "summary": "WebSocket: location frames up, acks and server events (offers) down",
            "description": "Authenticate with the bearer header or, for browsers, ?access_token=. Frames: {\"type\":\"location\", …Location} up; {\"type\":\"ack\",\"seq\",\"result\"}, {\"type\":\"error\",\"seq\",\"code\",\"detail\"} and events down. Pings every ingest.ws_heartbeat_s; silent for three intervals closes.",
            "parameters": [driver_id()],
            "responses": auth_errors(json!({"101": {"description": "Switching Protocols"}}))
        }},
    })
}

/// `components.schemas` entries of this service.
pub fn schemas() -> Value {
    json!({
        "Location": {"type": "object", "additionalProperties": false, "required": ["lat", "lng"], "properties": {
            "lat": {"type": "number", "minimum": -90, "maximum": 90},
            "lng": {"type": "number", "minimum": -180, "maximum": 180},
            "seq": {"type": "integer", "minimum": 0, "maximum": 9223372036854775807i64, "description": "device sequence number; orders reports"},
            "ts_ms": {"type": "integer", "description": "device time, ms since the Unix epoch; at most ingest.max_future_ms ahead"},
            "heading_deg": {"type": "number", "minimum": 0, "exclusiveMaximum": 360},
            "speed_mps": {"type": "number", "minimum": 0},
            "accuracy_m": {"type": "number", "minimum": 0}
        }},
        "PushAnswer": {"type": "object", "properties": {"result": {"type": "string", "enum": ["accepted", "stale"]}}},
        "Batch": {"type": "object", "additionalProperties": false, "required": ["updates"], "properties": {
            "updates": {"type": "array", "minItems": 1, "items": {"allOf": [{"$ref": "#/components/schemas/Location"}, {"type": "object", "required": ["driver_id"], "properties": {"driver_id": {"type": "string"}}}]}}
        }},
        "BatchAnswer": {"type": "object", "properties": {
            "accepted": {"type": "integer"}, "stale": {"type": "integer"}, "rejected": {"type": "integer"},
            "results": {"type": "array", "items": {"type": "object", "properties": {
                "index": {"type": "integer"}, "driver_id": {"type": "string"},
                "result": {"type": "string", "enum": ["accepted", "stale", "rejected"]},
                "code": {"type": "string"}, "detail": {"type": "string"}
            }}}
        }},
        "StatusChange": {"type": "object", "additionalProperties": false, "required": ["status"], "properties": {
            "status": {"type": "string", "enum": ["available", "offline"]},
            "vehicle_class": {"type": "string", "description": "one of ingest.vehicle_classes"},
            "seats": {"type": "integer", "minimum": 1, "maximum": 16}
        }},
        "Driver": {"type": "object", "properties": {
            "driver_id": {"type": "string"}, "lat": {"type": "number"}, "lng": {"type": "number"},
            "h3_cell": {"type": "string"}, "status": {"type": "string", "enum": ["offline", "available", "offered", "busy"]},
            "vehicle_class": {"type": "string"}, "seats": {"type": "integer"},
            "seq": {"type": ["integer", "null"]}, "ts_ms": {"type": ["integer", "null"]}, "updated_at_ms": {"type": "integer"}
        }},
    })
}
