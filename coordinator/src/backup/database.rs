//! A tenant's database: dumped with `pg_dump --format=custom` inside a
//! snapshot the coordinator holds open, so the per-table row counts and
//! checksums it records (computed while the dump streams) are of exactly
//! the data dumped; the dump is
//! streamed through chunking, compression and encryption into the
//! repository, never held whole in memory or written to local disk.
//! Uncompressed (`--compress=0`): the repository compresses each chunk,
//! and an uncompressed dump dedupes from one day to the next.
//!
//! Restored with `pg_restore --clean --if-exists --single-transaction`:
//! a restore that fails changes nothing.

use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};

use futures::{StreamExt, TryStreamExt};
use sqlx::{Connection, PgConnection, Row};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};
use uuid::Uuid;

use super::BackupError;
use super::chunk::{ChunkRef, ChunkWriter};
use super::manifest::{Content, TableCheck};
use super::repo::Repository;
use crate::tenant_data::{TenantDatabases, ToolAccess};

/// Tables a manifest lists at most (a tenant decides how many it has).
pub const MAX_TABLES: usize = 10_000;
/// The end of a client program's stderr kept for its error.
const STDERR_TAIL: usize = 4096;
/// Chunks fetched ahead of the one `pg_restore` is reading.
const PREFETCH: usize = 4;

/// Dumps the database `name` into `writer`'s repository.
pub async fn back_up(
    databases: &TenantDatabases,
    name: &str,
    writer: &ChunkWriter,
) -> Result<Content, BackupError> {
    let mut conn = databases.connect_to(name).await?;
    let mut tx = conn.begin().await.map_err(query("begin"))?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await
        .map_err(query("open a snapshot"))?;
    let snapshot: String = sqlx::query_scalar("SELECT pg_export_snapshot()")
        .fetch_one(&mut *tx)
        .await
        .map_err(query("export the snapshot"))?;
    let access = databases.tool_access(name);
    let mut dump = tool(
        "pg_dump",
        &access,
        &[
            "--format=custom",
            "--compress=0",
            "--no-password",
            &format!("--snapshot={snapshot}"),
        ],
    )
    .stdout(Stdio::piped())
    .spawn()
    .map_err(|source| BackupError::Tool {
        tool: "pg_dump",
        detail: source.to_string(),
    })?;
    let stdout = dump.stdout.take().expect("stdout is piped");
    let stderr = tail_of(&mut dump);
    // The checks read the same snapshot as the dump, on this connection,
    // while the dump streams: the two scans run side by side.
    let (checks, chunks) = tokio::join!(table_checks(&mut tx), writer.write(stdout));
    if chunks.is_err() || checks.is_err() {
        // Nobody reads its output any more: it would block on a full pipe.
        let _ = dump.start_kill();
    }
    let status = dump.wait().await.map_err(BackupError::Read)?;
    let detail = stderr.await.unwrap_or_default();
    tx.commit().await.map_err(query("end the snapshot"))?;
    let chunks = chunks?;
    let (tables, tables_truncated) = checks?;
    if !status.success() {
        return Err(BackupError::Tool {
            tool: "pg_dump",
            detail: format!("{status}: {detail}"),
        });
    }
    Ok(Content::Database {
        chunks,
        tables,
        tables_truncated,
        dumped_by: version("pg_dump").await,
    })
}

