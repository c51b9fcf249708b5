//! Backups against their peers, on the same data:
//!
//! - **files**: `--files` files totalling `--total-mib` (incompressible),
//!   backed up, then `--change-percent` of the files rewritten and backed up
//!   again, then restored; by the coordinator's backups and by
//!   `restic backup` / `restic restore` (Debian's restic), time and bytes
//!   added to the repository;
//! - **database**: a tenant database of about `--database-mib` on the local
//!   PostgreSQL, backed up by the coordinator and by
//!   `pg_dump -Fc | zstd > file`, then restored by the coordinator.
//!
//! Several runs, each on fresh repositories; the median and range.
//!
//! `cargo run --release -p knowton-bench --bin knowton-bench-backup -- --runs 3`

use std::path::{Path, PathBuf};
use std::process::Command;
use tokio::time::Instant;

use anyhow::{Context, bail};
use clap::Parser;
use knowton_bench::spread::Spread;
use knowton_coordinator::backup::manifest::Content;
use knowton_coordinator::backup::{BackupKind, Backups, TenantRef, open_repository, storage};
use knowton_coordinator::secrets::SecretBox;
use knowton_coordinator::tenant_data::{TenantData, TenantDatabases, TenantStorage, database_name};
use uuid::Uuid;

#[derive(Debug, Parser)]
struct Args {
    /// Files in the tree.
    #[arg(long, default_value_t = 10_000)]
    files: usize,
    /// Their total size.
    #[arg(long, default_value_t = 1024)]
    total_mib: u64,
    /// Files rewritten between the two backups.
    #[arg(long, default_value_t = 1.0)]
    change_percent: f64,
    /// The tenant database's approximate size (0: no database figures).
    #[arg(long, default_value_t = 300)]
    database_mib: u64,
    /// An administrative connection to the PostgreSQL server.
    #[arg(long, default_value = "postgres://postgres@127.0.0.1:5432/postgres")]
    database_url: String,
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Where the data and repositories go (a temporary directory inside).
    #[arg(long, default_value = "/tmp")]
    dir: PathBuf,
}

#[derive(Debug, Default)]
struct Figures {
    first_s: Vec<f64>,
    first_bytes: Vec<f64>,
    second_s: Vec<f64>,
    second_bytes: Vec<f64>,
    restore_s: Vec<f64>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    knowton_coordinator::certs::install_crypto_provider();
    let work = tempfile::tempdir_in(&args.dir)?;
    let secrets = SecretBox::from_key(&[7; 32]);
    let (mut ours, mut restic) = (Figures::default(), Figures::default());
    let mut db_ours = Vec::new();
    let mut db_baseline = Vec::new();
    let mut db_restore = Vec::new();
    let mut db_size = 0u64;
    let databases = if args.database_mib > 0 {
        Some(TenantDatabases::connect(&args.database_url, Uuid::new_v4()).await?)
    } else {
        None
    };
    for run in 0..args.runs {
        let root = work.path().join(format!("run-{run}"));
        let tenants = root.join("tenants");
        let storage = TenantStorage::new(tenants.clone());
        let tenant = TenantRef {
            id: Uuid::now_v7(),
            slug: format!("bench-{}", &Uuid::new_v4().simple().to_string()[..8]),
        };
        let files = storage.create(&tenant.slug)?;
        let names = generate(&files, args.files, args.total_mib << 20, run as u64)?;

        // Ours.
        let repo = open_repository(
            &format!("file://{}", root.join("ours").display()),
            None,
            &secrets,
        )?;
        let backups = Backups::new(
            repo.clone(),
            TenantData {
                databases: databases.clone(),
                storage: Some(storage.clone()),
            },
        );
        let started = Instant::now();
        let first = backups.run(&tenant, BackupKind::Storage).await?;
        ours.first_s.push(started.elapsed().as_secs_f64());
        ours.first_bytes.push(first.transfer.bytes_written as f64);

        // restic, on the same tree.
        let restic_repo = root.join("restic");
        restic_cmd(&restic_repo, &["init"])?;
        let started = Instant::now();
        restic_cmd(
            &restic_repo,
            &["backup", "--quiet", files.to_str().unwrap()],
        )?;
        restic.first_s.push(started.elapsed().as_secs_f64());
        let restic_first = dir_bytes(&restic_repo)?;
        restic.first_bytes.push(restic_first as f64);

        // Change some files, back up again.
        let changed = ((args.files as f64) * args.change_percent / 100.0).ceil() as usize;
        for (i, name) in names
            .iter()
            .enumerate()
            .step_by((args.files / changed.max(1)).max(1))
            .take(changed)
        {
            let len = std::fs::metadata(name)?.len() as usize;
            std::fs::write(name, noise(1_000_000 + i as u64 + run as u64 * 7919, len))?;
        }
        let started = Instant::now();
        let second = backups.run(&tenant, BackupKind::Storage).await?;
        ours.second_s.push(started.elapsed().as_secs_f64());
        ours.second_bytes.push(second.transfer.bytes_written as f64);
        let started = Instant::now();
        restic_cmd(
            &restic_repo,
            &["backup", "--quiet", files.to_str().unwrap()],
        )?;
        restic.second_s.push(started.elapsed().as_secs_f64());
        restic
            .second_bytes
            .push((dir_bytes(&restic_repo)? - restic_first) as f64);

        // Restore both.
        let Content::Storage { entries, .. } = &second.content else {
            bail!("a storage backup");
        };
        let started = Instant::now();
        storage::restore(
            &repo,
            tenant.id,
            entries,
            &root.join("restored-ours"),
            &std::sync::atomic::AtomicU64::new(0),
        )
        .await?;
        ours.restore_s.push(started.elapsed().as_secs_f64());
        let started = Instant::now();
        restic_cmd(
            &restic_repo,
            &[
                "restore",
                "latest",
                "--quiet",
                "--target",
                root.join("restored-restic").to_str().unwrap(),
            ],
        )?;
        restic.restore_s.push(started.elapsed().as_secs_f64());

        if let Some(databases) = &databases {
            let (ours_s, baseline_s, restore_s, size) =
                database_run(databases, &backups, &args, &root).await?;
            db_ours.push(ours_s);
            db_baseline.push(baseline_s);
            db_restore.push(restore_s);
            db_size = size;
        }
        std::fs::remove_dir_all(&root)?;
        eprintln!("run {} of {} done", run + 1, args.runs);
    }

