//! The OpenAPI 3 description of people nearby's routes; the binary merges it with the other
//! services' into the one document served at `/openapi.json`.

use serde_json::{json, Value};

fn problem(description: &str) -> Value {
    json!({"description": description, "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}})
}

fn ok(schema: &str) -> Value {
    json!({"description": "OK", "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}})
}

fn body(schema: &str) -> Value {
    json!({"required": true, "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{schema}")}}}})
}

fn id(name: &str) -> Value {
    json!({"name": name, "in": "path", "required": true,
           "schema": {"type": "string", "pattern": "^[A-Za-z0-9_.:-]{1,64}$"}})
}

/// `paths` entries of people nearby.
pub fn paths() -> Value {
    let std = |mut responses: Value| {
        responses["400"] = problem(
            "malformed JSON, query or id (invalid_json, invalid_query, invalid_profile_id)",
        );
        responses["401"] = problem("missing, malformed, forged, expired or wrong-audience token (missing_token, invalid_token, expired_token)");
        responses["403"] = problem("the token may not act as this profile (forbidden): use the profile's own token (role rider, subject = profile id), or service/admin");
        responses["503"] = problem("store_unavailable (Redis mode); see Retry-After");
        responses
    };
    let no_content = json!({"description": "Done"});
    json!({
        "/v1/profiles/{profile_id}": {
            "put": {
                "summary": "Create or replace one's profile",
                "security": [{"bearer": []}],
                "parameters": [id("profile_id")],
                "requestBody": body("ProfileBody"),
                "responses": std(json!({
                    "200": ok("OwnProfile"),
                    "422": problem("invalid_display_name, invalid_birth_date (also under 18), invalid_interested_in, invalid_age_range, invalid_max_distance (1–160 km), invalid_bio (under 400 characters), invalid_photos (up to 9 https URLs), invalid_body"),
                }))
            },
            "get": {
                "summary": "One's own profile, in full",
                "security": [{"bearer": []}],
                "parameters": [id("profile_id")],
                "responses": std(json!({"200": ok("OwnProfile"), "404": problem("profile_not_found")}))
            }
        },
        "/v1/profiles/{profile_id}/premium": {"put": {
            "summary": "Set the premium flag (service and admin tokens only)",
            "security": [{"bearer": []}],
            "parameters": [id("profile_id")],
            "requestBody": body("PremiumBody"),
            "responses": std(json!({"200": ok("OwnProfile"), "404": problem("profile_not_found")}))
        }},
        "/v1/profiles/{profile_id}/recommendations": {"get": {
            "summary": "Profiles near you where both sides' preferences hold, nearest first",
            "description": "Both sides' gender, age range and maximum distance must hold. Never oneself, anyone already swiped, blocked either way, or not seen for people.not_seen_for_s. Pages follow (distance, id): passing next_cursor back never repeats or skips a profile while nobody moves. Distances are whole kilometres (at least 1); coordinates are never returned.",
            "security": [{"bearer": []}],
            "parameters": [
                id("profile_id"),
                {"name": "limit", "in": "query", "required": false, "schema": {"type": "integer", "minimum": 1}, "description": "default people.page_size, at most people.page_size_max"},
                {"name": "cursor", "in": "query", "required": false, "schema": {"type": "string"}, "description": "next_cursor of the previous page"},
            ],
            "responses": std(json!({
                "200": ok("RecommendationsPage"),
                "409": problem("profile_required (no profile yet), location_required (no location yet)"),
            }))
        }},
        "/v1/profiles/{profile_id}/swipes": {"post": {
            "summary": "Like, pass or superlike a profile; a like answering a like is a match",
            "description": "Exactly one match per mutual like, even when both like at once through different replicas. Likes and superlikes have their own daily budgets (UTC days).",
            "security": [{"bearer": []}],
            "parameters": [id("profile_id")],
            "requestBody": body("SwipeBody"),
            "responses": std(json!({
                "200": ok("SwipeAnswer"),
                "404": problem("profile_not_found (also when blocked either way)"),
                "409": problem("already_swiped, profile_required"),
                "422": problem("invalid_target (oneself), invalid_body"),
                "429": problem("daily_like_limit, daily_superlike_limit; Retry-After and X-RateLimit-Reset (epoch seconds) give the next UTC midnight"),
            }))
        }},
        "/v1/profiles/{profile_id}/matches": {"get": {
            "summary": "One's matches, newest first",
            "security": [{"bearer": []}],
            "parameters": [id("profile_id")],
            "responses": std(json!({"200": ok("Matches")}))
        }},
        "/v1/profiles/{profile_id}/matches/{other_id}": {"delete": {
            "summary": "Unmatch (for both sides)",
            "security": [{"bearer": []}],
            "parameters": [id("profile_id"), id("other_id")],
            "responses": std(json!({"204": no_content.clone(), "404": problem("match_not_found")}))
        }},
        "/v1/profiles/{profile_id}/blocks": {"post": {
            "summary": "Block a profile: hidden from each other for good, match ended",
            "security": [{"bearer": []}],
            "parameters": [id("profile_id")],
            "requestBody": body("BlockBody"),
            "responses": std(json!({"204": no_content, "422": problem("invalid_target (oneself)")}))
        }},
        "/v1/profiles/{profile_id}/likes/count": {"get": {
            "summary": "How many people liked you and wait for your answer (everyone)",
            "security": [{"bearer": []}],
            "parameters": [id("profile_id")],
            "responses": std(json!({"200": ok("LikesCount")}))
        }},
        "/v1/profiles/{profile_id}/likes": {"get": {
            "summary": "Who liked you (premium profiles only)",
            "security": [{"bearer": []}],
            "parameters": [id("profile_id")],
            "responses": std(json!({
                "200": ok("Likes"),
                "403": problem("premium_required (not premium), forbidden (another profile's token)"),
                "409": problem("profile_required"),
            }))
        }},
    })
}

