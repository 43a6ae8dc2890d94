use geomatch_common::Problem;
use geomatch_e2e::{spawn_app, TEST_MAX_BODY_BYTES};
use reqwest::Response;

async fn problem(res: Response) -> Problem {
    assert_eq!(
        res.headers()["content-type"],
        "application/problem+json",
        "errors are problem+json"
    );
    res.json().await.expect("a problem body")
}

#[tokio::test]
async fn an_unknown_route_is_404_problem_with_code_not_found() {
    // Arrange
    let app = spawn_app().await;

    // Act
    let res = app.get_path("/v1/no-such-thing").await;

    // Assert
    assert_eq!(res.status(), 404);
    let problem = problem(res).await;
    assert_eq!(problem.code, "not_found");
    assert_eq!(problem.status, 404);
    assert_eq!(problem.title, "Not Found");
}

#[tokio::test]
async fn a_wrong_method_is_405_problem() {
    let app = spawn_app().await;

    let res = app
        .client
        .delete(format!("{}/health/live", app.address))
        .send()
        .await
        .unwrap();

    assert_eq!(res.status(), 405);
    assert_eq!(
        res.headers()["allow"],
        "GET",
        "405 says which methods are allowed"
    );
    assert_eq!(problem(res).await.code, "method_not_allowed");
}

#[tokio::test]
async fn a_body_over_the_limit_is_413_problem() {
    let app = spawn_app().await;

    let res = app
        .post_json_of_size("/v1/location-ingest/info", TEST_MAX_BODY_BYTES + 1)
        .await;

    assert_eq!(res.status(), 413);
    assert_eq!(problem(res).await.code, "payload_too_large");
}

#[tokio::test]
async fn the_connection_stays_usable_after_a_refused_body() {
    let app = spawn_app().await;

    let refused = app
        .post_json_of_size("/v1/matching/info", TEST_MAX_BODY_BYTES * 2)
        .await;
    let next = app.get_live().await;

    assert_eq!(refused.status(), 413);
    assert_eq!(next.status(), 200);
}
