//! Calls to Redis with one timeout discipline, for every service's Redis-mode code.
//!
//! A process has one [`Redis`] handle, built at start-up ([`Redis::connect`], by the
//! service seam's `Deps`) and shared by every service. It holds:
//! - the deadpool-redis pool (wait/create timeouts from `[redis]`), for what needs a
//!   connection of its own for a while: the blocking stream reads of the replica
//!   follower;
//! - one multiplexed connection per thread that calls (each HTTP worker, the background
//!   runtime), shared by every short call on that thread (scripts, pipelines, reads). A
//!   checkout from the pool costs a round trip of its own (deadpool-redis checks each
//!   connection it hands out with `UNWATCH` + `PING`), which doubled every call; a
//!   multiplexed connection needs no checkout and pipelines concurrent calls. Made on
//!   the thread that uses it, its I/O runs on that thread's runtime: a call wakes no
//!   other thread (on a busy machine every thread hop can wait for a core).
//!
//! [`call`] adds a ceiling on the whole call, so that a Redis that stops answering turns
//! into an error within [`CALL_TIMEOUT`] (the services answer 503 with `Retry-After`)
//! instead of a request that hangs; a connection that failed or timed out is replaced on
//! next use.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ::redis::aio::{ConnectionLike, MultiplexedConnection};
use ::redis::AsyncConnectionConfig;
use deadpool_redis::{Config, Pool, PoolConfig, Runtime, Timeouts};

use crate::config::RedisSettings;

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

/// A process's access to Redis; cheap to clone. See the module documentation.
#[derive(Clone)]
pub struct Redis {
    pool: Pool,
    shared: Arc<Shared>,
}

struct Shared {
    /// Tells this handle's connections apart from other handles' in [`LANES`].
    id: usize,
    client: ::redis::Client,
    config: AsyncConnectionConfig,
}

static NEXT_HANDLE: AtomicUsize = AtomicUsize::new(0);

/// A thread's multiplexed connection for one handle.
struct Lane {
    handle: usize,
    conn: MultiplexedConnection,
    /// Cleared when a call finds the connection broken, or when the runtime that drives
    /// it shuts down.
    usable: Arc<AtomicBool>,
}

thread_local! {
    /// This thread's connections, one per handle.
    static LANES: RefCell<Vec<Lane>> = const { RefCell::new(Vec::new()) };
}

/// Clears a flag when dropped (with the task that holds it: at runtime shutdown).
struct ClearOnDrop(Arc<AtomicBool>);

impl Drop for ClearOnDrop {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Relaxed);
    }
}

impl Redis {
    /// The process's handle from `[redis]`: a pool sized `pool_size` with its wait and
    /// connect timeouts, and shared connections to the same server. Connects lazily.
    pub fn connect(settings: &RedisSettings) -> Result<Self, RedisError> {
        let mut cfg = Config::from_url(settings.url.clone());
        cfg.pool = Some(PoolConfig {
            max_size: settings.pool_size,
            timeouts: Timeouts {
                wait: Some(settings.wait_timeout()),
                create: Some(settings.connect_timeout()),
                recycle: Some(settings.connect_timeout()),
            },
            ..PoolConfig::default()
        });
        let pool = cfg
            .create_pool(Some(Runtime::Tokio1))
            .map_err(|e| RedisError::Redis(e.to_string()))?;
        Self::new(pool, &settings.url, settings.connect_timeout())
    }

    /// PING within the call ceiling: what readiness asks in Redis mode.
    pub async fn ping(&self) -> Result<(), RedisError> {
        call(self, |mut c| async move {
            ::redis::cmd("PING")
                .query_async::<String>(&mut c)
                .await
                .map(|_| ())
        })
        .await
        .0
    }

    /// Over `pool`, with shared connections to `url` (the pool's server).
    pub fn new(pool: Pool, url: &str, connect_timeout: Duration) -> Result<Self, RedisError> {
        let client = ::redis::Client::open(url).map_err(|e| RedisError::Redis(e.to_string()))?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(connect_timeout))
            .set_response_timeout(Some(CALL_TIMEOUT));
        Ok(Redis {
            pool,
            shared: Arc::new(Shared {
                id: NEXT_HANDLE.fetch_add(1, Ordering::Relaxed),
                client,
                config,
            }),
        })
    }

    /// A new pub/sub connection to the same server (subscribers hold one each).
    pub async fn pubsub(&self) -> Result<::redis::aio::PubSub, RedisError> {
        self.shared
            .client
            .get_async_pubsub()
            .await
            .map_err(|e| RedisError::Redis(e.to_string()))
    }

    /// The pool, for work that holds a connection of its own (blocking reads).
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// This thread's connection, connecting it if needed. Made on this thread, its I/O
    /// task runs on this thread's runtime.
    async fn lane(&self) -> Result<(MultiplexedConnection, Arc<AtomicBool>), RedisError> {
        let id = self.shared.id;
        let mine = |lanes: &mut Vec<Lane>| {
            lanes.retain(|l| l.usable.load(Ordering::Relaxed));
            lanes
                .iter()
                .find(|l| l.handle == id)
                .map(|l| (l.conn.clone(), l.usable.clone()))
        };
        if let Some(found) = LANES.with_borrow_mut(mine) {
            return Ok(found);
        }
        let conn = self
            .shared
            .client
            .get_multiplexed_async_connection_with_config(&self.shared.config)
            .await
            .map_err(|e| RedisError::Redis(e.to_string()))?;
        let usable = Arc::new(AtomicBool::new(true));
        let guard = ClearOnDrop(usable.clone());
        tokio::spawn(async move {
            let _guard = guard;
            std::future::pending::<()>().await
        });
        Ok(LANES.with_borrow_mut(|lanes| {
            // Another call on this thread may have connected meanwhile: keep one.
            mine(lanes).unwrap_or_else(|| {
                lanes.push(Lane {
                    handle: id,
                    conn: conn.clone(),
                    usable: usable.clone(),
                });
                (conn, usable)
            })
        }))
    }
}

/// Whether `e` says the connection itself is gone (rather than a command refused).
fn connection_broken(e: &::redis::RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_timeout() || e.is_unrecoverable_error()
}

/// Runs `f` on this thread's shared connection within [`CALL_TIMEOUT`]; returns the
/// result and how long it took (for the caller's latency metric).
pub async fn call<T, F, Fut>(redis: &Redis, f: F) -> (Result<T, RedisError>, Duration)
where
    F: FnOnce(MultiplexedConnection) -> Fut,
    Fut: std::future::Future<Output = ::redis::RedisResult<T>>,
{
    let started = Instant::now();
    let mut used = None;
    let result = tokio::time::timeout(CALL_TIMEOUT, async {
        let (conn, usable) = redis.lane().await?;
        used = Some(usable.clone());
        f(conn).await.map_err(|e| {
            if connection_broken(&e) {
                usable.store(false, Ordering::Relaxed);
            }
            RedisError::Redis(e.to_string())
        })
    })
    .await;
    let result = match result {
        Ok(r) => r,
        Err(_) => {
            // A connection that does not answer in time is not trusted again.
            if let Some(usable) = used {
                usable.store(false, Ordering::Relaxed);
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
