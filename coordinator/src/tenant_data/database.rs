//! Each tenant's own PostgreSQL database and role, on the server that
//! `--tenant-database-url` names (an administrative connection: a
//! superuser, or a role with CREATEROLE and CREATEDB that may own the
//! tenants' roles).
//!
//! A tenant's role and database are both `tenant_<slug>` (its `-` as
//! `_`); the database is owned by the role, nobody else may connect
//! (`CONNECT` revoked from `PUBLIC`), and its comment names the tenant it
//! was made for, so that nothing else on the server is ever dropped as a
//! tenant's and a database left by an interrupted provisioning is
//! recognised.

use std::str::FromStr;
use std::time::Duration;

use serde::Serialize;
use sqlx::ConnectOptions;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions};
use uuid::Uuid;

use super::TenantDataError;
use super::scram;
use crate::store::redact_url_credentials;

/// How a database made for a tenant is marked: `knowton tenant <id>
/// <unix seconds when made> <installation id>`.
const MARKER: &str = "knowton tenant";

/// What a database's mark says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Mark {
    tenant: Uuid,
    /// Unix seconds.
    made_at: i64,
    /// The installation whose coordinator made it: installations may
    /// share one tenants' server, and each sweeps only its own.
    installation: Uuid,
}

/// A tenant's database as its backend is told of it (the password is in
/// its Secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseRef {
    pub host: String,
    pub port: u16,
    pub name: String,
    pub user: String,
}

/// The tenants' PostgreSQL server.
#[derive(Debug, Clone)]
pub struct TenantDatabases {
    pool: PgPool,
    /// The administrative connection's options, for other databases.
    options: PgConnectOptions,
    /// The administrative URL without its password, and the password: how
    /// `pg_dump` and `pg_restore` are pointed at a tenant's database (the
    /// password in their environment, never in their arguments).
    tool_url: url::Url,
    tool_password: Option<String>,
    host: String,
    port: u16,
    installation: Uuid,
}

/// How a PostgreSQL client program reaches one database: `--dbname` and
/// `PGPASSWORD`.
#[derive(Clone)]
pub struct ToolAccess {
    pub dbname: String,
    pub password: Option<String>,
}

impl std::fmt::Debug for ToolAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ToolAccess")
            .field("dbname", &self.dbname)
            .finish_non_exhaustive()
    }
}

/// The role and database name of the tenant `slug` (a DNS label: letters,
/// digits and `-`, which becomes `_`; no slug has `_`, so no two tenants
/// share a name).
pub fn database_name(slug: &str) -> String {
    format!("tenant_{}", slug.replace('-', "_"))
}

/// `name` as a quoted SQL identifier.
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `value` as a quoted SQL string literal.
fn literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

impl TenantDatabases {
    /// Connects to the tenants' server (checked at once: a wrong URL stops
    /// the coordinator from starting, not the first provisioning) on
    /// behalf of the installation `installation`.
    pub async fn connect(url: &str, installation: Uuid) -> Result<Self, TenantDataError> {
        let shown = redact_url_credentials(url);
        let opts = PgConnectOptions::from_str(url)
            .map_err(|_| TenantDataError::InvalidUrl { url: shown.clone() })?;
        let host = opts.get_host().to_owned();
        let port = opts.get_port();
        let mut tool_url =
            url::Url::parse(url).map_err(|_| TenantDataError::InvalidUrl { url: shown.clone() })?;
        let tool_password = tool_url.password().map(percent_decode);
        let _ = tool_url.set_password(None);
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(opts.clone())
            .await
            .map_err(|source| TenantDataError::Connect { url: shown, source })?;
        Ok(TenantDatabases {
            pool,
            options: opts,
            tool_url,
            tool_password,
            host,
            port,
            installation,
        })
    }

    /// A connection to the database `name` as the administrative role.
    pub async fn connect_to(&self, name: &str) -> Result<PgConnection, TenantDataError> {
        self.options
            .clone()
            .database(name)
            .connect()
            .await
            .map_err(failed(name, "connect to it"))
    }

    /// How `pg_dump` or `pg_restore` reaches the database `name`.
    pub fn tool_access(&self, name: &str) -> ToolAccess {
        let mut url = self.tool_url.clone();
        url.set_path(&format!("/{name}"));
        ToolAccess {
            dbname: url.to_string(),
            password: self.tool_password.clone(),
        }
    }

    /// Where the tenant `slug`'s backend finds its database.
    pub fn reference(&self, slug: &str) -> DatabaseRef {
        let name = database_name(slug);
        DatabaseRef {
            host: self.host.clone(),
            port: self.port,
            user: name.clone(),
            name,
        }
    }

