//! Driver errors turned into the ports' [`StorageError`], their kind decided
//! here, once, for sqlx and rusqlite alike.
//!
//! The kind tells a caller what to do: *unavailable* (busy, locked, out of
//! connections, unreachable) may be retried; *conflict* (a constraint, a
//! serialization failure) met another write; *corrupt* (anything else, and
//! stored data that does not decode) needs a person. The driver's error stays
//! the source, so logs show it and nothing else has to.
//!
//! Base module: it imports nothing from the crate.

use std::any::TypeId;

use ordermq_domain::OrderStatus;
use ordermq_domain::ports::{StorageError, StorageErrorKind};
use sqlx::Row;
use sqlx::any::AnyRow;

/// A sqlx error as the ports report it.
pub(crate) fn storage(e: sqlx::Error) -> StorageError {
    StorageError::new(sqlx_kind(&e), e)
}

/// Whether `e` lost a lock conflict that the server broke by failing it,
/// so the whole transaction, run again, may well succeed: a deadlock's
/// victim (PostgreSQL `40P01`, MySQL 1213), a serialization failure
/// (`40001`), MySQL's lock wait timeout (1205). After a deadlock InnoDB has
/// already rolled the whole transaction back (its savepoints with it): the
/// caller must stop using it at once.
pub(crate) fn lost_lock_race(e: &sqlx::Error) -> bool {
    let sqlx::Error::Database(db) = e else {
        return false;
    };
    if let Some(mysql) = db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
        return matches!(mysql.number(), 1213 | 1205);
    }
    matches!(db.code().as_deref(), Some("40P01" | "40001"))
}

/// [`lost_lock_race`] for an error already reported as a `StorageError`.
pub(crate) fn storage_lost_lock_race(e: &StorageError) -> bool {
    std::error::Error::source(e)
        .and_then(|s| s.downcast_ref::<sqlx::Error>())
        .is_some_and(lost_lock_race)
}

/// A rusqlite error as the ports report it.
pub(crate) fn storage_rusqlite(e: rusqlite::Error) -> StorageError {
    StorageError::new(rusqlite_kind(&e), e)
}

fn sqlx_kind(e: &sqlx::Error) -> StorageErrorKind {
    use StorageErrorKind::{Conflict, Corrupt, Unavailable};
    match e {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => Unavailable,
        sqlx::Error::Database(db) => {
            if matches!(
                db.kind(),
                sqlx::error::ErrorKind::UniqueViolation
                    | sqlx::error::ErrorKind::ForeignKeyViolation
                    | sqlx::error::ErrorKind::NotNullViolation
                    | sqlx::error::ErrorKind::CheckViolation
            ) {
                return Conflict;
            }
            if let Some(kind) = db
                .try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>()
                .and_then(|e| mysql_kind(e.number()))
            {
                return kind;
            }
            database_code_kind(db.code().as_deref().unwrap_or(""))
        }
        _ => Corrupt,
    }
}

/// A MySQL or MariaDB error number whose SQLSTATE (often the generic
/// `HY000`) does not tell its kind; `None` leaves it to the SQLSTATE.
fn mysql_kind(number: u16) -> Option<StorageErrorKind> {
    match number {
        // Lock wait timeout; the statement's time limit (MariaDB's
        // max_statement_time, MySQL's max_execution_time); query
        // interrupted; too many connections; server shutting down;
        // read-only server.
        1205 | 1969 | 3024 | 1317 | 1040 | 1053 | 1290 | 1792 => {
            Some(StorageErrorKind::Unavailable)
        }
        // Deadlock (its SQLSTATE, 40001, says so too).
        1213 => Some(StorageErrorKind::Conflict),
        _ => None,
    }
}

/// A database error code: PostgreSQL's SQLSTATE (MySQL's too), or SQLite's (extended)
/// result code as a number.
fn database_code_kind(code: &str) -> StorageErrorKind {
    use StorageErrorKind::{Conflict, Corrupt, Unavailable};
    // PostgreSQL: integrity (23…), serialization failure, deadlock.
    if code.starts_with("23") || code == "40001" || code == "40P01" {
        return Conflict;
    }
    // PostgreSQL: connection (08…), resources (53…), shutting down or
    // cancelled (57…), lock not available.
    if code.starts_with("08") || code.starts_with("53") || code.starts_with("57") || code == "55P03"
    {
        return Unavailable;
    }
    match code.parse::<i32>() {
        // SQLite: the primary code is the low byte. BUSY, LOCKED, IOERR,
        // FULL, CANTOPEN: retry later. CONSTRAINT: conflict.
        Ok(n) => match n & 0xff {
            5 | 6 | 10 | 13 | 14 => Unavailable,
            19 => Conflict,
            _ => Corrupt,
        },
        Err(_) => Corrupt,
    }
}

