//! location-ingest over real HTTP, every test in both modes: embedded, and Redis mode
//! against a private redis-server the harness starts.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use geomatch_common::auth::Role;
use geomatch_common::Mode;
use geomatch_e2e::{assert_problem, json_of, spawn_in, spawn_replica, TestApp};
use serde_json::{json, Value};

async fn push(app: &TestApp, id: &str, body: Value) -> reqwest::Response {
    app.put_location(&app.driver(id), id, &body).await
}

in_both_modes!(a_pushed_location_is_what_the_driver_reads_back, |app| {
    let r = push(&app, "d1", json!({"lat": 37.5, "lng": 127.0, "seq": 1, "heading_deg": 90.0, "speed_mps": 8.5, "accuracy_m": 4.0})).await;
    assert_eq!(r.status(), 200);
    assert_eq!(json_of(r).await, json!({"result": "accepted"}));
    let r = app.get_driver(&app.driver("d1"), "d1").await;
    assert_eq!(r.status(), 200);
    let d = json_of(r).await;
    assert_eq!(
        (d["lat"].as_f64(), d["lng"].as_f64(), d["seq"].as_u64()),
        (Some(37.5), Some(127.0), Some(1))
    );
    assert_eq!(d["status"], "offline", "a new driver starts offline");
    assert_eq!(d["h3_cell"].as_str().map(str::len), Some(15));
});

in_both_modes!(
    missing_forged_expired_and_wrong_audience_tokens_are_401,
    |app| {
        let body = json!({"lat": 1.0, "lng": 1.0});
        assert_problem(
            app.put_location("", "d1", &body).await,
            401,
            "missing_token",
        )
        .await;
        assert_problem(
            app.put_location("garbage", "d1", &body).await,
            401,
            "invalid_token",
        )
        .await;
        let forged =
            geomatch_common::auth::Authenticator::new(&geomatch_common::config::AuthSettings {
                jwt_secret: geomatch_common::config::Secret::new(
                    "some-other-secret-some-other-secret",
                ),
                ..Default::default()
            })
            .mint("d1", Role::Driver, Duration::from_secs(60));
        assert_problem(
            app.put_location(&forged, "d1", &body).await,
            401,
            "invalid_token",
        )
        .await;
        let wrong_aud =
            geomatch_common::auth::Authenticator::new(&geomatch_common::config::AuthSettings {
                jwt_secret: geomatch_common::config::Secret::new(geomatch_e2e::TEST_JWT_SECRET),
                audience: "someone-else".into(),
                ..Default::default()
            })
            .mint("d1", Role::Driver, Duration::from_secs(60));
        assert_problem(
            app.put_location(&wrong_aud, "d1", &body).await,
            401,
            "invalid_token",
        )
        .await;
        let expired =
            geomatch_common::auth::Authenticator::new(&geomatch_common::config::AuthSettings {
                jwt_secret: geomatch_common::config::Secret::new(geomatch_e2e::TEST_JWT_SECRET),
                ..Default::default()
            })
            .mint_expired_for_tests("d1", Role::Driver);
        assert_problem(
            app.put_location(&expired, "d1", &body).await,
            401,
            "expired_token",
        )
        .await;
    }
);

in_both_modes!(
    a_driver_acts_only_on_its_own_id_and_a_service_on_any,
    |app| {
        let body = json!({"lat": 1.0, "lng": 1.0});
        assert_problem(
            app.put_location(&app.driver("d1"), "d2", &body).await,
            403,
            "forbidden",
        )
        .await;
        assert_problem(
            app.put_location(&app.token("d2", Role::Rider), "d2", &body)
                .await,
            403,
            "forbidden",
        )
        .await;
        let r = app
            .put_location(&app.token("gateway", Role::Service), "d2", &body)
            .await;
        assert_eq!(r.status(), 200);
        assert_problem(
            app.get_driver(&app.driver("d1"), "d2").await,
            403,
            "forbidden",
        )
        .await;
    }
);

