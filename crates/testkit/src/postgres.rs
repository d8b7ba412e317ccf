//! A PostgreSQL server of a run's own: the benchmark and the fault suite
//! each need one they control (durable settings for figures that mean
//! something; a server the suite may stop, kill and restart), and neither
//! may depend on a server someone left running.
//!
//! [`PgServer::start`] creates a cluster in a temporary directory from the
//! Debian package's binaries (`/usr/lib/postgresql/<version>/bin`), as the
//! `postgres` account when run as root (the server refuses root), and starts
//! it on a free loopback port with `fsync`, `synchronous_commit` and
//! `full_page_writes` on and `pg_stat_statements` loaded. Dropping it stops
//! the server (`immediate`) and deletes the directory.

use std::path::{Path, PathBuf};
use std::process::Command;

use sqlx::{Connection, Executor, PgConnection};

/// Why the server could not be started or used; the message says what to do.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PgServerError(String);

type PgResult<T> = Result<T, PgServerError>;

fn fail(e: impl std::fmt::Display) -> PgServerError {
    PgServerError(e.to_string())
}

/// A PostgreSQL server of the caller's own, stopped and deleted on drop.
#[derive(Debug)]
pub struct PgServer {
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
}

/// The Debian package's server binaries (`/usr/lib/postgresql/<version>/bin`).
fn server_bin() -> PgResult<PathBuf> {
    let versions = std::fs::read_dir("/usr/lib/postgresql").map_err(|_| {
        fail("no PostgreSQL server found: install Debian's postgresql package, or pass --database-url")
    })?;
    versions
        .filter_map(Result::ok)
        .map(|v| v.path().join("bin"))
        .filter(|bin| bin.join("initdb").is_file())
        .max()
        .ok_or_else(|| fail("no initdb under /usr/lib/postgresql/*/bin"))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// Runs a server tool, as the `postgres` account when this process is root.
fn run(bin: &Path, tool: &str, args: &[&str]) -> PgResult<()> {
    let program = bin.join(tool);
    let output = if is_root() {
        Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(&program)
            .args(args)
            .output()
    } else {
        Command::new(&program).args(args).output()
    }
    .map_err(|e| fail(format!("{}: {e}", program.display())))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(fail(format!(
            "{tool} failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}

impl PgServer {
    /// Creates a cluster in a temporary directory (under `parent`, else the
    /// system's) and starts it on a free loopback port with durable settings.
    ///
    /// # Errors
    /// No server package installed, the directory cannot be created or
    /// handed to the `postgres` account, `initdb` or `pg_ctl start` failed.
    pub fn start(parent: Option<&Path>) -> PgResult<Self> {
        let bin = server_bin()?;
        let mut builder = tempfile::Builder::new();
        builder.prefix("ordermq-pg-");
        let dir = match parent {
            Some(parent) => builder.tempdir_in(parent),
            None => builder.tempdir(),
        }
        .map_err(fail)?;
        if is_root() {
            let _ = Command::new("useradd")
                .args(["--system", "--no-create-home", "postgres"])
                .output();
            let chown = Command::new("chown")
                .args(["postgres"])
                .arg(dir.path())
                .status()
                .map_err(fail)?;
            if !chown.success() {
                return Err(fail(
                    "cannot hand the server's directory to the postgres account",
                ));
            }
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(fail)?
            .port();
        let server = Self { dir, bin, port };
        run(
            &server.bin,
            "initdb",
            &[
                "-D",
                &server.data(),
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
            ],
        )?;
        server.resume()?;
        Ok(server)
    }

    fn data(&self) -> String {
        format!("{}/data", self.dir.path().display())
    }

    /// Starts the server again on the same port and data (after
    /// [`PgServer::stop`] or [`PgServer::kill`]), waiting until it accepts
    /// connections.
    ///
    /// # Errors
    /// `pg_ctl start` failed (its message says why).
    pub fn resume(&self) -> PgResult<()> {
        let root = self.dir.path().display().to_string();
        let options = format!(
            "-h 127.0.0.1 -p {} -k {root} -c fsync=on -c synchronous_commit=on \
             -c full_page_writes=on -c max_connections=200 -c shared_buffers=256MB \
             -c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=all",
            self.port
        );
        run(
            &self.bin,
            "pg_ctl",
            &[
                "-D",
                &self.data(),
                "-l",
                &format!("{root}/server.log"),
                "-w",
                "-o",
                &options,
                "start",
            ],
        )
    }

    /// Stops the server: `fast` (clients cut, a clean shutdown checkpoint).
    ///
    /// # Errors
    /// `pg_ctl stop` failed.
    pub fn stop(&self) -> PgResult<()> {
        run(
            &self.bin,
            "pg_ctl",
            &["-D", &self.data(), "-m", "fast", "-w", "stop"],
        )
    }

    /// Stops the server as a crash would: `immediate` (no checkpoint; the
    /// next start replays the WAL).
    ///
    /// # Errors
    /// `pg_ctl stop` failed.
    pub fn kill(&self) -> PgResult<()> {
        run(
            &self.bin,
            "pg_ctl",
            &["-D", &self.data(), "-m", "immediate", "-w", "stop"],
        )
    }

    /// Stops the server (`fast`) and keeps its directory (data and
    /// `server.log`) for a look afterwards; returns its path.
    pub fn keep(mut self) -> PathBuf {
        let _ = self.stop();
        self.dir.disable_cleanup(true);
        self.dir.path().to_owned()
        // Dropped: `kill` of a stopped server does nothing.
    }

    /// The server's URL for `database`.
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Creates a database and returns its URL.
    ///
    /// # Errors
    /// The server refused the connection or the statement.
    pub async fn create_database(&self, name: &str) -> PgResult<String> {
        create_database(&self.url("postgres"), name).await
    }
}

/// Creates database `name` on the server of `admin_url` (any database of
/// it) and returns the new database's URL.
///
/// # Errors
/// The server refused the connection or the statement, or `admin_url` has
/// no database part to replace.
pub async fn create_database(admin_url: &str, name: &str) -> PgResult<String> {
    let mut admin = PgConnection::connect(admin_url).await.map_err(fail)?;
    admin
        .execute(format!("CREATE DATABASE {name}").as_str())
        .await
        .map_err(fail)?;
    let _ = admin.close().await;
    with_database(admin_url, name)
}

/// Drops database `name` on the server of `admin_url`, cutting off anyone
/// still connected.
///
/// # Errors
/// The server refused the connection or the statement.
pub async fn drop_database(admin_url: &str, name: &str) -> PgResult<()> {
    let mut admin = PgConnection::connect(admin_url).await.map_err(fail)?;
    admin
        .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
        .await
        .map_err(fail)?;
    let _ = admin.close().await;
    Ok(())
}

/// `url` with its database (the path after the host) replaced by `name`.
///
/// # Errors
/// `url` is not a URL (no `scheme://`).
pub fn with_database(url: &str, name: &str) -> PgResult<String> {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let host_end = base[scheme_end..]
        .find('/')
        .map(|i| scheme_end + i)
        .unwrap_or(base.len());
    if scheme_end == 0 {
        return Err(fail(format!("not a database URL: {url}")));
    }
    let mut out = format!("{}/{name}", &base[..host_end]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    Ok(out)
}

impl Drop for PgServer {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn a_url_gets_its_database_replaced_and_keeps_its_options() {
        assert_eq!(
            with_database("postgres://u:p@h:5432/postgres?sslmode=disable", "x").unwrap(),
            "postgres://u:p@h:5432/x?sslmode=disable"
        );
        assert_eq!(
            with_database("postgres://h:1", "y").unwrap(),
            "postgres://h:1/y"
        );
        assert!(with_database("h:1/db", "y").is_err());
    }
}
