//! The book's contract (see [`Book`]), case by case, against both books: the memory book
//! always, the Redis book on a private `redis-server`. Every case gives its own `now`;
//! nothing sleeps.

use std::sync::Arc;

use geomatch_common::testing::RedisServer;
use geomatch_index::{EntryId, Index, IndexConfig, Kind, Position, Status, Update};
use prometheus::{HistogramOpts, HistogramVec};

use super::*;
use crate::ride::{DispatchError, RideRequest, RideState};

/// A book, the index its memory twin locks drivers in, and the Redis server (if any)
/// kept alive for the case.
struct Fixture {
    book: Book,
    index: Arc<Index>,
    _server: Option<RedisServer>,
}

fn latency() -> HistogramVec {
    HistogramVec::new(HistogramOpts::new("t", "t"), &["step"]).expect("valid histogram")
}

impl Fixture {
    fn memory() -> Self {
        let index = Arc::new(Index::new(IndexConfig::default()).expect("index"));
        Fixture {
            book: Book::new(index.clone(), None, latency()),
            index,
            _server: None,
        }
    }

    fn redis() -> Self {
        let server = RedisServer::start();
        let index = Arc::new(Index::new(IndexConfig::default()).expect("index"));
        Fixture {
            book: Book::new(index.clone(), Some(server.handle()), latency()),
            index,
            _server: Some(server),
        }
    }

    /// Available drivers (the memory book's lock is their index status).
    fn drivers(&self, ids: &[&str]) {
        for (i, id) in ids.iter().enumerate() {
            let at = Position::new(37.5 + i as f64 * 0.001, 127.0).expect("position");
            let mut u = Update::moved(EntryId::parse(id).expect("id"), Kind::Driver, at, 0);
            u.status = Some(Status::Available);
            self.index.upsert(&u).expect("upsert");
        }
    }

    /// Creates a ride of `rider` at `now` under key `key` (answered), dispatching at once.
    async fn ride(&self, id: &str, rider: &str, key: &str, now: i64) -> RideId {
        let idem = idem(rider, key, "{}");
        let made = self
            .create(&doc(id, rider, now, true), now, &idem, true, now)
            .await;
        assert_eq!(made, Created::Made);
        id.into()
    }

    async fn create(
        &self,
        ride: &RideDoc,
        dispatch_at: i64,
        idem: &IdemKey<'_>,
        answered: bool,
        now: i64,
    ) -> Created {
        let new = NewRide {
            ride,
            dispatch_at,
            idem,
            answered,
        };
        self.book.create(&new, now).await.expect("book up")
    }

    /// Claims `ride` for the first free of `drivers` with offer `offer`, lasting until
    /// `expires`.
    async fn claim(&self, ride: &RideId, drivers: &[&str], offer: &str, expires: i64) -> Claim {
        self.claim_with(ride, drivers, offer, expires, 5, None)
            .await
    }

    async fn claim_with(
        &self,
        ride: &RideId,
        drivers: &[&str],
        offer: &str,
        expires: i64,
        max_attempts: u32,
        answers: Option<&IdemKey<'_>>,
    ) -> Claim {
        let candidates: Vec<Candidate> = drivers
            .iter()
            .enumerate()
            .map(|(i, d)| Candidate {
                driver: (*d).into(),
                distance_m: 100.0 * (i + 1) as f64,
                eta_s: 30 * (i as u64 + 1),
            })
            .collect();
        let offering = Offering {
            ride,
            radius: 1,
            candidates: &candidates,
            max_attempts,
            offer: &offer.into(),
            expires_at_ms: expires,
            answers,
        };
        self.book.claim(&offering).await.expect("book up")
    }

    async fn get(&self, ride: &RideId) -> RideDoc {
        self.book
            .ride(ride)
            .await
            .expect("book up")
            .expect("the ride")
    }

    async fn idle(&self) -> Vec<(RideId, i64)> {
        let mut idle = self.book.idle().await.expect("book up");
        idle.sort();
        idle
    }

    async fn step(
        &self,
        ride: &RideId,
        step: Step<'_>,
        now: i64,
    ) -> Result<Stepped, DispatchError> {
        self.book.step(ride, step, now).await.expect("book up")
    }
}

