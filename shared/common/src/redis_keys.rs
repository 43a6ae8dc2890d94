//! Redis key names one service writes and another reads.

/// Dispatch's lock of a driver: a hash with `offer` or `ride` while the driver holds one
/// (matching writes it; location-ingest reads it, so that a driver holding an offer or a
/// ride cannot change its own status, and its state shows the engagement).
pub fn dispatch_driver(id: &str) -> String {
    format!("gm:{{r}}:drv:{id}")
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_driver_lock_sits_under_the_dispatch_hash_tag() {
        assert_eq!(super::dispatch_driver("d1"), "gm:{r}:drv:d1");
    }
}
