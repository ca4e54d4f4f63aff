//! `knock-load`: starts a Knock server (the release binary by default) on
//! its own embedded database (or `DATABASE_URL`) and drives chat traffic
//! through it over HTTP and SSE on loopback; prints the figures of
//! `docs/benchmarks.md` as Markdown.
//!
//! ```text
//! knock-load [--server target/release/knock] [--users 64] [--senders 2,64,256]
//!            [--rate MSGS_PER_S] [--duration 10] [--max-messages 200000]
//!            [--streams 1000,10000] [--fanout 10000] [--render 200]
//!            [--search-messages 100000] [--searches 200] [--pgbench]
//!            [--check]
//! ```
//! `--check` exits with 1 if any message was lost, doubled, reordered or
//! refused. Every phase stops by itself: sending at `--duration` seconds or
//! `--max-messages`, waiting for deliveries after 15 s.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    process::{Child, Command, ExitCode, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use knock::{
    auth::server::SessionKeys,
    load::{self, Config, EventStream, Target},
};

/// The command line, `--name value` pairs and flags.
struct Args(HashMap<String, String>);

impl Args {
    fn parse() -> Result<Self, String> {
        let mut map = HashMap::new();
        let mut args = std::env::args().skip(1).peekable();
        while let Some(arg) = args.next() {
            let name = arg
                .strip_prefix("--")
                .ok_or_else(|| format!("unexpected argument {arg}"))?
                .to_owned();
            let value = match args.peek() {
                Some(next) if !next.starts_with("--") => args.next().unwrap_or_default(),
                _ => String::new(),
            };
            map.insert(name, value);
        }
        Ok(Self(map))
    }

    fn flag(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }

    fn get<T: std::str::FromStr>(&self, name: &str, default: T) -> Result<T, String> {
        match self.0.get(name) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| format!("--{name}: cannot read {v:?}")),
        }
    }

    fn list(&self, name: &str, default: &[usize]) -> Result<Vec<usize>, String> {
        match self.0.get(name) {
            None => Ok(default.to_vec()),
            Some(v) => v
                .split(',')
                .map(|n| {
                    n.trim()
                        .parse()
                        .map_err(|_| format!("--{name}: cannot read {v:?}"))
                })
                .collect(),
        }
    }
}

/// The server under load; stopped (SIGTERM) and cleaned up when dropped.
struct Server {
    child: Child,
    base: String,
    data_dir: PathBuf,
}

impl Server {
    fn start(binary: &Path, secret: &str) -> Result<(Self, Arc<SessionKeys>), String> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let data_dir = std::env::temp_dir().join(format!(
            "knock-load-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        ));
        std::fs::create_dir_all(&data_dir).map_err(|e| e.to_string())?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&data_dir, std::fs::Permissions::from_mode(0o755))
            .map_err(|e| e.to_string())?;
        let keys = SessionKeys::dev_blocking(&data_dir.join("dev-session-key.pem"))
            .map_err(|e| e.to_string())?;
        let child = Command::new(binary)
            .env("LEPTOS_SITE_ADDR", format!("127.0.0.1:{port}"))
            .env("KNOCK_DATA_DIR", &data_dir)
            .env("CLERK_WEBHOOK_SIGNING_SECRET", secret)
            .env("KNOCK_INVITES_PER_MINUTE", "100000")
            // The benchmark is many users' worth of traffic from a few.
            .env("KNOCK_MESSAGES_PER_SECOND", "1000000")
            .env("KNOCK_MESSAGE_BURST", "1000000")
            .env("KNOCK_MAX_STREAMS_PER_USER", "1000000")
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("{}: {e}", binary.display()))?;
        Ok((
            Self {
                child,
                base: format!("http://127.0.0.1:{port}"),
                data_dir,
            },
            Arc::new(keys),
        ))
    }

    async fn ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("the server exited: {status}"));
            }
            if let Ok(r) = reqwest::get(format!("{}/healthz", self.base)).await
                && r.status().is_success()
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Err("the server did not become healthy".into())
    }

    /// The server's resident memory, in KiB (`VmRSS`).
    fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

fn ms(histogram: &Histogram<u64>, quantile: f64) -> String {
    if histogram.is_empty() {
        return "–".into();
    }
    format!(
        "{:.1}",
        histogram.value_at_quantile(quantile) as f64 / 1000.0
    )
}

fn row(histogram: &Histogram<u64>) -> String {
    format!(
        "{} | {} | {} | {}",
        ms(histogram, 0.5),
        ms(histogram, 0.95),
        ms(histogram, 0.99),
        ms(histogram, 1.0)
    )
}

