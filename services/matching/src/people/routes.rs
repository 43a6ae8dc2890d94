//! HTTP adapters of people nearby: parse, authorise, call [`People`], map the answer. A
//! profile acts on itself with its own token (role `rider`, subject = profile id); service
//! and admin tokens act on any profile; only they set the premium flag.

use actix_web::http::header;
use actix_web::{web, HttpResponse, ResponseError};
use geomatch_common::auth::{Principal, Role};
use geomatch_common::error::ApiError;
use geomatch_index::EntryId;
use serde::Deserialize;

use super::date::now_ms;
use super::error::{profile_id, PeopleError};
use super::profile::ProfileBody;
use super::{BlockBody, People, PremiumBody, SwipeBody};

type State = web::Data<People>;

/// The path's profile id, if the caller may act as it.
fn own(who: &Principal, raw: &str) -> Result<EntryId, ApiError> {
    let id = profile_id(raw)?;
    who.may_act_as(Role::Rider, id.as_str())?;
    Ok(id)
}

/// A people error as problem+json; the daily limits add `Retry-After` and the reset time.
fn fail(e: PeopleError) -> HttpResponse {
    let now = now_ms();
    let extra = match &e {
        PeopleError::DailyLimit { reset_at_ms, .. } => Some((
            ((reset_at_ms - now).max(1000) as u64).div_ceil(1000),
            Some(reset_at_ms / 1000),
        )),
        PeopleError::Unavailable(_) => Some((1, None)),
        _ => None,
    };
    let mut response = ApiError::from(e).error_response();
    if let Some((retry_s, reset)) = extra {
        let h = response.headers_mut();
        h.insert(header::RETRY_AFTER, header::HeaderValue::from(retry_s));
        if let Some(reset) = reset {
            h.insert(
                header::HeaderName::from_static("x-ratelimit-reset"),
                header::HeaderValue::from(reset),
            );
        }
    }
    response
}

fn answer<T: serde::Serialize>(r: Result<T, PeopleError>) -> HttpResponse {
    match r {
        Ok(v) => HttpResponse::Ok().json(v),
        Err(e) => fail(e),
    }
}

/// `PUT /v1/profiles/{profile_id}`
pub async fn put_profile(
    people: State,
    who: Principal,
    path: web::Path<String>,
    body: web::Json<ProfileBody>,
) -> Result<HttpResponse, ApiError> {
    let id = own(&who, &path)?;
    Ok(answer(
        people.put_profile(&id, body.into_inner(), now_ms()).await,
    ))
}

/// `GET /v1/profiles/{profile_id}`: the owner's full view.
pub async fn get_profile(
    people: State,
    who: Principal,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = own(&who, &path)?;
    Ok(answer(people.get_profile(&id, now_ms()).await))
}

/// `PUT /v1/profiles/{profile_id}/premium`: service and admin only.
pub async fn put_premium(
    people: State,
    who: Principal,
    path: web::Path<String>,
    body: web::Json<PremiumBody>,
) -> Result<HttpResponse, ApiError> {
    who.require(&[Role::Service, Role::Admin])?;
    let id = profile_id(&path)?;
    Ok(answer(
        people.set_premium(&id, body.premium, now_ms()).await,
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PageQuery {
    pub limit: Option<usize>,
    pub cursor: Option<String>,
}

/// `GET /v1/profiles/{profile_id}/recommendations?limit&cursor`
pub async fn recommendations(
    people: State,
    who: Principal,
    path: web::Path<String>,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let id = own(&who, &path)?;
    let q = query.into_inner();
    Ok(answer(
        people
            .recommendations(&id, q.limit, q.cursor.as_deref(), now_ms())
            .await,
    ))
}

/// `POST /v1/profiles/{profile_id}/swipes`
pub async fn swipe(
    people: State,
    who: Principal,
    path: web::Path<String>,
    body: web::Json<SwipeBody>,
) -> Result<HttpResponse, ApiError> {
    let id = own(&who, &path)?;
    Ok(answer(people.swipe(&id, body.into_inner(), now_ms()).await))
}

/// `GET /v1/profiles/{profile_id}/matches`
pub async fn matches(
    people: State,
    who: Principal,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = own(&who, &path)?;
    Ok(answer(people.matches(&id, now_ms()).await))
}

/// `DELETE /v1/profiles/{profile_id}/matches/{other_id}`: unmatch (204).
pub async fn unmatch(
    people: State,
    who: Principal,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    let (me, other) = path.into_inner();
    let id = own(&who, &me)?;
    Ok(match people.unmatch(&id, &other).await {
        Ok(()) => HttpResponse::NoContent().finish(),
        Err(e) => fail(e),
    })
}

/// `POST /v1/profiles/{profile_id}/blocks`: block (204).
pub async fn block(
    people: State,
    who: Principal,
    path: web::Path<String>,
    body: web::Json<BlockBody>,
) -> Result<HttpResponse, ApiError> {
    let id = own(&who, &path)?;
    Ok(match people.block(&id, body.into_inner()).await {
        Ok(()) => HttpResponse::NoContent().finish(),
        Err(e) => fail(e),
    })
}

/// `GET /v1/profiles/{profile_id}/likes/count`: for everyone.
pub async fn likes_count(
    people: State,
    who: Principal,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = own(&who, &path)?;
    Ok(answer(people.likes_count(&id).await))
}

/// `GET /v1/profiles/{profile_id}/likes`: premium only (403 `premium_required`).
pub async fn likes(
    people: State,
    who: Principal,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = own(&who, &path)?;
    Ok(answer(people.likes(&id, now_ms()).await))
}
