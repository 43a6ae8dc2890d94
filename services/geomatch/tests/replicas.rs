//! Replicas as deployed: separate `geomatch` processes sharing one real redis-server.

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
        swarm::online(via, &format!("d{i}"), 37.5 + (i as f64) * 0.0004, 127.0).await;
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
