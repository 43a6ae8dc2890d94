//! HTTP adapters of dispatch: parse, authorise, call [`Dispatcher`], map the answer.
//!
//! Each path is one `web::resource` holding all its methods (a wrong method then gets 405
//! with `Allow`).

use std::sync::Arc;

use actix_web::{web, HttpRequest, HttpResponse};
use geomatch_common::auth::{Principal, Role};
use geomatch_common::error::ApiError;
use geomatch_common::ServiceInfo;
use geomatch_index::Position;
use serde::Deserialize;

use crate::dispatch::Dispatcher;
use crate::ride::{DispatchError, DriverId, OfferId, RideId, RideRequest, RideState, RideView};

/// The service's name, as in `--service matching` and its info route.
pub const NAME: &str = "matching";

type Dispatch = web::Data<Dispatcher>;

/// Registers dispatch's routes with `dispatcher` as their state.
pub(crate) fn configure(cfg: &mut web::ServiceConfig, dispatcher: Arc<Dispatcher>) {
    cfg.app_data(web::Data::from(dispatcher))
        .service(web::resource("/v1/matching/info").route(web::get().to(info)))
        .service(web::resource("/v1/drivers/nearby").route(web::get().to(nearby)))
        .service(web::resource("/v1/rides").route(web::post().to(post_ride)))
        .service(web::resource("/v1/rides/{ride_id}").route(web::get().to(get_ride)))
        .service(web::resource("/v1/rides/{ride_id}/cancel").route(web::post().to(cancel)))
        .service(web::resource("/v1/rides/{ride_id}/tip").route(web::post().to(tip)))
        .service(web::resource("/v1/rides/{ride_id}/arrived").route(web::post().to(arrived)))
        .service(web::resource("/v1/rides/{ride_id}/start").route(web::post().to(start)))
        .service(web::resource("/v1/rides/{ride_id}/complete").route(web::post().to(complete)))
        .service(web::resource("/v1/drivers/{driver_id}/offer").route(web::get().to(current_offer)))
        .service(web::resource("/v1/offers/{offer_id}/accept").route(web::post().to(accept)))
        .service(web::resource("/v1/offers/{offer_id}/decline").route(web::post().to(decline)));
}

/// `GET /v1/matching/info`: which service answered, which build.
async fn info() -> web::Json<ServiceInfo> {
    web::Json(ServiceInfo::new(NAME, env!("CARGO_PKG_VERSION")))
}

/// `POST /v1/rides` (rider token, `Idempotency-Key` required).
async fn post_ride(
    d: Dispatch,
    who: Principal,
    req: HttpRequest,
    body: web::Json<RideRequest>,
) -> Result<HttpResponse, ApiError> {
    who.require(&[Role::Rider])?;
    let key = req
        .headers()
        .get("idempotency-key")
        .map(|v| v.to_str().map_err(|_| DispatchError::BadKey))
        .transpose()?;
    let answer = d.request(&who.subject, key, body.into_inner()).await?;
    let mut response = HttpResponse::Created();
    if answer.replayed {
        response.insert_header(("Idempotent-Replayed", "true"));
    }
    Ok(response.json(for_caller(&who, answer.ride)))
}

/// A ride as `who` may see it: the outstanding offer only for service and admin callers.
fn for_caller(who: &Principal, mut ride: RideView) -> RideView {
    if !who.role.is_privileged() {
        ride.offer_id = None;
    }
    ride
}

fn may_see(who: &Principal, ride: &RideView) -> Result<(), DispatchError> {
    let own = (who.role == Role::Rider && who.subject == ride.rider_id)
        || (who.role == Role::Driver
            && ride.driver_id.as_ref().map(DriverId::as_str) == Some(who.subject.as_str()));
    if own || who.role.is_privileged() {
        Ok(())
    } else {
        Err(DispatchError::Forbidden)
    }
}

/// `GET /v1/rides/{ride_id}`: the rider, the assigned driver, service or admin.
async fn get_ride(
    d: Dispatch,
    who: Principal,
    path: web::Path<RideId>,
) -> Result<HttpResponse, ApiError> {
    let ride = d.ride(&path).await?;
    may_see(&who, &ride)?;
    Ok(HttpResponse::Ok().json(for_caller(&who, ride)))
}

/// `POST /v1/rides/{ride_id}/cancel`: the rider, the assigned driver, service or admin.
async fn cancel(
    d: Dispatch,
    who: Principal,
    path: web::Path<RideId>,
) -> Result<HttpResponse, ApiError> {
    let ride = d.ride(&path).await?;
    may_see(&who, &ride)?;
    let by = format!("{}:{}", role_name(who.role), who.subject);
    Ok(HttpResponse::Ok().json(for_caller(&who, d.cancel(&path, &by).await?)))
}

/// `POST /v1/rides/{ride_id}/tip` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TipBody {
    /// The new tip in the fare's minor units; a tip can only be raised.
    tip_minor: u64,
}

