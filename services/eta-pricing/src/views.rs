//! What eta-pricing's API answers and accepts, as the core returns it: the wire bodies
//! of quotes, ETAs, surge and the heatmap.

use geomatch_eta::Eta;
use geomatch_index::Position;
use serde::{Deserialize, Serialize};

use crate::fare::Fare;
use crate::quote::Quote;

/// `POST /v1/quotes` body.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct QuoteRequest {
    pub pickup: Position,
    pub dropoff: Position,
    /// A configured product (vehicle class): `standard`, `xl`, …
    pub product: String,
    /// The rider the quote is for: required of service and admin tokens; a rider token
    /// may only name itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rider_id: Option<String>,
}

/// Where the surge of a quote came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SurgeRef {
    pub multiplier: f64,
    /// The H3 resolution-7 cell of the pickup.
    pub cell: String,
}

/// What `POST /v1/quotes` answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuoteView {
    /// Opaque; pass it back when requesting the ride.
    pub quote_id: String,
    pub rider_id: String,
    pub product: String,
    pub pickup: Position,
    pub dropoff: Position,
    pub fare: Fare,
    pub surge: SurgeRef,
    /// `null` when no driver of the product is within `pricing.pickup_radius_m`.
    pub pickup_eta_s: Option<u64>,
    pub trip_eta_s: u64,
    pub trip_distance_m: u64,
    /// ms since the Unix epoch.
    pub expires_at: i64,
}

impl QuoteView {
    pub(crate) fn new(quote_id: String, q: Quote) -> Self {
        QuoteView {
            quote_id,
            surge: SurgeRef {
                multiplier: q.fare.surge_multiplier,
                cell: q.surge_cell,
            },
            rider_id: q.rider_id,
            product: q.product,
            pickup: q.pickup,
            dropoff: q.dropoff,
            fare: q.fare,
            pickup_eta_s: q.pickup_eta_s,
            trip_eta_s: q.trip_eta_s,
            trip_distance_m: q.trip_distance_m,
            expires_at: q.expires_at,
        }
    }
}

/// An ETA as the API answers it: whole seconds and metres.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EtaView {
    pub duration_s: u64,
    pub distance_m: u64,
    pub method: geomatch_eta::Method,
}

impl From<Eta> for EtaView {
    fn from(e: Eta) -> Self {
        EtaView {
            duration_s: e.duration_s.round() as u64,
            distance_m: e.distance_m.round() as u64,
            method: e.method,
        }
    }
}

/// What `GET /v1/surge` answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SurgeView {
    pub cell: String,
    pub surge_multiplier: f64,
    /// Available drivers in the cell at the last recomputation.
    pub supply: u32,
    /// Demand events in the cell's window at the last recomputation.
    pub demand: u32,
    /// ms since the Unix epoch of the last recomputation (0 before the first).
    pub computed_at: i64,
}

/// The heatmap: a GeoJSON FeatureCollection.
#[derive(Debug, Serialize, Deserialize)]
pub struct Heatmap {
    #[serde(rename = "type")]
    pub kind: String,
    pub res: u8,
    pub computed_at: i64,
    pub features: Vec<HexFeature>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct HexFeature {
    #[serde(rename = "type")]
    pub kind: String,
    pub id: String,
    pub geometry: HexGeometry,
    pub properties: HexProperties,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct HexGeometry {
    #[serde(rename = "type")]
    pub kind: String,
    pub coordinates: Vec<Vec<[f64; 2]>>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct HexProperties {
    pub cell: String,
    pub supply: u32,
    pub demand: u32,
    /// At resolution 7 the cell's multiplier; coarser, the highest of its cells.
    pub surge_multiplier: f64,
}