in_both_modes!(each_invalid_field_gets_its_own_problem_code, |app| {
    let now = geomatch_common::now_ms();
    let cases = [
        (json!({"lat": 90.5, "lng": 0}), 422, "invalid_latitude"),
        (json!({"lat": 0, "lng": 180.5}), 422, "invalid_longitude"),
        (
            json!({"lat": 0, "lng": 0, "heading_deg": 360}),
            422,
            "invalid_heading",
        ),
        (
            json!({"lat": 0, "lng": 0, "speed_mps": -1}),
            422,
            "invalid_speed",
        ),
        (
            json!({"lat": 0, "lng": 0, "accuracy_m": -1}),
            422,
            "invalid_accuracy",
        ),
        (
            json!({"lat": 0, "lng": 0, "ts_ms": now + 60_000}),
            422,
            "timestamp_in_future",
        ),
        (
            json!({"lat": 0, "lng": 0, "altitude": 3}),
            422,
            "invalid_body",
        ),
        (json!({"lat": "north", "lng": 0}), 422, "invalid_body"),
        (json!({"lng": 0}), 422, "invalid_body"),
    ];
    for (i, (body, status, code)) in cases.into_iter().enumerate() {
        let id = format!("v{i}");
        assert_problem(push(&app, &id, body).await, status, code).await;
    }
    // Malformed JSON and a bad id.
    let r = app
        .client
        .put(format!("{}/v1/drivers/d1/location", app.address))
        .bearer_auth(app.driver("d1"))
        .header("content-type", "application/json")
        .body("{\"lat\": 1,")
        .send()
        .await
        .unwrap();
    assert_problem(r, 400, "invalid_json").await;
    let bad = "bad%20id";
    assert_problem(
        app.put_location(
            &app.token("svc", Role::Service),
            bad,
            &json!({"lat": 1, "lng": 1}),
        )
        .await,
        400,
        "invalid_driver_id",
    )
    .await;
    // Nothing was stored for the refused reports.
    assert_problem(
        app.get_driver(&app.driver("v0"), "v0").await,
        404,
        "driver_not_found",
    )
    .await;
});

in_both_modes!(
    an_older_report_is_stale_and_does_not_move_the_driver,
    |app| {
        assert_eq!(
            json_of(push(&app, "d1", json!({"lat": 37.5, "lng": 127.0, "seq": 10})).await).await
                ["result"],
            "accepted"
        );
        assert_eq!(
            json_of(push(&app, "d1", json!({"lat": 37.5005, "lng": 127.0, "seq": 9})).await).await
                ["result"],
            "stale"
        );
        assert_eq!(
            json_of(push(&app, "d1", json!({"lat": 37.5005, "lng": 127.0, "seq": 10})).await).await
                ["result"],
            "stale"
        );
        let d = json_of(app.get_driver(&app.driver("d1"), "d1").await).await;
        assert_eq!(
            (d["lat"].as_f64(), d["seq"].as_u64()),
            (Some(37.5), Some(10))
        );
        // Without seq, device time orders.
        let t = 1_900_000_000_000i64.min(geomatch_common::now_ms());
        assert_eq!(
            json_of(push(&app, "d2", json!({"lat": 1.0, "lng": 1.0, "ts_ms": t})).await).await
                ["result"],
            "accepted"
        );
        assert_eq!(
            json_of(
                push(
                    &app,
                    "d2",
                    json!({"lat": 1.0001, "lng": 1.0, "ts_ms": t - 1})
                )
                .await
            )
            .await["result"],
            "stale"
        );
        let d = json_of(app.get_driver(&app.driver("d2"), "d2").await).await;
        assert_eq!(d["lat"].as_f64(), Some(1.0));
    }
);

