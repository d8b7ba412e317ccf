//! Opening a database brings its schema up to date: each component's
//! numbered migrations (the order database, each system's, the parked
//! messages', the receipts') newer than its recorded version, each in one
//! transaction with its version bump.
//!
//! Instances starting together take turns: on PostgreSQL under an advisory
//! lock of the transaction, on MySQL under a named lock of the session (its
//! DDL commits as it goes, so a transaction's lock would not last).

use ordermq_domain::System;
use sqlx::{AnyConnection, AnyPool, Executor, Row};

use super::{Databases, OpenError, Store, redact};
use crate::dialect;
use crate::schema;
use crate::sql::Backend;

impl Store {
    pub(super) async fn migrate(&self, url: &str) -> Result<(), OpenError> {
        let fail = |source| OpenError::Migrate {
            url: redact(url),
            source,
        };
        if self.holds_orders() {
            self.apply_migrations(&self.orders, "orders", schema::orders(self.backend))
                .await
                .map_err(fail)?;
        }
        for system in System::ALL.into_iter().filter(|s| self.holds(*s)) {
            self.apply_migrations(
                self.system_pool(system),
                system.name(),
                schema::system(self.backend, system),
            )
            .await
            .map_err(fail)?;
        }
        // A system's own database parks what its group refuses.
        if let Databases::System(_) = self.databases {
            self.apply_migrations(&self.orders, "parked", schema::parked(self.backend))
                .await
                .map_err(fail)?;
        }
        // A server keeps the receipts in the order database (its migration 8).
        if self.backend == Backend::Sqlite && self.holds_orders() {
            self.apply_migrations(&self.receipts, "receipts", schema::receipts())
                .await
                .map_err(fail)?;
        }
        Ok(())
    }

    /// Applies the migrations of `component` newer than its recorded version,
    /// each in one transaction with its version bump. On PostgreSQL an
    /// advisory lock makes instances starting together take turns; on MySQL
    /// a named lock of the session (its DDL commits as it goes, so a
    /// transaction's lock would not last).
    async fn apply_migrations(
        &self,
        pool: &AnyPool,
        component: &str,
        migrations: Vec<schema::Migration>,
    ) -> Result<(), sqlx::Error> {
        if self.backend == Backend::Mysql {
            let mut conn = pool.acquire().await?;
            let locked: Option<i64> =
                dialect::query("SELECT GET_LOCK('ordermq_schema', 300) AS locked")
                    .fetch_one(&mut *conn)
                    .await?
                    .try_get("locked")?;
            if locked != Some(1) {
                return Err(sqlx::Error::Protocol(
                    "another instance held the schema lock for 5 minutes".into(),
                ));
            }
            // A migration may take longer than a request's statement may:
            // MariaDB's limit off (MySQL's applies to reads only, and has
            // no such variable).
            let _ = conn.execute("SET SESSION max_statement_time = 0").await;
            let applied = self
                .migrate_component(&mut conn, component, migrations)
                .await;
            let released = dialect::query("DO RELEASE_LOCK('ordermq_schema')")
                .execute(&mut *conn)
                .await;
            // Closed, not returned to the pool: the session's limit was
            // lifted, and the lock, if still held, ends with it.
            drop(conn.detach());
            return applied.and(released.map(|_| ()));
        }
        let mut conn = pool.acquire().await?;
        self.migrate_component(&mut conn, component, migrations)
            .await
    }

    /// [`Store::apply_migrations`] on one connection.
    async fn migrate_component(
        &self,
        conn: &mut AnyConnection,
        component: &str,
        migrations: Vec<schema::Migration>,
    ) -> Result<(), sqlx::Error> {
        let mut tx = sqlx::Connection::begin(conn).await?;
        if self.backend == Backend::Postgres {
            dialect::query("SELECT pg_advisory_xact_lock(74007400)")
                .execute(&mut *tx)
                .await?;
        }
        // Under the lock: two instances creating the version table of a
        // fresh PostgreSQL database at once collide in its catalog
        // (`pg_type_typname_nsp_index`), `IF NOT EXISTS` or not.
        tx.execute(schema::version_table(self.backend).as_str())
            .await?;
        let current: i64 =
            dialect::query("SELECT version FROM schema_version WHERE component = $1")
                .bind(component)
                .fetch_optional(&mut *tx)
                .await?
                .map(|row| sqlx::Row::try_get(&row, "version"))
                .transpose()?
                .unwrap_or(0);
        for migration in migrations.into_iter().filter(|m| m.version > current) {
            for statement in &migration.statements {
                tx.execute(statement.as_str()).await?;
            }
            dialect::query(
                "INSERT INTO schema_version (component, version) VALUES ($1, $2) \
                 ON CONFLICT (component) DO UPDATE SET version = $2",
            )
            .bind(component)
            .bind(migration.version)
            .execute(&mut *tx)
            .await?;
            tracing::info!(component, version = migration.version, "schema migrated");
        }
        tx.commit().await
    }
}
