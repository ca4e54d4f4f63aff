//! The embedded default database: a private Postgres cluster that Knock runs
//! itself when `DATABASE_URL` is unset.
//!
//! The cluster lives in `<KNOCK_DATA_DIR>/postgres`, is created by the
//! machine's `initdb` on first start, listens on no TCP port, and is reached
//! only through a Unix socket inside that directory (mode 0700). It uses the
//! machine's Postgres binaries: `initdb` on `PATH`, or the newest
//! `/usr/lib/postgresql/*/bin` (Debian's layout), or `KNOCK_PG_BIN_DIR`.
//!
//! Postgres refuses to run as root, so when Knock runs as root the cluster
//! belongs to the `postgres` system user and its programs run through
//! `runuser`.
//!
//! Recovery: a `postmaster.pid` whose process is gone, or is not a Postgres
//! server, is a leftover of a crash and is removed before start. A cluster
//! still running from an earlier Knock process that was killed is adopted.

use std::{
    ffi::OsString,
    path::{Path, PathBuf},
    time::Duration,
};

use sqlx::{Connection, PgConnection, postgres::PgConnectOptions};
use tokio::process::Command;

/// The database Knock creates and uses inside the embedded cluster.
pub const DATABASE: &str = "knock";
/// The cluster's superuser, who connects over the private socket.
pub const SUPERUSER: &str = "knock";
/// The socket file's port number (no TCP port is opened).
const PORT: u16 = 5432;
/// How long a session may sit idle inside a transaction before the cluster
/// ends it (`idle_in_transaction_session_timeout`).
pub const IDLE_IN_TRANSACTION: &str = "60s";
/// Unix socket paths are limited to 107 bytes on Linux (`sun_path`).
const MAX_SOCKET_PATH: usize = 107;

