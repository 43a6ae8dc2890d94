//! People nearby over real HTTP, every test in both modes (embedded, and Redis mode against
//! a private redis-server), plus two Redis-mode replicas liking each other at once.

use std::collections::HashSet;
use std::time::Duration;

use geomatch_common::auth::Role;
use geomatch_common::Mode;
use geomatch_e2e::{assert_problem, json_of, spawn_in, spawn_replica, TestApp};
use serde_json::{json, Value};

/// Seoul city hall; candidates are placed by bearing and distance from it.
const HOME: (f64, f64) = (37.5665, 126.978);

/// The point `km` east of [`HOME`] (along the parallel; exact enough for tests).
fn east(km: f64) -> (f64, f64) {
    let dlng = km / (111.32 * HOME.0.to_radians().cos());
    (HOME.0, HOME.1 + dlng)
}

fn user(app: &TestApp, id: &str) -> String {
    app.token(id, Role::Rider)
}

async fn put(app: &TestApp, token: &str, path: &str, body: &Value) -> reqwest::Response {
    app.client
        .put(format!("{}{path}", app.address))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .expect("the server answers")
}

async fn delete(app: &TestApp, token: &str, path: &str) -> reqwest::Response {
    app.client
        .delete(format!("{}{path}", app.address))
        .bearer_auth(token)
        .send()
        .await
        .expect("the server answers")
}

/// A profile body: `gender`, born `birth`, wanting `wants` aged `ages` within `km`.
fn body(gender: &str, birth: &str, wants: &[&str], ages: (u32, u32), km: u32) -> Value {
    json!({
        "display_name": "Someone", "birth_date": birth, "gender": gender,
        "interested_in": wants, "age_min": ages.0, "age_max": ages.1,
        "max_distance_km": km, "bio": "hi", "photos": ["https://img.example/1.jpg"],
    })
}

/// Years ago from today, as a birth date (the day is safely inside the year).
fn born_years_ago(years: i32) -> String {
    let now = geomatch_common::now_ms() / 1000;
    // Whole years as 365.25 days land within a day of the anniversary; go back one more
    // month so the birthday has passed.
    let secs = now - (f64::from(years) * 365.25 * 86_400.0) as i64 - 31 * 86_400;
    let days = secs.div_euclid(86_400);
    // civil_from_days, as in the service.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

/// Creates profile `id` with `body` located at `at`.
async fn person(app: &TestApp, id: &str, body: &Value, at: (f64, f64)) {
    let t = user(app, id);
    let r = put(app, &t, &format!("/v1/profiles/{id}"), body).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
    let r = put(
        app,
        &t,
        &format!("/v1/profiles/{id}/location"),
        &json!({"lat": at.0, "lng": at.1}),
    )
    .await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
}

/// A woman of 28 wanting men 25–35 within `km`.
fn ana(km: u32) -> Value {
    body("woman", &born_years_ago(28), &["man"], (25, 35), km)
}

/// A man of 30 wanting women 20–40 within `km`.
fn man(km: u32) -> Value {
    body("man", &born_years_ago(30), &["woman"], (20, 40), km)
}

async fn recs(app: &TestApp, id: &str, query: &str) -> reqwest::Response {
    app.get_as(
        &user(app, id),
        &format!("/v1/profiles/{id}/recommendations?{query}"),
    )
    .await
}

/// Ids of one page of recommendations (and the page).
async fn rec_ids(app: &TestApp, id: &str, query: &str) -> (Vec<String>, Value) {
    let r = recs(app, id, query).await;
    assert_eq!(r.status(), 200);
    let page = json_of(r).await;
    let ids = page["profiles"]
        .as_array()
        .expect("profiles")
        .iter()
        .map(|p| p["profile_id"].as_str().unwrap().to_owned())
        .collect();
    (ids, page)
}

async fn swipe(app: &TestApp, me: &str, target: &str, action: &str) -> reqwest::Response {
    app.post_as(
        &user(app, me),
        &format!("/v1/profiles/{me}/swipes"),
        Some(&json!({"target_id": target, "action": action})),
    )
    .await
}

async fn match_ids(app: &TestApp, me: &str) -> Vec<String> {
    let r = app
        .get_as(&user(app, me), &format!("/v1/profiles/{me}/matches"))
        .await;
    assert_eq!(r.status(), 200);
    json_of(r).await["matches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["profile_id"].as_str().unwrap().to_owned())
        .collect()
}

/// Fails if any object in `v` has a key that is, or names, a coordinate.
fn assert_no_coordinates(v: &Value) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                assert!(
                    ![
                        "lat",
                        "lng",
                        "latitude",
                        "longitude",
                        "position",
                        "location",
                        "h3_cell"
                    ]
                    .contains(&k.as_str()),
                    "coordinate field {k} in {v}"
                );
                assert_no_coordinates(x);
            }
        }
        Value::Array(a) => a.iter().for_each(assert_no_coordinates),
        _ => {}
    }
}

