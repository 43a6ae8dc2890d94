//! Quotes: a fare promised to one rider for one product and trip, until it expires.
//!
//! A quote id is the quote itself, signed: `q1.<payload>.<signature>`, where the payload is
//! base64url JSON and the signature base64url HMAC-SHA256 over `q1.<payload>`. Nothing is
//! stored, so any process holding the key verifies it (replicas included) and a forged,
//! altered or expired quote is detected by whoever receives it back (matching, at ride
//! creation). The key is derived from `auth.jwt_secret` with a fixed label, so there is one
//! secret to manage and a quote can never be mistaken for a token or the other way round.

use actix_web::http::StatusCode;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use geomatch_common::error::ErrorCode;
use geomatch_index::Position;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::fare::Fare;

type HmacSha256 = Hmac<Sha256>;

/// Version prefix of quote ids.
const PREFIX: &str = "q1.";
/// Label the signing key is derived with.
const KEY_LABEL: &[u8] = b"geomatch/quote-signing-key/v1";
/// Longest quote id accepted for verification (a real one is about 400 bytes).
const MAX_ID_BYTES: usize = 2_048;

/// What a quote promises; the payload of its id.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quote {
    /// The rider it was made for; nobody else may use it.
    pub rider_id: String,
    pub product: String,
    pub pickup: Position,
    pub dropoff: Position,
    pub fare: Fare,
    /// The H3 resolution-7 cell of the pickup, where the surge was read.
    pub surge_cell: String,
    /// Until a driver of the product could be at the pickup; `None` when none is near.
    pub pickup_eta_s: Option<u64>,
    pub trip_eta_s: u64,
    /// Expected road distance of the trip, metres.
    pub trip_distance_m: u64,
    /// ms since the Unix epoch.
    pub issued_at: i64,
    /// ms since the Unix epoch; the quote is refused from then on.
    pub expires_at: i64,
    /// Makes every quote id unique, even for the same trip in the same millisecond.
    pub nonce: String,
}

/// Why a quote id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuoteError {
    #[error("the quote id is malformed")]
    Malformed,
    #[error("the quote id's signature does not verify: it was altered or not issued here")]
    Forged,
    #[error("the quote expired at {expired_at} (ms since the Unix epoch); ask for a new one")]
    Expired { expired_at: i64 },
    #[error("the quote was made for another rider")]
    WrongRider,
    #[error("the quote is for product {quoted:?}, not {requested:?}")]
    WrongProduct { quoted: String, requested: String },
}

impl ErrorCode for QuoteError {
    fn status(&self) -> StatusCode {
        match self {
            QuoteError::WrongRider => StatusCode::FORBIDDEN,
            _ => StatusCode::UNPROCESSABLE_ENTITY,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            QuoteError::Malformed | QuoteError::Forged => "invalid_quote",
            QuoteError::Expired { .. } => "quote_expired",
            QuoteError::WrongRider => "quote_not_yours",
            QuoteError::WrongProduct { .. } => "quote_product_mismatch",
        }
    }
}

impl QuoteError {
    /// A metric label.
    pub fn name(&self) -> &'static str {
        match self {
            QuoteError::Malformed => "malformed",
            QuoteError::Forged => "forged",
            QuoteError::Expired { .. } => "expired",
            QuoteError::WrongRider => "wrong_rider",
            QuoteError::WrongProduct { .. } => "wrong_product",
        }
    }
}

/// Signs and verifies quote ids.
#[derive(Clone)]
pub struct QuoteSigner {
    /// HMAC state keyed once; cloned per use.
    mac: HmacSha256,
}

impl std::fmt::Debug for QuoteSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("QuoteSigner([redacted])")
    }
}

impl QuoteSigner {
    /// A signer whose key is derived from `secret` (the JWT secret).
    pub fn new(secret: &[u8]) -> Self {
        let mut derive =
            HmacSha256::new_from_slice(secret).expect("HMAC accepts keys of any length");
        derive.update(KEY_LABEL);
        let key = derive.finalize().into_bytes();
        QuoteSigner {
            mac: HmacSha256::new_from_slice(&key).expect("HMAC accepts keys of any length"),
        }
    }

    /// The id of `quote`.
    pub fn sign(&self, quote: &Quote) -> String {
        let json = serde_json::to_vec(quote).expect("a quote is plain data");
        let mut id = String::with_capacity(PREFIX.len() + json.len() * 4 / 3 + 48);
        id.push_str(PREFIX);
        URL_SAFE_NO_PAD.encode_string(json, &mut id);
        let mut mac = self.mac.clone();
        mac.update(id.as_bytes());
        id.push('.');
        URL_SAFE_NO_PAD.encode_string(mac.finalize().into_bytes(), &mut id);
        id
    }

