//! HTTP adapters: parse, authorise, call [`EtaPricing`], map the answer. No rules live here.

use actix_web::{web, HttpResponse};
use geomatch_common::auth::{Principal, Role};
use geomatch_common::error::ApiError;
use geomatch_index::Position;
use serde::{Deserialize, Serialize};

use crate::error::PricingError;
use crate::heatmap::BBox;
use crate::service::EtaPricing;
use crate::views::{EtaView, QuoteRequest};

type Pricing = web::Data<EtaPricing>;

/// `lat,lng` as in `?from=37.5,127.0`.
fn parse_position(name: &str, raw: &str) -> Result<Position, PricingError> {
    let (lat, lng) = raw
        .split_once(',')
        .ok_or_else(|| PricingError::Query(format!("{name} must be lat,lng, got {raw:?}")))?;
    let number = |s: &str| {
        s.trim()
            .parse::<f64>()
            .map_err(|e| PricingError::Query(format!("{name} must be lat,lng: {s:?}: {e}")))
    };
    Ok(Position::new(number(lat)?, number(lng)?)?)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtaQuery {
    pub from: String,
    pub to: String,
}

/// `GET /v1/eta?from=lat,lng&to=lat,lng` (any token).
pub async fn get_eta(
    p: Pricing,
    _who: Principal,
    q: web::Query<EtaQuery>,
) -> Result<HttpResponse, ApiError> {
    let from = parse_position("from", &q.from)?;
    let to = parse_position("to", &q.to)?;
    Ok(HttpResponse::Ok().json(EtaView::from(p.eta(&from, &to, p.now()))))
}

/// `POST /v1/eta/batch` body: one origin, many destinations.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EtaBatchBody {
    pub from: Position,
    pub to: Vec<Position>,
}

#[derive(Debug, Deserialize, Serialize)]
pub struct EtaBatchAnswer {
    /// One per destination, in order.
    pub results: Vec<EtaView>,
}

/// `POST /v1/eta/batch` (any token).
pub async fn post_eta_batch(
    p: Pricing,
    _who: Principal,
    body: web::Json<EtaBatchBody>,
) -> Result<HttpResponse, ApiError> {
    let etas = p.eta_batch(&body.from, &body.to, p.now())?;
    Ok(HttpResponse::Ok().json(EtaBatchAnswer {
        results: etas.into_iter().map(EtaView::from).collect(),
    }))
}

/// `POST /v1/quotes` (rider, service or admin).
pub async fn post_quote(
    p: Pricing,
    who: Principal,
    body: web::Json<QuoteRequest>,
) -> Result<HttpResponse, ApiError> {
    let rider = match (who.role, body.rider_id.as_deref()) {
        (Role::Rider, None) => who.subject.as_str(),
        (Role::Rider, Some(r)) if r == who.subject => r,
        (r, Some(rider)) if r.is_privileged() => rider,
        (r, None) if r.is_privileged() => return Err(PricingError::RiderRequired.into()),
        _ => return Err(PricingError::Forbidden.into()),
    };
    // A Redis failure is 503 with `Retry-After` (the error code's default).
    let quote = p.quote(rider, &body, p.now()).await?;
    Ok(HttpResponse::Created().json(quote))
}

/// `GET /v1/quotes/{quote_id}`: the quote's rider, service or admin.
pub async fn get_quote(
    p: Pricing,
    who: Principal,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let rider = match who.role {
        Role::Rider => Some(who.subject.as_str()),
        r if r.is_privileged() => None,
        _ => return Err(PricingError::Forbidden.into()),
    };
    let quote = p
        .get_quote(&path, rider, p.now())
        .map_err(PricingError::from)?;
    Ok(HttpResponse::Ok().json(quote))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SurgeQuery {
    pub lat: f64,
    pub lng: f64,
}

/// `GET /v1/surge?lat&lng` (any token).
pub async fn get_surge(
    p: Pricing,
    _who: Principal,
    q: web::Query<SurgeQuery>,
) -> Result<HttpResponse, ApiError> {
    let at = Position::new(q.lat, q.lng).map_err(PricingError::from)?;
    Ok(HttpResponse::Ok().json(p.surge_at(&at)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeatmapQuery {
    pub bbox: String,
    #[serde(default = "default_res")]
    pub res: u8,
}

fn default_res() -> u8 {
    7
}

/// `GET /v1/heatmap?bbox=minLng,minLat,maxLng,maxLat&res=7` (driver, service or admin).
pub async fn get_heatmap(
    p: Pricing,
    who: Principal,
    q: web::Query<HeatmapQuery>,
) -> Result<HttpResponse, ApiError> {
    who.require(&[Role::Driver, Role::Service, Role::Admin])?;
    let bbox: BBox = q.bbox.parse().map_err(PricingError::from)?;
    let map = p.heatmap(&bbox, q.res)?;
    Ok(HttpResponse::Ok()
        .content_type("application/geo+json")
        .json(map))
}
