//! A database of each test's own, and direct access to it for the
//! assertions that must look at what was stored.

use sqlx::Row;
use tempfile::TempDir;

use crate::{Db, postgres_url};

/// A database of its own for one test: a SQLite file in a temporary
/// directory, or a fresh PostgreSQL schema (dropped on drop).
#[derive(Debug)]
pub struct TestDb {
    pub kind: Db,
    pub url: String,
    pub dir: TempDir,
    schema: Option<String>,
    pool: tokio::sync::OnceCell<Pool>,
}

/// A connection pool of the test's own, opened on first use (after the
/// coordinator has created the database).
#[derive(Debug)]
enum Pool {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

impl TestDb {
    pub async fn new(kind: Db) -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        match kind {
            Db::Sqlite => TestDb {
                kind,
                url: format!("sqlite:{}", dir.path().join("knowton.db").display()),
                dir,
                schema: None,
                pool: Default::default(),
            },
            Db::Postgres => {
                let base = postgres_url().expect("TEST_DATABASE_URL");
                let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
                let pool = sqlx::PgPool::connect(&base)
                    .await
                    .expect("connect to TEST_DATABASE_URL");
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
                    .execute(&pool)
                    .await
                    .expect("create test schema");
                pool.close().await;
                let sep = if base.contains('?') { '&' } else { '?' };
                TestDb {
                    kind,
                    url: format!("{base}{sep}options=-c%20search_path%3D{schema}"),
                    dir,
                    schema: Some(schema),
                    pool: Default::default(),
                }
            }
        }
    }

    async fn pool(&self) -> &Pool {
        self.pool
            .get_or_init(|| async {
                match self.kind {
                    Db::Sqlite => Pool::Sqlite(sqlx::SqlitePool::connect(&self.url).await.unwrap()),
                    Db::Postgres => Pool::Postgres(sqlx::PgPool::connect(&self.url).await.unwrap()),
                }
            })
            .await
    }

    /// Runs `sql` (DDL or DML without results).
    pub async fn execute(&self, sql: &str) {
        let sql = sqlx::AssertSqlSafe(sql.to_owned());
        match self.pool().await {
            Pool::Sqlite(pool) => sqlx::raw_sql(sql).execute(pool).await.map(drop),
            Pool::Postgres(pool) => sqlx::raw_sql(sql).execute(pool).await.map(drop),
        }
        .unwrap();
    }

    /// Rows of `sql`, every column cast to text (NULL as `None`).
    pub async fn rows(&self, sql: &str) -> Vec<Vec<Option<String>>> {
        macro_rules! collect {
            ($pool:expr) => {{
                let rows = sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
                    .fetch_all($pool)
                    .await
                    .unwrap_or_else(|e| panic!("{sql}: {e}"));
                rows.iter()
                    .map(|row| {
                        (0..row.len())
                            .map(|i| row.try_get::<Option<String>, _>(i).unwrap())
                            .collect()
                    })
                    .collect()
            }};
        }
        match self.pool().await {
            Pool::Sqlite(pool) => collect!(pool),
            Pool::Postgres(pool) => collect!(pool),
        }
    }

    /// The first column of the first row.
    pub async fn scalar(&self, sql: &str) -> Option<String> {
        self.rows(sql)
            .await
            .into_iter()
            .next()
            .and_then(|r| r.into_iter().next().flatten())
    }

    /// The application's tables (without the migrations bookkeeping).
    pub async fn tables(&self) -> Vec<String> {
        let sql = match self.kind {
            Db::Sqlite => {
                "SELECT name FROM sqlite_master WHERE type = 'table' \
                           AND name NOT LIKE 'sqlite_%' AND name <> '_sqlx_migrations' ORDER BY name"
            }
            Db::Postgres => {
                "SELECT table_name::text FROM information_schema.tables \
                             WHERE table_schema = current_schema() AND table_name <> '_sqlx_migrations' \
                             ORDER BY table_name"
            }
        };
        self.rows(sql)
            .await
            .into_iter()
            .filter_map(|r| r[0].clone())
            .collect()
    }

    pub async fn columns(&self, table: &str) -> Vec<String> {
        let sql = match self.kind {
            Db::Sqlite => format!("SELECT name FROM pragma_table_info('{table}')"),
            Db::Postgres => format!(
                "SELECT column_name::text FROM information_schema.columns \
                 WHERE table_schema = current_schema() AND table_name = '{table}' ORDER BY ordinal_position"
            ),
        };
        self.rows(&sql)
            .await
            .into_iter()
            .filter_map(|r| r[0].clone())
            .collect()
    }

    /// Every value of every column of every table, as text.
    pub async fn every_value(&self) -> Vec<(String, String, String)> {
        let mut out = Vec::new();
        for table in self.tables().await {
            for column in self.columns(&table).await {
                let cast = match self.kind {
                    Db::Sqlite => format!("SELECT CAST(\"{column}\" AS TEXT) FROM \"{table}\""),
                    Db::Postgres => format!("SELECT \"{column}\"::text FROM \"{table}\""),
                };
                for row in self.rows(&cast).await {
                    if let Some(value) = row.into_iter().next().flatten() {
                        out.push((table.clone(), column.clone(), value));
                    }
                }
            }
        }
        out
    }