fn request() -> RideRequest {
    RideRequest {
        pickup: Position::new(37.5, 127.0).expect("position"),
        dropoff: Position::new(37.6, 127.0).expect("position"),
        product: "standard".into(),
        seats: None,
        quote_id: None,
        preferred_driver_id: None,
        scheduled_at: None,
        tip_minor: None,
    }
}

fn doc(id: &str, rider: &str, now: i64, dispatching: bool) -> RideDoc {
    let base = RideBase {
        id: id.into(),
        rider: rider.into(),
        request: request(),
        class: 0,
        fare: None,
    };
    RideDoc::new(base, now, dispatching)
}

fn idem<'a>(rider: &'a str, key: &'a str, body: &'a str) -> IdemKey<'a> {
    IdemKey {
        rider,
        key,
        body,
        ttl_s: 3_600,
    }
}

fn offered(claim: Claim) -> OfferRecord {
    match claim {
        Claim::Offered(offer) => offer,
        other => panic!("expected an offer, got {other:?}"),
    }
}

const CANCEL: Step<'static> = Step {
    to: RideState::Cancelled,
    from: &[
        RideState::Requested,
        RideState::Dispatching,
        RideState::Accepted,
        RideState::DriverArrived,
    ],
    driver: None,
    by: Some("rider:u1"),
};

fn trip_step<'a>(to: RideState, from: &'a [RideState], driver: &'a DriverId) -> Step<'a> {
    Step {
        to,
        from,
        driver: Some(driver),
        by: Some(driver.as_str()),
    }
}

/// Runs each case against a fresh memory book and a fresh Redis book.
macro_rules! against_both_books {
    ($($case:ident),* $(,)?) => {
        mod memory {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(&super::Fixture::memory()).await
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(&super::Fixture::redis()).await
                }
            )*
        }
    };
}

against_both_books!(
    a_ride_is_stored_with_its_key_which_then_refuses_a_retry_in_progress_or_another_body,
    an_answered_key_replays_its_ride_and_an_unanswered_one_does_after_the_pending_limit,
    a_key_past_its_ttl_is_forgotten,
    a_rider_has_one_open_ride_until_it_ends,
    a_scheduled_ride_starts_dispatching_at_its_dispatch_time,
    a_claim_offers_the_ride_to_the_first_free_candidate,
    a_claim_is_not_wanted_by_a_ride_with_an_offer_out_ended_or_out_of_attempts,
    a_claim_finding_every_candidate_taken_reports_them_and_leaves_the_ride_idle,
    the_first_claim_of_a_request_marks_its_key_answered,
    an_offer_is_declined_only_by_its_driver_once_and_the_driver_is_excluded,
    an_offer_times_out_only_after_its_deadline,
    only_the_current_offer_is_accepted_by_its_driver_before_its_deadline,
    trip_steps_are_made_only_by_the_assigned_driver_and_the_end_frees_the_driver,
    a_step_refuses_a_state_it_does_not_start_from,
    a_cancel_withdraws_the_outstanding_offer_and_frees_the_driver,
    a_tip_only_goes_up_and_not_on_a_cancelled_ride,
);

async fn a_ride_is_stored_with_its_key_which_then_refuses_a_retry_in_progress_or_another_body(
    f: &Fixture,
) {
    let k = idem("u1", "k", "{\"a\":1}");
    let made = f
        .create(&doc("r1", "u1", 1_000, true), 1_000, &k, false, 1_000)
        .await;
    assert_eq!(made, Created::Made);
    let r1 = f.get(&"r1".into()).await;
    assert_eq!(r1.state, RideState::Dispatching);
    let states: Vec<_> = r1.transitions.iter().map(|t| (t.state, t.at_ms)).collect();
    assert_eq!(
        states,
        [
            (RideState::Requested, 1_000),
            (RideState::Dispatching, 1_000)
        ]
    );
    assert_eq!(f.idle().await, [("r1".into(), 1_000)]);
    assert_eq!(f.book.open_count().await, Ok(1));

    let retry = f
        .create(&doc("r2", "u1", 1_500, true), 1_500, &k, false, 1_500)
        .await;
    assert_eq!(retry, Created::Seen(IdemSeen::InProgress));
    assert_eq!(
        f.book.idem_seen(&k, 1_500).await,
        Ok(Some(IdemSeen::InProgress))
    );
    let other = idem("u1", "k", "{\"a\":2}");
    assert_eq!(
        f.book.idem_seen(&other, 1_500).await,
        Ok(Some(IdemSeen::Reused))
    );
    let reused = f
        .create(&doc("r2", "u1", 1_500, true), 1_500, &other, false, 1_500)
        .await;
    assert_eq!(reused, Created::Seen(IdemSeen::Reused));
    // Keys are the rider's own.
    assert_eq!(
        f.book.idem_seen(&idem("u2", "k", "{\"a\":1}"), 1_500).await,
        Ok(None)
    );
    assert!(f.book.ride(&"r2".into()).await.expect("book up").is_none());
    assert_eq!(f.book.open_count().await, Ok(1));
}

