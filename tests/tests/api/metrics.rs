use geomatch_e2e::spawn_app;

#[tokio::test]
async fn metrics_are_prometheus_text_labelled_by_route_pattern() {
    // Arrange
    let app = spawn_app().await;
    app.get_live().await;
    app.get_path("/v1/drivers/d-42/nowhere").await;

    // Act
    let res = app.get_metrics().await;

    // Assert
    assert_eq!(res.status(), 200);
    let content_type = res.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(content_type.starts_with("text/plain"), "{content_type}");
    let text = res.text().await.unwrap();
    assert!(
        text.contains("# TYPE http_requests_total counter"),
        "{text}"
    );
    assert!(
        text.contains(r#"http_requests_total{method="GET",route="/health/live",status="200"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"http_requests_total{method="GET",route="unmatched",status="404"} 1"#),
        "{text}"
    );
    assert!(
        !text.contains("d-42"),
        "raw paths never become labels:\n{text}"
    );
    assert!(
        text.contains("http_request_duration_seconds_bucket"),
        "{text}"
    );
}
