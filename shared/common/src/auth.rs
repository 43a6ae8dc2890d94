//! Bearer-token authentication, the same in every service.
//!
//! Tokens are JWTs signed with HS256 (the algorithm is pinned: a token that names any other
//! algorithm, `none` included, is refused). Every claim is required: `sub`, `role`, `exp`,
//! `iss`, `aud`. Handlers take a [`Principal`] argument, which only exists for a verified
//! token; a missing, malformed, forged, expired or wrong-audience token answers 401 before
//! the handler runs.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_web::{dev::Payload, http::StatusCode, web, FromRequest, HttpRequest};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::config::AuthSettings;
use crate::error::{ApiError, ErrorCode};

/// Who a caller is. `Service` and `Admin` may act on any driver or rider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Driver,
    Rider,
    Service,
    Admin,
}

impl Role {
    /// Roles that act on behalf of the platform rather than one person.
    pub fn is_privileged(self) -> bool {
        matches!(self, Role::Service | Role::Admin)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Claims {
    sub: String,
    role: Role,
    exp: u64,
    iss: String,
    aud: String,
}

/// A verified caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub subject: String,
    pub role: Role,
}

impl Principal {
    /// A driver (or rider) may act only on its own id; service and admin on any.
    pub fn may_act_as(&self, role: Role, id: &str) -> Result<(), AuthError> {
        if self.role.is_privileged() || (self.role == role && self.subject == id) {
            Ok(())
        } else {
            Err(AuthError::Forbidden)
        }
    }

    /// The caller must have one of `roles`.
    pub fn require(&self, roles: &[Role]) -> Result<(), AuthError> {
        if roles.contains(&self.role) {
            Ok(())
        } else {
            Err(AuthError::Forbidden)
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("an Authorization: Bearer token is required")]
    Missing,
    #[error("the bearer token has expired")]
    Expired,
    #[error("the bearer token is invalid: {0}")]
    Invalid(String),
    #[error("this token may not act on this resource")]
    Forbidden,
}

impl ErrorCode for AuthError {
    fn status(&self) -> StatusCode {
        match self {
            AuthError::Forbidden => StatusCode::FORBIDDEN,
            _ => StatusCode::UNAUTHORIZED,
        }
    }
    fn code(&self) -> &'static str {
        match self {
            AuthError::Missing => "missing_token",
            AuthError::Expired => "expired_token",
            AuthError::Invalid(_) => "invalid_token",
            AuthError::Forbidden => "forbidden",
        }
    }
}

/// Verifies tokens, and mints them for development and tests.
pub struct Authenticator {
    decoding: DecodingKey,
    encoding: EncodingKey,
    validation: Validation,
    issuer: String,
    audience: String,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    pub fn new(settings: &AuthSettings) -> Self {
        let secret = settings.jwt_secret.expose().as_bytes();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[&settings.issuer]);
        validation.set_audience(&[&settings.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = 5;
        Authenticator {
            decoding: DecodingKey::from_secret(secret),
            encoding: EncodingKey::from_secret(secret),
            validation,
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
        }
    }

    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        use jsonwebtoken::errors::ErrorKind;
        match jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation) {
            Ok(data) => Ok(Principal {
                subject: data.claims.sub,
                role: data.claims.role,
            }),
            Err(e) => match e.kind() {
                ErrorKind::ExpiredSignature => Err(AuthError::Expired),
                ErrorKind::InvalidAudience => Err(AuthError::Invalid("wrong audience".into())),
                ErrorKind::InvalidIssuer => Err(AuthError::Invalid("wrong issuer".into())),
                ErrorKind::InvalidSignature => Err(AuthError::Invalid("bad signature".into())),
                ErrorKind::InvalidAlgorithm => {
                    Err(AuthError::Invalid("algorithm must be HS256".into()))
                }
                ErrorKind::MissingRequiredClaim(c) => {
                    Err(AuthError::Invalid(format!("claim {c} is required")))
                }
                _ => Err(AuthError::Invalid("malformed token".into())),
            },
        }
    }

    /// A token for `subject` with `role`, valid for `ttl`.
    pub fn mint(&self, subject: &str, role: Role, ttl: Duration) -> String {
        self.sign(subject, role, (unix_now() + ttl).as_secs())
    }

    /// A token that expired an hour ago (tests of the 401 path).
    pub fn mint_expired_for_tests(&self, subject: &str, role: Role) -> String {
        self.sign(subject, role, unix_now().as_secs().saturating_sub(3600))
    }

    fn sign(&self, subject: &str, role: Role, exp: u64) -> String {
        let claims = Claims {
            sub: subject.to_owned(),
            role,
            exp,
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 signing with an in-memory key cannot fail")
    }
}

fn unix_now() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

impl FromRequest for Principal {
    type Error = ApiError;
    type Future = std::future::Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        std::future::ready(principal_of(req))
    }
}

