use geomatch_e2e::spawn_app;
use serde_json::{json, Value};

#[tokio::test]
async fn live_answers_200_ok() {
    // Arrange
    let app = spawn_app().await;

    // Act
    let res = app.get_live().await;

    // Assert
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.json::<Value>().await.unwrap(),
        json!({ "status": "ok" })
    );
}

#[tokio::test]
async fn ready_answers_200_in_embedded_mode() {
    let app = spawn_app().await;

    let res = app.get_ready().await;

    assert_eq!(res.status(), 200);
    assert_eq!(
        res.json::<Value>().await.unwrap(),
        json!({ "status": "ok" })
    );
}

#[tokio::test]
async fn every_response_carries_a_request_id() {
    let app = spawn_app().await;

    let res = app
        .client
        .get(format!("{}/health/live", app.address))
        .header("x-request-id", "trace-me-123")
        .send()
        .await
        .unwrap();
    let generated = app.get_path("/nowhere").await;

    assert_eq!(res.headers()["x-request-id"], "trace-me-123");
    assert!(generated.headers().contains_key("x-request-id"));
}