/// The most pgbench clients: the embedded cluster allows 100 connections,
/// and the server's pool and the backends of the previous pgbench run
/// (still exiting) hold some of them (80 failed with "too many clients").
const PGBENCH_MAX_CLIENTS: usize = 64;

/// `pgbench` on a one-row insert into a messages-like table, with the
/// server's own durability settings: transactions per second.
fn pgbench(data_dir: &Path, clients: usize, seconds: u64) -> Result<f64, String> {
    let bin = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|e| e.to_string())?
        .filter_map(Result::ok)
        .map(|d| d.path().join("bin/pgbench"))
        .filter(|p| p.exists())
        .max()
        .ok_or("no pgbench under /usr/lib/postgresql")?;
    let socket = data_dir.join("postgres");
    let psql = bin.with_file_name("psql");
    let create = "CREATE TABLE IF NOT EXISTS bench_messages (id bigserial PRIMARY KEY, dm_id uuid NOT NULL, seq bigint NOT NULL, body text NOT NULL, created_at timestamptz NOT NULL DEFAULT now())";
    let status = Command::new(&psql)
        .args([
            "-h",
            &socket.to_string_lossy(),
            "-U",
            "knock",
            "-d",
            "knock",
            "-qc",
            create,
        ])
        .status()
        .map_err(|e| e.to_string())?;
    if !status.success() {
        return Err("psql could not create the bench table".into());
    }
    let script = data_dir.join("insert.sql");
    std::fs::write(
        &script,
        "INSERT INTO bench_messages (dm_id, seq, body) VALUES (gen_random_uuid(), 1, 'load');\n",
    )
    .map_err(|e| e.to_string())?;
    let output = Command::new(bin)
        .args([
            "-h",
            &socket.to_string_lossy(),
            "-U",
            "knock",
            "-n",
            "-j",
            "2",
            "-c",
        ])
        .arg(clients.to_string())
        .args(["-T", &seconds.to_string(), "-f"])
        .arg(&script)
        .arg("knock")
        .output()
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| {
            format!(
                "pgbench said: {text}{}",
                String::from_utf8_lossy(&output.stderr)
            )
        })
}

