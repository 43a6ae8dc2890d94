//! People nearby, issue #6's benchmark: 1M profiles in one metro (the index's benchmark
//! city: five Seoul districts and a uniform background) with a realistic mix of
//! preferences; a page of 20 recommendations (embedded mode, both sides' preferences
//! tested for every candidate), with p50/p99 latencies that criterion does not give. Also:
//! deeper pages through the cursor, a viewer who has swiped 30,000 profiles nearby, and the
//! peer of docs/peers.md measured in the same run: Redis GEO (`GEOSEARCH … BYRADIUS <the
//! viewer's max distance> ASC COUNT 20`, which only finds the 20 nearest members and checks
//! no preference at all).
//!
//! `cargo bench -p matching --bench people` (set `PEOPLE_BENCH_N` for another size;
//! `PEOPLE_BENCH_NO_REDIS=1` skips the peer).

// Test and benchmark code may unwrap: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use geomatch_common::{Clock, PeopleSettings};
use geomatch_index::oracle::Metro;
use geomatch_index::{EntryId, Index, IndexConfig, Kind, Position, Update};
use hdrhistogram::Histogram;
use matching::people::{Action, Gender, MemoryStore, People, PeopleStore, Profile};
use rand::Rng;

const NOW_MS: i64 = 1_795_219_200_000; // 2026-11-21T00:00:00Z
const PHASE: Duration = Duration::from_secs(8);

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("valid bounds")
}

fn line(name: &str, h: &Histogram<u64>, extra: &str) {
    println!(
        "{name:<44} n {:>6}  p50 {:>8.3} ms  p99 {:>8.3} ms  max {:>8.3} ms  {extra}",
        h.len(),
        h.value_at_quantile(0.50) as f64 / 1e6,
        h.value_at_quantile(0.99) as f64 / 1e6,
        h.max() as f64 / 1e6,
    )
}

/// A profile of the mix: 48 % women, 48 % men, 4 % nonbinary; 85 % want the other binary
/// gender, 8 % their own, 7 % everyone; ages 18–65 weighted to the 20s and 30s; an age
/// range of their age −(2..8) to +(2..10); maximum distances 5/10/25/50/100 km
/// (15/30/30/15/10 %).
fn profile(rng: &mut impl Rng, id: &str) -> Profile {
    let gender = match rng.random_range(0..100) {
        0..48 => Gender::Woman,
        48..96 => Gender::Man,
        _ => Gender::Nonbinary,
    };
    let other = match gender {
        Gender::Woman => Gender::Man,
        Gender::Man => Gender::Woman,
        Gender::Nonbinary => Gender::Nonbinary,
    };
    let interested_in = match rng.random_range(0..100) {
        0..85 if gender != Gender::Nonbinary => vec![other],
        0..93 => vec![gender],
        _ => vec![Gender::Woman, Gender::Man, Gender::Nonbinary],
    };
    let age: u32 = match rng.random_range(0..100) {
        0..45 => rng.random_range(18..30),
        45..85 => rng.random_range(30..40),
        _ => rng.random_range(40..66),
    };
    // Born `age` years before 2026-11-21, on a day safely inside that year.
    let birth_date = format!(
        "{}-{:02}-{:02}",
        2025 - age as i32,
        rng.random_range(1..=12),
        rng.random_range(1..=28)
    );
    let age_min = age.saturating_sub(rng.random_range(2..8)).max(18);
    let age_max = (age + rng.random_range(2..10)).min(120);
    let max_distance_km = match rng.random_range(0..100) {
        0..15 => 5,
        15..45 => 10,
        45..75 => 25,
        75..90 => 50,
        _ => 100,
    };
    Profile {
        profile_id: id.to_owned(),
        display_name: "P".into(),
        birth_date,
        gender,
        interested_in,
        age_min,
        age_max,
        max_distance_km,
        bio: String::new(),
        photos: Vec::new(),
        premium: false,
        updated_at_ms: NOW_MS,
    }
}

