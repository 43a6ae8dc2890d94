//! Calls to Redis with one timeout discipline, for every service's Redis-mode code.
//!
//! The pool (deadpool-redis, with its own wait/create timeouts from `[redis]`) is built
//! once per process by location ingest's store; other services borrow it. [`call`] adds a
//! ceiling on the whole call, so that a Redis that stops answering turns into an error
//! within [`CALL_TIMEOUT`] (the services answer 503 with `Retry-After`) instead of a
//! request that hangs.

use std::time::{Duration, Instant};

use deadpool_redis::{Connection, Pool};

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

/// Runs `f` on a pooled connection within [`CALL_TIMEOUT`]; returns the result and how
/// long it took (for the caller's latency metric).
pub async fn call<T, F, Fut>(pool: &Pool, f: F) -> (Result<T, RedisError>, Duration)
where
    F: FnOnce(Connection) -> Fut,
    Fut: std::future::Future<Output = ::redis::RedisResult<T>>,
{
    let started = Instant::now();
    let result = tokio::time::timeout(CALL_TIMEOUT, async {
        let conn = pool
            .get()
            .await
            .map_err(|e| RedisError::Redis(e.to_string()))?;
        f(conn).await.map_err(|e| RedisError::Redis(e.to_string()))
    })
    .await
    .unwrap_or(Err(RedisError::Timeout(CALL_TIMEOUT)));
    (result, started.elapsed())
}

/// Whether `e` says Redis does not know a script (first use, or Redis restarted): a
/// pipeline of `EVALSHA`s must then load its scripts and be sent once more.
pub fn is_noscript(e: &::redis::RedisError) -> bool {
    e.to_string().to_ascii_lowercase().contains("noscript")
}

/// Sends `pipe`; on NOSCRIPT loads `scripts` and sends it once more.
pub async fn query_pipe<T: ::redis::FromRedisValue>(
    conn: &mut Connection,
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
