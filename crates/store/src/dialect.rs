//! The query every store statement goes through, and MySQL's dialect of
//! the statements.
//!
//! The store's statements are written once, in the form SQLite and
//! PostgreSQL share: numbered parameters `$1, $2, …` (a number may appear
//! more than once, and in any order) and `INSERT … ON CONFLICT (…) DO
//! NOTHING` / `DO UPDATE SET`. MySQL and MariaDB take positional `?` only,
//! one value per mark, and say "on conflict" differently. So [`query`]
//! builds a statement as `sqlx::query` does, and when it runs on a MySQL
//! connection it rewrites the text (one scan, no parse: see [`to_mysql`])
//! and binds the values again in the order its `?`s name them, a value
//! named twice bound twice. On SQLite and PostgreSQL it is `sqlx::query`
//! unchanged, except a SQLite statement with more than
//! [`ANONYMOUS_ABOVE`] values: SQLite finds a numbered parameter's name by
//! a linear scan of the statement's parameter list, and sqlx asks for every
//! parameter's name as it binds, so binding `n` numbered parameters costs
//! `n²`. A multi-row statement of the change-feed sink (64 orders × 15
//! values) spent a fifth of the sink's CPU there. Such a statement runs
//! with anonymous `?` marks, its values bound in mark order as for MySQL.
//! What a scan cannot rewrite (`UPDATE … RETURNING`,
//! `UPDATE … FROM`, advisory locks) the operations spell for MySQL
//! themselves, in `Backend::Mysql` branches.
//!
//! Base module: it imports nothing from the crate.

use std::borrow::Cow;

use sqlx::any::{AnyArguments, AnyQueryResult, AnyRow};
use sqlx::error::BoxDynError;
use sqlx::{Any, AnyConnection, AnyPool, Arguments, Encode, Executor, Type};

/// A statement and its bound values (see the module's documentation).
pub(crate) struct Query<'q> {
    sql: &'q str,
    args: AnyArguments<'q>,
    /// A value that failed to encode: reported when the statement runs, as
    /// `sqlx::query` does.
    encode_error: Option<BoxDynError>,
}

/// A statement in the shared form, to bind values to and run.
pub(crate) fn query(sql: &str) -> Query<'_> {
    Query {
        sql,
        args: AnyArguments::default(),
        encode_error: None,
    }
}

/// Where a [`Query`] runs: a connection or a pool, either of which can say
/// whether it speaks MySQL.
pub(crate) trait Target<'c>: Executor<'c, Database = Any> {
    fn is_mysql(&self) -> bool;
    fn is_sqlite(&self) -> bool;
}

impl<'c> Target<'c> for &'c mut AnyConnection {
    fn is_mysql(&self) -> bool {
        is_mysql(self)
    }
    fn is_sqlite(&self) -> bool {
        self.backend_name() == "SQLite"
    }
}

/// Whether `conn` speaks MySQL (or MariaDB).
pub(crate) fn is_mysql(conn: &AnyConnection) -> bool {
    conn.backend_name() == "MySQL"
}

impl<'c> Target<'c> for &'c AnyPool {
    fn is_mysql(&self) -> bool {
        matches!(
            self.connect_options().database_url.scheme(),
            "mysql" | "mariadb"
        )
    }
    fn is_sqlite(&self) -> bool {
        self.connect_options().database_url.scheme() == "sqlite"
    }
}

/// On SQLite, statements with more values than this run with anonymous
/// marks (see the module's documentation). Below it, the names' scan costs
/// less than rewriting the text and copying the values.
pub(crate) const ANONYMOUS_ABOVE: usize = 32;

impl<'q> Query<'q> {
    /// Binds the next value (`$1` first).
    pub(crate) fn bind<T>(mut self, value: T) -> Self
    where
        T: 'q + Encode<'q, Any> + Type<Any>,
    {
        if self.encode_error.is_none()
            && let Err(e) = self.args.add(value)
        {
            self.encode_error = Some(e);
        }
        self
    }