    let mib = |bytes: f64| bytes / (1 << 20) as f64;
    let total = (args.total_mib << 20) as f64;
    println!(
        "files: {} files, {} MiB, {}% rewritten between backups; {} runs, median (min-max)",
        args.files, args.total_mib, args.change_percent, args.runs
    );
    for (name, f) in [("knowton", &ours), ("restic ", &restic)] {
        let s = |v: &Vec<f64>| Spread::of(v).expect("runs");
        let rate = |secs: &Vec<f64>| {
            Spread::of(&secs.iter().map(|t| mib(total) / t).collect::<Vec<_>>()).expect("runs")
        };
        println!(
            "  {name}: first backup {} s ({} MiB/s), {} MiB written; second {} s, {} KiB written; restore {} s ({} MiB/s)",
            s(&f.first_s),
            rate(&f.first_s),
            Spread::of(&f.first_bytes.iter().map(|b| mib(*b)).collect::<Vec<_>>()).expect("runs"),
            s(&f.second_s),
            Spread::of(
                &f.second_bytes
                    .iter()
                    .map(|b| b / 1024.0)
                    .collect::<Vec<_>>()
            )
            .expect("runs"),
            s(&f.restore_s),
            rate(&f.restore_s),
        );
    }
    if !db_ours.is_empty() {
        let size = mib(db_size as f64);
        let rate = |secs: &Vec<f64>| {
            Spread::of(&secs.iter().map(|t| size / t).collect::<Vec<_>>()).expect("runs")
        };
        println!(
            "database: {size:.0} MiB in PostgreSQL (pg_database_size); throughput MiB/s of that size, median (min-max)"
        );
        println!("  knowton backup:            {}", rate(&db_ours));
        println!("  pg_dump -Fc | zstd > file: {}", rate(&db_baseline));
        let ratio: Vec<f64> = db_baseline
            .iter()
            .zip(&db_ours)
            .map(|(b, o)| b / o)
            .collect();
        println!(
            "  knowton / baseline:        {}",
            Spread::of(&ratio).expect("runs")
        );
        println!("  knowton restore:           {}", rate(&db_restore));
    }
    Ok(())
}

