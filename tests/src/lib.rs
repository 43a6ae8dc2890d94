//! A real geomatch server on `127.0.0.1:<free port>` and a client with one method per
//! endpoint, for the end-to-end tests in `tests/api/`.
//!
//! Logs are off unless `TEST_LOG` is set (`TEST_LOG=debug cargo test -p geomatch-e2e`).

use std::sync::Once;

use geomatch::{Application, Services};
use geomatch_common::{telemetry, LogFormat, LogSettings, Settings};
use reqwest::{header::CONTENT_TYPE, Response};

/// Body limit of the test server: small, so oversized bodies are cheap to send.
pub const TEST_MAX_BODY_BYTES: usize = 4 * 1024;

/// A running server and a client for it.
pub struct TestApp {
    /// `http://127.0.0.1:<port>`.
    pub address: String,
    pub client: reqwest::Client,
}

/// Settings for a test server: loopback, free port, one worker, small body limit.
pub fn test_settings() -> Settings {
    let mut settings = Settings::default();
    settings.server.host = "127.0.0.1".to_owned();
    settings.server.port = 0;
    settings.server.workers = 1;
    settings.server.shutdown_timeout_s = 1;
    settings.server.max_body_bytes = TEST_MAX_BODY_BYTES;
    settings
}

/// Starts a server with every service mounted.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(test_settings(), Services::All).await
}

/// Starts a server with `settings` and only `services` mounted. It runs on the calling
/// test's runtime and stops when the test ends.
pub async fn spawn_app_with(settings: Settings, services: Services) -> TestApp {
    init_test_logging();
    let app = Application::build_with(settings, services)
        .await
        .expect("the test server builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until(std::future::pending()));
    TestApp {
        address,
        client: reqwest::Client::new(),
    }
}

fn init_test_logging() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        if let Ok(level) = std::env::var("TEST_LOG") {
            let settings = LogSettings {
                format: LogFormat::Plain,
                level,
            };
            telemetry::init(&settings).expect("TEST_LOG is a valid filter");
        }
    });
}

impl TestApp {
    fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    async fn get(&self, path: &str) -> Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("the server answers")
    }

    pub async fn get_live(&self) -> Response {
        self.get("/health/live").await
    }

    pub async fn get_ready(&self) -> Response {
        self.get("/health/ready").await
    }

    pub async fn get_metrics(&self) -> Response {
        self.get("/metrics").await
    }

    /// `GET /v1/<service>/info`.
    pub async fn get_info(&self, service: &str) -> Response {
        self.get(&format!("/v1/{service}/info")).await
    }

    /// Any path, for routes that do not exist.
    pub async fn get_path(&self, path: &str) -> Response {
        self.get(path).await
    }

    /// A JSON body of `bytes` bytes sent to `path` with `POST`.
    pub async fn post_json_of_size(&self, path: &str, bytes: usize) -> Response {
        let filler = "x".repeat(bytes.saturating_sub(r#"{"pad":""}"#.len()));
        let body = format!(r#"{{"pad":"{filler}"}}"#);
        self.client
            .post(self.url(path))
            .header(CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .expect("the server answers")
    }
}