async fn main_result() -> Result<bool, String> {
    let args = Args::parse()?;
    let binary = PathBuf::from(args.get("server", "target/release/knock".to_owned())?);
    let users: usize = args.get("users", 64)?;
    let senders = args.list("senders", &[2, 64, 256])?;
    let rate: f64 = args.get("rate", 0.0)?;
    let duration = Duration::from_secs_f64(args.get("duration", 10.0)?);
    let max_messages: u64 = args.get("max-messages", 200_000)?;
    let idle_streams = args.list("streams", &[])?;
    let fanout: usize = args.get("fanout", 0)?;

    let secret = format!("whsec_{}", {
        use base64::Engine;
        let bytes: Vec<u8> = [uuid::Uuid::new_v4(), uuid::Uuid::new_v4()]
            .iter()
            .flat_map(|u| u.into_bytes())
            .collect();
        base64::engine::general_purpose::STANDARD.encode(bytes)
    });
    let (mut server, keys) = Server::start(&binary, &secret)?;
    server.ready().await?;
    let target = Target {
        base: server.base.clone(),
        keys,
        webhook_secret: secret,
    };
    let mut clean = true;
    println!("server: {} ({})", binary.display(), server.base);
    if let Some(rss) = server.rss_kib() {
        println!("\nserver RSS idle: {:.1} MiB", rss as f64 / 1024.0);
    }

    println!(
        "\n| senders | users | msgs/s | send p50 ms | p95 | p99 | max | delivery p50 ms | p95 | p99 | max | errors | lost | doubled | reordered | streams opened ms |"
    );
    println!(
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    );
    let mut best = 0.0f64;
    for &s in &senders {
        let config = Config {
            users: users.max(2),
            senders: s,
            rate: (rate > 0.0).then_some(rate),
            duration,
            max_messages,
        };
        let report = load::run(&target, &config)
            .await
            .map_err(|e| e.to_string())?;
        best = best.max(report.throughput());
        println!(
            "| {s} | {} | {:.0} | {} | {} | {} | {} | {} | {} | {:.0} |",
            config.users,
            report.throughput(),
            row(&report.send_latency),
            row(&report.delivery_latency),
            report.errors,
            report.lost,
            report.doubled,
            report.reordered,
            report.streams_opened.as_secs_f64() * 1000.0
        );
        clean &=
            report.errors == 0 && report.lost == 0 && report.doubled == 0 && report.reordered == 0;
    }

    if !idle_streams.is_empty() {
        let client = load::client(64).map_err(|e| e.to_string())?;
        let population = load::populate(&client, &target, 64)
            .await
            .map_err(|e| e.to_string())?;
        // Per stream: RSS growth since before the first stream, and since
        // the previous row (the allocator may first reuse memory that the
        // send phases freed, which the first figure then hides).
        let before = server.rss_kib().unwrap_or(0);
        println!(
            "\n| open streams | server RSS MiB | KiB per stream | KiB per stream since the row above |"
        );
        println!("| --- | --- | --- | --- |");
        let mut open: Vec<EventStream> = Vec::new();
        let mut previous = (0, before);
        for &n in &idle_streams {
            while open.len() < n {
                let user = &population.users[open.len() % population.users.len()];
                open.push(EventStream::open(&client, &target.base, &user.token).await?);
            }
            tokio::time::sleep(Duration::from_secs(3)).await;
            let rss = server.rss_kib().unwrap_or(0);
            let added = if previous.0 == 0 {
                String::new()
            } else {
                format!(
                    "{:.1}",
                    rss.saturating_sub(previous.1) as f64
                        / n.saturating_sub(previous.0).max(1) as f64
                )
            };
            println!(
                "| {n} | {:.1} | {:.1} | {added} |",
                rss as f64 / 1024.0,
                rss.saturating_sub(before) as f64 / n.max(1) as f64
            );
            previous = (n, rss);
        }
    }

    if fanout > 0 {
        let client = load::client(64).map_err(|e| e.to_string())?;
        let population = load::populate(&client, &target, 2)
            .await
            .map_err(|e| e.to_string())?;
        let latency = load::fan_out(&client, &target, &population, fanout)
            .await
            .map_err(|e| e.to_string())?;
        println!(
            "\nfan-out of one message to {fanout} streams, p50 / p95 / p99 / max ms: {}",
            row(&latency)
        );
    }

    let renders: usize = args.get("render", 0)?;
    if renders > 0 {
        let client = load::client(4).map_err(|e| e.to_string())?;
        let population = load::populate(&client, &target, 2)
            .await
            .map_err(|e| e.to_string())?;
        let latency = load::render_chat(&client, &target, &population, 50, renders)
            .await
            .map_err(|e| e.to_string())?;
        println!(
            "\nserver time to render a chat page with 50 messages ({renders} requests), p50 / p95 / p99 / max ms: {}",
            row(&latency)
        );
    }

    let search_messages: u64 = args.get("search-messages", 0)?;
    if search_messages > 0 {
        let searches: usize = args.get("searches", 200)?;
        let client = load::client(64).map_err(|e| e.to_string())?;
        let population = load::populate(&client, &target, 2)
            .await
            .map_err(|e| e.to_string())?;
        let started = Instant::now();
        let figures = load::search(&client, &target, &population, search_messages, searches)
            .await
            .map_err(|e| e.to_string())?;
        println!(
            "\nmessage search in one person's DM of {search_messages} messages (sent in {:.0} s), {searches} searches each:",
            started.elapsed().as_secs_f64()
        );
        println!("\n| query | results | p50 ms | p95 ms | p99 ms | max ms |");
        println!("| --- | --- | --- | --- | --- | --- |");
        for ((what, query), (found, latency)) in load::SEARCHES.iter().zip(&figures) {
            println!("| {what}: `{query}` | {found} | {} |", row(latency));
        }
    }

    if args.flag("pgbench") {
        if std::env::var_os("DATABASE_URL").is_some() {
            println!("\npgbench: skipped (it runs against the embedded database only)");
        } else {
            println!("\n| pgbench clients | one-row inserts/s | Knock best msgs/s ÷ this |");
            println!("| --- | --- | --- |");
            let mut counts: Vec<usize> = senders
                .iter()
                .map(|&c| c.min(PGBENCH_MAX_CLIENTS))
                .collect();
            counts.dedup();
            for clients in counts {
                let tps = pgbench(&server.data_dir, clients, duration.as_secs().max(5))?;
                println!("| {clients} | {tps:.0} | {:.0} % |", 100.0 * best / tps);
            }
        }
    }
    Ok(!args.flag("check") || clean)
}

#[tokio::main]
async fn main() -> ExitCode {
    match main_result().await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("knock-load: messages were lost, doubled, reordered or refused");
            ExitCode::FAILURE
        }
        Err(error) => {
            eprintln!("knock-load: {error}");
            ExitCode::FAILURE
        }
    }
}
