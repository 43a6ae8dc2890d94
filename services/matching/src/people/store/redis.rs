//! Redis store (Redis mode): profiles, swipes, matches, blocks and counters live in Redis,
//! shared by every matching replica.
//!
//! # Keys and Redis Cluster
//! A person's own data carries the person's hash tag, a pair's state the pair's:
//! - `gm:{p:<id>}:profile` hash (`json`, `premium`); `…:swiped` set (everyone this person
//!   swiped: the exclusion, tested in bulk with `SMISMEMBER`); `…:hidden` set (blocked
//!   either way); `…:likers` sorted set (liked this person, not swiped back; by time) and
//!   `…:superlikers` set; `…:matches` sorted set (by time); `…:quota:<yyyymmdd>` hash
//!   (likes and superlikes used that UTC day; expires after two days).
//! - `gm:{pair:<a>|<b>}` hash, `a < b`: each side's action on the other, `matched`,
//!   `blocked`. This hash is the truth of a match.
//!
//! Why not one tag for everything: that would put all of people nearby in one Cluster
//! slot, one node's worth of swipes. Why not tag by person only: the reciprocal check needs
//! both people's swipes, which then sit in two slots, and a script may touch one. So a
//! swipe is three single-slot steps:
//! 1. `LUA_SELF` on the swiper's slot: refuses a blocked or repeated target, checks and
//!    counts the daily limit, records the swipe (exclusion set) and clears the target
//!    from the swiper's likes-received.
//! 2. `LUA_PAIR` on the pair's slot: records the action and, when it is a like answering a
//!    like, sets `matched` with `HSETNX`. Two replicas liking at once are serialised here:
//!    exactly one of them sees the other's like and creates the match.
//! 3. Projections: the match into both `matches` sets (idempotent `ZADD`), or the like into
//!    the target's likes-received by `LUA_LIKED` on the target's slot, which adds it only if
//!    the target has not swiped back or blocked meanwhile (both of which also run on that
//!    slot), so a late projection never resurrects an answered like.
//!
//! A process dying between steps can lose a like that was counted (1 done, 2 not) or leave
//! a match out of the lists (2 done, 3 not); matches are listed only when the pair hash
//! says `matched`, so a list never shows a match that does not exist.

use std::collections::HashMap;
use std::sync::Arc;

use geomatch_common::redis::Redis;
use geomatch_index::{EntryId, Filter, Index, Kind, PageKey};
use redis::{Script, Value};

use crate::people::cursor;
use crate::people::date::ymd_of;
use crate::people::error::PeopleError;
use crate::people::model::{
    distance_km, position_of, Action, Ctx, Liked, Limits, Matched, Recommendation,
    RecommendationsPage, SwipeVerdict,
};
use crate::people::profile::Profile;

/// Candidates asked of the index per recommendations round, at most (each round is one
/// Redis round trip for the whole batch).
const MAX_BATCH: usize = 1_000;

/// Daily counters outlive their day by a day (time zones of clients do not matter: days
/// are UTC).
const QUOTA_TTL_S: u64 = 2 * 86_400;

const LUA_SELF: &str = r#"
-- KEYS: swiped, hidden, likers, superlikers, quota; ARGV: target, action, like_limit, superlike_limit, quota_ttl_s
local target, action = ARGV[1], ARGV[2]
if redis.call('SISMEMBER', KEYS[2], target) == 1 then return 'hidden' end
if redis.call('SISMEMBER', KEYS[1], target) == 1 then return 'already' end
if action ~= 'pass' then
  local limit = tonumber(action == 'like' and ARGV[3] or ARGV[4])
  local used = tonumber(redis.call('HGET', KEYS[5], action) or '0')
  if used >= limit then return 'limited' end
  redis.call('HINCRBY', KEYS[5], action, 1)
  redis.call('EXPIRE', KEYS[5], ARGV[5])
end
redis.call('SADD', KEYS[1], target)
redis.call('ZREM', KEYS[3], target)
redis.call('SREM', KEYS[4], target)
return 'ok'
"#;

const LUA_PAIR: &str = r#"
-- KEYS: pair; ARGV: swiper, target, action, now_ms
if redis.call('HEXISTS', KEYS[1], 'blocked') == 1 then return {'hidden', ''} end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
local other = redis.call('HGET', KEYS[1], ARGV[2]) or ''
if ARGV[3] ~= 'pass' and (other == 'like' or other == 'superlike') then
  if redis.call('HSETNX', KEYS[1], 'matched', ARGV[4]) == 1 then return {'matched', other} end