in_both_modes!(a_jump_faster_than_300_kmh_is_implausible, |app| {
    let t = geomatch_common::now_ms() - 20_000;
    push(&app, "d1", json!({"lat": 37.5, "lng": 127.0, "ts_ms": t})).await;
    // 10 km in 10 s = 3,600 km/h.
    assert_problem(
        push(
            &app,
            "d1",
            json!({"lat": 37.59, "lng": 127.0, "ts_ms": t + 10_000}),
        )
        .await,
        422,
        "implausible_jump",
    )
    .await;
    // 200 m in 10 s = 72 km/h.
    assert_eq!(
        push(
            &app,
            "d1",
            json!({"lat": 37.5018, "lng": 127.0, "ts_ms": t + 10_000})
        )
        .await
        .status(),
        200
    );
    let d = json_of(app.get_driver(&app.driver("d1"), "d1").await).await;
    assert_eq!(d["lat"].as_f64(), Some(37.5018));
});

in_both_modes!(
    a_flood_from_one_driver_gets_429_with_retry_after_and_others_are_unaffected,
    |app| {
        let mut limited = None;
        for seq in 0..30 {
            let r = push(&app, "d1", json!({"lat": 37.5, "lng": 127.0, "seq": seq})).await;
            if r.status() == 429 {
                limited = Some((seq, r));
                break;
            }
            assert_eq!(r.status(), 200);
        }
        let (seq, r) = limited.expect("a burst of 30 at once is limited");
        assert!(
            seq >= 10,
            "the burst allowance (10) is honoured: limited at {seq}"
        );
        let retry: u64 = r.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=2).contains(&retry), "{retry}");
        assert_problem(r, 429, "rate_limited").await;
        assert_eq!(
            push(&app, "d2", json!({"lat": 37.5, "lng": 127.0}))
                .await
                .status(),
            200
        );
    }
);

in_both_modes!(
    a_batch_answers_each_item_and_one_bad_item_never_sinks_it,
    |app| {
        let gateway = app.token("fleet-gw", Role::Service);
        let body = json!({"updates": [
            {"driver_id": "b1", "lat": 37.5, "lng": 127.0, "seq": 1},
            {"driver_id": "b2", "lat": 95.0, "lng": 127.0},
            {"driver_id": "b3", "lat": 37.6},
            {"driver_id": "bad id", "lat": 37.6, "lng": 127.0},
            {"driver_id": "b1", "lat": 37.5, "lng": 127.0, "seq": 1},
            {"driver_id": "b4", "lat": 37.7, "lng": 127.1, "seq": 5},
        ]});
        let r = app.post_batch(&gateway, &body).await;
        assert_eq!(r.status(), 200);
        let a = json_of(r).await;
        assert_eq!(
            (
                a["accepted"].as_u64(),
                a["stale"].as_u64(),
                a["rejected"].as_u64()
            ),
            (Some(2), Some(1), Some(3)),
            "{a}"
        );
        let results = a["results"].as_array().unwrap();
        let codes: Vec<&str> = results
            .iter()
            .map(|x| x["code"].as_str().unwrap_or(x["result"].as_str().unwrap()))
            .collect();
        assert_eq!(
            codes,
            [
                "accepted",
                "invalid_latitude",
                "invalid_item",
                "invalid_driver_id",
                "stale",
                "accepted"
            ]
        );
        assert_eq!(
            json_of(app.get_driver(&gateway, "b4").await).await["lat"].as_f64(),
            Some(37.7)
        );
        // A driver's token batches its own reports only.
        let mine = json!({"updates": [{"driver_id": "b1", "lat": 37.5, "lng": 127.0, "seq": 2}, {"driver_id": "b2", "lat": 37.5, "lng": 127.0}]});
        let a = json_of(app.post_batch(&app.driver("b1"), &mine).await).await;
        assert_eq!(a["results"][1]["code"], "forbidden");
        assert_eq!(a["accepted"], 1);
    }
);