async fn an_answered_key_replays_its_ride_and_an_unanswered_one_does_after_the_pending_limit(
    f: &Fixture,
) {
    let k = idem("u1", "k", "{}");
    f.create(&doc("r1", "u1", 1_000, true), 1_000, &k, false, 1_000)
        .await;
    // A replica that died mid-request: after the pending limit the key replays.
    let late = 1_000 + model::IDEM_PENDING_MS;
    assert_eq!(
        f.book.idem_seen(&k, late - 1).await,
        Ok(Some(IdemSeen::InProgress))
    );
    assert_eq!(
        f.book.idem_seen(&k, late).await,
        Ok(Some(IdemSeen::Replay("r1".into())))
    );

    let k2 = idem("u2", "k", "{}");
    f.create(&doc("r2", "u2", 1_000, true), 1_000, &k2, false, 1_000)
        .await;
    f.book.idem_finish(&k2).await.expect("book up");
    let replay = f
        .create(&doc("r3", "u2", 1_100, true), 1_100, &k2, false, 1_100)
        .await;
    assert_eq!(replay, Created::Seen(IdemSeen::Replay("r2".into())));
}

async fn a_key_past_its_ttl_is_forgotten(f: &Fixture) {
    let brief = IdemKey {
        ttl_s: 0,
        ..idem("u1", "k", "{}")
    };
    let made = f
        .create(&doc("r1", "u1", 1_000, true), 1_000, &brief, true, 1_000)
        .await;
    assert_eq!(made, Created::Made);
    assert_eq!(f.book.idem_seen(&brief, 1_000).await, Ok(None));
    f.step(&"r1".into(), CANCEL, 1_001)
        .await
        .expect("cancelled");
    let again = f
        .create(&doc("r2", "u1", 1_002, true), 1_002, &brief, true, 1_002)
        .await;
    assert_eq!(
        again,
        Created::Made,
        "the rider's next ride may reuse the key"
    );
}

async fn a_rider_has_one_open_ride_until_it_ends(f: &Fixture) {
    let r1 = f.ride("r1", "u1", "k1", 1_000).await;
    let second = f
        .create(
            &doc("r2", "u1", 1_100, true),
            1_100,
            &idem("u1", "k2", "{}"),
            true,
            1_100,
        )
        .await;
    assert_eq!(second, Created::Open(r1.clone()));
    f.step(&r1, CANCEL, 1_200).await.expect("cancelled");
    assert_eq!(f.book.open_count().await, Ok(0));
    let third = f
        .create(
            &doc("r3", "u1", 1_300, true),
            1_300,
            &idem("u1", "k2", "{}"),
            true,
            1_300,
        )
        .await;
    assert_eq!(third, Created::Made);
}

async fn a_scheduled_ride_starts_dispatching_at_its_dispatch_time(f: &Fixture) {
    let made = f
        .create(
            &doc("r1", "u1", 1_000, false),
            5_000,
            &idem("u1", "k", "{}"),
            true,
            1_000,
        )
        .await;
    assert_eq!(made, Created::Made);
    assert_eq!(f.get(&"r1".into()).await.state, RideState::Requested);
    assert!(f.idle().await.is_empty());
    assert_eq!(f.book.start_due(4_999).await, Ok(vec![]));
    assert_eq!(f.book.start_due(5_000).await, Ok(vec!["r1".into()]));
    assert_eq!(f.book.start_due(6_000).await, Ok(vec![]), "started once");
    let r1 = f.get(&"r1".into()).await;
    assert_eq!((r1.state, r1.since_ms), (RideState::Dispatching, 5_000));
    assert_eq!(r1.transitions.last().map(|t| t.at_ms), Some(5_000));
    assert_eq!(f.idle().await, [("r1".into(), 5_000)]);
}