struct World {
    people: People,
    positions: Vec<Position>,
    /// Each profile's maximum distance, km (the Redis GEO peer's radius).
    max_km: Vec<u32>,
}

fn build(n: usize) -> World {
    let mut metro = Metro::new(6);
    let mut updates = Vec::with_capacity(n);
    let mut profiles = Vec::with_capacity(n);
    let mut positions = Vec::with_capacity(n);
    let mut max_km = Vec::with_capacity(n);
    for i in 0..n {
        let name = format!("p{i}");
        let id = EntryId::parse(&name).expect("valid id");
        let p = metro.position();
        positions.push(p);
        updates.push(Update::moved(id.clone(), Kind::Profile, p, NOW_MS));
        let prof = profile(metro.rng(), &name);
        max_km.push(prof.max_distance_km);
        profiles.push((id, prof));
    }
    let index = Arc::new(Index::bulk_load(IndexConfig::default(), updates).expect("bulk load"));
    let store = MemoryStore::default();
    store.load(profiles, Vec::new());
    let people = People::new(
        index,
        PeopleStore::Memory(store),
        PeopleSettings::default(),
        Clock::manual(NOW_MS),
    );
    World {
        people,
        positions,
        max_km,
    }
}

fn main() {
    let n: usize = std::env::var("PEOPLE_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let t = Instant::now();
    let world = build(n);
    println!("{n} profiles built in {:.1} s", t.elapsed().as_secs_f64());
    let people = &world.people;
    let mut rng = rand::rng();

    // First pages for random viewers.
    let mut h = histogram();
    let mut returned = 0usize;
    // Answers cut short by people.max_examined (fewer than 20, with a cursor to go on).
    let mut short = 0usize;
    let mut viewers = Vec::new();
    let start = Instant::now();
    while start.elapsed() < PHASE {
        let v = rng.random_range(0..n);
        let id = EntryId::parse(&format!("p{v}")).unwrap();
        let t = Instant::now();
        let page = rt
            .block_on(people.recommendations(&id, Some(20), None, NOW_MS))
            .expect("a page");
        h.record(t.elapsed().as_nanos() as u64).unwrap();
        returned += page.profiles.len();
        if page.profiles.len() < 20 && page.next_cursor.is_some() {
            short += 1;
        }
        viewers.push(v);
    }
    line(
        "first page of 20 (random viewer)",
        &h,
        &format!(
            "avg {:.1} returned, {:.2} % cut short by max_examined",
            returned as f64 / h.len() as f64,
            100.0 * short as f64 / h.len() as f64
        ),
    );

    // Pages 2–5 through the cursor.
    let mut h = histogram();
    let start = Instant::now();
    let mut i = 0;
    while start.elapsed() < PHASE {
        let id = EntryId::parse(&format!("p{}", viewers[i % viewers.len()])).unwrap();
        i += 1;
        let mut cursor: Option<String> = None;
        for page_no in 0..5 {
            let t = Instant::now();
            let page = rt
                .block_on(people.recommendations(&id, Some(20), cursor.as_deref(), NOW_MS))
                .expect("a page");
            if page_no > 0 {
                h.record(t.elapsed().as_nanos() as u64).unwrap();
            }
            cursor = page.next_cursor;
            if cursor.is_none() {
                break;
            }
        }
    }
    line("pages 2-5 of 20 (cursor)", &h, "");

    // A viewer who swiped the 30,000 nearest profiles (everyone, whatever the fit).
    let heavy = viewers[0];
    let heavy_id = EntryId::parse(&format!("p{heavy}")).unwrap();
    let nearest = people_nearest(&world, heavy, 30_000);
    let swipes: Vec<_> = nearest
        .into_iter()
        .map(|t| (heavy_id.clone(), t, Action::Pass))
        .collect();
    let swiped = swipes.len();
    let PeopleStore::Memory(store) = people.store() else {
        unreachable!("the benchmark runs on the memory store")
    };
    store.load(Vec::new(), swipes);
    let mut h = histogram();
    let start = Instant::now();
    while start.elapsed() < PHASE / 2 {
        let t = Instant::now();
        let page = rt
            .block_on(people.recommendations(&heavy_id, Some(20), None, NOW_MS))
            .expect("a page");
        h.record(t.elapsed().as_nanos() as u64).unwrap();
        std::hint::black_box(page);
    }
    line(
        "first page, viewer with 30k nearest swiped",
        &h,
        &format!("({swiped} swiped)"),
    );

    if std::env::var("PEOPLE_BENCH_NO_REDIS").is_err() {
        redis_geo_peer(&world, &viewers);
    }
}

/// Ids of the `k` profiles nearest to profile `v` (for the heavy swiper).
fn people_nearest(world: &World, v: usize, k: usize) -> Vec<EntryId> {
    let at = world.positions[v];
    let mut d: Vec<(f64, usize)> = world
        .positions
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != v)
        .map(|(i, p)| (at.distance_m(p), i))
        .collect();
    d.select_nth_unstable_by(k, |a, b| a.0.total_cmp(&b.0));
    d.truncate(k);
    d.into_iter()
        .map(|(_, i)| EntryId::parse(&format!("p{i}")).unwrap())
        .collect()
}