end
return {'recorded', other}
"#;

const LUA_LIKED: &str = r#"
-- KEYS: target's swiped, hidden, likers, superlikers; ARGV: liker, now_ms, superlike 1|0
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then return 0 end
if redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 1 then return 0 end
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
if ARGV[3] == '1' then redis.call('SADD', KEYS[4], ARGV[1]) end
return 1
"#;

const LUA_BLOCK: &str = r#"
-- KEYS: pair
redis.call('HSET', KEYS[1], 'blocked', '1')
redis.call('HDEL', KEYS[1], 'matched')
return 1
"#;

fn key(id: &str, what: &str) -> String {
    format!("gm:{{p:{id}}}:{what}")
}

fn pair_key(a: &str, b: &str) -> String {
    let (lo, hi) = if a < b { (a, b) } else { (b, a) };
    format!("gm:{{pair:{lo}|{hi}}}")
}

fn quota_key(id: &str, day: u32) -> String {
    key(id, &format!("quota:{day}"))
}

/// People nearby in Redis. See [`super::PeopleStore`] for the contract.
pub struct RedisStore {
    redis: Redis,
    own: Script,
    pair: Script,
    liked: Script,
    block: Script,
}

fn unavailable(e: impl std::fmt::Display) -> PeopleError {
    PeopleError::Unavailable(e.to_string())
}

fn parse_profile(json: Option<String>, premium: Option<String>) -> Option<Profile> {
    let mut p: Profile = serde_json::from_str(&json?).ok()?;
    p.premium = premium.as_deref() == Some("1");
    Some(p)
}

impl RedisStore {
    /// On the process's shared Redis handle.
    pub fn new(redis: Redis) -> Self {
        RedisStore {
            redis,
            own: Script::new(LUA_SELF),
            pair: Script::new(LUA_PAIR),
            liked: Script::new(LUA_LIKED),
            block: Script::new(LUA_BLOCK),
        }
    }

    async fn call<T, F, Fut>(&self, f: F) -> Result<T, PeopleError>
    where
        F: FnOnce(redis::aio::MultiplexedConnection) -> Fut,
        Fut: std::future::Future<Output = redis::RedisResult<T>>,
    {
        // The shared timeout discipline: an error within 800 ms, answered as 503.
        let (result, _) = geomatch_common::redis::call(&self.redis, f).await;
        result.map_err(unavailable)
    }

    pub(super) async fn put_profile(
        &self,
        id: &EntryId,
        profile: &Profile,
    ) -> Result<Profile, PeopleError> {
        let json = serde_json::to_string(profile).map_err(unavailable)?;
        let k = key(id.as_str(), "profile");
        let (premium,): (Option<String>,) = self
            .call(|mut c| async move {
                redis::pipe()
                    .cmd("HSET")
                    .arg(&k)
                    .arg("json")
                    .arg(json)
                    .ignore()
                    .cmd("HGET")
                    .arg(&k)
                    .arg("premium")
                    .query_async(&mut c)
                    .await
            })
            .await?;
        let mut p = profile.clone();
        p.premium = premium.as_deref() == Some("1");
        Ok(p)
    }

    pub(super) async fn profile(&self, id: &EntryId) -> Result<Option<Profile>, PeopleError> {
        let k = key(id.as_str(), "profile");
        let (json, premium): (Option<String>, Option<String>) = self
            .call(|mut c| async move {
                redis::cmd("HMGET")
                    .arg(&k)
                    .arg("json")
                    .arg("premium")
                    .query_async(&mut c)
                    .await
            })
            .await?;
        Ok(parse_profile(json, premium))
    }

    pub(super) async fn set_premium(
        &self,
        id: &EntryId,
        premium: bool,
    ) -> Result<Option<Profile>, PeopleError> {
        let k = key(id.as_str(), "profile");
        let flag = if premium { "1" } else { "0" };
        let done: i64 = self
            .call(|mut c| async move {
                // Only an existing profile: HSET on a missing key would create half a one.
                redis::Script::new(
                    "if redis.call('HEXISTS', KEYS[1], 'json') == 0 then return 0 end \
                     redis.call('HSET', KEYS[1], 'premium', ARGV[1]) return 1",
                )
                .key(&k)
                .arg(flag)
                .invoke_async(&mut c)
                .await
            })
            .await?;
        if done == 0 {
            return Ok(None);
        }
        self.profile(id).await
    }

