//! The embedded default database: created on first start, data kept across
//! restarts, and recovery after a crash (stale `postmaster.pid`, or a server
//! left running by a killed Knock process).
#![cfg(feature = "ssr")]

use std::{os::unix::fs::PermissionsExt, path::Path};

use knock::server::embedded_postgres::EmbeddedPostgres;
use sqlx::{Connection, PgConnection};

/// A temporary data directory the `postgres` user can reach when the tests
/// run as root (the cluster then belongs to that user).
fn data_dir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("knock-pg-")
        .tempdir()
        .expect("tempdir");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    dir
}

async fn connect(cluster: &EmbeddedPostgres) -> PgConnection {
    PgConnection::connect_with(&cluster.connect_options())
        .await
        .expect("connect over the socket")
}

async fn write_note(cluster: &EmbeddedPostgres, note: &str) {
    let mut conn = connect(cluster).await;
    sqlx::query("CREATE TABLE IF NOT EXISTS notes (body text NOT NULL)")
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query("INSERT INTO notes (body) VALUES ($1)")
        .bind(note)
        .execute(&mut conn)
        .await
        .unwrap();
}

async fn read_notes(cluster: &EmbeddedPostgres) -> Vec<String> {
    let mut conn = connect(cluster).await;
    sqlx::query_scalar("SELECT body FROM notes ORDER BY body")
        .fetch_all(&mut conn)
        .await
        .unwrap()
}

fn postmaster_pid(cluster_dir: &Path) -> Option<i32> {
    std::fs::read_to_string(cluster_dir.join("postmaster.pid"))
        .ok()?
        .lines()
        .next()?
        .trim()
        .parse()
        .ok()
}

#[tokio::test]
async fn the_cluster_is_created_and_keeps_its_data_across_a_restart() {
    let dir = data_dir();
    let cluster = EmbeddedPostgres::start(dir.path())
        .await
        .expect("first start creates the cluster");
    assert!(dir.path().join("postgres/PG_VERSION").is_file());
    write_note(&cluster, "kept").await;
    cluster.stop().await.expect("stop");
    assert_eq!(
        postmaster_pid(&dir.path().join("postgres")),
        None,
        "a clean stop leaves no pid file"
    );

    let cluster = EmbeddedPostgres::start(dir.path())
        .await
        .expect("second start");
    assert_eq!(read_notes(&cluster).await, ["kept"]);
    cluster.stop().await.expect("stop");
}

#[tokio::test]
async fn the_cluster_listens_on_no_tcp_port() {
    let dir = data_dir();
    let cluster = EmbeddedPostgres::start(dir.path()).await.expect("start");
    let mut conn = connect(&cluster).await;
    let listen: String = sqlx::query_scalar("SHOW listen_addresses")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(listen, "");
    drop(conn);
    cluster.stop().await.expect("stop");
}

#[tokio::test]
async fn the_cluster_ends_sessions_left_idle_in_a_transaction() {
    let dir = data_dir();
    let cluster = EmbeddedPostgres::start(dir.path()).await.expect("start");
    let mut conn = connect(&cluster).await;
    let timeout: String = sqlx::query_scalar("SHOW idle_in_transaction_session_timeout")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(timeout, "1min");
    drop(conn);
    cluster.stop().await.expect("stop");
}

#[tokio::test]
async fn a_stale_pid_file_from_a_dead_process_is_recovered_from() {
    let dir = data_dir();
    let cluster = EmbeddedPostgres::start(dir.path()).await.expect("start");
    write_note(&cluster, "before the crash").await;
    let cluster_dir = cluster.cluster_dir().to_path_buf();
    cluster.stop().await.expect("stop");

    // A pid file naming a process that has exited, as a crash leaves it.
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    let dead_pid = gone.id();
    gone.wait().unwrap();
    std::fs::write(
        cluster_dir.join("postmaster.pid"),
        format!("{dead_pid}\n{}\n", cluster_dir.display()),
    )
    .unwrap();

    let cluster = EmbeddedPostgres::start(dir.path())
        .await
        .expect("start after the crash");
    assert_eq!(read_notes(&cluster).await, ["before the crash"]);
    cluster.stop().await.expect("stop");
}