in_both_modes!(
    a_profile_is_validated_and_read_back_whole_by_its_owner,
    |app| {
        let t = user(&app, "ana");
        let r = put(&app, &t, "/v1/profiles/ana", &ana(10)).await;
        assert_eq!(r.status(), 200);
        let own = json_of(r).await;
        assert_eq!(own["age"], 28);
        assert_eq!(own["premium"], false);
        let r = app.get_as(&t, "/v1/profiles/ana").await;
        assert_eq!(r.status(), 200);
        let got = json_of(r).await;
        for field in [
            "display_name",
            "birth_date",
            "gender",
            "interested_in",
            "age_min",
            "age_max",
            "max_distance_km",
            "bio",
            "photos",
        ] {
            assert_eq!(got[field], ana(10)[field], "{field}");
        }
        // Another person's token may neither read nor write it.
        let bo = user(&app, "bo");
        assert_problem(app.get_as(&bo, "/v1/profiles/ana").await, 403, "forbidden").await;
        assert_problem(
            put(&app, &bo, "/v1/profiles/ana", &ana(10)).await,
            403,
            "forbidden",
        )
        .await;
        assert_problem(
            app.get_as(&t, "/v1/profiles/nobody").await,
            403,
            "forbidden",
        )
        .await;
        let bad = |f: &str, v: Value| {
            let mut b = ana(10);
            b[f] = v;
            b
        };
        for (b, code) in [
            (bad("display_name", json!("")), "invalid_display_name"),
            (bad("birth_date", json!("2001-02-30")), "invalid_birth_date"),
            (
                bad("birth_date", json!(born_years_ago(17))),
                "invalid_birth_date",
            ),
            (bad("interested_in", json!([])), "invalid_interested_in"),
            (bad("age_min", json!(40)), "invalid_age_range"),
            (bad("max_distance_km", json!(161)), "invalid_max_distance"),
            (bad("max_distance_km", json!(0)), "invalid_max_distance"),
            (bad("bio", json!("x".repeat(400))), "invalid_bio"),
            (
                bad("photos", json!(["http://img.example/1.jpg"])),
                "invalid_photos",
            ),
            (
                bad("photos", json!(vec!["https://img.example/1.jpg"; 10])),
                "invalid_photos",
            ),
        ] {
            assert_problem(put(&app, &t, "/v1/profiles/ana", &b).await, 422, code).await;
        }
        assert_problem(
            put(&app, &t, "/v1/profiles/ana", &bad("gender", json!("robot"))).await,
            422,
            "invalid_body",
        )
        .await;
    }
);

