//! A database of a test's or a trial's own, on a PostgreSQL or a
//! MySQL/MariaDB server: created, named in a URL, dropped.
//!
//! The fault suite runs the same trials on either server; the scheme of the
//! server's URL (`postgres://`, `mysql://`) picks the statements, so a
//! caller says which server, never which dialect.

use sqlx::mysql::MySqlConnection;
use sqlx::{Connection, Executor};

use crate::postgres;

/// The server refused the connection or the statement, or its URL has no
/// database part to replace.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct DatabaseError(String);

fn fail(e: impl std::fmt::Display) -> DatabaseError {
    DatabaseError(e.to_string())
}

fn is_mysql(url: &str) -> bool {
    url.starts_with("mysql://")
}

/// Creates database `name` on the server of `admin_url` (any database of it)
/// and returns the new database's URL. On MySQL it is `utf8mb4` with a
/// binary collation, as ordermq's schema expects (ids compare byte for byte).
///
/// # Errors
/// [`DatabaseError`]: the server refused the connection or the statement.
pub async fn create(admin_url: &str, name: &str) -> Result<String, DatabaseError> {
    if !is_mysql(admin_url) {
        return postgres::create_database(admin_url, name)
            .await
            .map_err(fail);
    }
    let mut admin = MySqlConnection::connect(admin_url).await.map_err(fail)?;
    admin
        .execute(
            format!("CREATE DATABASE {name} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin").as_str(),
        )
        .await
        .map_err(fail)?;
    let _ = admin.close().await;
    postgres::with_database(admin_url, name).map_err(fail)
}

/// Drops database `name` on the server of `admin_url`. PostgreSQL cuts off
/// anyone still connected; MySQL waits for their statements to end (the
/// suite drops a trial's databases after its processes are gone).
///
/// # Errors
/// [`DatabaseError`]: the server refused the connection or the statement.
pub async fn drop(admin_url: &str, name: &str) -> Result<(), DatabaseError> {
    if !is_mysql(admin_url) {
        return postgres::drop_database(admin_url, name).await.map_err(fail);
    }
    let mut admin = MySqlConnection::connect(admin_url).await.map_err(fail)?;
    admin
        .execute(format!("DROP DATABASE IF EXISTS {name}").as_str())
        .await
        .map_err(fail)?;
    let _ = admin.close().await;
    Ok(())
}