    /// The text and values for `target`'s backend.
    fn prepare<'c, E: Target<'c>>(
        self,
        target: &E,
    ) -> Result<(Cow<'q, str>, AnyArguments<'q>), sqlx::Error> {
        if let Some(e) = self.encode_error {
            return Err(sqlx::Error::Encode(e));
        }
        let (text, order) = if target.is_mysql() {
            to_mysql(self.sql)
        } else if self.args.values.0.len() > ANONYMOUS_ABOVE && target.is_sqlite() {
            anonymous_marks(self.sql)
        } else {
            return Ok((Cow::Borrowed(self.sql), self.args));
        };
        let bound = &self.args.values.0;
        let mut args = AnyArguments::default();
        for index in order {
            let value = bound.get(index).ok_or_else(|| {
                sqlx::Error::Protocol(format!(
                    "a statement names ${} but {} values are bound",
                    index + 1,
                    bound.len()
                ))
            })?;
            args.values.0.push(value.clone());
        }
        Ok((Cow::Owned(text), args))
    }

    pub(crate) async fn execute<'c, E: Target<'c>>(
        self,
        target: E,
    ) -> Result<AnyQueryResult, sqlx::Error> {
        let (sql, args) = self.prepare(&target)?;
        sqlx::query_with(&sql, args).execute(target).await
    }

    pub(crate) async fn fetch_all<'c, E: Target<'c>>(
        self,
        target: E,
    ) -> Result<Vec<AnyRow>, sqlx::Error> {
        let (sql, args) = self.prepare(&target)?;
        sqlx::query_with(&sql, args).fetch_all(target).await
    }

    pub(crate) async fn fetch_one<'c, E: Target<'c>>(
        self,
        target: E,
    ) -> Result<AnyRow, sqlx::Error> {
        let (sql, args) = self.prepare(&target)?;
        sqlx::query_with(&sql, args).fetch_one(target).await
    }

    pub(crate) async fn fetch_optional<'c, E: Target<'c>>(
        self,
        target: E,
    ) -> Result<Option<AnyRow>, sqlx::Error> {
        let (sql, args) = self.prepare(&target)?;
        sqlx::query_with(&sql, args).fetch_optional(target).await
    }
}

/// A statement in the shared form rewritten for MySQL, and for each `?` of
/// the result the index of the bound value it takes.
///
/// - `$n` outside string literals becomes `?`;
/// - `INSERT INTO … ON CONFLICT (…) DO NOTHING` becomes `INSERT IGNORE INTO
///   …` (a row whose key exists is skipped and not counted; MySQL's
///   `IGNORE` also turns other errors of the row into warnings, which is
///   why every value is checked and cut to its column before a write);
/// - `ON CONFLICT (…) DO UPDATE SET` becomes `ON DUPLICATE KEY UPDATE`.
pub(crate) fn to_mysql(sql: &str) -> (String, Vec<usize>) {
    let (mut text, order) = anonymous_marks(sql);
    if let Some(start) = text.find(" ON CONFLICT (")
        && let Some(close) = text[start..].find(')').map(|i| start + i + 1)
    {
        let rest = &text[close..];
        if let Some(after) = rest.strip_prefix(" DO NOTHING") {
            let mut rewritten = text[..start].replacen("INSERT INTO", "INSERT IGNORE INTO", 1);
            rewritten.push_str(after);
            text = rewritten;
        } else if let Some(after) = rest.strip_prefix(" DO UPDATE SET") {
            text = format!("{} ON DUPLICATE KEY UPDATE{after}", &text[..start]);
        }
    }
    (text, order)
}