/// Why the embedded cluster could not be started or stopped.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedPostgresError {
    /// No `initdb`, `pg_ctl` and `postgres` were found.
    #[error(
        "no Postgres server binaries found (looked on PATH, in KNOCK_PG_BIN_DIR and /usr/lib/postgresql/*/bin); install Debian's `postgresql` package or set DATABASE_URL"
    )]
    BinariesNotFound,
    /// Running as root but the `postgres` system user does not exist.
    #[error(
        "running as root needs the `postgres` system user to own the embedded cluster; install Debian's `postgresql` package or run as another user"
    )]
    NoPostgresUser,
    /// The data directory's socket path would be too long for a Unix socket.
    #[error(
        "KNOCK_DATA_DIR is too deep for a Unix socket ({0} bytes, at most {MAX_SOCKET_PATH}); choose a shorter path"
    )]
    SocketPathTooLong(usize),
    /// A file system operation failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// `initdb` or `pg_ctl` exited with an error; the message carries its output.
    #[error("`{program}` failed: {output}")]
    Command {
        /// The program that failed.
        program: &'static str,
        /// What it printed (the tail of the server log for `pg_ctl start`).
        output: String,
    },
    /// The cluster started but the database could not be created.
    #[error("could not create the `{DATABASE}` database: {0}")]
    CreateDatabase(#[source] sqlx::Error),
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> EmbeddedPostgresError {
    let path = path.to_path_buf();
    move |source| EmbeddedPostgresError::Io {
        action,
        path,
        source,
    }
}

/// A running embedded cluster. Stop it with [`EmbeddedPostgres::stop`];
/// dropping it leaves the server running (the next start adopts it).
#[derive(Debug)]
pub struct EmbeddedPostgres {
    cluster_dir: PathBuf,
    bin_dir: PathBuf,
    run_as: Option<RunAs>,
    adopted: bool,
}

#[derive(Debug, Clone)]
struct RunAs {
    name: &'static str,
    uid: nix::unistd::Uid,
    gid: nix::unistd::Gid,
}

impl EmbeddedPostgres {
    /// Creates the cluster in `<data_dir>/postgres` if it does not exist,
    /// recovers from a stale `postmaster.pid`, starts the server (or adopts
    /// one already running on this directory), and creates the
    /// [`DATABASE`] database if it is missing.
    ///
    /// # Errors
    /// [`EmbeddedPostgresError`] with the cause; a failed start carries the
    /// tail of the Postgres log.
    #[tracing::instrument(skip_all, fields(data_dir = %data_dir.display()))]
    pub async fn start(data_dir: &Path) -> Result<Self, EmbeddedPostgresError> {
        let bin_dir = find_bin_dir().ok_or(EmbeddedPostgresError::BinariesNotFound)?;
        let run_as = if nix::unistd::geteuid().is_root() {
            let user = nix::unistd::User::from_name("postgres")
                .ok()
                .flatten()
                .ok_or(EmbeddedPostgresError::NoPostgresUser)?;
            Some(RunAs {
                name: "postgres",
                uid: user.uid,
                gid: user.gid,
            })
        } else {
            None
        };

        std::fs::create_dir_all(data_dir).map_err(io("create", data_dir))?;
        let data_dir = std::fs::canonicalize(data_dir).map_err(io("resolve", data_dir))?;
        let cluster_dir = data_dir.join("postgres");
        let socket_len = cluster_dir
            .join(format!(".s.PGSQL.{PORT}"))
            .as_os_str()
            .len();
        if socket_len > MAX_SOCKET_PATH {
            return Err(EmbeddedPostgresError::SocketPathTooLong(socket_len));
        }
        let mut cluster = Self {
            cluster_dir,
            bin_dir,
            run_as,
            adopted: false,
        };

        if !cluster.cluster_dir.join("PG_VERSION").exists() {
            cluster.init().await?;
        }
        cluster.write_settings()?;
        cluster.adopted = cluster.adopt_running()?;
        if !cluster.adopted {
            cluster.start_server().await?;
        }
        cluster.create_database().await?;
        Ok(cluster)
    }

    /// Options that connect to the [`DATABASE`] database over the socket.
    pub fn connect_options(&self) -> PgConnectOptions {
        self.connect_options_for(DATABASE)
    }

    fn connect_options_for(&self, database: &str) -> PgConnectOptions {
        PgConnectOptions::new()
            .socket(&self.cluster_dir)
            .port(PORT)
            .username(SUPERUSER)
            .database(database)
    }

    /// Whether the server was already running (left by an earlier process)
    /// rather than started by this call.
    pub fn adopted(&self) -> bool {
        self.adopted
    }

    /// The cluster's directory (`<data_dir>/postgres`).
    pub fn cluster_dir(&self) -> &Path {
        &self.cluster_dir
    }

    /// Stops the server (`pg_ctl stop -m fast`: open sessions are ended,
    /// committed data is kept).
    ///
    /// # Errors
    /// [`EmbeddedPostgresError::Command`] when `pg_ctl` fails.
    #[tracing::instrument(skip_all)]
    pub async fn stop(self) -> Result<(), EmbeddedPostgresError> {
        let mut args: Vec<OsString> = vec!["stop".into(), "-D".into()];
        args.push(self.cluster_dir.clone().into());
        args.extend(["-m", "fast", "-w", "-t", "60"].map(OsString::from));
        self.run("pg_ctl", &args).await?;
        tracing::info!("embedded Postgres stopped");
        Ok(())
    }

    async fn init(&self) -> Result<(), EmbeddedPostgresError> {
        // A half-made cluster (initdb interrupted) has no PG_VERSION; start over.
        if self.cluster_dir.exists() {
            std::fs::remove_dir_all(&self.cluster_dir).map_err(io("remove", &self.cluster_dir))?;
        }
        std::fs::create_dir(&self.cluster_dir).map_err(io("create", &self.cluster_dir))?;
        self.give_to_cluster_user(&self.cluster_dir)?;
        tracing::info!(dir = %self.cluster_dir.display(), "creating the embedded Postgres cluster");
        let mut args: Vec<OsString> = vec!["-D".into(), self.cluster_dir.clone().into()];
        args.extend(
            [
                "--username",
                SUPERUSER,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
                "--no-instructions",
            ]
            .map(OsString::from),
        );
        self.run("initdb", &args).await?;
        // The socket directory and listen settings are rewritten at every
        // start (the data directory may have moved), in a file of their own.
        let conf = self.cluster_dir.join("postgresql.conf");
        let mut text = std::fs::read_to_string(&conf).map_err(io("read", &conf))?;
        text.push_str("\n# Knock: the private socket, rewritten at every start\ninclude_if_exists = 'knock.conf'\n");
        std::fs::write(&conf, text).map_err(io("write", &conf))?;
        Ok(())
    }

    /// Writes `knock.conf`: the cluster listens only on its socket, and a
    /// session left idle inside a transaction for
    /// [`IDLE_IN_TRANSACTION`] is ended (it would hold back the event log's
    /// readers, which wait for every older transaction to finish).
    fn write_settings(&self) -> Result<(), EmbeddedPostgresError> {
        let socket_dir = self.cluster_dir.to_string_lossy().replace('\'', "''");
        let path = self.cluster_dir.join("knock.conf");
        let text = format!(
            "listen_addresses = ''\nport = {PORT}\nunix_socket_directories = '{socket_dir}'\nunix_socket_permissions = 0700\n\
             idle_in_transaction_session_timeout = '{IDLE_IN_TRANSACTION}'\n"
        );
        std::fs::write(&path, text).map_err(io("write", &path))?;
        self.give_to_cluster_user(&path)
    }

    /// Looks at `postmaster.pid`: `true` when a Postgres server is running on
    /// this cluster; a leftover file of a dead or foreign process is removed.
    fn adopt_running(&self) -> Result<bool, EmbeddedPostgresError> {
        let pid_file = self.cluster_dir.join("postmaster.pid");
        let Ok(text) = std::fs::read_to_string(&pid_file) else {
            return Ok(false);
        };
        let pid = text
            .lines()
            .next()
            .and_then(|l| l.trim().parse::<i32>().ok());
        if let Some(pid) = pid.filter(|&pid| is_postgres_process(pid)) {
            tracing::warn!(
                pid,
                "adopting the embedded Postgres server left running by an earlier process"
            );
            return Ok(true);
        }
        tracing::warn!(?pid, "removing a stale postmaster.pid left by a crash");
        std::fs::remove_file(&pid_file).map_err(io("remove", &pid_file))?;
        let lock = self.cluster_dir.join(format!(".s.PGSQL.{PORT}.lock"));
        if lock.exists() {
            std::fs::remove_file(&lock).map_err(io("remove", &lock))?;
        }
        Ok(false)
    }

    async fn start_server(&self) -> Result<(), EmbeddedPostgresError> {
        let log = self.cluster_dir.join("postgresql.log");
        let mut args: Vec<OsString> =
            vec!["start".into(), "-D".into(), self.cluster_dir.clone().into()];
        args.extend(["-l".into(), log.clone().into()]);
        args.extend(["-w", "-t", "60"].map(OsString::from));
        if let Err(error) = self.run("pg_ctl", &args).await {
            let tail = std::fs::read_to_string(&log)
                .map(|t| {
                    t.lines()
                        .rev()
                        .take(5)
                        .collect::<Vec<_>>()
                        .into_iter()
                        .rev()
                        .collect::<Vec<_>>()
                        .join(" | ")
                })
                .unwrap_or_default();
            return Err(EmbeddedPostgresError::Command {
                program: "pg_ctl start",
                output: format!("{error}; log: {tail}"),
            });
        }
        tracing::info!(socket_dir = %self.cluster_dir.display(), "embedded Postgres started");
        Ok(())
    }

    async fn create_database(&self) -> Result<(), EmbeddedPostgresError> {
        let mut conn = connect_with_retry(&self.connect_options_for("postgres"))
            .await
            .map_err(EmbeddedPostgresError::CreateDatabase)?;
        let exists = sqlx::query_scalar!(
            r#"SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1) AS "exists!""#,
            DATABASE,
        )
        .fetch_one(&mut conn)
        .await
        .map_err(EmbeddedPostgresError::CreateDatabase)?;
        if !exists {
            // A utility statement: the query macros cannot check it, and
            // Postgres takes no parameter for a database's name.
            sqlx::raw_sql("CREATE DATABASE knock")
                .execute(&mut conn)
                .await
                .map_err(EmbeddedPostgresError::CreateDatabase)?;
        }
        conn.close()
            .await
            .map_err(EmbeddedPostgresError::CreateDatabase)
    }

    fn give_to_cluster_user(&self, path: &Path) -> Result<(), EmbeddedPostgresError> {
        if let Some(user) = &self.run_as {
            std::os::unix::fs::chown(path, Some(user.uid.as_raw()), Some(user.gid.as_raw()))
                .map_err(io("chown", path))?;
        }
        Ok(())
    }

    async fn run(
        &self,
        program: &'static str,
        args: &[OsString],
    ) -> Result<(), EmbeddedPostgresError> {
        let binary = self.bin_dir.join(program);
        let mut command = match &self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user.name, "--"]).arg(&binary);
                c
            }
            None => Command::new(&binary),
        };
        // A process group of its own: a Ctrl-C meant for Knock does not reach
        // the server, which Knock stops in order after draining requests.
        command
            .args(args)
            .stdin(std::process::Stdio::null())
            .process_group(0);
        let output = command.output().await.map_err(io("run", &binary))?;
        if output.status.success() {
            Ok(())
        } else {
            let text = String::from_utf8_lossy(&output.stderr)
                .trim()
                .replace('\n', " | ");
            Err(EmbeddedPostgresError::Command {
                program,
                output: text,
            })
        }
    }
}

