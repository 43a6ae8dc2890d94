//! A real geomatch server on `127.0.0.1:<free port>` and a client with one method per
//! endpoint, for the end-to-end tests in `tests/api/`.
//!
//! Logs are off unless `TEST_LOG` is set (`TEST_LOG=debug cargo test -p geomatch-e2e`).

pub mod structure;
pub mod swarm;

use std::process::{Child, Command, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

use geomatch::{Application, Services};
use geomatch_common::auth::{Authenticator, Role};
use geomatch_common::config::Secret;
use geomatch_common::{telemetry, Clock, LogFormat, LogSettings, Mode, Settings};
use reqwest::{header::CONTENT_TYPE, Response};
use serde_json::Value;

/// The signing secret of test servers (32+ bytes, not the development default).
pub const TEST_JWT_SECRET: &str = "e2e-test-secret-0123456789-abcdefghij";

pub use geomatch_common::testing::RedisServer;

/// The JSON body of an answer (panics on anything else).
pub async fn json_of(r: Response) -> Value {
    r.json().await.expect("a JSON body")
}

/// Asserts a problem+json answer with `status` and `code` (and the same `status` in the
/// body); returns its headers (for `Retry-After` and the like).
pub async fn assert_problem(r: Response, status: u16, code: &str) -> reqwest::header::HeaderMap {
    assert_eq!(r.status().as_u16(), status, "status of {}", r.url());
    let headers = r.headers().clone();
    assert_eq!(headers[CONTENT_TYPE], "application/problem+json");
    let body = json_of(r).await;
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["status"], status, "{body}");
    headers
}

/// Body limit of the test server: small, so oversized bodies are cheap to send.
pub const TEST_MAX_BODY_BYTES: usize = 4 * 1024;

/// A running server and a client for it.
pub struct TestApp {
    /// `http://127.0.0.1:<port>`.
    pub address: String,
    pub client: reqwest::Client,
    /// The Redis this app uses, in Redis mode.
    pub redis: Option<std::sync::Arc<RedisServer>>,
    /// The server's clock: the system clock, or a manual one the test moves
    /// ([`spawn_at`]).
    pub clock: Clock,
    auth: Authenticator,
}

/// Settings for a test server: loopback, free port, one worker, small body limit.
pub fn test_settings() -> Settings {
    let mut settings = Settings::default();
    settings.server.host = "127.0.0.1".to_owned();
    settings.server.port = 0;
    settings.server.workers = 1;
    settings.server.shutdown_timeout_s = 1;
    settings.server.max_body_bytes = TEST_MAX_BODY_BYTES;
    settings.auth.jwt_secret = Secret::new(TEST_JWT_SECRET);
    settings
}

/// A server in `mode`, with its own Redis in Redis mode (kept alive by the returned app).
pub async fn spawn_in(mode: Mode, tune: impl FnOnce(&mut Settings)) -> TestApp {
    spawn_at(mode, Clock::System, tune).await
}

/// [`spawn_in`] on `clock`: with a manual clock, time-based rules (offer timeouts, quote
/// and profile expiry) move only when the test advances `app.clock`, not by sleeping.
pub async fn spawn_at(mode: Mode, clock: Clock, tune: impl FnOnce(&mut Settings)) -> TestApp {
    let mut settings = test_settings();
    settings.mode = mode;
    let redis = (mode == Mode::Redis).then(RedisServer::start);
    if let Some(r) = &redis {
        settings.redis.url = r.url.clone();
    }
    tune(&mut settings);
    let mut app = spawn_services_at(settings, Services::All, clock).await;
    app.redis = redis.map(std::sync::Arc::new);
    app
}

/// A second server (another replica) on the same Redis as `first`.
pub async fn spawn_replica(first: &TestApp, tune: impl FnOnce(&mut Settings)) -> TestApp {
    let redis = first.redis.clone().expect("a Redis-mode app");
    spawn_service(&redis, Services::All, tune).await
}

/// A server in Redis mode on `redis` with only `services` mounted: one service's
/// process of a split deployment, in this test process.
pub async fn spawn_service(
    redis: &std::sync::Arc<RedisServer>,
    services: Services,
    tune: impl FnOnce(&mut Settings),
) -> TestApp {
    let mut settings = test_settings();
    settings.mode = Mode::Redis;
    settings.redis.url = redis.url.clone();
    tune(&mut settings);
    let mut app = spawn_app_with(settings, services).await;
    app.redis = Some(redis.clone());
    app
}

/// Starts a server with every service mounted.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(test_settings(), Services::All).await
}

/// Starts a server with `settings` and only `services` mounted. It runs on the calling
/// test's runtime and stops when the test ends.
pub async fn spawn_app_with(settings: Settings, services: Services) -> TestApp {
    spawn_services_at(settings, services, Clock::System).await
}