    /// Rounds of index candidates (fresh, not oneself), each screened in one Redis round
    /// trip ([`Self::screen`]), then the preferences; rounds double in size until the page
    /// is full, the candidates run out, or `ctx.max_examined` were looked at.
    pub(super) async fn recommend(
        &self,
        index: &Index,
        me: &EntryId,
        mut after: Option<PageKey>,
        ctx: &Ctx,
    ) -> Result<RecommendationsPage, PeopleError> {
        let mine = self
            .profile(me)
            .await?
            .ok_or_else(|| PeopleError::ProfileRequired(me.to_string()))?
            .prefs();
        let at = position_of(index, me)?;
        let filter = Filter::any().kind(Kind::Profile);
        let mut profiles = Vec::with_capacity(ctx.limit);
        let mut k = (ctx.limit * 2).min(MAX_BATCH);
        let mut examined = 0;
        loop {
            let page =
                index.nearest_page(&at, k, &filter, Some(mine.max_m()), after.as_ref(), |n| {
                    n.entry.updated_at_ms >= ctx.fresh_since_ms && n.entry.id != *me
                });
            examined += page.len();
            let exhausted = page.len() < k;
            let ids: Vec<EntryId> = page.iter().map(|(n, _)| n.entry.id.clone()).collect();
            let screened = self.screen(me, &ids).await?;
            for ((n, key), them) in page.into_iter().zip(screened) {
                if let Some(them) = them {
                    if mine.mutual(&them.prefs(), n.distance_m, ctx.today) {
                        profiles.push(Recommendation {
                            card: them.card(ctx.today),
                            distance_km: distance_km(n.distance_m),
                        });
                    }
                }
                after = Some(key);
                if profiles.len() == ctx.limit {
                    return Ok(RecommendationsPage {
                        profiles,
                        next_cursor: after.as_ref().map(cursor::encode),
                    });
                }
            }
            if exhausted {
                return Ok(RecommendationsPage {
                    profiles,
                    next_cursor: None,
                });
            }
            if examined >= ctx.max_examined {
                return Ok(RecommendationsPage {
                    profiles,
                    next_cursor: after.as_ref().map(cursor::encode),
                });
            }
            k = (k * 2).min(MAX_BATCH);
        }
    }

