//! The OpenAPI 3 description of eta-pricing's routes; the binary merges it with the other
//! services' into the one document served at `/openapi.json`.

use serde_json::{json, Value};

fn problem(description: &str) -> Value {
    json!({"description": description, "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}})
}

fn ok(schema: &str) -> Value {
    json!({"description": "OK", "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}})
}

fn query(name: &str, schema: Value, required: bool, description: &str) -> Value {
    json!({"name": name, "in": "query", "required": required, "schema": schema, "description": description})
}

/// `paths` entries of this service.
pub fn paths() -> Value {
    let auth_errors = |mut responses: Value| {
        responses["401"] = problem("missing, malformed, forged, expired or wrong-audience token (missing_token, invalid_token, expired_token)");
        responses
    };
    let lat_lng =
        json!({"type": "string", "pattern": "^-?[0-9.]+,-?[0-9.]+$", "example": "37.5665,126.978"});
    json!({
        "/v1/eta": {"get": {
            "summary": "Travel time and road distance between two points",
            "description": "Great-circle distance × eta.circuity ÷ the speed learned for each stretch's H3 resolution-7 cell and hour of the week, or eta.default_speed_kmh where nothing is learned.",
            "security": [{"bearer": []}],
            "parameters": [
                query("from", lat_lng.clone(), true, "origin, lat,lng"),
                query("to", lat_lng, true, "destination, lat,lng"),
            ],
            "responses": auth_errors(json!({
                "200": ok("Eta"),
                "400": problem("invalid_query (missing or not lat,lng), invalid_position (out of range)"),
            }))
        }},
        "/v1/eta/batch": {"post": {
            "summary": "One origin, many destinations (ranking candidates)",
            "security": [{"bearer": []}],
            "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/EtaBatch"}}}},
            "responses": auth_errors(json!({
                "200": ok("EtaBatchAnswer"),
                "413": problem("more destinations than eta.max_batch (batch_too_large), or body too large"),
                "422": problem("empty_batch, invalid_body (a position out of range)"),
            }))
        }},
        "/v1/quotes": {"post": {
            "summary": "A signed fare quote for a trip",
            "description": "Rider tokens quote for themselves; service and admin tokens name rider_id. The quote counts as demand at the pickup (once per rider, cell and demand window). Pass quote_id back when requesting the ride: it is refused once expired, altered, or by another rider.",
            "security": [{"bearer": []}],
            "requestBody": {"required": true, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/QuoteRequest"}}}},
            "responses": auth_errors(json!({
                "201": {"description": "Created", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Quote"}}}},
                "403": problem("a driver token, or a rider naming another rider_id (forbidden)"),
                "422": problem("unknown_product, trip_too_long, rider_id_required, invalid_rider_id, invalid_body"),
                "503": problem("store_unavailable (Redis mode: demand could not be counted); see Retry-After"),
            }))
        }},
        "/v1/quotes/{quote_id}": {"get": {
            "summary": "A quote, verified: genuine, unexpired and the caller's",
            "security": [{"bearer": []}],
            "parameters": [{"name": "quote_id", "in": "path", "required": true, "schema": {"type": "string"}}],
            "responses": auth_errors(json!({
                "200": ok("Quote"),
                "403": problem("another rider's quote (quote_not_yours), or a driver token (forbidden)"),
                "422": problem("invalid_quote (malformed or forged), quote_expired"),
            }))
        }},
        "/v1/surge": {"get": {
            "summary": "The surge multiplier at a point, with its cell's supply and demand",
            "security": [{"bearer": []}],
            "parameters": [
                query("lat", json!({"type": "number", "minimum": -90, "maximum": 90}), true, "latitude"),
                query("lng", json!({"type": "number", "minimum": -180, "maximum": 180}), true, "longitude"),
            ],
            "responses": auth_errors(json!({
                "200": ok("Surge"),
                "400": problem("invalid_query, invalid_position"),
            }))
        }},
        "/v1/heatmap": {"get": {
            "summary": "Supply, demand and surge per H3 hexagon in a box (GeoJSON)",
            "description": "As of the last surge recomputation. At res 7 each cell's own values; coarser, supply and demand summed over its resolution-7 cells and the highest multiplier among them.",
            "security": [{"bearer": []}],
            "parameters": [
                query("bbox", json!({"type": "string", "example": "126.9,37.4,127.1,37.6"}), true, "minLng,minLat,maxLng,maxLat (not across the antimeridian)"),
                query("res", json!({"type": "integer", "minimum": 4, "maximum": 7, "default": 7}), false, "H3 resolution"),
            ],
            "responses": auth_errors(json!({
                "200": {"description": "OK", "content": {"application/geo+json": {"schema": {"$ref": "#/components/schemas/Heatmap"}}}},
                "400": problem("invalid_bbox, invalid_resolution, too_many_cells (more than pricing.max_heatmap_cells), invalid_query"),
                "403": problem("a rider token (forbidden)"),
            }))
        }},
    })
}

/// `components.schemas` entries of this service.
pub fn schemas() -> Value {
    let money = json!({"type": "integer", "minimum": 0, "description": "minor units of currency (cents for USD)"});
    json!({
        "Position": {"type": "object", "additionalProperties": false, "required": ["lat", "lng"], "properties": {
            "lat": {"type": "number", "minimum": -90, "maximum": 90},
            "lng": {"type": "number", "minimum": -180, "maximum": 180}
        }},
        "Eta": {"type": "object", "properties": {
            "duration_s": {"type": "integer"},
            "distance_m": {"type": "integer", "description": "expected road distance"},
            "method": {"type": "string", "enum": ["learned_speed", "mixed_speed", "default_speed"]}
        }},
        "EtaBatch": {"type": "object", "additionalProperties": false, "required": ["from", "to"], "properties": {
            "from": {"$ref": "#/components/schemas/Position"},
            "to": {"type": "array", "minItems": 1, "items": {"$ref": "#/components/schemas/Position"}, "description": "at most eta.max_batch"}
        }},
        "EtaBatchAnswer": {"type": "object", "properties": {
            "results": {"type": "array", "items": {"$ref": "#/components/schemas/Eta"}}
        }},
        "QuoteRequest": {"type": "object", "additionalProperties": false, "required": ["pickup", "dropoff", "product"], "properties": {
            "pickup": {"$ref": "#/components/schemas/Position"},
            "dropoff": {"$ref": "#/components/schemas/Position"},
            "product": {"type": "string", "description": "a configured product: one of ingest.vehicle_classes"},
            "rider_id": {"type": "string", "description": "required of service and admin tokens"}
        }},
        "Fare": {"type": "object", "description": "base + distance + time + minimum_fare_adjustment + surge_amount + booking_fee = total", "properties": {
            "currency": {"type": "string", "description": "ISO 4217"},
            "base": money, "distance": money, "time": money, "minimum_fare_adjustment": money,
            "surge_multiplier": {"type": "number", "minimum": 1},
            "surge_amount": money, "booking_fee": money, "total": money
        }},
        "Quote": {"type": "object", "properties": {
            "quote_id": {"type": "string", "description": "opaque, signed"},
            "rider_id": {"type": "string"}, "product": {"type": "string"},
            "pickup": {"$ref": "#/components/schemas/Position"},
            "dropoff": {"$ref": "#/components/schemas/Position"},
            "fare": {"$ref": "#/components/schemas/Fare"},
            "surge": {"type": "object", "properties": {"multiplier": {"type": "number"}, "cell": {"type": "string", "description": "H3 resolution-7 cell of the pickup"}}},
            "pickup_eta_s": {"type": ["integer", "null"], "description": "nearest available driver of the product; null when none within pricing.pickup_radius_m"},
            "trip_eta_s": {"type": "integer"},
            "trip_distance_m": {"type": "integer"},
            "expires_at": {"type": "integer", "description": "ms since the Unix epoch"}
        }},
        "Surge": {"type": "object", "properties": {
            "cell": {"type": "string"}, "surge_multiplier": {"type": "number"},
            "supply": {"type": "integer"}, "demand": {"type": "integer"},
            "computed_at": {"type": "integer", "description": "ms since the Unix epoch; 0 before the first recomputation"}
        }},
        "Heatmap": {"type": "object", "description": "GeoJSON FeatureCollection of hexagons", "properties": {
            "type": {"type": "string", "enum": ["FeatureCollection"]},
            "res": {"type": "integer"}, "computed_at": {"type": "integer"},
            "features": {"type": "array", "items": {"type": "object", "properties": {
                "type": {"type": "string", "enum": ["Feature"]},
                "id": {"type": "string"},
                "geometry": {"type": "object", "properties": {"type": {"type": "string", "enum": ["Polygon"]}, "coordinates": {"type": "array"}}},
                "properties": {"type": "object", "properties": {
                    "cell": {"type": "string"}, "supply": {"type": "integer"}, "demand": {"type": "integer"}, "surge_multiplier": {"type": "number"}
                }}
            }}}
        }},
    })
}