/// Connects, retrying for a few seconds while a just-started server warms up.
async fn connect_with_retry(options: &PgConnectOptions) -> Result<PgConnection, sqlx::Error> {
    let mut attempt = 0;
    loop {
        match PgConnection::connect_with(options).await {
            Ok(conn) => return Ok(conn),
            Err(error) if attempt >= 50 => return Err(error),
            Err(_) => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Whether `pid` is alive and is a Postgres server process.
fn is_postgres_process(pid: i32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|cmdline| {
            let program = cmdline.split(|&b| b == 0).next().unwrap_or_default();
            Path::new(std::str::from_utf8(program).unwrap_or_default())
                .file_name()
                .is_some_and(|name| name == "postgres" || name == "postmaster")
        })
        .unwrap_or(false)
}

fn find_bin_dir() -> Option<PathBuf> {
    let has_binaries = |dir: &Path| {
        ["initdb", "pg_ctl", "postgres"]
            .iter()
            .all(|b| dir.join(b).is_file())
    };
    if let Some(dir) = std::env::var_os("KNOCK_PG_BIN_DIR").map(PathBuf::from) {
        return has_binaries(&dir).then_some(dir);
    }
    if let Some(path) = std::env::var_os("PATH")
        && let Some(dir) = std::env::split_paths(&path).find(|dir| has_binaries(dir))
    {
        return Some(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            has_binaries(&bin).then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}