in_both_modes!(
    a_batch_across_shards_judges_each_report_after_the_ones_before_it,
    |s| {
        s.ingest.rate_per_s = 1.0;
        s.ingest.burst = 2.0;
    },
    |app| {
        let gateway = app.token("gw", Role::Service);
        // Forty drivers: every one of the Redis shards gets some.
        let mut updates: Vec<Value> = (0..40)
            .map(|i| json!({"driver_id": format!("m{i}"), "lat": 37.5 + f64::from(i) * 1e-4, "lng": 127.0, "seq": 10}))
            .collect();
        updates.extend([
            // Older than m1's report earlier in this batch.
            json!({"driver_id": "m1", "lat": 37.6, "lng": 127.0, "seq": 9}),
            // 100 km from m2's report earlier in this batch, at once.
            json!({"driver_id": "m2", "lat": 38.5, "lng": 127.0, "seq": 11}),
            // m3's second report in this batch uses its second token; the third has none.
            json!({"driver_id": "m3", "lat": 37.5003, "lng": 127.0001, "seq": 11}),
            json!({"driver_id": "m3", "lat": 37.5003, "lng": 127.0002, "seq": 12}),
            json!({"driver_id": "m5", "lat": 37.5005, "lng": 127.0001, "seq": 11}),
        ]);
        let a = json_of(
            app.post_batch(&gateway, &json!({ "updates": updates }))
                .await,
        )
        .await;
        let codes: Vec<&str> = a["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x["code"].as_str().unwrap_or(x["result"].as_str().unwrap()))
            .collect();
        let mut expected = vec!["accepted"; 40];
        expected.extend([
            "stale",
            "implausible_jump",
            "accepted",
            "rate_limited",
            "accepted",
        ]);
        assert_eq!(codes, expected, "{a}");
        let at = |id: &'static str| {
            let (app, gateway) = (&app, &gateway);
            async move {
                let d = json_of(app.get_driver(gateway, id).await).await;
                (
                    d["lat"].as_f64().unwrap(),
                    d["lng"].as_f64().unwrap(),
                    d["seq"].as_u64().unwrap(),
                )
            }
        };
        assert_eq!(at("m1").await, (37.5001, 127.0, 10));
        assert_eq!(at("m2").await, (37.5002, 127.0, 10));
        assert_eq!(at("m3").await, (37.5003, 127.0001, 11));
        assert_eq!(at("m5").await, (37.5005, 127.0001, 11));
        assert_eq!(at("m39").await, (37.5039, 127.0, 10));
    }
);

in_both_modes!(
    batches_above_the_limit_or_empty_are_refused_whole,
    |s| {
        s.ingest.max_batch = 3;
    },
    |app| {
        let gateway = app.token("gw", Role::Service);
        let item = json!({"driver_id": "x", "lat": 1, "lng": 1});
        assert_problem(
            app.post_batch(&gateway, &json!({"updates": [item, item, item, item]}))
                .await,
            413,
            "batch_too_large",
        )
        .await;
        assert_problem(
            app.post_batch(&gateway, &json!({"updates": []})).await,
            422,
            "empty_batch",
        )
        .await;
    }
);

in_both_modes!(
    going_online_needs_a_location_and_a_known_vehicle_class,
    |app| {
        let t = app.driver("d1");
        assert_problem(
            app.put_status(
                &t,
                "d1",
                &json!({"status": "available", "vehicle_class": "xl", "seats": 6}),
            )
            .await,
            409,
            "location_required",
        )
        .await;
        push(&app, "d1", json!({"lat": 37.5, "lng": 127.0})).await;
        assert_problem(
            app.put_status(
                &t,
                "d1",
                &json!({"status": "available", "vehicle_class": "spaceship"}),
            )
            .await,
            422,
            "unknown_vehicle_class",
        )
        .await;
        assert_problem(
            app.put_status(&t, "d1", &json!({"status": "available", "seats": 0}))
                .await,
            422,
            "invalid_seats",
        )
        .await;
        let r = app
            .put_status(
                &t,
                "d1",
                &json!({"status": "available", "vehicle_class": "xl", "seats": 6}),
            )
            .await;
        assert_eq!(r.status(), 200);
        let d = json_of(app.get_driver(&t, "d1").await).await;
        assert_eq!(
            (
                d["status"].as_str(),
                d["vehicle_class"].as_str(),
                d["seats"].as_u64()
            ),
            (Some("available"), Some("xl"), Some(6))
        );
        // A later location keeps the driver online.
        push(&app, "d1", json!({"lat": 37.5001, "lng": 127.0})).await;
        assert_eq!(
            json_of(app.get_driver(&t, "d1").await).await["status"],
            "available"
        );
        app.put_status(&t, "d1", &json!({"status": "offline"}))
            .await;
        assert_eq!(
            json_of(app.get_driver(&t, "d1").await).await["status"],
            "offline"
        );
    }
);

