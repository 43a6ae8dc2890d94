//! HTTP adapters: parse, authorise, call [`Ingest`], map the answer. No rules live here.

use actix_web::http::header;
use actix_web::{web, HttpResponse, ResponseError};
use geomatch_common::auth::{Principal, Role};
use geomatch_common::error::{ApiError, ErrorCode};
use serde::{Deserialize, Serialize};

use crate::ingest::{driver_id, Ingest, IngestError, Outcome, StatusBody};
use crate::report::LocationBody;
use geomatch_index::{EntryId, Kind};

/// `{"result": "accepted" | "stale"}`
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct PushAnswer {
    pub result: Outcome,
}

/// The answer for an ingest error, with `Retry-After` where the client should retry.
pub fn error_response(e: IngestError) -> HttpResponse {
    let retry_after_s = match &e {
        IngestError::RateLimited { retry_after_ms } => Some(retry_after_ms.div_ceil(1000).max(1)),
        IngestError::Unavailable(_) => Some(1),
        _ => None,
    };
    let mut response = ApiError::from(e).error_response();
    if let Some(s) = retry_after_s {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from(s));
    }
    response
}

/// The path's driver id, if the caller may act on it (the driver itself, or privileged).
fn authorised(who: &Principal, raw: &str) -> Result<EntryId, ApiError> {
    let id = driver_id(raw)?;
    who.may_act_as(Role::Driver, id.as_str())?;
    Ok(id)
}

/// `PUT /v1/drivers/{driver_id}/location`
pub async fn put_location(
    ingest: web::Data<Ingest>,
    who: Principal,
    path: web::Path<String>,
    body: web::Json<LocationBody>,
) -> HttpResponse {
    let id = match authorised(&who, &path) {
        Ok(id) => id,
        Err(e) => return e.error_response(),
    };
    match ingest.push(&id, &body).await {
        Ok(result) => HttpResponse::Ok().json(PushAnswer { result }),
        Err(e) => error_response(e),
    }
}

/// `PUT /v1/profiles/{profile_id}/location`: a people-nearby profile reports where it is.
/// The same rules as drivers (validation, rate limit, ordering, plausibility); the entry is
/// kind `profile` in the index. A profile is a person's user account: its token has role
/// `rider` and the profile id as subject (service and admin may act on any).
pub async fn put_profile_location(
    ingest: web::Data<Ingest>,
    who: Principal,
    path: web::Path<String>,
    body: web::Json<LocationBody>,
) -> HttpResponse {
    let id = match EntryId::parse(&path) {
        Ok(id) => id,
        Err(e) => {
            return ApiError::bad_request("invalid_profile_id", e.to_string()).error_response()
        }
    };
    if let Err(e) = who.may_act_as(Role::Rider, id.as_str()) {
        return ApiError::from(e).error_response();
    }
    match ingest.push_as(Kind::Profile, &id, &body).await {
        Ok(result) => HttpResponse::Ok().json(PushAnswer { result }),
        Err(e) => error_response(e),
    }
}

/// `POST /v1/locations/batch` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchBody {
    /// Items are parsed one by one, so that a malformed item fails alone (kept as raw
    /// JSON text until then: no intermediate value tree).
    pub updates: Vec<Box<serde_json::value::RawValue>>,
}

/// One item of a batch: a location report with its driver id.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BatchItem {
    pub driver_id: String,
    pub lat: f64,
    pub lng: f64,
    #[serde(default)]
    pub seq: Option<u64>,
    #[serde(default)]
    pub ts_ms: Option<i64>,
    #[serde(default)]
    pub heading_deg: Option<f64>,
    #[serde(default)]
    pub speed_mps: Option<f64>,
    #[serde(default)]
    pub accuracy_m: Option<f64>,
}

/// One result of a batch, in the order of the request's items.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct ItemResult {
    pub index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub driver_id: Option<String>,
    /// `accepted`, `stale` or `rejected`.
    pub result: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct BatchAnswer {
    pub accepted: usize,
    pub stale: usize,
    pub rejected: usize,
    pub results: Vec<ItemResult>,
}

