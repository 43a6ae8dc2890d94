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