in_both_modes!(
    profile_locations_follow_the_drivers_rules,
    |s| {
        s.ingest.burst = 3.0;
        s.ingest.rate_per_s = 0.1;
    },
    |app| {
        let t = user(&app, "p1");
        let path = "/v1/profiles/p1/location";
        let r = put(
            &app,
            &t,
            path,
            &json!({"lat": 37.5, "lng": 127.0, "seq": 5}),
        )
        .await;
        assert_eq!(json_of(r).await, json!({"result": "accepted"}));
        // Ordering: an older sequence number is stale.
        let r = put(
            &app,
            &t,
            path,
            &json!({"lat": 37.5, "lng": 127.0, "seq": 4}),
        )
        .await;
        assert_eq!(json_of(r).await, json!({"result": "stale"}));
        // Validation, with the drivers' codes.
        assert_problem(
            put(&app, &t, path, &json!({"lat": 91.0, "lng": 0.0})).await,
            422,
            "invalid_latitude",
        )
        .await;
        // Only the profile itself (a driver token of the same id is not it).
        assert_problem(
            put(
                &app,
                &app.driver("p1"),
                path,
                &json!({"lat": 1.0, "lng": 1.0}),
            )
            .await,
            403,
            "forbidden",
        )
        .await;
        assert_problem(
            put(
                &app,
                &t,
                "/v1/profiles/p%20x/location",
                &json!({"lat": 1.0, "lng": 1.0}),
            )
            .await,
            400,
            "invalid_profile_id",
        )
        .await;
        // Rate limit: a burst of 3 (a stale report counts; refused input does not).
        let r = put(
            &app,
            &t,
            path,
            &json!({"lat": 37.5, "lng": 127.0, "seq": 9}),
        )
        .await;
        assert_eq!(r.status(), 200);
        let r = put(
            &app,
            &t,
            path,
            &json!({"lat": 37.5, "lng": 127.0, "seq": 10}),
        )
        .await;
        let h = assert_problem(r, 429, "rate_limited").await;
        assert!(h.contains_key("retry-after"));
        // A profile is not a driver: it never appears among nearby drivers.
        let r = app
            .get_as(
                &app.token("svc", Role::Service),
                "/v1/drivers/nearby?lat=37.5&lng=127.0",
            )
            .await;
        assert_eq!(r.status(), 200);
        let v = json_of(r).await;
        assert!(!v.to_string().contains("p1"), "{v}");
    }
);

in_both_modes!(
    recommendations_hold_only_where_both_sides_preferences_hold,
    |app| {
        person(&app, "ana", &ana(10), HOME).await;
        // Fits both ways.
        person(&app, "m-ok", &man(20), east(3.0)).await;
        // He wants men.
        person(
            &app,
            "m-gay",
            &body("man", &born_years_ago(30), &["man"], (20, 40), 20),
            east(3.0),
        )
        .await;
        // A woman: not what Ana wants, though she wants women.
        person(
            &app,
            "w",
            &body("woman", &born_years_ago(30), &["woman"], (20, 40), 20),
            east(3.0),
        )
        .await;
        // 40: outside Ana's 25–35.
        person(
            &app,
            "m-old",
            &body("man", &born_years_ago(40), &["woman"], (20, 50), 20),
            east(3.0),
        )
        .await;
        // Wants 30–40: Ana (28) is outside his range.
        person(
            &app,
            "m-picky",
            &body("man", &born_years_ago(30), &["woman"], (30, 40), 20),
            east(3.0),
        )
        .await;
        // Accepts only 2 km; Ana is 3 km away.
        person(&app, "m-near", &man(2), east(3.0)).await;
        // 12 km: beyond Ana's 10 km.
        person(&app, "m-far", &man(50), east(12.0)).await;
        let (ids, page) = rec_ids(&app, "ana", "").await;
        assert_eq!(ids, vec!["m-ok".to_owned()]);
        assert!(page.get("next_cursor").is_none(), "{page}");
        // Symmetric: he sees her, and the ones who would not want him do not see him.
        assert_eq!(rec_ids(&app, "m-ok", "").await.0, vec!["ana".to_owned()]);
        assert!(!rec_ids(&app, "m-near", "")
            .await
            .0
            .contains(&"ana".to_owned()));
        assert!(!rec_ids(&app, "m-picky", "")
            .await
            .0
            .contains(&"ana".to_owned()));
        // Without a profile or a location there is nothing to recommend from.
        assert_problem(recs(&app, "ghost", "").await, 409, "profile_required").await;
        put(
            &app,
            &user(&app, "nowhere"),
            "/v1/profiles/nowhere",
            &ana(10),
        )
        .await;
        assert_problem(recs(&app, "nowhere", "").await, 409, "location_required").await;
        assert_problem(
            app.get_as(&user(&app, "m-ok"), "/v1/profiles/ana/recommendations")
                .await,
            403,
            "forbidden",
        )
        .await;
    }
);

