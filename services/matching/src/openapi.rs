//! The OpenAPI 3 description of matching's ride routes, handed out in `build`'s part; the
//! binary merges every part's into the one document served at `/openapi.json`.

use serde_json::{json, Value};

fn problem(description: &str) -> Value {
    json!({"description": description, "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}})
}

fn ok(schema: &str) -> Value {
    json!({"description": "OK", "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}})
}

fn path_id(name: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}})
}

/// A POST on a ride or offer: `summary`, the answer's schema, the errors beyond auth.
fn action(summary: &str, id: &str, answer: Option<&str>, errors: Value) -> Value {
    let mut responses = errors;
    responses["401"] = problem("missing or invalid token");
    responses["403"] = problem("not this caller's ride or offer (forbidden)");
    responses["503"] = problem("store_unavailable (Redis mode); see Retry-After");
    match answer {
        Some(schema) => responses["200"] = ok(schema),
        None => responses["204"] = json!({"description": "done"}),
    }
    json!({"post": {"summary": summary, "security": [{"bearer": []}], "parameters": [path_id(id)], "responses": responses}})
}

/// `paths` entries of this service.
pub(crate) fn paths() -> Value {
    let state = || problem("the ride is not in a state that allows this (invalid_ride_state)");
    let gone = || problem("the offer is no longer current (offer_not_current, driver_unavailable)");
    json!({
        "/v1/drivers/nearby": {"get": {
            "summary": "Available drivers near a point: riders see H3 res-8 cell centres and no ids; service and admin callers see ids, exact positions and distances",
            "security": [{"bearer": []}],
            "parameters": [
                {"name": "lat", "in": "query", "required": true, "schema": {"type": "number"}},
                {"name": "lng", "in": "query", "required": true, "schema": {"type": "number"}},
                {"name": "k", "in": "query", "schema": {"type": "integer", "minimum": 1, "default": 10}},
                {"name": "radius_m", "in": "query", "schema": {"type": "number", "default": 3000, "maximum": 50000}},
                {"name": "class", "in": "query", "schema": {"type": "string"}}
            ],
            "responses": {"200": ok("NearbyDrivers"), "400": problem("invalid_query"), "422": problem("unknown_product")}
        }},
        "/v1/rides": {"post": {
            "summary": "Request a ride (rider token); dispatch starts at once or at the scheduled time",
            "security": [{"bearer": []}],
            "parameters": [{"name": "Idempotency-Key", "in": "header", "required": true, "schema": {"type": "string", "maxLength": 128}}],
            "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/RideRequest"}}}},
            "responses": {
                "201": {"description": "the ride (a replay carries Idempotent-Replayed: true)", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Ride"}}}},
                "400": problem("idempotency_key_required, invalid_idempotency_key, invalid_json"),
                "403": problem("someone else's quote"),
                "409": problem("request_in_progress, ride_already_open"),
                "422": problem("idempotency_key_reused, unknown_product, invalid_seats, invalid_schedule, tip_too_large, quote refusals (quote_expired, invalid_quote, quote_trip_mismatch, …)"),
                "503": problem("store_unavailable (Redis mode); see Retry-After")
            }
        }},
        "/v1/rides/{ride_id}": {"get": {
            "summary": "A ride with every timestamped transition (its rider, its driver, service or admin)",
            "security": [{"bearer": []}],
            "parameters": [path_id("ride_id")],
            "responses": {"200": ok("Ride"), "403": problem("forbidden"), "404": problem("ride_not_found")}
        }},
        "/v1/rides/{ride_id}/cancel": action("Cancel an open ride (not once in progress)", "ride_id", Some("Ride"), json!({"404": problem("ride_not_found"), "409": state()})),
        "/v1/rides/{ride_id}/tip": {"post": {
            "summary": "Set the ride's tip (its rider; it can only go up); the driver's offer shows fare and tip",
            "security": [{"bearer": []}],
            "parameters": [path_id("ride_id")],
            "requestBody": {"required": true, "content": {"application/json": {"schema": {"type": "object", "required": ["tip_minor"], "properties": {"tip_minor": {"type": "integer", "minimum": 0}}}}}},
            "responses": {"200": ok("Ride"), "403": problem("forbidden"), "404": problem("ride_not_found"), "409": state(), "422": problem("tip_lowered, tip_too_large")}
        }},
        "/v1/rides/{ride_id}/arrived": action("The assigned driver is at the pickup", "ride_id", Some("Ride"), json!({"409": state()})),
        "/v1/rides/{ride_id}/start": action("The trip starts", "ride_id", Some("Ride"), json!({"409": state()})),
        "/v1/rides/{ride_id}/complete": action("The trip ends; the driver is available again", "ride_id", Some("Ride"), json!({"409": state()})),
        "/v1/drivers/{driver_id}/offer": {"get": {
            "summary": "The driver's current offer (also pushed on its WebSocket stream)",
            "security": [{"bearer": []}],
            "parameters": [path_id("driver_id")],
            "responses": {"200": ok("Offer"), "403": problem("forbidden"), "404": problem("no_current_offer")}
        }},
        "/v1/offers/{offer_id}/accept": action("Accept the current offer: atomic; a late or repeated accept changes nothing", "offer_id", Some("Ride"), json!({"409": gone()})),
        "/v1/offers/{offer_id}/decline": action("Decline the offer; dispatch moves to the next candidate", "offer_id", None, json!({"409": gone()})),
    })
}