#[tokio::test]
async fn a_pid_file_naming_a_live_process_that_is_not_postgres_is_recovered_from() {
    let dir = data_dir();
    let cluster = EmbeddedPostgres::start(dir.path()).await.expect("start");
    let cluster_dir = cluster.cluster_dir().to_path_buf();
    cluster.stop().await.expect("stop");

    // After a reboot, the old pid can belong to any other process: this one.
    std::fs::write(
        cluster_dir.join("postmaster.pid"),
        format!("{}\n", std::process::id()),
    )
    .unwrap();
    let cluster = EmbeddedPostgres::start(dir.path())
        .await
        .expect("start despite the foreign pid");
    connect(&cluster).await;
    cluster.stop().await.expect("stop");
}

#[tokio::test]
async fn a_killed_server_is_restarted_with_its_committed_data() {
    let dir = data_dir();
    let cluster = EmbeddedPostgres::start(dir.path()).await.expect("start");
    write_note(&cluster, "committed").await;
    let cluster_dir = cluster.cluster_dir().to_path_buf();
    let pid = postmaster_pid(&cluster_dir).expect("a running server has a pid file");
    drop(cluster);

    // SIGKILL: no shutdown checkpoint, the pid file stays behind.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    while Path::new(&format!("/proc/{pid}")).exists() {
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(
        cluster_dir.join("postmaster.pid").exists(),
        "the crash leaves the pid file"
    );
    // The killed server's backends notice and exit on their own; give them a moment.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;

    let cluster = EmbeddedPostgres::start(dir.path())
        .await
        .expect("start after SIGKILL");
    assert_eq!(read_notes(&cluster).await, ["committed"]);
    cluster.stop().await.expect("stop");
}

#[tokio::test]
async fn a_server_left_running_by_a_killed_knock_is_adopted() {
    let dir = data_dir();
    let first = EmbeddedPostgres::start(dir.path()).await.expect("start");
    write_note(&first, "still here").await;
    let pid = postmaster_pid(first.cluster_dir());
    // Knock dies without stopping its cluster.
    drop(first);

    let second = EmbeddedPostgres::start(dir.path())
        .await
        .expect("start adopts the running server");
    assert_eq!(
        postmaster_pid(second.cluster_dir()),
        pid,
        "the same server, not a second one"
    );
    assert_eq!(read_notes(&second).await, ["still here"]);
    second.stop().await.expect("stop");
}

/// The pool hands out only connections that work: one left idle while the
/// database restarted is checked, found dead and replaced, so the first
/// query after the restart succeeds.
#[tokio::test]
async fn the_pool_replaces_a_connection_that_a_database_restart_closed() {
    use figment::providers::Serialized;
    use knock::server::{
        config::Settings,
        database::{Database, PING_IF_IDLE_FOR},
    };
    let dir = data_dir();
    let settings = Settings::from_figment(
        Settings::defaults().merge(Serialized::default("knock.data_dir", dir.path())),
    )
    .expect("settings");
    let mut database = Database::connect(&settings.knock).await.expect("connect");
    let one: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&database.pool)
        .await
        .unwrap();
    assert_eq!(one, 1);

    let cluster = database.embedded.take().expect("the embedded cluster");
    cluster.stop().await.expect("stop");
    database.embedded = Some(EmbeddedPostgres::start(dir.path()).await.expect("restart"));
    tokio::time::sleep(PING_IF_IDLE_FOR).await;

    let two: i32 = sqlx::query_scalar("SELECT 2")
        .fetch_one(&database.pool)
        .await
        .expect("the first query after the restart");
    assert_eq!(two, 2);
    database.shutdown().await;
}