in_both_modes!(
    swiped_blocked_and_long_unseen_profiles_are_never_recommended,
    geomatch_common::Clock::manual_at_now(),
    |s| {
        s.people.not_seen_for_s = 3;
    },
    |app| {
        person(&app, "ana", &ana(10), HOME).await;
        for (i, id) in ["m1", "m2", "m3", "m4", "m5"].iter().enumerate() {
            person(&app, id, &man(20), east(1.0 + i as f64)).await;
        }
        let all: Vec<String> = ["m1", "m2", "m3", "m4", "m5"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            rec_ids(&app, "ana", "").await.0,
            all,
            "nearest first, never herself"
        );
        assert_eq!(swipe(&app, "ana", "m1", "pass").await.status(), 200);
        assert_eq!(swipe(&app, "ana", "m2", "like").await.status(), 200);
        // Blocked by her, and she blocked by another.
        let r = app
            .post_as(
                &user(&app, "ana"),
                "/v1/profiles/ana/blocks",
                Some(&json!({"target_id": "m3"})),
            )
            .await;
        assert_eq!(r.status(), 204);
        let r = app
            .post_as(
                &user(&app, "m4"),
                "/v1/profiles/m4/blocks",
                Some(&json!({"target_id": "ana"})),
            )
            .await;
        assert_eq!(r.status(), 204);
        assert_eq!(rec_ids(&app, "ana", "").await.0, vec!["m5".to_owned()]);
        assert!(!rec_ids(&app, "m4", "").await.0.contains(&"ana".to_owned()));
        assert!(!rec_ids(&app, "m3", "").await.0.contains(&"ana".to_owned()));
        // A blocked profile cannot be swiped (and the block is not revealed).
        assert_problem(
            swipe(&app, "m4", "ana", "like").await,
            404,
            "profile_not_found",
        )
        .await;
        // Silent for longer than not_seen_for_s: gone; ana keeps reporting.
        app.clock.advance(3_300);
        let t = user(&app, "ana");
        let r = put(
            &app,
            &t,
            "/v1/profiles/ana/location",
            &json!({"lat": HOME.0, "lng": HOME.1}),
        )
        .await;
        assert_eq!(r.status(), 200);
        assert!(rec_ids(&app, "ana", "").await.0.is_empty());
        let t5 = user(&app, "m5");
        let at = east(5.0);
        put(
            &app,
            &t5,
            "/v1/profiles/m5/location",
            &json!({"lat": at.0, "lng": at.1}),
        )
        .await;
        assert_eq!(rec_ids(&app, "ana", "").await.0, vec!["m5".to_owned()]);
    }
);

in_both_modes!(pages_never_repeat_or_skip_a_profile, |app| {
    person(&app, "ana", &ana(50), HOME).await;
    let mut want = HashSet::new();
    for i in 0..45 {
        // Every third shares a spot with others: ties of distance.
        let km = if i % 3 == 0 {
            2.0
        } else {
            1.0 + f64::from(i) * 0.37
        };
        let id = format!("m{i:02}");
        person(&app, &id, &man(80), east(km)).await;
        want.insert(id);
    }
    // Some that must not appear at all.
    person(&app, "w1", &ana(50), east(1.5)).await;
    let mut seen = Vec::new();
    let mut query = "limit=7".to_owned();
    let mut last_km = 0;
    loop {
        let (ids, page) = rec_ids(&app, "ana", &query).await;
        assert!(ids.len() <= 7);
        for p in page["profiles"].as_array().unwrap() {
            let km = p["distance_km"].as_u64().unwrap();
            assert!(km >= last_km, "nearest first");
            last_km = km;
        }
        seen.extend(ids);
        match page["next_cursor"].as_str() {
            Some(c) => query = format!("limit=7&cursor={c}"),
            None => break,
        }
    }
    let unique: HashSet<String> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "no repeats: {seen:?}");
    assert_eq!(unique, want, "no skips");
    assert_problem(recs(&app, "ana", "cursor=zz").await, 400, "invalid_cursor").await;
    assert_problem(recs(&app, "ana", "limit=0").await, 400, "invalid_limit").await;
    assert_problem(recs(&app, "ana", "limit=51").await, 400, "invalid_limit").await;
});

