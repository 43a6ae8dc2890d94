//! HTTP adapters: parse, authorise, call [`Ingest`], map the answer. No rules live here.

use actix_web::{web, HttpResponse};
use geomatch_common::auth::{Principal, Role};
use geomatch_common::error::{ApiError, ErrorCode};
use geomatch_index::{EntryId, Kind};
use serde::{Deserialize, Serialize};

use crate::ingest::Ingest;
use crate::model::{driver_id, IngestError, Outcome, StatusBody};
use crate::report::LocationBody;

/// `{"result": "accepted" | "stale"}`
#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct PushAnswer {
    result: Outcome,
}

/// The path's driver id, if the caller may act on it (the driver itself, or privileged).
fn authorised(who: &Principal, raw: &str) -> Result<EntryId, ApiError> {
    let id = driver_id(raw)?;
    who.may_act_as(Role::Driver, id.as_str())?;
    Ok(id)
}

/// `PUT /v1/drivers/{driver_id}/location`
pub(crate) async fn put_location(
    ingest: web::Data<Ingest>,
    who: Principal,
    path: web::Path<String>,
    body: web::Json<LocationBody>,
) -> Result<HttpResponse, ApiError> {
    let id = authorised(&who, &path)?;
    let result = ingest.push(&id, &body).await?;
    Ok(HttpResponse::Ok().json(PushAnswer { result }))
}

/// `PUT /v1/profiles/{profile_id}/location`: a people-nearby profile reports where it is.
/// The same rules as drivers (validation, rate limit, ordering, plausibility); the entry is
/// kind `profile` in the index. A profile is a person's user account: its token has role
/// `rider` and the profile id as subject (service and admin may act on any).
pub(crate) async fn put_profile_location(
    ingest: web::Data<Ingest>,
    who: Principal,
    path: web::Path<String>,
    body: web::Json<LocationBody>,
) -> Result<HttpResponse, ApiError> {
    let id = EntryId::parse(&path)
        .map_err(|e| ApiError::bad_request("invalid_profile_id", e.to_string()))?;
    who.may_act_as(Role::Rider, id.as_str())?;
    let result = ingest.push_as(Kind::Profile, &id, &body).await?;
    Ok(HttpResponse::Ok().json(PushAnswer { result }))
}

/// `POST /v1/locations/batch` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BatchBody {
    /// Items are parsed one by one, so that a malformed item fails alone (kept as raw
    /// JSON text until then: no intermediate value tree).
    updates: Vec<Box<serde_json::value::RawValue>>,
}

/// One item of a batch: a location report with its driver id.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct BatchItem {
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
struct ItemResult {
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
struct BatchAnswer {
    pub accepted: usize,
    pub stale: usize,
    pub rejected: usize,
    pub results: Vec<ItemResult>,
}

/// `POST /v1/locations/batch`: fleet gateways (service role) push for many drivers; a
/// driver token may batch its own reports only.
pub(crate) async fn post_batch(
    ingest: web::Data<Ingest>,
    who: Principal,
    body: web::Json<BatchBody>,
) -> Result<HttpResponse, ApiError> {
    let max = ingest.settings().max_batch;
    let n = body.updates.len();
    if n == 0 {
        return Err(IngestError::EmptyBatch.into());
    }
    if n > max {
        return Err(IngestError::BatchTooLarge { got: n, max }.into());
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
    Ok(HttpResponse::Ok().json(BatchAnswer {
        accepted: count("accepted"),
        stale: count("stale"),
        rejected: count("rejected"),
        results,
    }))
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
pub(crate) async fn put_status(
    ingest: web::Data<Ingest>,
    who: Principal,
    path: web::Path<String>,
    body: web::Json<StatusBody>,
) -> Result<HttpResponse, ApiError> {
    let id = authorised(&who, &path)?;
    let view = ingest.set_status(&id, &body).await?;
    Ok(HttpResponse::Ok().json(view))
}

/// `GET /v1/drivers/{driver_id}`
pub(crate) async fn get_driver(
    ingest: web::Data<Ingest>,
    who: Principal,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = authorised(&who, &path)?;
    let view = ingest.get(&id).await?;
    Ok(HttpResponse::Ok().json(view))
}