    /// Creates the tenant's role (logging in with `password`, sent as its
    /// SCRAM verifier) and database. On failure, what this call created is
    /// dropped again; a role or database of that name that existed before
    /// is an error and is left alone.
    pub async fn create(
        &self,
        tenant: Uuid,
        slug: &str,
        password: &str,
    ) -> Result<DatabaseRef, TenantDataError> {
        let name = database_name(slug);
        let id = ident(&name);
        let mut made_role = false;
        let mut made_database = false;
        let made_at = chrono::Utc::now().timestamp();
        let steps = async {
            self.run(
                &name,
                "create the role",
                &format!(
                    "CREATE ROLE {id} LOGIN PASSWORD {}",
                    literal(&scram::verifier(password))
                ),
            )
            .await?;
            made_role = true;
            // CREATE DATABASE cannot run inside a transaction: one step each.
            self.run(
                &name,
                "create the database",
                &format!("CREATE DATABASE {id} OWNER {id}"),
            )
            .await?;
            made_database = true;
            self.run(
                &name,
                "mark the database",
                &format!(
                    "COMMENT ON DATABASE {id} IS {}",
                    literal(&format!(
                        "{MARKER} {tenant} {made_at} {}",
                        self.installation
                    ))
                ),
            )
            .await?;
            self.run(
                &name,
                "revoke access from PUBLIC",
                &format!("REVOKE ALL ON DATABASE {id} FROM PUBLIC"),
            )
            .await
        };
        if let Err(err) = steps.await {
            self.undo(&name, made_role, made_database).await;
            return Err(err);
        }
        Ok(self.reference(slug))
    }

    /// Drops what an interrupted [`Self::create`] made.
    async fn undo(&self, name: &str, role: bool, database: bool) {
        let id = ident(name);
        let undo = [
            (
                database,
                format!("DROP DATABASE IF EXISTS {id} WITH (FORCE)"),
            ),
            (role, format!("DROP ROLE IF EXISTS {id}")),
        ];
        for (made, sql) in undo {
            if made && let Err(err) = self.run(name, "undo the creation", &sql).await {
                tracing::error!(database = name, error = %err, "failed to drop what a failed provisioning created; drop it by hand");
            }
        }
    }

    /// Stops the tenant's role from logging in and ends its sessions
    /// (deprovisioned: the data stays).
    pub async fn disable(&self, slug: &str) -> Result<(), TenantDataError> {
        let name = database_name(slug);
        if !self.role_exists(&name).await? {
            return Ok(());
        }
        self.run(
            &name,
            "disable the role's login",
            &format!("ALTER ROLE {} NOLOGIN", ident(&name)),
        )
        .await?;
        sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1")
            .bind(&name)
            .execute(&self.pool)
            .await
            .map_err(failed(&name, "end the role's sessions"))?;
        Ok(())
    }

    /// The tenant the database `name` was made for (`None`: no such
    /// database, or not one made by a coordinator).
    async fn made_for(&self, name: &str) -> Result<Option<Uuid>, TenantDataError> {
        let comment: Option<Option<String>> = sqlx::query_scalar(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = $1",
        )
        .bind(name)
        .fetch_optional(&self.pool)
        .await
        .map_err(failed(name, "read the database's mark"))?;
        Ok(comment
            .flatten()
            .and_then(|c| parse_marker(&c))
            .map(|mark| mark.tenant))
    }

    /// Drops the tenant's database and role (purged), if they were made for
    /// `tenant`; a database of that name made for another tenant, or by
    /// someone else, is refused.
    pub async fn drop(&self, tenant: Uuid, slug: &str) -> Result<(), TenantDataError> {
        self.drop_named(tenant, &database_name(slug)).await
    }

    /// [`Self::drop`] by the database's name.
    pub async fn drop_named(&self, tenant: Uuid, name: &str) -> Result<(), TenantDataError> {
        match self.made_for(name).await? {
            Some(owner) if owner == tenant => {}
            None if !self.database_exists(name).await? => {}
            _ => {
                return Err(TenantDataError::NotOurs {
                    name: name.to_owned(),
                });
            }
        }
        let id = ident(name);
        self.run(
            name,
            "drop the database",
            &format!("DROP DATABASE IF EXISTS {id} WITH (FORCE)"),
        )
        .await?;
        self.run(name, "drop the role", &format!("DROP ROLE IF EXISTS {id}"))
            .await
    }