/// `POST /v1/locations/batch`: fleet gateways (service role) push for many drivers; a
/// driver token may batch its own reports only.
pub async fn post_batch(
    ingest: web::Data<Ingest>,
    who: Principal,
    body: web::Json<BatchBody>,
) -> HttpResponse {
    let max = ingest.settings().max_batch;
    let n = body.updates.len();
    if n == 0 {
        return error_response(IngestError::EmptyBatch);
    }
    if n > max {
        return error_response(IngestError::BatchTooLarge { got: n, max });
    }
    ingest.metrics().batch_size.observe(n as f64);
    // Parse and authorise every item; the good ones go to ingest together.
    let mut results: Vec<Option<ItemResult>> = Vec::with_capacity(n);
    let mut reports = Vec::new();
    let mut names = Vec::new();
    for (index, raw) in body.into_inner().updates.into_iter().enumerate() {
        match batch_item(&who, &raw) {
            Ok((id, name, report)) => {
                reports.push((id, report));
                names.push((index, name));
                results.push(None);
            }
            Err((name, code, detail)) => results.push(Some(ItemResult {
                index,
                driver_id: name,
                result: "rejected".into(),
                code: Some(code),
                detail: Some(detail),
            })),
        }
    }
    let outcomes = ingest.push_many(&reports).await;
    for ((index, name), outcome) in names.into_iter().zip(outcomes) {
        results[index] = Some(match outcome {
            Ok(o) => ItemResult {
                index,
                driver_id: Some(name),
                result: match o {
                    Outcome::Accepted => "accepted".into(),
                    Outcome::Stale => "stale".into(),
                },
                code: None,
                detail: None,
            },
            Err(e) => ItemResult {
                index,
                driver_id: Some(name),
                result: "rejected".into(),
                code: Some(e.code().into()),
                detail: Some(e.to_string()),
            },
        });
    }
    let results: Vec<ItemResult> = results.into_iter().flatten().collect();
    let count = |r: &str| results.iter().filter(|x| x.result == r).count();
    HttpResponse::Ok().json(BatchAnswer {
        accepted: count("accepted"),
        stale: count("stale"),
        rejected: count("rejected"),
        results,
    })
}

type ItemError = (Option<String>, String, String);

/// Parses and authorises one batch item.
fn batch_item(
    who: &Principal,
    raw: &serde_json::value::RawValue,
) -> Result<(EntryId, String, LocationBody), ItemError> {
    let item: BatchItem = serde_json::from_str(raw.get())
        .map_err(|e| (None, "invalid_item".into(), e.to_string()))?;
    let id = driver_id(&item.driver_id)
        .map_err(|e| (Some(item.driver_id.clone()), e.code().into(), e.to_string()))?;
    who.may_act_as(Role::Driver, id.as_str())
        .map_err(|e| (Some(item.driver_id.clone()), e.code().into(), e.to_string()))?;
    let body = LocationBody {
        lat: item.lat,
        lng: item.lng,
        seq: item.seq,
        ts_ms: item.ts_ms,
        heading_deg: item.heading_deg,
        speed_mps: item.speed_mps,
        accuracy_m: item.accuracy_m,
    };
    Ok((id, item.driver_id, body))
}

/// `PUT /v1/drivers/{driver_id}/status`
pub async fn put_status(
    ingest: web::Data<Ingest>,
    who: Principal,
    path: web::Path<String>,
    body: web::Json<StatusBody>,
) -> HttpResponse {
    let id = match authorised(&who, &path) {
        Ok(id) => id,
        Err(e) => return e.error_response(),
    };
    match ingest.set_status(&id, &body).await {
        Ok(view) => HttpResponse::Ok().json(view),
        Err(e) => error_response(e),
    }
}

/// `GET /v1/drivers/{driver_id}`
pub async fn get_driver(
    ingest: web::Data<Ingest>,
    who: Principal,
    path: web::Path<String>,
) -> HttpResponse {
    let id = match authorised(&who, &path) {
        Ok(id) => id,
        Err(e) => return e.error_response(),
    };
    match ingest.get(&id).await {
        Ok(view) => HttpResponse::Ok().json(view),
        Err(e) => error_response(e),
    }
}
