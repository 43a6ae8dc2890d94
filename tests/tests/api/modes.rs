//! Running one test body in both modes: embedded, and Redis mode against the harness's
//! own redis-server. Each expansion site imports `spawn_in` and `Mode`; a manual clock as a second argument runs the body on it (`app.clock.advance(ms)` moves time).

/// Runs `$body` as two tests, `embedded` and `redis`, in a module named after the rule.
macro_rules! in_both_modes {
    ($name:ident, |$app:ident| $body:block) => {
        in_both_modes!($name, |_s| {}, |$app| $body);
    };
    ($name:ident, |$s:ident| $tune:block, |$app:ident| $body:block) => {
        in_both_modes!($name, geomatch_common::Clock::System, |$s| $tune, |$app| {
            $body
        });
    };
    // On `$clock` (a manual clock: the body moves time with `app.clock.advance(ms)`).
    ($name:ident, $clock:expr, |$s:ident| $tune:block, |$app:ident| $body:block) => {
        mod $name {
            use super::*;
            async fn run(mode: Mode) {
                let $app =
                    geomatch_e2e::spawn_at(mode, $clock, |$s: &mut geomatch_common::Settings| {
                        $tune
                    })
                    .await;
                $body
            }
            #[tokio::test]
            async fn embedded() {
                run(Mode::Embedded).await
            }
            #[tokio::test]
            async fn redis() {
                run(Mode::Redis).await
            }
        }
    };
}

/// One test body run twice: embedded, and in Redis mode against the harness's own
/// redis-server.
macro_rules! both_modes {
    (async fn $name:ident($mode:ident: Mode) $body:block) => {
        mod $name {
            use super::*;
            async fn run($mode: Mode) $body
            #[tokio::test]
            async fn embedded() {
                run(Mode::Embedded).await
            }
            #[tokio::test]
            async fn redis() {
                run(Mode::Redis).await
            }
        }
    };
}