/// `POST /v1/rides/{ride_id}/tip`: the ride's rider sets (raises) the tip.
async fn tip(
    d: Dispatch,
    who: Principal,
    path: web::Path<RideId>,
    body: web::Json<TipBody>,
) -> Result<HttpResponse, ApiError> {
    who.require(&[Role::Rider])?;
    let ride = d.ride(&path).await?;
    if ride.rider_id != who.subject {
        return Err(DispatchError::Forbidden.into());
    }
    Ok(HttpResponse::Ok().json(for_caller(&who, d.tip(&path, body.tip_minor).await?)))
}

fn role_name(r: Role) -> &'static str {
    match r {
        Role::Driver => "driver",
        Role::Rider => "rider",
        Role::Service => "service",
        Role::Admin => "admin",
    }
}

/// `GET /v1/drivers/{driver_id}/offer`
async fn current_offer(
    d: Dispatch,
    who: Principal,
    path: web::Path<DriverId>,
) -> Result<HttpResponse, ApiError> {
    who.may_act_as(Role::Driver, path.as_str())?;
    Ok(HttpResponse::Ok().json(d.current_offer(&path).await?))
}

/// The driver an offer action is for: the token's own id, or for a privileged caller the
/// offer's driver.
async fn offer_actor(
    d: &Dispatcher,
    who: &Principal,
    offer_id: &OfferId,
) -> Result<DriverId, ApiError> {
    match who.role {
        Role::Driver => Ok(who.subject.as_str().into()),
        r if r.is_privileged() => Ok(d.offer_driver(offer_id).await?),
        _ => Err(DispatchError::Forbidden.into()),
    }
}

/// `POST /v1/offers/{offer_id}/accept`
async fn accept(
    d: Dispatch,
    who: Principal,
    path: web::Path<OfferId>,
) -> Result<HttpResponse, ApiError> {
    let driver = offer_actor(&d, &who, &path).await?;
    Ok(HttpResponse::Ok().json(for_caller(&who, d.accept(&path, &driver).await?)))
}

/// `POST /v1/offers/{offer_id}/decline`
async fn decline(
    d: Dispatch,
    who: Principal,
    path: web::Path<OfferId>,
) -> Result<HttpResponse, ApiError> {
    let driver = offer_actor(&d, &who, &path).await?;
    d.decline(&path, &driver).await?;
    Ok(HttpResponse::NoContent().finish())
}

async fn step(
    d: Dispatch,
    who: Principal,
    ride_id: &RideId,
    to: RideState,
) -> Result<HttpResponse, ApiError> {
    let driver = match who.role {
        Role::Driver => Some(DriverId::from(who.subject.as_str())),
        r if r.is_privileged() => None,
        _ => return Err(DispatchError::Forbidden.into()),
    };
    let ride = d.progress(ride_id, driver.as_ref(), to).await?;
    Ok(HttpResponse::Ok().json(for_caller(&who, ride)))
}

/// `POST /v1/rides/{ride_id}/arrived`
async fn arrived(
    d: Dispatch,
    who: Principal,
    path: web::Path<RideId>,
) -> Result<HttpResponse, ApiError> {
    step(d, who, &path, RideState::DriverArrived).await
}

/// `POST /v1/rides/{ride_id}/start`
async fn start(
    d: Dispatch,
    who: Principal,
    path: web::Path<RideId>,
) -> Result<HttpResponse, ApiError> {
    step(d, who, &path, RideState::InProgress).await
}

/// `POST /v1/rides/{ride_id}/complete`
async fn complete(
    d: Dispatch,
    who: Principal,
    path: web::Path<RideId>,
) -> Result<HttpResponse, ApiError> {
    step(d, who, &path, RideState::Completed).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NearbyQuery {
    lat: f64,
    lng: f64,
    #[serde(default = "default_k")]
    k: usize,
    #[serde(default = "default_radius")]
    radius_m: f64,
    #[serde(default)]
    class: Option<String>,
}

fn default_k() -> usize {
    10
}

fn default_radius() -> f64 {
    3_000.0
}

/// `GET /v1/drivers/nearby?lat&lng&k&radius_m&class`
async fn nearby(
    d: Dispatch,
    who: Principal,
    q: web::Query<NearbyQuery>,
) -> Result<HttpResponse, ApiError> {
    let at = Position::new(q.lat, q.lng).map_err(|e| DispatchError::Query(e.to_string()))?;
    let max_k = d.settings().max_nearby;
    if q.k == 0 || q.k > max_k {
        return Err(DispatchError::Query(format!("k must be in 1..={max_k}")).into());
    }
    if !(q.radius_m.is_finite() && q.radius_m > 0.0 && q.radius_m <= 50_000.0) {
        return Err(DispatchError::Query("radius_m must be in (0, 50000]".into()).into());
    }
    let drivers = d.nearby(
        &at,
        q.k,
        q.radius_m,
        q.class.as_deref(),
        who.role.is_privileged(),
    )?;
    Ok(HttpResponse::Ok().json(serde_json::json!({ "drivers": drivers })))
}