in_both_modes!(
    a_silent_driver_goes_offline_after_the_ttl,
    |s| {
        s.ingest.ttl_s = 1;
    },
    |app| {
        push(&app, "d1", json!({"lat": 37.5, "lng": 127.0})).await;
        let t = app.driver("d1");
        app.put_status(&t, "d1", &json!({"status": "available"}))
            .await;
        let started = Instant::now();
        loop {
            let r = app.get_driver(&t, "d1").await;
            if r.status() == 404 {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "still there after 5 s"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let metrics = app.get_metrics().await.text().await.unwrap();
        assert!(metrics.contains("ingest_evictions_total 1"), "{metrics}");
        // Back with a fresh report.
        assert_eq!(
            push(&app, "d1", json!({"lat": 37.5, "lng": 127.0}))
                .await
                .status(),
            200
        );
        assert_eq!(app.get_driver(&t, "d1").await.status(), 200);
    }
);

in_both_modes!(updates_are_counted_by_outcome_in_metrics, |app| {
    push(&app, "d1", json!({"lat": 37.5, "lng": 127.0, "seq": 2})).await;
    push(&app, "d1", json!({"lat": 37.5, "lng": 127.0, "seq": 1})).await;
    push(&app, "d1", json!({"lat": 99.0, "lng": 127.0})).await;
    let m = app.get_metrics().await.text().await.unwrap();
    assert!(
        m.contains(r#"ingest_updates_total{code="",outcome="accepted"} 1"#),
        "{m}"
    );
    assert!(
        m.contains(r#"ingest_updates_total{code="",outcome="stale"} 1"#),
        "{m}"
    );
    assert!(
        m.contains(r#"ingest_updates_total{code="invalid_latitude",outcome="rejected"} 1"#),
        "{m}"
    );
    assert!(
        m.contains(r#"route="/v1/drivers/{driver_id}/location""#),
        "labelled by pattern: {m}"
    );
});

in_both_modes!(the_openapi_document_describes_the_ingest_routes, |app| {
    let r = app.get_openapi().await;
    assert_eq!(r.status(), 200);
    let doc = json_of(r).await;
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in [
        "/v1/drivers/{driver_id}/location",
        "/v1/locations/batch",
        "/v1/drivers/{driver_id}/status",
        "/v1/drivers/{driver_id}",
        "/v1/drivers/{driver_id}/stream",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} missing");
    }
});

in_both_modes!(
    a_driver_streams_locations_over_its_websocket_and_gets_acks,
    |app| {
        let url = app.stream_url("w1", &app.driver("w1"));
        let (mut ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("upgrade");
        use tokio_tungstenite::tungstenite::Message;
        ws.send(Message::text(
            json!({"type": "location", "lat": 37.5, "lng": 127.0, "seq": 1}).to_string(),
        ))
        .await
        .unwrap();
        let ack: Value = loop {
            match ws.next().await.unwrap().unwrap() {
                Message::Text(t) => break serde_json::from_str(&t).unwrap(),
                _ => continue,
            }
        };
        assert_eq!(ack, json!({"type": "ack", "seq": 1, "result": "accepted"}));
        ws.send(Message::text(
            json!({"type": "location", "lat": 91, "lng": 127.0, "seq": 2}).to_string(),
        ))
        .await
        .unwrap();
        let err: Value = loop {
            match ws.next().await.unwrap().unwrap() {
                Message::Text(t) => break serde_json::from_str(&t).unwrap(),
                _ => continue,
            }
        };
        assert_eq!(
            (err["type"].as_str(), err["code"].as_str()),
            (Some("error"), Some("invalid_latitude"))
        );
        let d = json_of(app.get_driver(&app.driver("w1"), "w1").await).await;
        assert_eq!(d["seq"].as_u64(), Some(1));
        // Another driver's token cannot open this stream.
        let other = app.stream_url("w1", &app.driver("w2"));
        assert!(tokio_tungstenite::connect_async(other).await.is_err());
    }
);

#[tokio::test]
async fn with_redis_unreachable_writes_answer_503_within_a_second_and_liveness_stays_up() {
    let app = spawn_in(Mode::Embedded, |_| {}).await;
    drop(app);
    let mut settings = geomatch_e2e::test_settings();
    settings.mode = Mode::Redis;
    settings.redis.url = "redis+unix:///nonexistent/geomatch-test.sock".into();
    let app = geomatch_e2e::spawn_app_with(settings, geomatch::Services::All).await;
    let started = Instant::now();
    let r = push(&app, "d1", json!({"lat": 37.5, "lng": 127.0})).await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(r.headers()["retry-after"], "1");
    assert_problem(r, 503, "store_unavailable").await;
    assert_eq!(app.get_live().await.status(), 200);
    assert_eq!(app.get_ready().await.status(), 503);
}

#[tokio::test]
async fn concurrent_ingest_replicas_never_move_a_driver_backwards() {
    let a = spawn_in(Mode::Redis, |s| {
        s.ingest.rate_per_s = 1000.0;
        s.ingest.burst = 1000.0;
    })
    .await;
    let b = spawn_replica(&a, |s| {
        s.ingest.rate_per_s = 1000.0;
        s.ingest.burst = 1000.0;
    })
    .await;
    let token = a.token("gw", Role::Service);
    // Both replicas receive interleaved reports for the same drivers, out of order.
    let mut tasks = Vec::new();
    for (k, app) in [&a, &b].into_iter().enumerate() {
        for d in 0..5 {
            let (client, url, token) = (
                app.client.clone(),
                format!("{}/v1/drivers/r{d}/location", app.address),
                token.clone(),
            );
            tasks.push(tokio::spawn(async move {
                let mut history = Vec::new();
                for i in 0..40u64 {
                    let seq = (i * 7 + k as u64 * 3) % 80;
                    let lat = 37.5 + seq as f64 * 1e-5;
                    let r = client
                        .put(&url)
                        .bearer_auth(&token)
                        .json(&json!({"lat": lat, "lng": 127.0, "seq": seq}))
                        .send()
                        .await
                        .unwrap();
                    let status = r.status().as_u16();
                    let body: Value = r.json().await.unwrap();
                    history.push((
                        d,
                        seq,
                        status,
                        body["result"].as_str().unwrap_or("").to_owned(),
                    ));
                }
                history
            }));
        }
    }
    let mut best = std::collections::HashMap::new();
    for t in tasks {
        for (d, seq, status, result) in t.await.unwrap() {
            assert_eq!(status, 200);
            if result == "accepted" {
                let e = best.entry(d).or_insert(seq);
                *e = (*e).max(seq);
            }
        }
    }
    for (d, seq) in best {
        for app in [&a, &b] {
            let v = json_of(app.get_driver(&token, &format!("r{d}")).await).await;
            assert_eq!(v["seq"].as_u64(), Some(seq), "r{d} on {}", app.address);
            assert_eq!(v["lat"].as_f64(), Some(37.5 + seq as f64 * 1e-5));
        }
    }
}

/// Polls `f` until it returns true, for at most 5 s.
async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    while !f().await {
        assert!(started.elapsed() < Duration::from_secs(5), "never: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn nearby_ids(app: &TestApp) -> Vec<String> {
    let r = app
        .get_as(
            &app.token("ops", Role::Service),
            "/v1/drivers/nearby?lat=37.5&lng=127.0&k=50",
        )
        .await;
    let b = json_of(r).await;
    b["drivers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["driver_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn in_redis_mode_every_replica_sees_drivers_ingested_by_another() {
    let a = spawn_in(Mode::Redis, |s| s.ingest.ttl_s = 2).await;
    // Pushed before the second replica starts: it must come from the snapshot.
    push(&a, "early", json!({"lat": 37.5001, "lng": 127.0})).await;
    a.put_status(&a.driver("early"), "early", &json!({"status": "available"}))
        .await;
    let b = spawn_replica(&a, |s| s.ingest.ttl_s = 2).await;
    eventually("the snapshot brings the early driver", || async {
        nearby_ids(&b).await.contains(&"early".to_owned())
    })
    .await;
    // Pushed after: it must come from the stream.
    push(&a, "late", json!({"lat": 37.5002, "lng": 127.0})).await;
    a.put_status(&a.driver("late"), "late", &json!({"status": "available"}))
        .await;
    eventually("the stream brings the late driver", || async {
        nearby_ids(&b).await.contains(&"late".to_owned())
    })
    .await;
    // Offline on A is offline on B.
    a.put_status(&a.driver("late"), "late", &json!({"status": "offline"}))
        .await;
    eventually("status follows", || async {
        !nearby_ids(&b).await.contains(&"late".to_owned())
    })
    .await;
    // Silence: the expiry announced by one replica removes the driver everywhere.
    eventually("expiry follows", || async {
        nearby_ids(&b).await.is_empty()
    })
    .await;
    let m = b.get_metrics().await.text().await.unwrap();
    assert!(m.contains("replica_events_total"), "{m}");
}

#[tokio::test]
async fn in_redis_mode_a_replica_applies_every_report_a_batch_packed_into_the_streams() {
    let a = spawn_in(Mode::Redis, |_| {}).await;
    let b = spawn_replica(&a, |_| {}).await;
    let gateway = a.token("gw", Role::Service);
    let ids: Vec<String> = (0..30).map(|i| format!("p{i}")).collect();
    let lat_of = |i: usize, seq: u64| 37.5 + i as f64 * 1e-4 + seq as f64 * 1e-5;
    let batch = |seq: u64| {
        let updates: Vec<Value> = ids
            .iter()
            .enumerate()
            .map(
                |(i, id)| json!({"driver_id": id, "lat": lat_of(i, seq), "lng": 127.0, "seq": seq}),
            )
            .collect();
        json!({ "updates": updates })
    };
    let r = json_of(a.post_batch(&gateway, &batch(1)).await).await;
    assert_eq!(r["accepted"], 30, "{r}");
    for id in &ids {
        let r = a
            .put_status(&a.driver(id), id, &json!({"status": "available"}))
            .await;
        assert_eq!(r.status(), 200);
    }
    // Every driver moves; B started before either batch, so it learns only from the streams.
    let r = json_of(a.post_batch(&gateway, &batch(2)).await).await;
    assert_eq!(r["accepted"], 30, "{r}");
    eventually(
        "the replica holds every driver of the batch where it moved",
        || {
            let (b, ids) = (&b, &ids);
            async move {
                let r = b
                    .get_as(
                        &b.token("ops", Role::Service),
                        "/v1/drivers/nearby?lat=37.5&lng=127.0&k=50",
                    )
                    .await;
                let body = json_of(r).await;
                let seen: std::collections::HashMap<String, f64> = body["drivers"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|d| {
                        (
                            d["driver_id"].as_str().unwrap().to_owned(),
                            d["lat"].as_f64().unwrap(),
                        )
                    })
                    .collect();
                ids.iter().enumerate().all(|(i, id)| {
                    seen.get(id)
                        .is_some_and(|lat| (lat - lat_of(i, 2)).abs() < 1e-9)
                })
            }
        },
    )
    .await;
}
