use geomatch::Services;
use geomatch_common::ServiceInfo;
use geomatch_e2e::{spawn_app, spawn_app_with, test_settings};

const ALL: [&str; 3] = ["location-ingest", "matching", "eta-pricing"];

#[tokio::test]
async fn each_service_answers_its_info_route_in_embedded_mode() {
    let app = spawn_app().await;

    for service in ALL {
        let res = app.get_info(service).await;

        assert_eq!(res.status(), 200, "{service}");
        let info: ServiceInfo = res.json().await.unwrap();
        assert_eq!(info.service, service);
        assert_eq!(info.version, env!("CARGO_PKG_VERSION"));
    }
}

#[tokio::test]
async fn a_single_service_process_mounts_only_that_service() {
    let app = spawn_app_with(test_settings(), Services::Matching).await;

    assert_eq!(app.get_info("matching").await.status(), 200);
    assert_eq!(app.get_info("location-ingest").await.status(), 404);
    assert_eq!(app.get_info("eta-pricing").await.status(), 404);
    assert_eq!(
        app.get_ready().await.status(),
        200,
        "health is always mounted"
    );
}

/// A split deployment, one process per service on one Redis: the driver talks to
/// location-ingest only, the rider quotes at eta-pricing and requests at matching. The
/// offer made by matching reaches the driver's WebSocket held by ingest (published and
/// relayed), ingest refuses the engaged driver's own status change (the engagement port
/// reads dispatch's lock), and matching honours eta-pricing's quote.
#[tokio::test]
async fn one_process_per_service_on_one_redis_carries_a_ride_from_quote_to_accept() {
    use futures_util::StreamExt;
    use geomatch_common::auth::Role;
    use geomatch_e2e::{assert_problem, json_of, spawn_service, RedisServer};
    use serde_json::{json, Value};
    use std::time::{Duration, Instant};

    let redis = std::sync::Arc::new(RedisServer::start());
    let ingest = spawn_service(&redis, Services::LocationIngest, |_| {}).await;
    let matching = spawn_service(&redis, Services::Matching, |_| {}).await;
    let pricing = spawn_service(&redis, Services::EtaPricing, |_| {}).await;
    assert_eq!(matching.get_info("location-ingest").await.status(), 404);
    assert_eq!(ingest.get_info("matching").await.status(), 404);

    // The driver: a socket, a position and online, all at location-ingest.
    let driver = ingest.driver("d1");
    let (mut ws, _) = tokio_tungstenite::connect_async(ingest.stream_url("d1", &driver))
        .await
        .unwrap();
    let r = ingest
        .put_location(&driver, "d1", &json!({"lat": 37.5001, "lng": 127.0}))
        .await;
    assert_eq!(r.status(), 200);
    let r = ingest
        .put_status(
            &driver,
            "d1",
            &json!({"status": "available", "vehicle_class": "standard", "seats": 4}),
        )
        .await;
    assert_eq!(r.status(), 200);

    // Matching's index follows Redis: the driver shows up nearby there.
    let rider = matching.token("u1", Role::Rider);
    let started = Instant::now();
    loop {
        let near = json_of(
            matching
                .get_as(&rider, "/v1/drivers/nearby?lat=37.5&lng=127.0")
                .await,
        )
        .await;
        if near["drivers"].as_array().is_some_and(|d| !d.is_empty()) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "matching never saw d1: {near}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The rider quotes at eta-pricing and requests with the quote at matching.
    let trip = json!({"pickup": {"lat": 37.5, "lng": 127.0},
                      "dropoff": {"lat": 37.55, "lng": 127.05}, "product": "standard"});
    let quote = json_of(pricing.post_quote(&rider, &trip).await).await;
    let mut request = trip.clone();
    request["quote_id"] = quote["quote_id"].clone();
    let r = matching.post_ride(&rider, "k1", &request).await;
    assert!(r.status().is_success(), "{}", r.status());
    let ride = json_of(r).await;
    assert!(
        quote["fare"]["total"].as_u64().is_some_and(|t| t > 0),
        "{quote}"
    );
    assert_eq!(
        ride["fare"]["total_minor"], quote["fare"]["total"],
        "{ride} {quote}"
    );

    // The offer reaches the socket ingest holds.
    let offer: Value = loop {
        let message = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("an offer within 5 s")
            .unwrap()
            .unwrap();
        if let tokio_tungstenite::tungstenite::Message::Text(t) = message {
            break serde_json::from_str(&t).unwrap();
        }
    };
    assert_eq!(offer["type"], "offer");
    assert_eq!(offer["ride_id"], ride["ride_id"]);

    // Holding an offer, the driver cannot go offline by itself; ingest shows the offer.
    assert_problem(
        ingest
            .put_status(&driver, "d1", &json!({"status": "offline"}))
            .await,
        409,
        "driver_engaged",
    )
    .await;
    assert_eq!(
        json_of(ingest.get_driver(&driver, "d1").await).await["status"],
        "offered"
    );

    // Accepted at matching: the driver is busy, as ingest reports it.
    let r = matching
        .post_as(
            &matching.driver("d1"),
            &format!("/v1/offers/{}/accept", offer["offer_id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        json_of(ingest.get_driver(&driver, "d1").await).await["status"],
        "busy"
    );
}