    /// For each candidate, its profile, or `None` when the viewer swiped it, either blocked
    /// the other, or it has no profile: one round trip for the whole batch.
    async fn screen(
        &self,
        me: &EntryId,
        ids: &[EntryId],
    ) -> Result<Vec<Option<Profile>>, PeopleError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        let names: Vec<&str> = ids.iter().map(EntryId::as_str).collect();
        pipe.cmd("SMISMEMBER")
            .arg(key(me.as_str(), "swiped"))
            .arg(&names);
        pipe.cmd("SMISMEMBER")
            .arg(key(me.as_str(), "hidden"))
            .arg(&names);
        for id in &names {
            pipe.cmd("HMGET")
                .arg(key(id, "profile"))
                .arg("json")
                .arg("premium");
        }
        let replies: Vec<Value> = self
            .call(|mut c| async move { pipe.query_async(&mut c).await })
            .await?;
        let mut it = replies.into_iter();
        let flags = |v: Option<Value>| -> Result<Vec<i64>, PeopleError> {
            redis::from_redis_value(v.unwrap_or(Value::Nil)).map_err(unavailable)
        };
        let swiped = flags(it.next())?;
        let hidden = flags(it.next())?;
        let mut out = Vec::with_capacity(ids.len());
        for i in 0..ids.len() {
            let (json, premium): (Option<String>, Option<String>) =
                redis::from_redis_value(it.next().unwrap_or(Value::Nil)).map_err(unavailable)?;
            let excluded = swiped.get(i) == Some(&1) || hidden.get(i) == Some(&1);
            out.push(if excluded {
                None
            } else {
                parse_profile(json, premium)
            });
        }
        Ok(out)
    }

    pub(super) async fn swipe(
        &self,
        me: &EntryId,
        target: &EntryId,
        action: Action,
        now_ms: i64,
        limits: Limits,
    ) -> Result<SwipeVerdict, PeopleError> {
        let (m, t) = (me.as_str(), target.as_str());
        let day = ymd_of(now_ms);
        let mut own = self.own.prepare_invoke();
        own.key(key(m, "swiped"))
            .key(key(m, "hidden"))
            .key(key(m, "likers"))
            .key(key(m, "superlikers"))
            .key(quota_key(m, day))
            .arg(t)
            .arg(action.as_str())
            .arg(limits.likes)
            .arg(limits.superlikes)
            .arg(QUOTA_TTL_S);
        let first: String = self
            .call(|mut c| async move { own.invoke_async(&mut c).await })
            .await?;
        match first.as_str() {
            "ok" => {}
            "hidden" => return Ok(SwipeVerdict::Hidden),
            "already" => return Ok(SwipeVerdict::Already),
            "limited" => return Ok(SwipeVerdict::Limited(action)),
            other => return Err(unavailable(format!("unexpected reply {other:?}"))),
        }
        let mut pair = self.pair.prepare_invoke();
        pair.key(pair_key(m, t))
            .arg(m)
            .arg(t)
            .arg(action.as_str())
            .arg(now_ms);
        let (outcome, other): (String, String) = self
            .call(|mut c| async move { pair.invoke_async(&mut c).await })
            .await?;
        match outcome.as_str() {
            "hidden" => Ok(SwipeVerdict::Hidden),
            "matched" => {
                let mut pipe = redis::pipe();
                pipe.cmd("ZADD")
                    .arg(key(m, "matches"))
                    .arg(now_ms)
                    .arg(t)
                    .ignore();
                pipe.cmd("ZADD")
                    .arg(key(t, "matches"))
                    .arg(now_ms)
                    .arg(m)
                    .ignore();
                pipe.cmd("ZREM").arg(key(t, "likers")).arg(m).ignore();
                pipe.cmd("SREM").arg(key(t, "superlikers")).arg(m).ignore();
                self.call(|mut c| async move { pipe.query_async::<()>(&mut c).await })
                    .await?;
                Ok(SwipeVerdict::Matched)
            }
            _ if action.is_like() && other.is_empty() => {
                let mut liked = self.liked.prepare_invoke();
                liked
                    .key(key(t, "swiped"))
                    .key(key(t, "hidden"))
                    .key(key(t, "likers"))
                    .key(key(t, "superlikers"))
                    .arg(m)
                    .arg(now_ms)
                    .arg(if action == Action::Superlike {
                        "1"
                    } else {
                        "0"
                    });
                let _: i64 = self
                    .call(|mut c| async move { liked.invoke_async(&mut c).await })
                    .await?;
                Ok(SwipeVerdict::Recorded)
            }
            _ => Ok(SwipeVerdict::Recorded),
        }
    }

    /// Profiles of `ids` (missing ones left out), with each id's position kept.
    async fn profiles_of(&self, ids: &[String]) -> Result<HashMap<String, Profile>, PeopleError> {
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.cmd("HMGET")
                .arg(key(id, "profile"))
                .arg("json")
                .arg("premium");
        }
        let rows: Vec<(Option<String>, Option<String>)> = self
            .call(|mut c| async move { pipe.query_async(&mut c).await })
            .await?;
        Ok(ids
            .iter()
            .zip(rows)
            .filter_map(|(id, (j, p))| Some((id.clone(), parse_profile(j, p)?)))
            .collect())
    }

    /// The newest `max` members of the sorted set `k`, with their scores (times).
    async fn newest(&self, k: &str, max: usize) -> Result<Vec<(String, i64)>, PeopleError> {
        self.call(|mut c| async move {
            redis::cmd("ZREVRANGE")
                .arg(k)
                .arg(0)
                .arg(max.saturating_sub(1))
                .arg("WITHSCORES")
                .query_async(&mut c)
                .await
        })
        .await
    }

    pub(super) async fn matches(
        &self,
        me: &EntryId,
        max: usize,
    ) -> Result<Vec<Matched>, PeopleError> {
        let k = key(me.as_str(), "matches");
        let listed = self.newest(&k, max).await?;
        let ids: Vec<String> = listed.iter().map(|(id, _)| id.clone()).collect();
        // The pair hash is the truth: a match ended meanwhile is not listed.
        let mut pipe = redis::pipe();
        for id in &ids {
            pipe.cmd("HEXISTS")
                .arg(pair_key(me.as_str(), id))
                .arg("matched");
        }
        let live: Vec<bool> = if ids.is_empty() {
            Vec::new()
        } else {
            self.call(|mut c| async move { pipe.query_async(&mut c).await })
                .await?
        };
        let mut profiles = self.profiles_of(&ids).await?;
        Ok(listed
            .into_iter()
            .zip(live)
            .filter(|(_, live)| *live)
            .filter_map(|((id, at), _)| Some((Arc::new(profiles.remove(&id)?), at)))
            .collect())
    }

    pub(super) async fn unmatch(&self, me: &EntryId, other: &EntryId) -> Result<bool, PeopleError> {
        let pk = pair_key(me.as_str(), other.as_str());
        let removed: i64 = self
            .call(|mut c| async move {
                redis::cmd("HDEL")
                    .arg(&pk)
                    .arg("matched")
                    .query_async(&mut c)
                    .await
            })
            .await?;
        let mut pipe = redis::pipe();
        pipe.cmd("ZREM")
            .arg(key(me.as_str(), "matches"))
            .arg(other.as_str())
            .ignore();
        pipe.cmd("ZREM")
            .arg(key(other.as_str(), "matches"))
            .arg(me.as_str())
            .ignore();
        self.call(|mut c| async move { pipe.query_async::<()>(&mut c).await })
            .await?;
        Ok(removed == 1)
    }

    pub(super) async fn block(&self, me: &EntryId, other: &EntryId) -> Result<(), PeopleError> {
        let (m, o) = (me.as_str(), other.as_str());
        let mut inv = self.block.prepare_invoke();
        inv.key(pair_key(m, o));
        let _: i64 = self
            .call(|mut c| async move { inv.invoke_async(&mut c).await })
            .await?;
        let mut pipe = redis::pipe();
        for (a, b) in [(m, o), (o, m)] {
            pipe.cmd("SADD").arg(key(a, "hidden")).arg(b).ignore();
            pipe.cmd("ZREM").arg(key(a, "matches")).arg(b).ignore();
            pipe.cmd("ZREM").arg(key(a, "likers")).arg(b).ignore();
            pipe.cmd("SREM").arg(key(a, "superlikers")).arg(b).ignore();
        }
        self.call(|mut c| async move { pipe.query_async::<()>(&mut c).await })
            .await
    }

    pub(super) async fn likes_count(&self, me: &EntryId) -> Result<usize, PeopleError> {
        let k = key(me.as_str(), "likers");
        self.call(|mut c| async move { redis::cmd("ZCARD").arg(&k).query_async(&mut c).await })
            .await
    }

    pub(super) async fn likes(&self, me: &EntryId, max: usize) -> Result<Vec<Liked>, PeopleError> {
        let k = key(me.as_str(), "likers");
        let listed = self.newest(&k, max).await?;
        if listed.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<String> = listed.iter().map(|(id, _)| id.clone()).collect();
        let sk = key(me.as_str(), "superlikers");
        let ids2 = ids.clone();
        let sup: Vec<i64> = self
            .call(|mut c| async move {
                redis::cmd("SMISMEMBER")
                    .arg(&sk)
                    .arg(&ids2)
                    .query_async(&mut c)
                    .await
            })
            .await?;
        let mut profiles = self.profiles_of(&ids).await?;
        Ok(listed
            .into_iter()
            .zip(sup)
            .filter_map(|((id, at), s)| Some((Arc::new(profiles.remove(&id)?), at, s == 1)))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pair_has_one_key_whoever_asks_and_a_person_one_tag() {
        assert_eq!(pair_key("b", "a"), pair_key("a", "b"));
        assert_eq!(pair_key("a", "b"), "gm:{pair:a|b}");
        for what in [
            "swiped",
            "hidden",
            "likers",
            "superlikers",
            "matches",
            "profile",
        ] {
            assert!(key("p1", what).starts_with("gm:{p:p1}:"));
        }
        assert!(quota_key("p1", 20_261_121).starts_with("gm:{p:p1}:"));
    }
}