/// `components.schemas` entries of people nearby.
pub fn schemas() -> Value {
    let gender = json!({"type": "string", "enum": ["woman", "man", "nonbinary"]});
    let card = json!({
        "profile_id": {"type": "string"}, "display_name": {"type": "string"},
        "age": {"type": "integer"}, "gender": gender,
        "bio": {"type": "string"}, "photos": {"type": "array", "items": {"type": "string"}},
    });
    let with = |extra: Value| {
        let mut props = card.clone();
        if let (Some(p), Value::Object(e)) = (props.as_object_mut(), extra) {
            p.extend(e);
        }
        json!({"type": "object", "properties": props})
    };
    json!({
        "ProfileBody": {"type": "object",
            "required": ["display_name", "birth_date", "gender", "interested_in", "age_min", "age_max", "max_distance_km"],
            "properties": {
                "display_name": {"type": "string", "minLength": 1, "maxLength": 50},
                "birth_date": {"type": "string", "format": "date", "description": "YYYY-MM-DD; at least 18 years ago"},
                "gender": gender,
                "interested_in": {"type": "array", "items": gender, "minItems": 1, "uniqueItems": true},
                "age_min": {"type": "integer", "minimum": 18, "maximum": 120},
                "age_max": {"type": "integer", "minimum": 18, "maximum": 120},
                "max_distance_km": {"type": "integer", "minimum": 1, "maximum": 160},
                "bio": {"type": "string", "maxLength": 399},
                "photos": {"type": "array", "maxItems": 9, "items": {"type": "string", "pattern": "^https://"}},
            }},
        "OwnProfile": {"type": "object", "description": "ProfileBody plus profile_id, age, premium, updated_at_ms"},
        "PremiumBody": {"type": "object", "required": ["premium"], "properties": {"premium": {"type": "boolean"}}},
        "SwipeBody": {"type": "object", "required": ["target_id", "action"], "properties": {
            "target_id": {"type": "string"}, "action": {"type": "string", "enum": ["like", "pass", "superlike"]}}},
        "SwipeAnswer": {"type": "object", "properties": {
            "target_id": {"type": "string"}, "action": {"type": "string"},
            "matched": {"type": "boolean", "description": "this swipe created the match"}}},
        "BlockBody": {"type": "object", "required": ["target_id"], "properties": {"target_id": {"type": "string"}}},
        "Recommendation": with(json!({"distance_km": {"type": "integer", "minimum": 1}})),
        "RecommendationsPage": {"type": "object", "properties": {
            "profiles": {"type": "array", "items": {"$ref": "#/components/schemas/Recommendation"}},
            "next_cursor": {"type": "string", "description": "absent when there is nothing more"}}},
        "Match": with(json!({"matched_at_ms": {"type": "integer"}})),
        "Matches": {"type": "object", "properties": {"matches": {"type": "array", "items": {"$ref": "#/components/schemas/Match"}}}},
        "Like": with(json!({"liked_at_ms": {"type": "integer"}, "superlike": {"type": "boolean"}})),
        "Likes": {"type": "object", "properties": {"likes": {"type": "array", "items": {"$ref": "#/components/schemas/Like"}}}},
        "LikesCount": {"type": "object", "properties": {"count": {"type": "integer"}}},
    })
}
