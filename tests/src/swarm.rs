//! A swarm of riders and drivers against one or more replicas, recording every answer,
//! and the dispatch invariants checked on that history.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use geomatch_common::auth::Role;
use serde_json::{json, Value};

use crate::TestApp;

/// What one actor saw: (event, ride, driver) in the actor's order.
type Events = Vec<(&'static str, String, String)>;

/// Everything the swarm's actors were answered.
#[derive(Debug, Default)]
pub struct History {
    /// Rides the riders were given (201).
    pub created: HashSet<String>,
    /// Per ride, the drivers whose accept was answered 200.
    pub accepted_by: HashMap<String, Vec<String>>,
    /// Per driver, its accepts and completions in order.
    pub timeline: HashMap<String, Vec<(&'static str, String)>>,
}

async fn body(r: reqwest::Response) -> Value {
    r.json().await.unwrap_or(Value::Null)
}

/// Puts driver `id` at (lat, lng) and online with vehicle `class` (4 seats), through
/// `app`, with the driver's own token.
pub async fn online(app: &TestApp, id: &str, lat: f64, lng: f64, class: &str) {
    let t = app.driver(id);
    let r = app
        .put_location(&t, id, &json!({"lat": lat, "lng": lng}))
        .await;
    assert_eq!(r.status(), 200, "location of {id}");
    let r = app
        .put_status(
            &t,
            id,
            &json!({"status": "available", "vehicle_class": class, "seats": 4}),
        )
        .await;
    assert_eq!(r.status(), 200, "status of {id}");
}

/// Runs `riders` riders and `drivers` drivers (already online, ids `d0…`) against `apps`,
/// each actor alternating between the replicas request by request. Drivers poll for
/// offers, decline one in four, accept the rest and drive accepted rides to completion.
pub async fn run(apps: &[Arc<TestApp>], drivers: usize, riders: usize, rounds: usize) -> History {
    let n = apps.len();
    let mut tasks: Vec<tokio::task::JoinHandle<Events>> = Vec::new();
    for r in 0..riders {
        let app = apps[r % n].clone();
        tasks.push(tokio::spawn(async move {
            let rider = app.token(&format!("u{r}"), Role::Rider);
            let pickup = json!({"lat": 37.5 + (r % 5) as f64 * 0.001, "lng": 127.0});
            let res = app
                .post_ride(
                    &rider,
                    &format!("k{r}"),
                    &json!({"pickup": pickup, "dropoff": {"lat": 37.55, "lng": 127.05}, "product": "standard"}),
                )
                .await;
            assert_eq!(res.status(), 201, "rider u{r}");
            let ride = body(res).await["ride_id"].as_str().unwrap_or("").to_owned();
            vec![("ride", ride, String::new())]
        }));
    }
    for i in 0..drivers {
        let apps: Vec<Arc<TestApp>> = apps.to_vec();
        tasks.push(tokio::spawn(async move {
            let d = format!("d{i}");
            let t = apps[0].driver(&d);
            let mut history = Vec::new();
            for round in 0..rounds {
                let app = &apps[(i + round) % n];
                let r = app.get_as(&t, &format!("/v1/drivers/{d}/offer")).await;
                if r.status() == 200 {
                    let o = body(r).await;
                    let offer = o["offer_id"].as_str().unwrap_or("").to_owned();
                    let verb = if (i + round) % 4 == 0 {
                        "decline"
                    } else {
                        "accept"
                    };
                    // The answer may come from the other replica.
                    let app = &apps[(i + round + 1) % n];
                    let r = app
                        .post_as(&t, &format!("/v1/offers/{offer}/{verb}"), None)
                        .await;
                    if verb == "accept" && r.status() == 200 {
                        let ride = body(r).await["ride_id"].as_str().unwrap_or("").to_owned();
                        history.push(("accepted", ride.clone(), d.clone()));
                        for (k, step) in ["arrived", "start", "complete"].into_iter().enumerate() {
                            let app = &apps[(i + round + k) % n];
                            let s = app
                                .post_as(&t, &format!("/v1/rides/{ride}/{step}"), None)
                                .await
                                .status();
                            assert_eq!(s, 200, "{d} {step} {ride}");
                        }
                        history.push(("completed", ride, d.clone()));
                    }
                }
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            history
        }));
    }
    let mut h = History::default();
    for t in tasks {
        for (what, ride, driver) in t.await.expect("an actor panicked") {
            match what {
                "ride" => {
                    assert!(!ride.is_empty(), "every rider got a ride");
                    h.created.insert(ride);
                }
                _ => {
                    if what == "accepted" {
                        h.accepted_by
                            .entry(ride.clone())
                            .or_default()
                            .push(driver.clone());
                    }
                    h.timeline.entry(driver).or_default().push((what, ride));
                }
            }
        }
    }
    h
}

impl History {
    /// The dispatch invariants on the recorded history, then on the rides' final states
    /// read through `app` once offers have had `settle` to time out.
    pub async fn check(&self, app: &TestApp, riders: usize, settle: Duration) {
        assert_eq!(self.created.len(), riders, "one ride per rider");
        assert!(
            self.accepted_by.len() >= riders / 3,
            "the swarm exercised dispatch: {} rides accepted",
            self.accepted_by.len()
        );
        // A ride never has two drivers.
        for (ride, ds) in &self.accepted_by {
            assert_eq!(ds.len(), 1, "ride {ride} accepted by {ds:?}");
        }
        // A driver never has two active rides: each accept is completed before the next.
        for (d, events) in &self.timeline {
            for pair in events.chunks(2) {
                assert_eq!(pair[0].0, "accepted", "{d}: {events:?}");
                assert_eq!(
                    (pair.get(1).map(|p| p.0), pair.get(1).map(|p| &p.1)),
                    (Some("completed"), Some(&pair[0].1)),
                    "{d}: {events:?}"
                );
            }
        }
        // No ride is lost: each is terminal, or visibly dispatching; a completed ride was
        // accepted exactly once, by the driver it shows.
        tokio::time::sleep(settle).await;
        let ops = app.token("ops", Role::Service);
        for ride in &self.created {
            let v = body(app.get_as(&ops, &format!("/v1/rides/{ride}")).await).await;
            let state = v["state"].as_str().unwrap_or("missing");
            assert!(
                ["completed", "no_driver_found", "dispatching"].contains(&state),
                "{ride}: {v}"
            );
            if state == "completed" {
                let by = self.accepted_by.get(ride).cloned().unwrap_or_default();
                assert_eq!(by.len(), 1, "{ride}: {v}");
                assert_eq!(v["driver_id"].as_str(), Some(by[0].as_str()), "{ride}: {v}");
            }
        }
    }
}
