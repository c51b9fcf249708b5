//! A scratch PostgreSQL schema for one benchmark run: created in a shared
//! database, handed out as a URL whose `search_path` points to it, and
//! dropped with everything in it at the end.

use anyhow::Context;
use sqlx::Connection;

/// A schema of the benchmark's own.
#[derive(Debug)]
pub struct Schema {
    /// The database's URL as given, without the `search_path`.
    server_url: String,
    pub name: String,
    /// `server_url` with the session's `search_path` set to the schema:
    /// what the coordinators get as their database URL.
    pub url: String,
}

impl Schema {
    /// Creates `{prefix}_{random}` (dashes in `prefix` become underscores)
    /// in the database of `server_url`.
    pub async fn create(server_url: &str, prefix: &str) -> anyhow::Result<Self> {
        let run_id = uuid::Uuid::new_v4().simple().to_string();
        let name = format!("{}_{}", prefix.replace('-', "_"), &run_id[..12]);
        execute(server_url, &format!("CREATE SCHEMA {name}"))
            .await
            .context("failed to create the benchmark schema")?;
        Ok(Schema {
            server_url: server_url.to_owned(),
            url: with_search_path(server_url, &name),
            name,
        })
    }

    /// Drops the schema and everything in it; a failure is only warned
    /// about (the benchmark's own outcome matters more).
    pub async fn drop(self) {
        let statement = format!("DROP SCHEMA IF EXISTS {} CASCADE", self.name);
        if let Err(err) = execute(&self.server_url, &statement).await {
            eprintln!("warning: failed to drop schema {}: {err:#}", self.name);
        }
    }
}

async fn execute(url: &str, statement: &str) -> anyhow::Result<()> {
    let mut conn = sqlx::PgConnection::connect(url)
        .await
        .context("failed to connect to PostgreSQL")?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(statement.to_owned()))
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    Ok(())
}

/// `url` with the session's search_path set to `schema`.
fn with_search_path(url: &str, schema: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}options=-c%20search_path%3D{schema}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_path_is_appended_to_the_query() {
        assert_eq!(
            with_search_path("postgres://p@h/db", "s1"),
            "postgres://p@h/db?options=-c%20search_path%3Ds1"
        );
        assert_eq!(
            with_search_path("postgres://p@h/db?sslmode=disable", "s1"),
            "postgres://p@h/db?sslmode=disable&options=-c%20search_path%3Ds1"
        );
    }
}