fn rusqlite_kind(e: &rusqlite::Error) -> StorageErrorKind {
    use rusqlite::ErrorCode;
    match e {
        rusqlite::Error::SqliteFailure(failure, _) => match failure.code {
            ErrorCode::DatabaseBusy
            | ErrorCode::DatabaseLocked
            | ErrorCode::SystemIoFailure
            | ErrorCode::DiskFull
            | ErrorCode::CannotOpen => StorageErrorKind::Unavailable,
            ErrorCode::ConstraintViolation => StorageErrorKind::Conflict,
            _ => StorageErrorKind::Corrupt,
        },
        _ => StorageErrorKind::Corrupt,
    }
}

/// A stored value that does not parse back into its domain type.
pub(crate) fn corrupt(what: &str, value: &str) -> StorageError {
    StorageError::corrupt(format!("stored {what} {value:?} is not valid"))
}

/// A stored status, parsed.
pub(crate) fn status_of(raw: &str) -> Result<OrderStatus, StorageError> {
    OrderStatus::parse(raw).ok_or_else(|| corrupt("status", raw))
}

/// One column of a row, its failure classified (see [`column`]).
pub(crate) fn get<T>(row: &AnyRow, column: &str) -> Result<T, StorageError>
where
    T: for<'r> sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any> + 'static,
{
    self::column(row, column).map_err(storage)
}

/// One column of a row. MySQL's `TEXT` reaches sqlx's `Any` driver as a
/// blob (of UTF-8, in the tables' `utf8mb4`), which a `String` does not
/// decode from: a `String` (or `Option<String>`) that meets one reads the
/// blob's bytes as UTF-8, so a text column reads the same on every backend.
pub(crate) fn column<T>(row: &AnyRow, column: &str) -> Result<T, sqlx::Error>
where
    T: for<'r> sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any> + 'static,
{
    let error = match row.try_get(column) {
        Ok(value) => return Ok(value),
        Err(error @ sqlx::Error::ColumnDecode { .. }) => error,
        Err(error) => return Err(error),
    };
    let wants_text = TypeId::of::<T>() == TypeId::of::<String>();
    let wants_optional_text = TypeId::of::<T>() == TypeId::of::<Option<String>>();
    if !wants_text && !wants_optional_text {
        return Err(error);
    }
    let Ok(bytes) = row.try_get::<Vec<u8>, _>(column) else {
        return Err(error);
    };
    let Ok(text) = String::from_utf8(bytes) else {
        return Err(error);
    };
    let value: Box<dyn std::any::Any> = if wants_text {
        Box::new(text)
    } else {
        Box::new(Some(text))
    };
    value.downcast::<T>().map(|value| *value).map_err(|_| error)
}

/// A failure of the SQLite lane (a statement, or stored data it cannot
/// read), its cause kept: a newtype so `?` converts rusqlite's errors.
#[derive(Debug, thiserror::Error)]
#[error(transparent)]
pub(crate) struct LaneError(pub(crate) StorageError);

impl From<rusqlite::Error> for LaneError {
    fn from(e: rusqlite::Error) -> Self {
        Self(storage_rusqlite(e))
    }
}

impl From<StorageError> for LaneError {
    fn from(e: StorageError) -> Self {
        Self(e)
    }
}

/// What a lane job returns.
pub(crate) type LaneResult<T> = Result<T, LaneError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_classified() {
        assert_eq!(database_code_kind("5"), StorageErrorKind::Unavailable);
        assert_eq!(database_code_kind("517"), StorageErrorKind::Unavailable);
        assert_eq!(database_code_kind("2067"), StorageErrorKind::Conflict);
        assert_eq!(database_code_kind("40001"), StorageErrorKind::Conflict);
        assert_eq!(database_code_kind("08006"), StorageErrorKind::Unavailable);
        assert_eq!(database_code_kind("42P01"), StorageErrorKind::Corrupt);
        assert_eq!(
            sqlx_kind(&sqlx::Error::PoolTimedOut),
            StorageErrorKind::Unavailable
        );
        assert_eq!(
            sqlx_kind(&sqlx::Error::RowNotFound),
            StorageErrorKind::Corrupt
        );
        let busy = rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(5), None);
        assert_eq!(rusqlite_kind(&busy), StorageErrorKind::Unavailable);
    }

    #[test]
    fn the_source_is_kept() {
        let e = storage(sqlx::Error::PoolTimedOut);
        let source = std::error::Error::source(&e).expect("a source");
        assert!(source.downcast_ref::<sqlx::Error>().is_some());
    }
}