    /// [`Self::every_value`] but for the tables of the coordinator
    /// processes' own liveness (the leader's lease and the replicas'
    /// heartbeats), which their background tasks renew every few seconds:
    /// a snapshot of what requests changed.
    pub async fn every_stored_value(&self) -> Vec<(String, String, String)> {
        const RENEWED: [&str; 2] = ["coordinator_lease", "coordinator_replicas"];
        let mut values = self.every_value().await;
        values.retain(|(table, _, _)| !RENEWED.contains(&table.as_str()));
        values
    }

    /// Rows in each table that belong to `tenant_id`.
    pub async fn rows_of_tenant(&self, tenant_id: &str) -> Vec<(String, usize)> {
        let mut out = Vec::new();
        for table in self.tables().await {
            let column = if table == "tenants" {
                "id"
            } else {
                "tenant_id"
            };
            if !self.columns(&table).await.iter().any(|c| c == column) {
                continue;
            }
            let n = self
                .scalar(&format!(
                    "SELECT CAST(COUNT(*) AS TEXT) FROM {table} WHERE {column} = '{tenant_id}'"
                ))
                .await
                .unwrap_or_default()
                .parse()
                .unwrap_or(0);
            out.push((table, n));
        }
        out
    }

    /// Total rows in every application table except the coordinators' own
    /// bookkeeping (`meta`, and `coordinator_*`: the lease, heartbeats).
    pub async fn total_rows(&self) -> usize {
        let mut total = 0;
        for table in self.tables().await {
            if table == "meta" || table.starts_with("coordinator_") {
                continue;
            }
            total += self
                .scalar(&format!("SELECT CAST(COUNT(*) AS TEXT) FROM {table}"))
                .await
                .unwrap_or_default()
                .parse::<usize>()
                .unwrap_or(0);
        }
        total
    }

    /// Makes the next INSERT into `table` fail inside the database.
    pub async fn fail_inserts_into(&self, table: &str) {
        let sql = match self.kind {
            Db::Sqlite => format!(
                "CREATE TRIGGER fail_{table} BEFORE INSERT ON {table} \
                 BEGIN SELECT RAISE(ABORT, 'injected failure'); END;"
            ),
            Db::Postgres => format!(
                "CREATE FUNCTION fail_{table}() RETURNS trigger LANGUAGE plpgsql AS \
                 $$ BEGIN RAISE EXCEPTION 'injected failure'; END $$; \
                 CREATE TRIGGER fail_{table} BEFORE INSERT ON {table} \
                 FOR EACH ROW EXECUTE FUNCTION fail_{table}();"
            ),
        };
        self.execute(&sql).await;
    }

    pub async fn stop_failing_inserts_into(&self, table: &str) {
        let sql = match self.kind {
            Db::Sqlite => format!("DROP TRIGGER fail_{table};"),
            Db::Postgres => {
                format!("DROP TRIGGER fail_{table} ON {table}; DROP FUNCTION fail_{table}();")
            }
        };
        self.execute(&sql).await;
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (Some(schema), Some(base)) = (self.schema.take(), postgres_url()) else {
            return;
        };
        // Best effort, on a thread of its own: Drop cannot be async.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let pool = sqlx::PgPool::connect(&base).await.ok()?;
                // Never hang a test on a lock a leaked connection still holds.
                let sql = format!("SET lock_timeout = '5s'; DROP SCHEMA {schema} CASCADE");
                sqlx::raw_sql(sqlx::AssertSqlSafe(sql))
                    .execute(&pool)
                    .await
                    .ok()
            })
        })
        .join();
    }
}

/// Runs `sql` in the tenant database `database` on the PostgreSQL server
/// at `server`, as the tenant's own role (`SET ROLE`), as its backend
/// would: what it creates belongs to the tenant.
pub async fn as_tenant(server: &str, database: &str, sql: &str) {
    let pool = tenant_database(server, database).await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "SET ROLE \"{database}\"; {sql}"
    )))
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
}

/// A pool on the tenant database `database` of the PostgreSQL server at
/// `server`, as the server's administrator.
pub async fn tenant_database(server: &str, database: &str) -> sqlx::PgPool {
    let mut url = url::Url::parse(server).unwrap();
    url.set_path(&format!("/{database}"));
    sqlx::PgPool::connect(url.as_str()).await.unwrap()
}

/// The rows of the `notes` table (`id int, body text`) the tests give a
/// tenant's database, in order.
pub async fn notes(server: &str, database: &str) -> Vec<(i32, String)> {
    let pool = tenant_database(server, database).await;
    let rows = sqlx::query_as("SELECT id, body FROM notes ORDER BY id")
        .fetch_all(&pool)
        .await
        .unwrap();
    pool.close().await;
    rows
}