in_both_modes!(
    distances_are_whole_kilometres_and_no_coordinates_leave,
    |app| {
        person(&app, "ana", &ana(10), HOME).await;
        person(&app, "bo", &man(10), east(3.4)).await;
        person(&app, "cy", &man(10), east(0.2)).await;
        let (_, page) = rec_ids(&app, "ana", "").await;
        let kms: Vec<u64> = page["profiles"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["distance_km"].as_u64().unwrap())
            .collect();
        assert_eq!(kms, vec![1, 3], "0.2 km shows as 1, 3.4 km as 3: {page}");
        assert_no_coordinates(&page);
        let r = swipe(&app, "bo", "ana", "superlike").await;
        assert_no_coordinates(&json_of(r).await);
        let r = swipe(&app, "ana", "bo", "like").await;
        assert_no_coordinates(&json_of(r).await);
        let r = app
            .get_as(&user(&app, "bo"), "/v1/profiles/bo/matches")
            .await;
        let v = json_of(r).await;
        assert_eq!(v["matches"].as_array().unwrap().len(), 1);
        assert_no_coordinates(&v);
        swipe(&app, "cy", "ana", "like").await;
        app.client
            .put(format!("{}/v1/profiles/ana/premium", app.address))
            .bearer_auth(app.token("ops", Role::Service))
            .json(&json!({"premium": true}))
            .send()
            .await
            .unwrap();
        let r = app
            .get_as(&user(&app, "ana"), "/v1/profiles/ana/likes")
            .await;
        let v = json_of(r).await;
        assert_eq!(v["likes"].as_array().unwrap().len(), 1, "{v}");
        assert_no_coordinates(&v);
    }
);

in_both_modes!(a_like_from_both_sides_is_one_match_visible_to_both, |app| {
    person(&app, "ana", &ana(10), HOME).await;
    person(&app, "bo", &man(10), east(1.0)).await;
    person(&app, "cy", &man(10), east(2.0)).await;
    let r = json_of(swipe(&app, "ana", "bo", "like").await).await;
    assert_eq!(r["matched"], false);
    assert!(match_ids(&app, "ana").await.is_empty());
    let r = json_of(swipe(&app, "bo", "ana", "like").await).await;
    assert_eq!(
        r,
        json!({"target_id": "ana", "action": "like", "matched": true})
    );
    assert_eq!(match_ids(&app, "ana").await, vec!["bo".to_owned()]);
    assert_eq!(match_ids(&app, "bo").await, vec!["ana".to_owned()]);
    // A second swipe on the same profile is refused, so no second match.
    assert_problem(
        swipe(&app, "bo", "ana", "like").await,
        409,
        "already_swiped",
    )
    .await;
    // A pass answering a like is no match.
    swipe(&app, "cy", "ana", "like").await;
    let r = json_of(swipe(&app, "ana", "cy", "pass").await).await;
    assert_eq!(r["matched"], false);
    assert_eq!(match_ids(&app, "cy").await, Vec::<String>::new());
    assert_problem(
        swipe(&app, "ana", "ana", "like").await,
        422,
        "invalid_target",
    )
    .await;
    assert_problem(
        swipe(&app, "ana", "nobody", "like").await,
        404,
        "profile_not_found",
    )
    .await;
    // Unmatch ends it for both; a second unmatch finds nothing.
    assert_eq!(
        delete(&app, &user(&app, "bo"), "/v1/profiles/bo/matches/ana")
            .await
            .status(),
        204
    );
    assert!(match_ids(&app, "ana").await.is_empty());
    assert!(match_ids(&app, "bo").await.is_empty());
    assert_problem(
        delete(&app, &user(&app, "bo"), "/v1/profiles/bo/matches/ana").await,
        404,
        "match_not_found",
    )
    .await;
});