/// Redis GEO on a private redis-server: the same positions, `GEOSEARCH` of the 20 nearest
/// within each viewer's maximum distance.
fn redis_geo_peer(world: &World, viewers: &[usize]) {
    let dir = std::env::temp_dir().join(format!("people-bench-redis-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let socket = dir.join("redis.sock");
    let child = std::process::Command::new("redis-server")
        .args(["--port", "0", "--save", "", "--appendonly", "no"])
        .arg("--unixsocket")
        .arg(&socket)
        .arg("--dir")
        .arg(&dir)
        .stdout(std::process::Stdio::null())
        .spawn();
    let Ok(mut child) = child else {
        println!("redis-server not found: Redis GEO peer skipped");
        return;
    };
    let started = Instant::now();
    while !socket.exists() && started.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let client = redis::Client::open(format!("redis+unix://{}", socket.display())).expect("client");
    let mut c = client.get_connection().expect("connection");
    let t = Instant::now();
    for (chunk_no, chunk) in world.positions.chunks(10_000).enumerate() {
        let mut pipe = redis::pipe();
        for (j, p) in chunk.iter().enumerate() {
            pipe.cmd("GEOADD")
                .arg("profiles")
                .arg(p.lng())
                .arg(p.lat())
                .arg(format!("p{}", chunk_no * 10_000 + j))
                .ignore();
        }
        pipe.query::<()>(&mut c).expect("GEOADD");
    }
    println!("Redis GEO loaded in {:.1} s", t.elapsed().as_secs_f64());
    let mut h = histogram();
    let start = Instant::now();
    let mut i = 0;
    while start.elapsed() < PHASE && i < viewers.len() {
        let v = viewers[i];
        i += 1;
        let km = world.max_km[v];
        let at = world.positions[v];
        let t0 = Instant::now();
        let found: Vec<String> = redis::cmd("GEOSEARCH")
            .arg("profiles")
            .arg("FROMLONLAT")
            .arg(at.lng())
            .arg(at.lat())
            .arg("BYRADIUS")
            .arg(km)
            .arg("km")
            .arg("ASC")
            .arg("COUNT")
            .arg(20)
            .query(&mut c)
            .expect("GEOSEARCH");
        h.record(t0.elapsed().as_nanos() as u64).unwrap();
        std::hint::black_box(found);
    }
    line(
        "peer: Redis GEO GEOSEARCH COUNT 20 (no prefs)",
        &h,
        "(same viewers, their max distance)",
    );
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