async fn a_claim_offers_the_ride_to_the_first_free_candidate(f: &Fixture) {
    f.drivers(&["d1", "d2", "d3"]);
    let other = f.ride("r0", "u0", "k", 1_000).await;
    offered(f.claim(&other, &["d1"], "o0", 16_000).await);
    let r1 = f.ride("r1", "u1", "k", 1_000).await;
    let offer = offered(f.claim(&r1, &["d1", "d2", "d3"], "o1", 16_000).await);
    assert_eq!(
        (
            offer.id.as_str(),
            offer.ride.as_str(),
            offer.driver.as_str()
        ),
        ("o1", "r1", "d2"),
        "d1 holds r0's offer"
    );
    assert_eq!(
        (offer.distance_m, offer.eta_s, offer.expires_at_ms),
        (200.0, 60, 16_000)
    );
    let ride = f.get(&r1).await;
    assert_eq!(
        (ride.offer, ride.attempts, ride.radius),
        (Some("o1".into()), 1, 1)
    );
    assert!(
        f.idle().await.is_empty(),
        "no ride is left without an offer"
    );
    assert_eq!(f.book.offer(&"o1".into()).await, Ok(Some(offer.clone())));
    assert_eq!(f.book.offer_of_driver(&"d2".into()).await, Ok(Some(offer)));
    assert_eq!(f.book.offer_of_driver(&"d3".into()).await, Ok(None));
    assert_eq!(f.book.expired_offers(15_999).await, Ok(vec![]));
    assert_eq!(
        f.book.expired_offers(16_000).await,
        Ok(vec!["o0".into(), "o1".into()])
    );
}

async fn a_claim_is_not_wanted_by_a_ride_with_an_offer_out_ended_or_out_of_attempts(f: &Fixture) {
    f.drivers(&["d1", "d2"]);
    let r1 = f.ride("r1", "u1", "k", 1_000).await;
    offered(f.claim(&r1, &["d1"], "o1", 16_000).await);
    assert_eq!(
        f.claim(&r1, &["d2"], "o2", 16_000).await,
        Claim::NotWanted,
        "one offer out"
    );
    assert_eq!(
        f.claim(&"nope".into(), &["d2"], "o3", 16_000).await,
        Claim::NotWanted
    );

    let r2 = f.ride("r2", "u2", "k", 1_000).await;
    let out_of_attempts = f.claim_with(&r2, &["d2"], "o4", 16_000, 0, None).await;
    assert_eq!(out_of_attempts, Claim::NotWanted);
    f.step(&r2, CANCEL, 1_100).await.expect("cancelled");
    assert_eq!(f.claim(&r2, &["d2"], "o5", 16_000).await, Claim::NotWanted);
    assert_eq!(
        f.book.offer_of_driver(&"d2".into()).await,
        Ok(None),
        "d2 stays free"
    );
}

async fn a_claim_finding_every_candidate_taken_reports_them_and_leaves_the_ride_idle(f: &Fixture) {
    f.drivers(&["d1"]);
    let r1 = f.ride("r1", "u1", "k", 1_000).await;
    let r2 = f.ride("r2", "u2", "k", 1_200).await;
    offered(f.claim(&r1, &["d1"], "o1", 16_000).await);
    assert_eq!(
        f.claim(&r2, &["d1"], "o2", 16_000).await,
        Claim::AllTaken(vec!["d1".into()])
    );
    assert_eq!(f.idle().await, [(r2.clone(), 1_200)]);
    assert_eq!(f.get(&r2).await.attempts, 0);
}

async fn the_first_claim_of_a_request_marks_its_key_answered(f: &Fixture) {
    f.drivers(&["d1"]);
    let k = idem("u1", "k", "{}");
    f.create(&doc("r1", "u1", 1_000, true), 1_000, &k, false, 1_000)
        .await;
    assert_eq!(
        f.book.idem_seen(&k, 1_000).await,
        Ok(Some(IdemSeen::InProgress))
    );
    offered(
        f.claim_with(&"r1".into(), &["d1"], "o1", 16_000, 5, Some(&k))
            .await,
    );
    assert_eq!(
        f.book.idem_seen(&k, 1_000).await,
        Ok(Some(IdemSeen::Replay("r1".into())))
    );
}