/// Restores the dump `chunks` into the database `name`, whose objects
/// are replaced and end up owned by `owner`; in one transaction. Bytes fed
/// to `pg_restore` are added to `progress` as they go.
pub async fn restore(
    repo: &Repository,
    tenant: Uuid,
    chunks: &[ChunkRef],
    databases: &TenantDatabases,
    name: &str,
    owner: &str,
    progress: &AtomicU64,
) -> Result<u64, BackupError> {
    let source = repo.chunks(tenant).await?;
    let access = databases.tool_access(name);
    let mut restore = tool(
        "pg_restore",
        &access,
        &[
            "--clean",
            "--if-exists",
            "--single-transaction",
            "--exit-on-error",
            "--no-owner",
            "--no-acl",
            "--no-password",
            &format!("--role={owner}"),
        ],
    )
    .stdin(Stdio::piped())
    .spawn()
    .map_err(|source| BackupError::Tool {
        tool: "pg_restore",
        detail: source.to_string(),
    })?;
    let mut stdin = restore.stdin.take().expect("stdin is piped");
    let stderr = tail_of(&mut restore);
    let feed = async {
        let mut written = 0u64;
        let mut fetched =
            futures::stream::iter(chunks.iter().map(|c| c.id.clone()).collect::<Vec<_>>())
                .map(|id| source.fetch(&id))
                .buffered(PREFETCH);
        while let Some(data) = fetched.try_next().await? {
            if stdin.write_all(&data).await.is_err() {
                // pg_restore stopped reading: its status says why.
                break;
            }
            written += data.len() as u64;
            progress.fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        drop(stdin);
        Ok::<_, BackupError>(written)
    };
    let fed = feed.await;
    if fed.is_err() {
        let _ = restore.start_kill();
    }
    let status = restore.wait().await.map_err(BackupError::Read)?;
    let written = fed?;
    if !status.success() {
        return Err(BackupError::Tool {
            tool: "pg_restore",
            detail: format!("{status}: {}", stderr.await.unwrap_or_default()),
        });
    }
    Ok(written)
}

/// Every ordinary table's row count and checksum, in name order (at most
/// [`MAX_TABLES`]; `true` when there were more).
pub async fn table_checks(conn: &mut PgConnection) -> Result<(Vec<TableCheck>, bool), BackupError> {
    let names: Vec<String> = sqlx::query_scalar(
        "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') \
         AND n.nspname NOT LIKE 'pg\\_toast%' ORDER BY 1 LIMIT $1",
    )
    .bind(MAX_TABLES as i64 + 1)
    .fetch_all(&mut *conn)
    .await
    .map_err(query("list the tables"))?;
    let truncated = names.len() > MAX_TABLES;
    let mut checks = Vec::with_capacity(names.len().min(MAX_TABLES));
    for table in names.into_iter().take(MAX_TABLES) {
        // `table` is `format('%I.%I')`'s quoting of a catalogue name.
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) AS rows, \
             coalesce(sum(hashtextextended(t::text, 0)::numeric), 0)::text AS checksum \
             FROM ONLY {table} t"
        )))
        .fetch_one(&mut *conn)
        .await
        .map_err(query("count a table's rows"))?;
        checks.push(TableCheck {
            table,
            rows: row.try_get("rows").map_err(query("read a row count"))?,
            checksum: row.try_get("checksum").map_err(query("read a checksum"))?,
        });
    }
    Ok((checks, truncated))
}

/// `program` pointed at the database of `access`, its password in its
/// environment.
fn tool(program: &str, access: &ToolAccess, args: &[&str]) -> Command {
    let mut command = Command::new(program);
    command
        .args(args)
        .arg(format!("--dbname={}", access.dbname))
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    match &access.password {
        Some(password) => command.env("PGPASSWORD", password),
        None => command.env_remove("PGPASSWORD"),
    };
    command
}

/// Reads `child`'s stderr to its end, keeping the last few KiB.
fn tail_of(child: &mut Child) -> tokio::task::JoinHandle<String> {
    let mut stderr = child.stderr.take().expect("stderr is piped");
    tokio::spawn(async move {
        let mut tail = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = stderr.read(&mut buf).await {
            if n == 0 {
                break;
            }
            tail.extend_from_slice(&buf[..n]);
            if tail.len() > STDERR_TAIL {
                tail.drain(..tail.len() - STDERR_TAIL);
            }
        }
        String::from_utf8_lossy(&tail).trim().to_owned()
    })
}

async fn version(program: &str) -> String {
    match Command::new(program).arg("--version").output().await {
        Ok(out) => String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        Err(_) => program.to_owned(),
    }
}

fn query(step: &'static str) -> impl FnOnce(sqlx::Error) -> BackupError {
    move |source| BackupError::Query { step, source }
}