    /// Databases this installation made for tenants at least `age` ago, as
    /// (tenant, name): the caller drops those whose tenant the store does
    /// not have (a provisioning interrupted between the database and the
    /// record). Another installation's are not listed: their tenants are
    /// in another store.
    pub async fn made_before(&self, age: Duration) -> Result<Vec<(Uuid, String)>, TenantDataError> {
        let rows: Vec<(String, Option<String>)> = sqlx::query_as(
            "SELECT datname::text, shobj_description(oid, 'pg_database') FROM pg_database \
             WHERE datname LIKE 'tenant\\_%'",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(failed("tenant_*", "list the tenants' databases"))?;
        let cutoff = chrono::Utc::now().timestamp() - i64::try_from(age.as_secs()).unwrap_or(0);
        Ok(rows
            .into_iter()
            .filter_map(|(name, comment)| {
                let mark = parse_marker(comment.as_deref()?)?;
                (mark.installation == self.installation && mark.made_at <= cutoff)
                    .then_some((mark.tenant, name))
            })
            .collect())
    }

    /// A fresh, empty scratch database for checking `tenant`'s backups
    /// (one per tenant: a scratch left by a verification that stopped is
    /// dropped by the next), owned by the administrative role. Returns its
    /// name and that role, which a restore into it runs as.
    pub async fn create_scratch(&self, tenant: Uuid) -> Result<(String, String), TenantDataError> {
        let name = format!("knowton_verify_{}", tenant.simple());
        self.drop_scratch(&name).await?;
        self.run(
            &name,
            "create the scratch database",
            &format!("CREATE DATABASE {}", ident(&name)),
        )
        .await?;
        Ok((name, self.options.get_username().to_owned()))
    }

    /// Drops a scratch database made by [`Self::create_scratch`].
    pub async fn drop_scratch(&self, name: &str) -> Result<(), TenantDataError> {
        debug_assert!(name.starts_with("knowton_verify_"));
        self.run(
            name,
            "drop the scratch database",
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", ident(name)),
        )
        .await
    }

    async fn role_exists(&self, name: &str) -> Result<bool, TenantDataError> {
        self.exists(name, "SELECT 1 FROM pg_roles WHERE rolname = $1")
            .await
    }

    async fn database_exists(&self, name: &str) -> Result<bool, TenantDataError> {
        self.exists(name, "SELECT 1 FROM pg_database WHERE datname = $1")
            .await
    }

    async fn exists(&self, name: &str, sql: &'static str) -> Result<bool, TenantDataError> {
        let found: Option<i32> = sqlx::query_scalar(sql)
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(failed(name, "look it up"))?;
        Ok(found.is_some())
    }

    /// One statement (utility statements take no parameters: `sql` is
    /// built from quoted identifiers and literals only).
    async fn run(&self, name: &str, step: &'static str, sql: &str) -> Result<(), TenantDataError> {
        sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(&self.pool)
            .await
            .map(drop)
            .map_err(failed(name, step))
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

/// A failed statement on the database (or role) `name`, at `step`.
fn failed(name: &str, step: &'static str) -> impl FnOnce(sqlx::Error) -> TenantDataError {
    let name = name.to_owned();
    move |source| TenantDataError::Database { name, step, source }
}

/// A URL's password, percent-decoded (form decoding, with `+` kept).
fn percent_decode(text: &str) -> String {
    url::form_urlencoded::parse(format!("p={}", text.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// A database's mark, `None` if `comment` is not one.
fn parse_marker(comment: &str) -> Option<Mark> {
    let mut words = comment.strip_prefix(MARKER)?.split_whitespace();
    let mark = Mark {
        tenant: Uuid::parse_str(words.next()?).ok()?,
        made_at: words.next()?.parse().ok()?,
        installation: Uuid::parse_str(words.next()?).ok()?,
    };
    words.next().is_none().then_some(mark)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_the_slug_with_underscores() {
        assert_eq!(database_name("acme-shop-2"), "tenant_acme_shop_2");
    }

    #[test]
    fn identifiers_and_literals_are_quoted() {
        assert_eq!(ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(literal("it's"), "'it''s'");
    }

    #[test]
    fn only_a_coordinators_mark_is_read() {
        let (id, installation) = (Uuid::now_v7(), Uuid::new_v4());
        assert_eq!(
            parse_marker(&format!("{MARKER} {id} 1700000000 {installation}")),
            Some(Mark {
                tenant: id,
                made_at: 1_700_000_000,
                installation
            })
        );
        assert_eq!(parse_marker("the finance team's database"), None);
        assert_eq!(
            parse_marker(&format!("{MARKER} not-a-uuid 1 {installation}")),
            None
        );
        assert_eq!(
            parse_marker(&format!("{MARKER} {id} 1")),
            None,
            "no installation"
        );
        assert_eq!(
            parse_marker(&format!("{MARKER} {id} 1 {installation} more")),
            None
        );
    }
}