async fn an_offer_is_declined_only_by_its_driver_once_and_the_driver_is_excluded(f: &Fixture) {
    f.drivers(&["d1", "d2"]);
    let r1 = f.ride("r1", "u1", "k", 1_000).await;
    offered(f.claim(&r1, &["d1", "d2"], "o1", 16_000).await);
    let o1 = OfferId::from("o1");
    let (d1, d2) = (DriverId::from("d1"), DriverId::from("d2"));
    let by_d2 = f
        .book
        .close_offer(&o1, Some(&d2), OfferEnd::Declined, 2_000)
        .await;
    assert_eq!(by_d2, Ok(Err(DispatchError::Forbidden)));
    let declined = f
        .book
        .close_offer(&o1, Some(&d1), OfferEnd::Declined, 2_000)
        .await;
    assert_eq!(declined.expect("book up").map(|o| o.driver), Ok(d1.clone()));
    let again = f
        .book
        .close_offer(&o1, Some(&d1), OfferEnd::Declined, 2_001)
        .await;
    assert_eq!(again, Ok(Err(DispatchError::OfferGone)));

    let ride = f.get(&r1).await;
    assert_eq!(ride.offer, None);
    assert!(ride.excluded.contains(&d1));
    assert_eq!(
        f.idle().await,
        [(r1.clone(), 2_000)],
        "idle since the decline"
    );
    assert_eq!(f.book.offer(&o1).await, Ok(None));
    assert_eq!(f.book.offer_of_driver(&d1).await, Ok(None));
    assert_eq!(f.book.expired_offers(i64::MAX).await, Ok(vec![]));
    // The next claim skips the driver who declined.
    let next = offered(f.claim(&r1, &["d1", "d2"], "o2", 17_000).await);
    assert_eq!(next.driver, d2);
    assert_eq!(f.get(&r1).await.attempts, 2);
}

async fn an_offer_times_out_only_after_its_deadline(f: &Fixture) {
    f.drivers(&["d1"]);
    let r1 = f.ride("r1", "u1", "k", 1_000).await;
    offered(f.claim(&r1, &["d1"], "o1", 16_000).await);
    let o1 = OfferId::from("o1");
    let early = f
        .book
        .close_offer(&o1, None, OfferEnd::TimedOut, 15_999)
        .await;
    assert_eq!(early, Ok(Err(DispatchError::OfferGone)));
    assert!(f.get(&r1).await.offer.is_some(), "still out");
    let timed_out = f
        .book
        .close_offer(&o1, None, OfferEnd::TimedOut, 16_000)
        .await;
    assert_eq!(timed_out.expect("book up").map(|o| o.id), Ok(o1.clone()));
    let twice = f
        .book
        .close_offer(&o1, None, OfferEnd::TimedOut, 16_001)
        .await;
    assert_eq!(
        twice,
        Ok(Err(DispatchError::OfferGone)),
        "one replica times it out"
    );
    assert!(f.get(&r1).await.excluded.contains("d1"));
    assert_eq!(f.idle().await, [(r1, 16_000)]);
}

async fn only_the_current_offer_is_accepted_by_its_driver_before_its_deadline(f: &Fixture) {
    f.drivers(&["d1", "d2"]);
    let r1 = f.ride("r1", "u1", "k", 1_000).await;
    offered(f.claim(&r1, &["d1"], "o1", 16_000).await);
    let o1 = OfferId::from("o1");
    let (d1, d2) = (DriverId::from("d1"), DriverId::from("d2"));
    assert_eq!(
        f.book.accept(&o1, &d2, 2_000).await,
        Ok(Err(DispatchError::Forbidden))
    );
    assert_eq!(
        f.book.accept(&o1, &d1, 16_000).await,
        Ok(Err(DispatchError::OfferGone)),
        "past its deadline"
    );
    let ride = f
        .book
        .accept(&o1, &d1, 2_000)
        .await
        .expect("book up")
        .expect("accepted");
    assert_eq!(ride.state, RideState::Accepted);
    assert_eq!(
        (ride.driver.as_ref(), ride.offer.as_ref()),
        (Some(&d1), None)
    );
    assert_eq!(ride.pickup_eta_s, Some(30));
    let last = ride.transitions.last().expect("a transition");
    assert_eq!((last.at_ms, last.by.as_deref()), (2_000, Some("d1")));
    assert_eq!(
        ride,
        f.get(&r1).await,
        "the accept returns the ride as stored"
    );

    assert_eq!(
        f.book.accept(&o1, &d1, 2_001).await,
        Ok(Err(DispatchError::OfferGone))
    );
    let decline = f
        .book
        .close_offer(&o1, Some(&d1), OfferEnd::Declined, 2_001)
        .await;
    assert_eq!(decline, Ok(Err(DispatchError::OfferGone)));
    assert_eq!(f.book.offer_of_driver(&d1).await, Ok(None));
    assert_eq!(f.book.expired_offers(i64::MAX).await, Ok(vec![]));

    // A declined offer cannot be accepted afterwards.
    let r2 = f.ride("r2", "u2", "k", 3_000).await;
    offered(f.claim(&r2, &["d2"], "o2", 18_000).await);
    let o2 = OfferId::from("o2");
    f.book
        .close_offer(&o2, Some(&d2), OfferEnd::Declined, 3_100)
        .await
        .expect("book up")
        .expect("declined");
    assert_eq!(
        f.book.accept(&o2, &d2, 3_200).await,
        Ok(Err(DispatchError::OfferGone))
    );
}

