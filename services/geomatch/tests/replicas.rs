//! Replicas as deployed: separate `geomatch` processes sharing one real redis-server.

// Test and benchmark code may unwrap: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use geomatch_common::auth::Role;
use geomatch_e2e::{spawn_process, swarm, RedisServer, TestApp};

const BINARY: &str = env!("CARGO_BIN_EXE_geomatch");

/// Waits until `app` proposes all of `ids` as nearby (its index has caught up).
async fn sees_drivers(app: &TestApp, n: usize) {
    let ops = app.token("ops", Role::Service);
    let started = Instant::now();
    loop {
        let r = app
            .get_as(
                &ops,
                "/v1/drivers/nearby?lat=37.5&lng=127.0&k=50&radius_m=5000",
            )
            .await;
        let seen = r
            .json::<serde_json::Value>()
            .await
            .ok()
            .and_then(|b| b["drivers"].as_array().map(Vec::len));
        if seen == Some(n) {
            return;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "replica saw {seen:?} of {n} drivers"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_matching_replicas_in_separate_processes_never_double_dispatch_under_a_swarm() {
    let redis = Arc::new(RedisServer::start());
    let env = [
        ("GEOMATCH__MATCHING__OFFER_TIMEOUT_S", "2"),
        ("GEOMATCH__INGEST__RATE_PER_S", "1000"),
        ("GEOMATCH__INGEST__BURST", "1000"),
    ];
    let a = spawn_process(BINARY.as_ref(), &redis, "all", &env).await;
    let b = spawn_process(BINARY.as_ref(), &redis, "all", &env).await;
    let drivers = 15;
    for i in 0..drivers {
        // Half the drivers report through each replica.
        let via = if i % 2 == 0 { &a.app } else { &b.app };
        swarm::online(
            via,
            &format!("d{i}"),
            37.5 + (i as f64) * 0.0004,
            127.0,
            "standard",
        )
        .await;
    }
    sees_drivers(&a.app, drivers).await;
    sees_drivers(&b.app, drivers).await;
    let apps = [
        Arc::new(a.app.clone_handle()),
        Arc::new(b.app.clone_handle()),
    ];
    let riders = 40;
    let history = swarm::run(&apps, drivers, riders, 60).await;
    history
        .check(&apps[1], riders, Duration::from_millis(3000))
        .await;
}

/// `PUT /v1/profiles/{id}` then its location, through `app`, with the person's own token.
async fn profile(app: &TestApp, id: &str, body: serde_json::Value, at: (f64, f64)) {
    let token = app.token(id, Role::Rider);
    for (path, body) in [
        (format!("/v1/profiles/{id}"), body),
        (
            format!("/v1/profiles/{id}/location"),
            serde_json::json!({"lat": at.0, "lng": at.1}),
        ),
    ] {
        let r = app
            .client
            .put(format!("{}{path}", app.address))
            .bearer_auth(&token)
            .json(&body)
            .send()
            .await
            .expect("the server answers");
        assert_eq!(
            r.status(),
            200,
            "{path}: {}",
            r.text().await.unwrap_or_default()
        );
    }
}

fn person(gender: &str, birth: &str, wants: &str) -> serde_json::Value {
    serde_json::json!({
        "display_name": "Someone", "birth_date": birth, "gender": gender,
        "interested_in": [wants], "age_min": 20, "age_max": 45, "max_distance_km": 10,
        "bio": "hi", "photos": ["https://img.example/1.jpg"],
    })
}

async fn matches_of(app: &TestApp, me: &str) -> Vec<String> {
    let r = app
        .get_as(
            &app.token(me, Role::Rider),
            &format!("/v1/profiles/{me}/matches"),
        )
        .await;
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.expect("a JSON body");
    body["matches"]
        .as_array()
        .map(|ms| {
            ms.iter()
                .filter_map(|m| m["profile_id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_mutual_likes_through_two_processes_make_exactly_one_match_per_pair() {
    let redis = Arc::new(RedisServer::start());
    let env = [
        ("GEOMATCH__INGEST__RATE_PER_S", "1000"),
        ("GEOMATCH__INGEST__BURST", "1000"),
    ];
    let a = spawn_process(BINARY.as_ref(), &redis, "all", &env).await;
    let b = spawn_process(BINARY.as_ref(), &redis, "all", &env).await;
    const PAIRS: usize = 20;
    for i in 0..PAIRS {
        profile(
            &a.app,
            &format!("w{i}"),
            person("woman", "1998-03-10", "man"),
            (37.5665, 126.978),
        )
        .await;
        profile(
            &b.app,
            &format!("m{i}"),
            person("man", "1996-01-15", "woman"),
            (37.5665, 126.99),
        )
        .await;
    }
    // Each pair likes each other at the same moment, one like through each process.
    let mut tasks = Vec::new();
    for i in 0..PAIRS {
        let (a, b) = (a.app.clone_handle(), b.app.clone_handle());
        tasks.push(tokio::spawn(async move {
            let (w, m) = (format!("w{i}"), format!("m{i}"));
            let like = |app: TestApp, me: String, target: String| async move {
                let r = app
                    .post_as(
                        &app.token(&me, Role::Rider),
                        &format!("/v1/profiles/{me}/swipes"),
                        Some(&serde_json::json!({"target_id": target, "action": "like"})),
                    )
                    .await;
                assert_eq!(r.status().as_u16() / 100, 2, "{me} likes {target}");
                r.json::<serde_json::Value>().await.expect("a JSON body")
            };
            tokio::join!(like(a, w.clone(), m.clone()), like(b, m, w))
        }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        let (r1, r2) = t.await.expect("a pair's likes");
        let made = [&r1, &r2].iter().filter(|r| r["matched"] == true).count();
        assert_eq!(
            made, 1,
            "pair {i}: exactly one like made the match: {r1} {r2}"
        );
        let (w, m) = (format!("w{i}"), format!("m{i}"));
        // One match, the same from both processes and both sides.
        assert_eq!(matches_of(&b.app, &w).await, vec![m.clone()]);
        assert_eq!(matches_of(&a.app, &m).await, vec![w.clone()]);
    }
}