in_both_modes!(a_block_ends_a_match_and_hides_both_ways, |app| {
    person(&app, "ana", &ana(10), HOME).await;
    person(&app, "bo", &man(10), east(1.0)).await;
    swipe(&app, "ana", "bo", "like").await;
    swipe(&app, "bo", "ana", "like").await;
    assert_eq!(match_ids(&app, "ana").await.len(), 1);
    let r = app
        .post_as(
            &user(&app, "bo"),
            "/v1/profiles/bo/blocks",
            Some(&json!({"target_id": "ana"})),
        )
        .await;
    assert_eq!(r.status(), 204);
    assert!(match_ids(&app, "ana").await.is_empty());
    assert!(match_ids(&app, "bo").await.is_empty());
    let r = app
        .post_as(
            &user(&app, "bo"),
            "/v1/profiles/bo/blocks",
            Some(&json!({"target_id": "bo"})),
        )
        .await;
    assert_problem(r, 422, "invalid_target").await;
});

in_both_modes!(
    everyone_sees_a_likes_count_and_only_premium_sees_who,
    |app| {
        person(&app, "ana", &ana(10), HOME).await;
        person(&app, "bo", &man(10), east(1.0)).await;
        person(&app, "cy", &man(10), east(2.0)).await;
        let t = user(&app, "ana");
        let count = |app: &TestApp, t: String| {
            let app = app.clone_handle();
            async move {
                json_of(app.get_as(&t, "/v1/profiles/ana/likes/count").await).await["count"].clone()
            }
        };
        assert_eq!(count(&app, t.clone()).await, 0);
        swipe(&app, "bo", "ana", "like").await;
        swipe(&app, "cy", "ana", "superlike").await;
        assert_eq!(count(&app, t.clone()).await, 2);
        assert_problem(
            app.get_as(&t, "/v1/profiles/ana/likes").await,
            403,
            "premium_required",
        )
        .await;
        // She cannot make herself premium; a service can.
        let r = put(
            &app,
            &t,
            "/v1/profiles/ana/premium",
            &json!({"premium": true}),
        )
        .await;
        assert_problem(r, 403, "forbidden").await;
        let ops = app.token("ops", Role::Service);
        let r = put(
            &app,
            &ops,
            "/v1/profiles/ana/premium",
            &json!({"premium": true}),
        )
        .await;
        assert_eq!(json_of(r).await["premium"], true);
        // Rewriting her profile keeps the flag.
        put(&app, &t, "/v1/profiles/ana", &ana(10)).await;
        let r = app.get_as(&t, "/v1/profiles/ana/likes").await;
        assert_eq!(r.status(), 200);
        let likes = json_of(r).await;
        let mut got: Vec<(String, bool)> = likes["likes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| {
                (
                    l["profile_id"].as_str().unwrap().to_owned(),
                    l["superlike"].as_bool().unwrap(),
                )
            })
            .collect();
        got.sort();
        assert_eq!(got, vec![("bo".to_owned(), false), ("cy".to_owned(), true)]);
        // Answering a like takes it off the list.
        swipe(&app, "ana", "bo", "pass").await;
        assert_eq!(count(&app, t.clone()).await, 1);
        assert_problem(
            put(
                &app,
                &ops,
                "/v1/profiles/ghost/premium",
                &json!({"premium": true}),
            )
            .await,
            404,
            "profile_not_found",
        )
        .await;
    }
);