async fn trip_steps_are_made_only_by_the_assigned_driver_and_the_end_frees_the_driver(f: &Fixture) {
    f.drivers(&["d1", "d2"]);
    let r1 = f.ride("r1", "u1", "k", 1_000).await;
    offered(f.claim(&r1, &["d1"], "o1", 16_000).await);
    let (d1, d2) = (DriverId::from("d1"), DriverId::from("d2"));
    f.book
        .accept(&"o1".into(), &d1, 2_000)
        .await
        .expect("book up")
        .expect("accepted");

    let accepted = [RideState::Accepted];
    let arrived = trip_step(RideState::DriverArrived, &accepted, &d2);
    assert_eq!(
        f.step(&r1, arrived, 3_000).await,
        Err(DispatchError::Forbidden)
    );
    let arrived = trip_step(RideState::DriverArrived, &accepted, &d1);
    let done = f.step(&r1, arrived, 3_000).await.expect("arrived");
    assert_eq!(
        (done.ride.state, done.withdrawn),
        (RideState::DriverArrived, None)
    );
    let from = [RideState::DriverArrived];
    f.step(&r1, trip_step(RideState::InProgress, &from, &d1), 4_000)
        .await
        .expect("started");
    let from = [RideState::InProgress];
    let done = f
        .step(&r1, trip_step(RideState::Completed, &from, &d1), 5_000)
        .await
        .expect("completed");
    let states: Vec<_> = done
        .ride
        .transitions
        .iter()
        .map(|t| (t.state, t.at_ms))
        .collect();
    assert_eq!(
        states,
        [
            (RideState::Requested, 1_000),
            (RideState::Dispatching, 1_000),
            (RideState::Accepted, 2_000),
            (RideState::DriverArrived, 3_000),
            (RideState::InProgress, 4_000),
            (RideState::Completed, 5_000),
        ]
    );
    assert_eq!(f.book.open_count().await, Ok(0));
    // The driver no longer holds the ride, and is free for the next.
    let cancel = Step {
        driver: Some(&d1),
        ..CANCEL
    };
    assert_eq!(
        f.step(&r1, cancel, 5_100).await,
        Err(DispatchError::Forbidden)
    );
    let r2 = f.ride("r2", "u1", "k2", 6_000).await;
    assert_eq!(
        offered(f.claim(&r2, &["d1"], "o2", 21_000).await).driver,
        d1
    );
}

async fn a_step_refuses_a_state_it_does_not_start_from(f: &Fixture) {
    f.drivers(&["d1"]);
    let r1 = f.ride("r1", "u1", "k", 1_000).await;
    offered(f.claim(&r1, &["d1"], "o1", 16_000).await);
    let no_driver = Step {
        to: RideState::NoDriverFound,
        from: &[RideState::Dispatching],
        driver: None,
        by: None,
    };
    assert_eq!(
        f.step(&r1, no_driver, 2_000).await,
        Err(DispatchError::WrongState("dispatching", "no_driver_found")),
        "not while an offer is out"
    );
    let complete = Step {
        to: RideState::Completed,
        from: &[RideState::InProgress],
        driver: None,
        by: None,
    };
    assert_eq!(
        f.step(&r1, complete, 2_000).await,
        Err(DispatchError::WrongState("dispatching", "completed"))
    );
    assert_eq!(
        f.step(&"nope".into(), complete, 2_000).await,
        Err(DispatchError::RideNotFound("nope".into()))
    );
    assert!(
        f.get(&r1).await.offer.is_some(),
        "a refused step changes nothing"
    );
}