/// The caller of a WebSocket upgrade: the bearer header, or else an `access_token` query
/// parameter (browsers cannot set headers on a WebSocket). Only upgrades accept the query
/// form, so tokens do not end up in ordinary request URLs.
pub fn authenticate(req: &HttpRequest) -> Result<Principal, ApiError> {
    let upgrade = req
        .headers()
        .get(actix_web::http::header::UPGRADE)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    if req
        .headers()
        .contains_key(actix_web::http::header::AUTHORIZATION)
        || !upgrade
    {
        return principal_of(req);
    }
    let token =
        web::Query::<std::collections::HashMap<String, String>>::from_query(req.query_string())
            .ok()
            .and_then(|q| q.get("access_token").cloned())
            .ok_or(AuthError::Missing)?;
    Ok(authenticator(req)?.verify(&token)?)
}

fn authenticator(req: &HttpRequest) -> Result<&Authenticator, ApiError> {
    req.app_data::<web::Data<Authenticator>>()
        .map(|d| d.get_ref())
        .ok_or_else(|| ApiError::internal("no Authenticator registered in app data"))
}

fn principal_of(req: &HttpRequest) -> Result<Principal, ApiError> {
    let auth = authenticator(req)?;
    let header = req
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .ok_or(AuthError::Missing)?;
    let value = header
        .to_str()
        .map_err(|_| AuthError::Invalid("header is not ASCII".into()))?;
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .ok_or_else(|| AuthError::Invalid("expected the Bearer scheme".into()))?;
    Ok(auth.verify(token.trim())?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    fn settings(secret: &str, aud: &str) -> AuthSettings {
        AuthSettings {
            jwt_secret: Secret::new(secret),
            issuer: "geomatch".into(),
            audience: aud.into(),
        }
    }

    const SECRET: &str = "0123456789abcdef0123456789abcdef-test";

    #[test]
    fn a_minted_token_verifies_with_its_subject_and_role() {
        let a = Authenticator::new(&settings(SECRET, "geomatch"));
        let t = a.mint("d1", Role::Driver, Duration::from_secs(60));
        assert_eq!(
            a.verify(&t),
            Ok(Principal {
                subject: "d1".into(),
                role: Role::Driver
            })
        );
    }

    #[test]
    fn forged_expired_and_wrong_audience_tokens_are_refused() {
        let a = Authenticator::new(&settings(SECRET, "geomatch"));
        let other = Authenticator::new(&settings("another-secret-another-secret-1234", "geomatch"));
        let forged = other.mint("d1", Role::Admin, Duration::from_secs(60));
        assert!(matches!(a.verify(&forged), Err(AuthError::Invalid(_))));
        let wrong_aud = Authenticator::new(&settings(SECRET, "elsewhere")).mint(
            "d1",
            Role::Driver,
            Duration::from_secs(60),
        );
        assert!(matches!(a.verify(&wrong_aud), Err(AuthError::Invalid(_))));
        // Expired well beyond the leeway.
        let claims = Claims {
            sub: "d1".into(),
            role: Role::Driver,
            exp: 1_000,
            iss: "geomatch".into(),
            aud: "geomatch".into(),
        };
        let expired = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap();
        assert_eq!(a.verify(&expired), Err(AuthError::Expired));
        assert!(matches!(
            a.verify("not.a.token"),
            Err(AuthError::Invalid(_))
        ));
    }

    #[test]
    fn the_algorithm_is_pinned_to_hs256() {
        let a = Authenticator::new(&settings(SECRET, "geomatch"));
        let claims = Claims {
            sub: "d1".into(),
            role: Role::Admin,
            exp: u64::MAX / 2,
            iss: "geomatch".into(),
            aud: "geomatch".into(),
        };
        let hs512 = jsonwebtoken::encode(
            &Header::new(Algorithm::HS512),
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap();
        assert!(matches!(a.verify(&hs512), Err(AuthError::Invalid(_))));
        // alg "none": header {"alg":"none","typ":"JWT"}, no signature.
        let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJkMSIsInJvbGUiOiJhZG1pbiIsImV4cCI6OTk5OTk5OTk5OSwiaXNzIjoiZ2VvbWF0Y2giLCJhdWQiOiJnZW9tYXRjaCJ9.";
        assert!(matches!(a.verify(none), Err(AuthError::Invalid(_))));
    }

    #[test]
    fn a_token_without_a_role_is_refused() {
        #[derive(Serialize)]
        struct NoRole<'a> {
            sub: &'a str,
            exp: u64,
            iss: &'a str,
            aud: &'a str,
        }
        let t = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &NoRole {
                sub: "d1",
                exp: u64::MAX / 2,
                iss: "geomatch",
                aud: "geomatch",
            },
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap();
        let a = Authenticator::new(&settings(SECRET, "geomatch"));
        assert!(matches!(a.verify(&t), Err(AuthError::Invalid(_))));
    }

    #[test]
    fn drivers_act_only_on_themselves_and_services_on_anyone() {
        let d = Principal {
            subject: "d1".into(),
            role: Role::Driver,
        };
        assert!(d.may_act_as(Role::Driver, "d1").is_ok());
        assert_eq!(d.may_act_as(Role::Driver, "d2"), Err(AuthError::Forbidden));
        assert_eq!(
            Principal {
                subject: "d1".into(),
                role: Role::Rider
            }
            .may_act_as(Role::Driver, "d1"),
            Err(AuthError::Forbidden)
        );
        assert!(Principal {
            subject: "svc".into(),
            role: Role::Service
        }
        .may_act_as(Role::Driver, "d9")
        .is_ok());
    }
}