in_both_modes!(
    daily_likes_and_superlikes_have_their_own_limits,
    |s| {
        s.people.daily_likes = 2;
        s.people.daily_superlikes = 1;
    },
    |app| {
        person(&app, "ana", &ana(10), HOME).await;
        for i in 0..6 {
            person(&app, &format!("m{i}"), &man(10), east(1.0 + f64::from(i))).await;
        }
        assert_eq!(swipe(&app, "ana", "m0", "like").await.status(), 200);
        assert_eq!(swipe(&app, "ana", "m1", "like").await.status(), 200);
        let r = swipe(&app, "ana", "m2", "like").await;
        let h = assert_problem(r, 429, "daily_like_limit").await;
        let reset: i64 = h["x-ratelimit-reset"].to_str().unwrap().parse().unwrap();
        assert_eq!(reset % 86_400, 0, "the reset is a UTC midnight");
        let now = geomatch_common::now_ms() / 1000;
        assert!(reset > now && reset <= now + 86_400);
        let retry: i64 = h["retry-after"].to_str().unwrap().parse().unwrap();
        assert!(
            (retry - (reset - now)).abs() <= 2,
            "{retry} vs {}",
            reset - now
        );
        // Superlikes have their own budget, passes none.
        assert_eq!(swipe(&app, "ana", "m2", "superlike").await.status(), 200);
        assert_problem(
            swipe(&app, "ana", "m3", "superlike").await,
            429,
            "daily_superlike_limit",
        )
        .await;
        assert_eq!(swipe(&app, "ana", "m3", "pass").await.status(), 200);
        assert_eq!(swipe(&app, "ana", "m4", "pass").await.status(), 200);
        // A refused like is not recorded: he is still recommended.
        assert!(rec_ids(&app, "ana", "").await.0.contains(&"m5".to_owned()));
    }
);

in_both_modes!(people_routes_are_in_the_openapi_document, |app| {
    let doc = json_of(app.get_openapi().await).await;
    for p in [
        "/v1/profiles/{profile_id}",
        "/v1/profiles/{profile_id}/location",
        "/v1/profiles/{profile_id}/recommendations",
        "/v1/profiles/{profile_id}/swipes",
        "/v1/profiles/{profile_id}/matches",
        "/v1/profiles/{profile_id}/matches/{other_id}",
        "/v1/profiles/{profile_id}/blocks",
        "/v1/profiles/{profile_id}/likes",
        "/v1/profiles/{profile_id}/likes/count",
        "/v1/profiles/{profile_id}/premium",
    ] {
        assert!(doc["paths"].get(p).is_some(), "{p} missing");
    }
    assert!(doc["components"]["schemas"]
        .get("RecommendationsPage")
        .is_some());
});

/// Two Redis-mode replicas; each pair likes each other at the same moment, one like through
/// each replica: exactly one match per pair, and exactly one of the two answers says it
/// made it.
#[tokio::test]
async fn concurrent_mutual_likes_through_two_replicas_make_exactly_one_match() {
    let a = spawn_in(Mode::Redis, |_| {}).await;
    let b = spawn_replica(&a, |_| {}).await;
    const PAIRS: usize = 25;
    for i in 0..PAIRS {
        person(&a, &format!("w{i}"), &ana(10), HOME).await;
        person(&b, &format!("m{i}"), &man(10), east(1.0)).await;
    }
    // The replica that did not receive a profile's location sees it too (the follower).
    let mut seen = Vec::new();
    for _ in 0..100 {
        seen = rec_ids(&a, "w0", "limit=50").await.0;
        if seen.len() == PAIRS {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(seen.len(), PAIRS, "replica a sees b's profiles: {seen:?}");
    let mut tasks = Vec::new();
    for i in 0..PAIRS {
        let (a, b) = (a.clone_handle(), b.clone_handle());
        tasks.push(tokio::spawn(async move {
            let (w, m) = (format!("w{i}"), format!("m{i}"));
            let (r1, r2) = tokio::join!(swipe(&a, &w, &m, "like"), swipe(&b, &m, &w, "superlike"));
            (json_of(r1).await, json_of(r2).await)
        }));
    }
    for (i, t) in tasks.into_iter().enumerate() {
        let (r1, r2) = t.await.unwrap();
        let made = [&r1, &r2].iter().filter(|r| r["matched"] == true).count();
        assert_eq!(made, 1, "pair {i}: {r1} {r2}");
        let (w, m) = (format!("w{i}"), format!("m{i}"));
        assert_eq!(match_ids(&a, &w).await, vec![m.clone()]);
        assert_eq!(match_ids(&b, &m).await, vec![w.clone()]);
        assert_eq!(match_ids(&b, &w).await, vec![m]);
    }
}
