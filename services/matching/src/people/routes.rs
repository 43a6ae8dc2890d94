//! HTTP adapters of people nearby: parse, authorise, call [`People`] with the process's
//! time, map the answer. A profile acts on itself with its own token (role `rider`,
//! subject = profile id); service and admin tokens act on any profile; only they set the
//! premium flag.

use actix_web::http::header;
use actix_web::{web, HttpResponse, ResponseError};
use geomatch_common::auth::{Principal, Role};
use geomatch_common::error::ApiError;
use geomatch_index::EntryId;
use serde::Deserialize;

use super::error::{profile_id, PeopleError};
use super::model::{BlockBody, PremiumBody, SwipeBody};
use super::profile::ProfileBody;
use super::People;

type State = web::Data<People>;

/// Registers the people-nearby routes with `people` as their state.
pub fn configure(cfg: &mut web::ServiceConfig, people: State) {
    cfg.app_data(people)
        .service(
            web::resource("/v1/profiles/{profile_id}")
                .route(web::put().to(put_profile))
                .route(web::get().to(get_profile)),
        )
        .service(
            web::resource("/v1/profiles/{profile_id}/premium").route(web::put().to(put_premium)),
        )
        .service(
            web::resource("/v1/profiles/{profile_id}/recommendations")
                .route(web::get().to(recommendations)),
        )
        .service(web::resource("/v1/profiles/{profile_id}/swipes").route(web::post().to(swipe)))
        .service(web::resource("/v1/profiles/{profile_id}/matches").route(web::get().to(matches)))
        .service(
            web::resource("/v1/profiles/{profile_id}/matches/{other_id}")
                .route(web::delete().to(unmatch)),
        )
        .service(web::resource("/v1/profiles/{profile_id}/blocks").route(web::post().to(block)))
        .service(web::resource("/v1/profiles/{profile_id}/likes").route(web::get().to(likes)))
        .service(
            web::resource("/v1/profiles/{profile_id}/likes/count")
                .route(web::get().to(likes_count)),
        );
}

/// The path's profile id, if the caller may act as it.
fn own(who: &Principal, raw: &str) -> Result<EntryId, ApiError> {
    let id = profile_id(raw)?;
    who.may_act_as(Role::Rider, id.as_str())?;
    Ok(id)
}

/// A people error as problem+json (`Retry-After` from [`PeopleError`]'s `retry_after_s`);
/// the daily limits add their reset time as `X-RateLimit-Reset` (epoch seconds).
fn fail(e: PeopleError) -> HttpResponse {
    let reset_s = match &e {
        PeopleError::DailyLimit { reset_at_ms, .. } => Some(reset_at_ms / 1000),
        _ => None,
    };
    let mut response = ApiError::from(e).error_response();
    if let Some(reset) = reset_s {
        response.headers_mut().insert(
            header::HeaderName::from_static("x-ratelimit-reset"),
            header::HeaderValue::from(reset),
        );
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
async fn put_profile(
    people: State,
    who: Principal,
    path: web::Path<String>,
    body: web::Json<ProfileBody>,
) -> Result<HttpResponse, ApiError> {
    let id = own(&who, &path)?;
    Ok(answer(
        people
            .put_profile(&id, body.into_inner(), people.now())
            .await,
    ))
}

/// `GET /v1/profiles/{profile_id}`: the owner's full view.
async fn get_profile(
    people: State,
    who: Principal,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = own(&who, &path)?;
    Ok(answer(people.get_profile(&id, people.now()).await))
}

/// `PUT /v1/profiles/{profile_id}/premium`: service and admin only.
async fn put_premium(
    people: State,
    who: Principal,
    path: web::Path<String>,
    body: web::Json<PremiumBody>,
) -> Result<HttpResponse, ApiError> {
    who.require(&[Role::Service, Role::Admin])?;
    let id = profile_id(&path)?;
    Ok(answer(
        people.set_premium(&id, body.premium, people.now()).await,
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PageQuery {
    limit: Option<usize>,
    cursor: Option<String>,
}

/// `GET /v1/profiles/{profile_id}/recommendations?limit&cursor`
async fn recommendations(
    people: State,
    who: Principal,
    path: web::Path<String>,
    query: web::Query<PageQuery>,
) -> Result<HttpResponse, ApiError> {
    let id = own(&who, &path)?;
    let q = query.into_inner();
    Ok(answer(
        people
            .recommendations(&id, q.limit, q.cursor.as_deref(), people.now())
            .await,
    ))
}

/// `POST /v1/profiles/{profile_id}/swipes`
async fn swipe(
    people: State,
    who: Principal,
    path: web::Path<String>,
    body: web::Json<SwipeBody>,
) -> Result<HttpResponse, ApiError> {
    let id = own(&who, &path)?;
    Ok(answer(
        people.swipe(&id, body.into_inner(), people.now()).await,
    ))
}

/// `GET /v1/profiles/{profile_id}/matches`
async fn matches(
    people: State,
    who: Principal,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = own(&who, &path)?;
    Ok(answer(people.matches(&id, people.now()).await))
}

/// `DELETE /v1/profiles/{profile_id}/matches/{other_id}`: unmatch (204).
async fn unmatch(
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
async fn block(
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
async fn likes_count(
    people: State,
    who: Principal,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = own(&who, &path)?;
    Ok(answer(people.likes_count(&id).await))
}

/// `GET /v1/profiles/{profile_id}/likes`: premium only (403 `premium_required`).
async fn likes(
    people: State,
    who: Principal,
    path: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = own(&who, &path)?;
    Ok(answer(people.likes(&id, people.now()).await))
}

#[cfg(test)]
mod tests {
    use actix_web::http::StatusCode;

    use super::*;

    #[test]
    fn a_daily_limit_says_when_to_retry_and_when_it_resets() {
        // 2026-11-21T22:00:00.250Z: the limit resets at midnight, 2 h later.
        let now = 1_795_305_600_000 - 7_200_000 + 250;
        let r = fail(PeopleError::daily_limit("likes", 100, now));
        assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
        let h = |r: &HttpResponse, name: &str| {
            r.headers()
                .get(name)
                .map(|v| v.to_str().expect("ASCII").to_owned())
        };
        assert_eq!(h(&r, "retry-after").as_deref(), Some("7200"));
        assert_eq!(h(&r, "x-ratelimit-reset").as_deref(), Some("1795305600"));
        let r = fail(PeopleError::Unavailable("down".into()));
        assert_eq!(h(&r, "retry-after").as_deref(), Some("1"));
        assert!(!r.headers().contains_key("x-ratelimit-reset"));
        assert!(!fail(PeopleError::Cursor)
            .headers()
            .contains_key(header::RETRY_AFTER));
    }
}