async fn spawn_services_at(settings: Settings, services: Services, clock: Clock) -> TestApp {
    init_test_logging();
    let app = Application::build_in(settings, services, clock.clone())
        .await
        .expect("the test server builds");
    let address = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until(std::future::pending()));
    TestApp {
        address,
        client: reqwest::Client::new(),
        redis: None,
        clock,
        auth: Authenticator::new(&test_settings().auth),
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

    /// Another client for the same server (shares its Redis, if any).
    pub fn clone_handle(&self) -> TestApp {
        TestApp {
            address: self.address.clone(),
            client: self.client.clone(),
            redis: self.redis.clone(),
            clock: self.clock.clone(),
            auth: Authenticator::new(&test_settings().auth),
        }
    }

    /// A valid token for `sub` with `role`.
    pub fn token(&self, sub: &str, role: Role) -> String {
        self.auth.mint(sub, role, Duration::from_secs(600))
    }

    /// A driver's own token.
    pub fn driver(&self, id: &str) -> String {
        self.token(id, Role::Driver)
    }

    /// `PUT /v1/drivers/{id}/location` with `token` (none when empty).
    pub async fn put_location(&self, token: &str, id: &str, body: &Value) -> Response {
        let mut req = self
            .client
            .put(self.url(&format!("/v1/drivers/{id}/location")))
            .json(body);
        if !token.is_empty() {
            req = req.bearer_auth(token);
        }
        req.send().await.expect("the server answers")
    }

    /// `POST /v1/locations/batch`.
    pub async fn post_batch(&self, token: &str, body: &Value) -> Response {
        self.client
            .post(self.url("/v1/locations/batch"))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .expect("the server answers")
    }

    /// `PUT /v1/drivers/{id}/status`.
    pub async fn put_status(&self, token: &str, id: &str, body: &Value) -> Response {
        self.client
            .put(self.url(&format!("/v1/drivers/{id}/status")))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .expect("the server answers")
    }

    /// `GET /v1/drivers/{id}`.
    pub async fn get_driver(&self, token: &str, id: &str) -> Response {
        self.client
            .get(self.url(&format!("/v1/drivers/{id}")))
            .bearer_auth(token)
            .send()
            .await
            .expect("the server answers")
    }

    /// `POST path` with a bearer token and an optional JSON body.
    pub async fn post_as(&self, token: &str, path: &str, body: Option<&Value>) -> Response {
        let mut req = self.client.post(self.url(path)).bearer_auth(token);
        if let Some(b) = body {
            req = req.json(b);
        }
        req.send().await.expect("the server answers")
    }

    /// `GET path` with a bearer token.
    pub async fn get_as(&self, token: &str, path: &str) -> Response {
        self.client
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("the server answers")
    }

    /// `POST /v1/rides` with an `Idempotency-Key` (none when `key` is empty).
    pub async fn post_ride(&self, token: &str, key: &str, body: &Value) -> Response {
        let mut req = self
            .client
            .post(self.url("/v1/rides"))
            .bearer_auth(token)
            .json(body);
        if !key.is_empty() {
            req = req.header("Idempotency-Key", key);
        }
        req.send().await.expect("the server answers")
    }

    /// `GET /openapi.json`.
    pub async fn get_openapi(&self) -> Response {
        self.get("/openapi.json").await
    }

    /// `ws://…/v1/drivers/{id}/stream?access_token=…`
    pub fn stream_url(&self, id: &str, token: &str) -> String {
        format!(
            "{}/v1/drivers/{id}/stream?access_token={token}",
            self.address.replacen("http", "ws", 1)
        )
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

    /// `POST /v1/quotes`.
    pub async fn post_quote(&self, token: &str, body: &Value) -> Response {
        self.post_as(token, "/v1/quotes", Some(body)).await
    }

    /// `GET /v1/quotes/{quote_id}`.
    pub async fn get_quote(&self, token: &str, quote_id: &str) -> Response {
        self.get_as(token, &format!("/v1/quotes/{quote_id}")).await
    }

    /// `GET /v1/eta?{query}`, e.g. `from=37.5,127&to=37.6,127`.
    pub async fn get_eta(&self, token: &str, query: &str) -> Response {
        self.get_as(token, &format!("/v1/eta?{query}")).await
    }

    /// `POST /v1/eta/batch`.
    pub async fn post_eta_batch(&self, token: &str, body: &Value) -> Response {
        self.post_as(token, "/v1/eta/batch", Some(body)).await
    }

    /// `GET /v1/surge?lat&lng`.
    pub async fn get_surge(&self, token: &str, lat: f64, lng: f64) -> Response {
        self.get_as(token, &format!("/v1/surge?lat={lat}&lng={lng}"))
            .await
    }

    /// `GET /v1/heatmap?{query}`, e.g. `bbox=126.9,37.4,127.1,37.6&res=7`.
    pub async fn get_heatmap(&self, token: &str, query: &str) -> Response {
        self.get_as(token, &format!("/v1/heatmap?{query}")).await
    }
}

/// A geomatch server running as its own OS process (a replica, as deployed), killed when
/// dropped.
pub struct ServerProcess {
    child: Child,
    pub app: TestApp,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `binary serve --service <service>` in Redis mode on `redis` and waits until it
/// is ready. `env` adds `GEOMATCH__…` settings.
pub async fn spawn_process(
    binary: &std::path::Path,
    redis: &std::sync::Arc<RedisServer>,
    service: &str,
    env: &[(&str, &str)],
) -> ServerProcess {
    // A free port: bind, read it, release it for the server.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let mut cmd = Command::new(binary);
    cmd.args(["serve", "--service", service])
        .env("GEOMATCH__MODE", "redis")
        .env("GEOMATCH__REDIS__URL", &redis.url)
        .env("GEOMATCH__SERVER__HOST", "127.0.0.1")
        .env("GEOMATCH__SERVER__PORT", port.to_string())
        .env("GEOMATCH__SERVER__WORKERS", "1")
        .env("GEOMATCH__AUTH__JWT_SECRET", TEST_JWT_SECRET)
        .env("GEOMATCH__LOG__LEVEL", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd.spawn().expect("the geomatch binary starts");
    let app = TestApp {
        address: format!("http://127.0.0.1:{port}"),
        client: reqwest::Client::new(),
        redis: Some(redis.clone()),
        // Another process: its clock is the system's.
        clock: Clock::System,
        auth: Authenticator::new(&test_settings().auth),
    };
    let started = Instant::now();
    loop {
        if let Ok(r) = app.client.get(app.url("/health/ready")).send().await {
            if r.status() == 200 {
                break;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the server process did not become ready"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ServerProcess { child, app }
}