/// A tenant database of about `--database-mib`, backed up by ours and by
/// the baseline, then restored by ours; seconds each, and its size.
async fn database_run(
    databases: &TenantDatabases,
    backups: &Backups,
    args: &Args,
    root: &Path,
) -> anyhow::Result<(f64, f64, f64, u64)> {
    let tenant = TenantRef {
        id: Uuid::now_v7(),
        slug: format!("bench-db-{}", &Uuid::new_v4().simple().to_string()[..8]),
    };
    let name = database_name(&tenant.slug);
    databases
        .create(tenant.id, &tenant.slug, "BenchPassword0123456789abcdefXY")
        .await?;
    let result = async {
        let mut conn = databases.connect_to(&name).await?;
        // ~1 KiB rows of mixed text: compressible, as real rows are.
        let rows = args.database_mib * 1024;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "SET ROLE \"{name}\"; \
             CREATE TABLE events (id bigint PRIMARY KEY, at timestamptz, kind text, body text); \
             INSERT INTO events SELECT i, now() - i * interval '1 second', 'kind-' || (i % 17), \
               repeat(md5(i::text) || ' ', 28) FROM generate_series(1, {rows}) i; \
             ANALYZE events;"
        )))
        .execute(&mut conn)
        .await?;
        let size: i64 = sqlx::query_scalar("SELECT pg_database_size(current_database())")
            .fetch_one(&mut conn)
            .await?;
        drop(conn);

        let started = Instant::now();
        let manifest = backups.run(&tenant, BackupKind::Database).await?;
        let ours = started.elapsed().as_secs_f64();

        let access = databases.tool_access(&name);
        let out = root.join("dump.zst");
        let started = Instant::now();
        let status = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "pg_dump -Fc --no-password --dbname=\"$DBNAME\" | zstd -q -f -o '{}'",
                out.display()
            ))
            .env("DBNAME", &access.dbname)
            .envs(access.password.iter().map(|p| ("PGPASSWORD", p)))
            .status()?;
        let baseline = started.elapsed().as_secs_f64();
        if !status.success() {
            bail!("pg_dump | zstd failed: {status}");
        }

        let started = Instant::now();
        backups.restore_database(&manifest, &tenant).await?;
        let restore = started.elapsed().as_secs_f64();
        Ok::<_, anyhow::Error>((ours, baseline, restore, u64::try_from(size).unwrap_or(0)))
    }
    .await;
    databases.drop(tenant.id, &tenant.slug).await?;
    result
}

/// Writes `count` files totalling about `total` bytes under `dir` (in
/// 100 subdirectories, sizes from half to one and a half times the
/// average); returns their paths.
fn generate(dir: &Path, count: usize, total: u64, seed: u64) -> anyhow::Result<Vec<PathBuf>> {
    let average = (total / count.max(1) as u64).max(1);
    let mut names = Vec::with_capacity(count);
    for i in 0..count {
        let sub = dir.join(format!("d{:02}", i % 100));
        std::fs::create_dir_all(&sub)?;
        let len = average / 2 + (i as u64 * 7_919 % average.max(1));
        let path = sub.join(format!("f{i:05}.bin"));
        std::fs::write(&path, noise(seed * 1_000_003 + i as u64, len as usize))?;
        names.push(path);
    }
    Ok(names)
}

/// Incompressible bytes (xorshift64), eight at a time.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

fn restic_cmd(repo: &Path, args: &[&str]) -> anyhow::Result<()> {
    let status = Command::new("restic")
        .arg("--repo")
        .arg(repo)
        .args(args)
        .env("RESTIC_PASSWORD", "bench")
        .stdout(std::process::Stdio::null())
        .status()
        .context("restic (apt-get install restic)")?;
    if !status.success() {
        bail!("restic {args:?} failed: {status}");
    }
    Ok(())
}

/// The bytes of every file under `dir`.
fn dir_bytes(dir: &Path) -> anyhow::Result<u64> {
    let mut total = 0;
    let mut pending = vec![dir.to_owned()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d)? {
            let entry = entry?;
            let meta = entry.metadata()?;
            if meta.is_dir() {
                pending.push(entry.path());
            } else {
                total += meta.len();
            }
        }
    }
    Ok(total)
}
