//! Dispatch's pub/sub traffic between processes (Redis mode): offers published for
//! whichever process holds the driver's WebSocket, and the driver engagement the book's
//! scripts announce on [`ENGAGED`], followed into this replica's search hints.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use geomatch_common::clock::Clock;
use geomatch_common::ports::DriverPush;
use geomatch_common::redis::Redis;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::assign::Hints;
use crate::book::ENGAGED;

/// Pub/sub channel of offers for drivers' WebSockets: `{"driver_id", "offer"}` JSON.
const OFFERS: &str = "gm:dispatch:offers";

/// An offer on its way to a driver's WebSocket through [`OFFERS`].
#[derive(Debug, Serialize, Deserialize)]
struct OfferEvent<'a> {
    driver_id: &'a str,
    /// The offer as the driver sees it, passed through as it was written.
    #[serde(borrow)]
    offer: &'a RawValue,
}

/// Offers pushed in Redis mode: published on [`OFFERS`], for whichever process holds
/// the driver's WebSocket ([`relay_offers`] there delivers them).
pub(crate) struct OfferPublisher {
    redis: Redis,
}

impl OfferPublisher {
    pub(crate) fn new(redis: Redis) -> Self {
        OfferPublisher { redis }
    }
}

impl DriverPush for OfferPublisher {
    fn push(&self, driver: &str, json: &str) -> bool {
        let Ok(offer) = serde_json::from_str(json) else {
            return false;
        };
        let event = OfferEvent {
            driver_id: driver,
            offer,
        };
        let Ok(payload) = serde_json::to_string(&event) else {
            return false;
        };
        let redis = self.redis.clone();
        // Best effort, never blocking the caller: a driver without the push still finds
        // the offer by polling.
        tokio::spawn(async move {
            let (sent, _) = geomatch_common::redis::call(&redis, |mut c| async move {
                redis::cmd("PUBLISH")
                    .arg(OFFERS)
                    .arg(payload)
                    .query_async::<i64>(&mut c)
                    .await
            })
            .await;
            if sent.is_err() {
                tracing::warn!("could not publish an offer; the driver can still poll it");
            }
        });
        true
    }
}

/// Delivers the offers any replica publishes to the drivers connected to this process,
/// until the process stops.
pub(crate) async fn relay_offers(redis: Redis, drivers: Arc<dyn DriverPush>) {
    follow(
        &redis,
        OFFERS,
        || {},
        |payload| {
            if let Ok(e) = serde_json::from_str::<OfferEvent>(&payload) {
                drivers.push(e.driver_id, e.offer.get());
            }
        },
    )
    .await
}

/// Follows other replicas' announcements of driver engagement (`offered|id`, `busy|id`,
/// `available|id`) into `hints`, until the process stops.
pub(crate) async fn follow_hints(redis: Redis, hints: Arc<Hints>, clock: Clock) {
    // Announcements made while disconnected are lost: start again from the index.
    let reconnected = || hints.forget_all();
    follow(&redis, ENGAGED, reconnected, |payload| {
        if let Some((what, driver)) = payload.split_once('|') {
            hints.announced(driver, what != "available", clock.now());
        }
    })
    .await
}

/// Subscribes to `channel` and hands each message to `on_message`, reconnecting after
/// failures (calling `on_subscribe` each time it is subscribed again).
async fn follow(
    redis: &Redis,
    channel: &'static str,
    mut on_subscribe: impl FnMut(),
    mut on_message: impl FnMut(String),
) {
    loop {
        let result = subscribed(redis, channel, &mut on_subscribe, &mut on_message).await;
        if let Err(e) = result {
            tracing::warn!(error = %e, channel, "dispatch events: connection lost; reconnecting");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// One subscription, until its connection fails.
async fn subscribed(
    redis: &Redis,
    channel: &'static str,
    on_subscribe: &mut impl FnMut(),
    on_message: &mut impl FnMut(String),
) -> anyhow::Result<()> {
    let mut pubsub = redis.pubsub().await?;
    pubsub.subscribe(channel).await?;
    on_subscribe();
    let mut messages = pubsub.on_message();
    while let Some(msg) = messages.next().await {
        on_message(msg.get_payload()?);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Instant;

    use geomatch_common::testing::RedisServer;
    use geomatch_index::EntryId;

    use super::*;

    #[derive(Default)]
    struct Received(Mutex<Vec<(String, String)>>);

    impl DriverPush for Received {
        fn push(&self, driver: &str, json: &str) -> bool {
            let mut got = self.0.lock().expect("lock");
            got.push((driver.to_owned(), json.to_owned()));
            true
        }
    }

    /// Repeats `act` until `done` (the follower subscribes in the background), for at
    /// most 5 s.
    async fn until(mut act: impl FnMut(), done: impl Fn() -> bool) {
        let started = Instant::now();
        while !done() {
            assert!(started.elapsed() < Duration::from_secs(5), "never arrived");
            act();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn a_published_offer_reaches_the_driver_through_another_process_relay_unchanged() {
        let server = RedisServer::start();
        let received = Arc::new(Received::default());
        let relay = tokio::spawn(relay_offers(server.handle(), received.clone()));
        let publisher = OfferPublisher::new(server.handle());
        let offer = r#"{"type":"offer","offer_id":"o1","z":1,"a":2}"#;
        let got = || !received.0.lock().expect("lock").is_empty();
        until(|| assert!(publisher.push("d1", offer)), got).await;
        let first = received.0.lock().expect("lock")[0].clone();
        assert_eq!(first, ("d1".to_owned(), offer.to_owned()));
        relay.abort();
    }

    #[tokio::test]
    async fn announced_engagement_keeps_a_driver_out_of_searches_until_its_release() {
        let server = RedisServer::start();
        let hints = Arc::new(Hints::default());
        let clock = Clock::manual(1_000);
        let follower = tokio::spawn(follow_hints(server.handle(), hints.clone(), clock));
        let d1 = EntryId::parse("d1").expect("id");
        let publish = |message: &'static str| {
            let redis = server.handle();
            tokio::spawn(async move {
                let _ = geomatch_common::redis::call(&redis, |mut c| async move {
                    redis::cmd("PUBLISH")
                        .arg(ENGAGED)
                        .arg(message)
                        .query_async::<i64>(&mut c)
                        .await
                })
                .await;
            });
        };
        until(|| publish("offered|d1"), || !hints.free_at(1_000)(&d1)).await;
        until(|| publish("available|d1"), || hints.free_at(1_000)(&d1)).await;
        follower.abort();
    }
}