    /// The quote behind `id`, if this signer issued it (expiry and ownership are the
    /// caller's checks: see [`QuoteSigner::verify`]).
    pub fn open(&self, id: &str) -> Result<Quote, QuoteError> {
        if id.len() > MAX_ID_BYTES || !id.starts_with(PREFIX) {
            return Err(QuoteError::Malformed);
        }
        let (signed, signature) = id.rsplit_once('.').ok_or(QuoteError::Malformed)?;
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| QuoteError::Malformed)?;
        let mut mac = self.mac.clone();
        mac.update(signed.as_bytes());
        // Constant-time comparison.
        mac.verify_slice(&signature)
            .map_err(|_| QuoteError::Forged)?;
        let payload = URL_SAFE_NO_PAD
            .decode(&signed[PREFIX.len()..])
            .map_err(|_| QuoteError::Malformed)?;
        serde_json::from_slice(&payload).map_err(|_| QuoteError::Malformed)
    }

    /// The quote behind `id` if it is genuine, unexpired at `now_ms`, made for `rider` and,
    /// when given, for `product`.
    pub fn verify(
        &self,
        id: &str,
        rider: &str,
        product: Option<&str>,
        now_ms: i64,
    ) -> Result<Quote, QuoteError> {
        let quote = self.open(id)?;
        if quote.rider_id != rider {
            return Err(QuoteError::WrongRider);
        }
        if let Some(p) = product {
            if quote.product != p {
                return Err(QuoteError::WrongProduct {
                    quoted: quote.product,
                    requested: p.to_owned(),
                });
            }
        }
        if now_ms >= quote.expires_at {
            return Err(QuoteError::Expired {
                expired_at: quote.expires_at,
            });
        }
        Ok(quote)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fare::fare;
    use geomatch_common::config::PricingSettings;

    fn quote() -> Quote {
        let p = &PricingSettings::default().products["standard"];
        Quote {
            rider_id: "u1".into(),
            product: "standard".into(),
            pickup: Position::new(37.5, 127.0).unwrap(),
            dropoff: Position::new(37.55, 127.05).unwrap(),
            fare: fare(p, 9_000.0, 1_000.0, 130),
            surge_cell: "8730e0ae9ffffff".into(),
            pickup_eta_s: Some(180),
            trip_eta_s: 1_000,
            trip_distance_m: 9_000,
            issued_at: 1_000,
            expires_at: 121_000,
            nonce: "0123456789abcdef".into(),
        }
    }

    fn signer() -> QuoteSigner {
        QuoteSigner::new(b"a-secret-of-at-least-thirty-two-bytes!")
    }

    #[test]
    fn a_signed_quote_verifies_for_its_rider_and_product_until_it_expires() {
        let s = signer();
        let id = s.sign(&quote());
        assert!(id.starts_with("q1.") && id.len() < 1_000, "{id}");
        assert_eq!(s.verify(&id, "u1", Some("standard"), 5_000), Ok(quote()));
        assert_eq!(s.verify(&id, "u1", None, 120_999), Ok(quote()));
        assert_eq!(
            s.verify(&id, "u1", Some("standard"), 121_000),
            Err(QuoteError::Expired {
                expired_at: 121_000
            })
        );
    }

    #[test]
    fn another_riders_or_products_quote_is_refused() {
        let s = signer();
        let id = s.sign(&quote());
        assert_eq!(
            s.verify(&id, "u2", None, 5_000),
            Err(QuoteError::WrongRider)
        );
        assert!(matches!(
            s.verify(&id, "u1", Some("xl"), 5_000),
            Err(QuoteError::WrongProduct { .. })
        ));
    }

    #[test]
    fn an_altered_or_foreign_quote_is_forged_and_garbage_is_malformed() {
        let s = signer();
        let id = s.sign(&quote());
        // A cheaper fare, re-encoded, with the original signature.
        let mut cheap = quote();
        cheap.fare.total = 1;
        let cheap_id = signer().sign(&cheap);
        let (payload, _) = cheap_id.rsplit_once('.').unwrap();
        let (_, sig) = id.rsplit_once('.').unwrap();
        assert_eq!(
            s.verify(&format!("{payload}.{sig}"), "u1", None, 5_000),
            Err(QuoteError::Forged)
        );
        let other = QuoteSigner::new(b"another-secret-of-at-least-32-bytes...");
        assert_eq!(
            other.verify(&id, "u1", None, 5_000),
            Err(QuoteError::Forged)
        );
        for bad in [
            "",
            "q1.",
            "q1.abc",
            "x1.abc.def",
            "q1.!!!.???",
            &"q1.".repeat(1_000),
        ] {
            assert!(
                matches!(
                    s.verify(bad, "u1", None, 5_000),
                    Err(QuoteError::Malformed | QuoteError::Forged)
                ),
                "{bad}"
            );
        }
    }
}