/// `components.schemas` entries of this service.
pub(crate) fn schemas() -> Value {
    let position = json!({"type": "object", "required": ["lat", "lng"], "properties": {"lat": {"type": "number"}, "lng": {"type": "number"}}});
    let fare = json!({"type": "object", "properties": {"total_minor": {"type": "integer"}, "currency": {"type": "string"}}});
    json!({
        "RideRequest": {"type": "object", "required": ["pickup", "dropoff", "product"], "properties": {
            "pickup": position, "dropoff": position, "product": {"type": "string"},
            "seats": {"type": "integer", "minimum": 1, "maximum": 16}, "quote_id": {"type": "string"},
            "preferred_driver_id": {"type": "string"}, "scheduled_at": {"type": "integer", "description": "ms since the Unix epoch"},
            "tip_minor": {"type": "integer", "minimum": 0}
        }},
        "Ride": {"type": "object", "properties": {
            "ride_id": {"type": "string"}, "rider_id": {"type": "string"},
            "state": {"type": "string", "enum": ["requested", "dispatching", "accepted", "driver_arrived", "in_progress", "completed", "cancelled", "no_driver_found"]},
            "pickup": position, "dropoff": position, "product": {"type": "string"}, "driver_id": {"type": "string"},
            "pickup_eta_s": {"type": "integer"}, "scheduled_at": {"type": "integer"}, "fare": fare, "tip_minor": {"type": "integer"},
            "attempts": {"type": "integer"},
            "transitions": {"type": "array", "items": {"type": "object", "properties": {"state": {"type": "string"}, "at_ms": {"type": "integer"}, "by": {"type": "string"}}}}
        }},
        "Offer": {"type": "object", "properties": {
            "type": {"type": "string", "enum": ["offer"]}, "offer_id": {"type": "string"}, "ride_id": {"type": "string"},
            "pickup": position, "dropoff": position, "product": {"type": "string"},
            "pickup_distance_m": {"type": "number"}, "pickup_eta_s": {"type": "integer"}, "expires_at_ms": {"type": "integer"},
            "fare": fare, "tip_minor": {"type": "integer"}, "total_minor": {"type": "integer", "description": "fare plus tip"}
        }},
        "NearbyDrivers": {"type": "object", "properties": {"drivers": {"type": "array", "items": {"type": "object", "properties": {
            "driver_id": {"type": "string"}, "lat": {"type": "number"}, "lng": {"type": "number"},
            "distance_m": {"type": "number"}, "vehicle_class": {"type": "string"}
        }}}}}
    })
}