async fn a_cancel_withdraws_the_outstanding_offer_and_frees_the_driver(f: &Fixture) {
    f.drivers(&["d1"]);
    let r1 = f.ride("r1", "u1", "k", 1_000).await;
    let offer = offered(f.claim(&r1, &["d1"], "o1", 16_000).await);
    let done = f.step(&r1, CANCEL, 2_000).await.expect("cancelled");
    assert_eq!(done.ride.state, RideState::Cancelled);
    assert_eq!(done.ride.offer, None);
    assert_eq!(done.withdrawn, Some(offer));
    let last = done.ride.transitions.last().expect("a transition");
    assert_eq!((last.at_ms, last.by.as_deref()), (2_000, Some("rider:u1")));
    assert_eq!(f.book.offer(&"o1".into()).await, Ok(None));
    assert_eq!(f.book.offer_of_driver(&"d1".into()).await, Ok(None));
    assert_eq!(f.book.expired_offers(i64::MAX).await, Ok(vec![]));
    assert!(f.idle().await.is_empty());
    assert_eq!(f.book.open_count().await, Ok(0));
    assert_eq!(
        f.step(&r1, CANCEL, 2_100).await,
        Err(DispatchError::WrongState("cancelled", "cancelled"))
    );
    let r2 = f.ride("r2", "u2", "k", 3_000).await;
    assert_eq!(
        offered(f.claim(&r2, &["d1"], "o2", 18_000).await)
            .driver
            .as_str(),
        "d1"
    );
}

async fn a_tip_only_goes_up_and_not_on_a_cancelled_ride(f: &Fixture) {
    let mut ride = doc("r1", "u1", 1_000, true);
    ride.base.request.tip_minor = Some(100);
    ride.tip_minor = 100;
    f.create(&ride, 1_000, &idem("u1", "k", "{}"), true, 1_000)
        .await;
    let r1 = RideId::from("r1");
    assert_eq!(
        f.book.set_tip(&r1, 50).await,
        Ok(Err(DispatchError::TipLowered(100)))
    );
    let raised = f
        .book
        .set_tip(&r1, 200)
        .await
        .expect("book up")
        .expect("raised");
    assert_eq!(raised.tip_minor, 200);
    assert_eq!(f.get(&r1).await.tip_minor, 200);
    f.book
        .set_tip(&r1, 200)
        .await
        .expect("book up")
        .expect("the same tip again");
    f.step(&r1, CANCEL, 2_000).await.expect("cancelled");
    assert_eq!(
        f.book.set_tip(&r1, 300).await,
        Ok(Err(DispatchError::WrongState("cancelled", "not cancelled")))
    );
    assert_eq!(
        f.book.set_tip(&"nope".into(), 300).await,
        Ok(Err(DispatchError::RideNotFound("nope".into())))
    );
}

/// What location ingest learns through [`engagement`]: in Redis mode the driver lock
/// (offered, then busy, then free); embedded, nothing, since there the index status is
/// the lock (the memory book moves it, as the cases above rely on).
#[tokio::test]
async fn the_driver_lock_tells_location_ingest_whether_dispatch_holds_a_driver() {
    let f = Fixture::redis();
    let Some(server) = &f._server else {
        unreachable!("a Redis fixture")
    };
    let locks = engagement(Some(server.handle()));
    let d1 = DriverId::from("d1");
    assert_eq!(locks.engagement("d1").await, Ok(None));
    let r1 = f.ride("r1", "u1", "k", 1_000).await;
    offered(f.claim(&r1, &["d1"], "o1", 16_000).await);
    assert_eq!(locks.engagement("d1").await, Ok(Some(Status::Offered)));
    f.book
        .accept(&"o1".into(), &d1, 2_000)
        .await
        .expect("book up")
        .expect("accepted");
    assert_eq!(locks.engagement("d1").await, Ok(Some(Status::Busy)));
    f.step(&r1, CANCEL, 3_000).await.expect("cancelled");
    assert_eq!(locks.engagement("d1").await, Ok(None));

    let embedded = engagement(None);
    assert_eq!(embedded.engagement("d1").await, Ok(None));
}
