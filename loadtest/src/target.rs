//! Where the load goes: a geomatch server or a Redis, on this machine only.
//!
//! The generator refuses any address that is not loopback: it can send hundreds of
//! thousands of requests a second, which must never reach a shared or remote server by
//! a typo.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

/// Why a target was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("{url:?}: {reason}")]
    Malformed { url: String, reason: &'static str },
    #[error("{url:?} resolves to {addr}, which is not a loopback address; the load generator only targets this machine")]
    NotLoopback { url: String, addr: IpAddr },
    #[error("{url:?}: cannot resolve {host:?}: {reason}")]
    Resolve {
        url: String,
        host: String,
        reason: String,
    },
}

/// A geomatch server: `http://127.0.0.1:8080`, `http://localhost:8080`, `http://[::1]:8080`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpTarget {
    pub addr: SocketAddr,
    /// The `Host` header to send: the URL's `host:port`.
    pub authority: String,
}

impl HttpTarget {
    pub fn parse(url: &str) -> Result<Self, TargetError> {
        let malformed = |reason| TargetError::Malformed {
            url: url.to_owned(),
            reason,
        };
        let rest = url.strip_prefix("http://").ok_or_else(|| {
            malformed("must start with http:// (the generator speaks plain HTTP/1.1)")
        })?;
        let authority = rest.strip_suffix('/').unwrap_or(rest);
        if authority.is_empty() || authority.contains('/') || authority.contains('@') {
            return Err(malformed(
                "must be http://host:port with no path or credentials",
            ));
        }
        let addr = loopback_addr(url, authority)?;
        Ok(HttpTarget {
            addr,
            authority: authority.to_owned(),
        })
    }

    /// `ws://host:port`, for WebSocket URLs.
    pub fn ws_base(&self) -> String {
        format!("ws://{}", self.authority)
    }
}

/// A Redis: `redis://127.0.0.1:6379`, `redis://localhost:6390/0`, or a unix socket
/// `redis+unix:///tmp/redis.sock` (also `unix:///tmp/redis.sock`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisTarget {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl RedisTarget {
    pub fn parse(url: &str) -> Result<Self, TargetError> {
        let malformed = |reason| TargetError::Malformed {
            url: url.to_owned(),
            reason,
        };
        if let Some(path) = url
            .strip_prefix("redis+unix://")
            .or_else(|| url.strip_prefix("unix://"))
        {
            // A socket path may carry `?db=N`; only database 0 is used here.
            let path = path.split('?').next().unwrap_or_default();
            if !path.starts_with('/') {
                return Err(malformed("a unix socket URL needs an absolute path"));
            }
            return Ok(RedisTarget::Unix(PathBuf::from(path)));
        }
        let rest = url
            .strip_prefix("redis://")
            .ok_or_else(|| malformed("must start with redis://, redis+unix:// or unix://"))?;
        if rest.contains('@') {
            return Err(malformed(
                "credentials are not supported: use a private Redis without a password",
            ));
        }
        let authority = rest.split('/').next().unwrap_or_default();
        let db = rest.split('/').nth(1).unwrap_or_default();
        if !(db.is_empty() || db == "0") {
            return Err(malformed("only database 0 is supported"));
        }
        if authority.is_empty() {
            return Err(malformed("must name host:port"));
        }
        Ok(RedisTarget::Tcp(loopback_addr(url, authority)?))
    }
}

/// Resolves `host:port` and requires every address it names to be loopback.
fn loopback_addr(url: &str, authority: &str) -> Result<SocketAddr, TargetError> {
    let addrs: Vec<SocketAddr> = authority
        .to_socket_addrs()
        .map_err(|e| TargetError::Resolve {
            url: url.to_owned(),
            host: authority.to_owned(),
            reason: e.to_string(),
        })?
        .collect();
    if let Some(bad) = addrs.iter().find(|a| !a.ip().is_loopback()) {
        return Err(TargetError::NotLoopback {
            url: url.to_owned(),
            addr: bad.ip(),
        });
    }
    // Prefer IPv4: the server binds 127.0.0.1 in the benchmark.
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .ok_or_else(|| TargetError::Resolve {
            url: url.to_owned(),
            host: authority.to_owned(),
            reason: "no address".to_owned(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_http_targets_are_accepted() {
        let t = HttpTarget::parse("http://127.0.0.1:8080").unwrap();
        assert_eq!(t.addr, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(t.authority, "127.0.0.1:8080");
        assert_eq!(t.ws_base(), "ws://127.0.0.1:8080");
        assert!(HttpTarget::parse("http://[::1]:9000/").is_ok());
        assert!(HttpTarget::parse("http://localhost:9000").is_ok());
    }

    #[test]
    fn non_loopback_targets_are_refused() {
        for url in [
            "http://10.0.0.1:8080",
            "http://0.0.0.0:8080",
            "http://192.168.1.5:80",
        ] {
            assert!(
                matches!(HttpTarget::parse(url), Err(TargetError::NotLoopback { .. })),
                "{url}"
            );
        }
        assert!(matches!(
            RedisTarget::parse("redis://10.1.2.3:6379"),
            Err(TargetError::NotLoopback { .. })
        ));
    }

    #[test]
    fn malformed_targets_are_refused() {
        for url in [
            "https://127.0.0.1:8080",
            "127.0.0.1:8080",
            "http://127.0.0.1:8080/v1",
            "http://user@127.0.0.1:8080",
        ] {
            assert!(
                matches!(HttpTarget::parse(url), Err(TargetError::Malformed { .. })),
                "{url}"
            );
        }
        assert!(RedisTarget::parse("redis://:pw@127.0.0.1:6379").is_err());
        assert!(RedisTarget::parse("redis://127.0.0.1:6379/3").is_err());
        assert!(RedisTarget::parse("redis+unix://relative.sock").is_err());
    }

    #[test]
    fn redis_targets_over_tcp_and_unix_sockets_parse() {
        assert_eq!(
            RedisTarget::parse("redis://127.0.0.1:6390/0").unwrap(),
            RedisTarget::Tcp("127.0.0.1:6390".parse().unwrap())
        );
        assert_eq!(
            RedisTarget::parse("redis+unix:///tmp/x/redis.sock").unwrap(),
            RedisTarget::Unix("/tmp/x/redis.sock".into())
        );
        assert_eq!(
            RedisTarget::parse("unix:///tmp/r.sock?db=0").unwrap(),
            RedisTarget::Unix("/tmp/r.sock".into())
        );
    }
}