/// `sql` with each `$n` outside string literals replaced by `?`, and for
/// each `?` the index of the bound value it takes (`n - 1`).
pub(crate) fn anonymous_marks(sql: &str) -> (String, Vec<usize>) {
    let mut text = String::with_capacity(sql.len());
    let mut order = Vec::new();
    let mut in_literal = false;
    let mut chars = sql.char_indices().peekable();
    while let Some((_, c)) = chars.next() {
        if c == '\'' {
            in_literal = !in_literal;
        }
        let number_follows = matches!(chars.peek(), Some((_, d)) if d.is_ascii_digit());
        if c == '$' && !in_literal && number_follows {
            let mut n = 0usize;
            while let Some((_, d)) = chars.peek().copied().filter(|(_, d)| d.is_ascii_digit()) {
                n = n * 10 + d.to_digit(10).unwrap_or(0) as usize;
                chars.next();
            }
            order.push(n.saturating_sub(1));
            text.push('?');
        } else {
            text.push(c);
        }
    }
    (text, order)
}

/// A statement whose values are bound in the order they appear, each once,
/// for `sqlx::query` itself (a stream of rows, which [`Query`] does not
/// offer): rewritten when `mysql`.
pub(crate) fn in_order(mysql: bool, sql: &str) -> Cow<'_, str> {
    if !mysql {
        return Cow::Borrowed(sql);
    }
    let (text, order) = to_mysql(sql);
    debug_assert!(
        order.iter().copied().eq(0..order.len()),
        "parameters out of order: {sql}"
    );
    Cow::Owned(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbered_parameters_become_marks_in_order_of_use() {
        let (text, order) =
            to_mysql("UPDATE t SET a = $1, b = $3, c = $1 WHERE d = '$2' AND e = $12");
        assert_eq!(
            text,
            "UPDATE t SET a = ?, b = ?, c = ? WHERE d = '$2' AND e = ?"
        );
        assert_eq!(order, vec![0, 2, 0, 11]);
    }

    #[test]
    fn on_conflict_becomes_ignore_or_duplicate_key_update() {
        let (text, order) = to_mysql(
            "INSERT INTO inbox (g, e) VALUES ($1, $2), ($1, $3) ON CONFLICT (g, e) DO NOTHING",
        );
        assert_eq!(
            text,
            "INSERT IGNORE INTO inbox (g, e) VALUES (?, ?), (?, ?)"
        );
        assert_eq!(order, vec![0, 1, 0, 2]);
        let (text, _) =
            to_mysql("INSERT INTO v (c, n) VALUES ($1, $2) ON CONFLICT (c) DO UPDATE SET n = $2");
        assert_eq!(
            text,
            "INSERT INTO v (c, n) VALUES (?, ?) ON DUPLICATE KEY UPDATE n = ?"
        );
    }

    /// Above the threshold a SQLite statement runs with anonymous marks;
    /// a value named twice and values named out of order still land where
    /// their numbers say.
    #[tokio::test]
    async fn many_values_on_sqlite_land_where_their_numbers_say() {
        use sqlx::{Connection, Row};
        sqlx::any::install_default_drivers();
        let mut conn = AnyConnection::connect("sqlite::memory:").await.unwrap();
        let n = ANONYMOUS_ABOVE + 8;
        // $n first, then $1 … $n, then $1 again: n + 2 marks for n values.
        let marks: Vec<String> = std::iter::once(n)
            .chain(1..=n)
            .chain(std::iter::once(1))
            .map(|i| format!("${i}"))
            .collect();
        let sql = format!("SELECT {} AS joined", marks.join(" || ',' || "));
        let mut query = query(&sql);
        for i in 1..=n {
            query = query.bind(format!("v{i}"));
        }
        let row = query.fetch_one(&mut conn).await.unwrap();
        let joined: String = row.try_get("joined").unwrap();
        let expected: Vec<String> = std::iter::once(n)
            .chain(1..=n)
            .chain(std::iter::once(1))
            .map(|i| format!("v{i}"))
            .collect();
        assert_eq!(joined, expected.join(","));
        let (text, order) = anonymous_marks(&sql);
        assert!(!text.contains('$'), "{text}");
        assert_eq!(order.len(), n + 2);
    }
}
