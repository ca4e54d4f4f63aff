//! The load generator itself is checked: a short run against a real
//! server on a real database reports every message delivered exactly once,
//! in order, to both members of its DM.
#![cfg(feature = "load")]

use std::{sync::Arc, time::Duration};

use figment::providers::Serialized;
use knock::{
    auth::server::SessionKeys,
    load::{self, Config, Target},
    server::{config::Settings, startup::Application},
};
use sqlx::{
    ConnectOptions,
    postgres::{PgConnectOptions, PgPoolOptions},
};
use tokio::sync::oneshot;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

#[sqlx::test]
async fn a_short_run_loses_doubles_and_reorders_nothing(
    _: PgPoolOptions,
    options: PgConnectOptions,
) {
    let dir = tempfile::tempdir().unwrap();
    let settings = Settings::from_figment(
        Settings::defaults()
            .merge(Serialized::default(
                "knock.database_url",
                options.to_url_lossy().to_string(),
            ))
            .merge(Serialized::default("knock.data_dir", dir.path()))
            // Many users' worth of traffic from a few.
            .merge(Serialized::default("knock.messages_per_second", 1_000_000))
            .merge(Serialized::default("knock.message_burst", 1_000_000))
            .merge(Serialized::default("knock.max_streams_per_user", 1_000_000))
            .merge(Serialized::default(
                "knock.clerk.webhook_signing_secret",
                SECRET,
            ))
            .merge(Serialized::default("leptos.site-addr", "127.0.0.1:0")),
    )
    .unwrap();
    let app = Application::build(settings).await.expect("start");
    let base = format!("http://{}", app.local_addr());
    let (_stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(app.run_until(async move {
        let _ = stopped.await;
    }));
    let target = Target {
        base,
        keys: Arc::new(SessionKeys::dev_blocking(&dir.path().join("dev-session-key.pem")).unwrap()),
        webhook_secret: SECRET.into(),
    };
    let config = Config {
        users: 8,
        senders: 6,
        rate: None,
        duration: Duration::from_secs(3),
        max_messages: 300,
    };
    let report = load::run(&target, &config).await.expect("a run");
    assert!(report.sent > 0, "{report:?}");
    assert!(
        report.sent <= 300,
        "the budget bounds the run: {}",
        report.sent
    );
    assert_eq!(
        (report.errors, report.lost, report.doubled, report.reordered),
        (0, 0, 0, 0),
        "{report:?}"
    );
    // Every message reached the other member: one delivery each.
    assert_eq!(report.delivery_latency.len(), report.sent);
    assert_eq!(report.send_latency.len(), report.sent);

    // The users came through the webhook, processed by the worker.
    let pool = PgPoolOptions::new().connect_with(options).await.unwrap();
    let webhooks: i64 =
        sqlx::query_scalar("SELECT count(*) FROM webhook_events WHERE event_type = 'user.created'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(webhooks, 8);
}
