//! Calls to Redis with one timeout discipline, for every service's Redis-mode code.
//!
//! A process has one [`Redis`] handle, built by location ingest's store and shared by the
//! other services. It holds:
//! - the deadpool-redis pool (wait/create timeouts from `[redis]`), for what needs a
//!   connection of its own for a while: the blocking stream reads of the replica
//!   follower;
//! - [`SHARED_CONNECTIONS`] multiplexed connections that every short call shares
//!   (scripts, pipelines, reads). A checkout from the pool costs a round trip of its
//!   own (deadpool-redis checks each connection it hands out with `UNWATCH` + `PING`),
//!   which doubled every call; a multiplexed connection needs no checkout and pipelines
//!   concurrent calls. Their I/O runs on one thread of its own ([`io_runtime`]), so a
//!   reply is never held up behind CPU work of the HTTP workers or background tasks.
//!
//! [`call`] adds a ceiling on the whole call, so that a Redis that stops answering turns
//! into an error within [`CALL_TIMEOUT`] (the services answer 503 with `Retry-After`)
//! instead of a request that hangs; a connection that failed or timed out is replaced on
//! next use.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use ::redis::aio::{ConnectionLike, MultiplexedConnection};
use ::redis::AsyncConnectionConfig;
use deadpool_redis::Pool;
use parking_lot::Mutex;

/// Upper bound on any one Redis call, on top of the pool's own timeouts.
pub const CALL_TIMEOUT: Duration = Duration::from_millis(800);

/// A Redis call that failed: unreachable, refused, or too slow.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RedisError {
    #[error("redis: {0}")]
    Redis(String),
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    #[error("unexpected reply from redis: {0}")]
    Reply(String),
}

/// How many multiplexed connections a process's short calls share.
pub const SHARED_CONNECTIONS: usize = 4;

/// A process's access to Redis; cheap to clone. See the module documentation.
#[derive(Clone)]
pub struct Redis {
    pool: Pool,
    shared: Arc<Shared>,
}

struct Shared {
    client: ::redis::Client,
    config: AsyncConnectionConfig,
    /// Connected lazily; emptied when a call finds its connection broken.
    lanes: Vec<Mutex<Option<MultiplexedConnection>>>,
    next: AtomicUsize,
}

impl Redis {
    /// Over `pool`, with shared connections to `url` (the pool's server).
    pub fn new(pool: Pool, url: &str, connect_timeout: Duration) -> Result<Self, RedisError> {
        let client = ::redis::Client::open(url).map_err(|e| RedisError::Redis(e.to_string()))?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(connect_timeout))
            .set_response_timeout(Some(CALL_TIMEOUT));
        Ok(Redis {
            pool,
            shared: Arc::new(Shared {
                client,
                config,
                lanes: (0..SHARED_CONNECTIONS).map(|_| Mutex::new(None)).collect(),
                next: AtomicUsize::new(0),
            }),
        })
    }

    /// The pool, for work that holds a connection of its own (blocking reads).
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// A shared connection (the next one, round robin), connecting it if needed.
    async fn lane(&self) -> Result<(usize, MultiplexedConnection), RedisError> {
        let lanes = &self.shared.lanes;
        let i = self.shared.next.fetch_add(1, Ordering::Relaxed) % lanes.len();
        if let Some(c) = lanes[i].lock().clone() {
            return Ok((i, c));
        }
        let (client, config) = (self.shared.client.clone(), self.shared.config.clone());
        let connect =
            async move { client.get_multiplexed_async_connection_with_config(&config).await };
        // The connection's I/O task is spawned where it is made: on the I/O thread.
        let conn = match io_runtime() {
            Some(io) => io
                .spawn(connect)
                .await
                .map_err(|e| RedisError::Redis(e.to_string()))?,
            None => connect.await,
        }
        .map_err(|e| RedisError::Redis(e.to_string()))?;
        // Another call may have connected this lane meanwhile: keep one.
        Ok((i, lanes[i].lock().get_or_insert(conn).clone()))
    }

    /// Forgets shared connection `i` (broken or stuck); the next call on it reconnects.
    fn drop_lane(&self, i: usize) {
        self.shared.lanes[i].lock().take();
    }
}

/// The thread that drives the shared connections' I/O: one per process, started on
/// first use. `None` if it could not be started (connections then run where made).
fn io_runtime() -> Option<&'static tokio::runtime::Handle> {
    static IO: OnceLock<Option<tokio::runtime::Handle>> = OnceLock::new();
    IO.get_or_init(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()?;
        let handle = rt.handle().clone();
        std::thread::Builder::new()
            .name("redis-io".into())
            .spawn(move || rt.block_on(std::future::pending::<()>()))
            .ok()?;
        Some(handle)
    })
    .as_ref()
}

/// Whether `e` says the connection itself is gone (rather than a command refused).
fn connection_broken(e: &::redis::RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_timeout() || e.is_unrecoverable_error()
}

/// Runs `f` on a shared connection within [`CALL_TIMEOUT`]; returns the result and how
/// long it took (for the caller's latency metric).
pub async fn call<T, F, Fut>(redis: &Redis, f: F) -> (Result<T, RedisError>, Duration)
where
    F: FnOnce(MultiplexedConnection) -> Fut,
    Fut: std::future::Future<Output = ::redis::RedisResult<T>>,
{
    let started = Instant::now();
    let mut used = None;
    let result = tokio::time::timeout(CALL_TIMEOUT, async {
        let (i, conn) = redis.lane().await?;
        used = Some(i);
        f(conn).await.map_err(|e| {
            if connection_broken(&e) {
                redis.drop_lane(i);
            }
            RedisError::Redis(e.to_string())
        })
    })
    .await;
    let result = match result {
        Ok(r) => r,
        Err(_) => {
            // A connection that does not answer in time is not trusted again.
            if let Some(i) = used {
                redis.drop_lane(i);
            }
            Err(RedisError::Timeout(CALL_TIMEOUT))
        }
    };
    (result, started.elapsed())
}

/// Whether `e` says Redis does not know a script (first use, or Redis restarted): a
/// pipeline of `EVALSHA`s must then load its scripts and be sent once more.
pub fn is_noscript(e: &::redis::RedisError) -> bool {
    e.to_string().to_ascii_lowercase().contains("noscript")
}

/// Sends `pipe`; on NOSCRIPT loads `scripts` and sends it once more.
pub async fn query_pipe<T: ::redis::FromRedisValue, C: ConnectionLike>(
    conn: &mut C,
    pipe: &::redis::Pipeline,
    scripts: &[&::redis::Script],
) -> ::redis::RedisResult<T> {
    match pipe.query_async(conn).await {
        Err(e) if is_noscript(&e) => {
            for s in scripts {
                s.load_async(conn).await?;
            }
            pipe.query_async(conn).await
        }
        other => other,
    }
}
