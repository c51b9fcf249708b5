//! The built binary end to end: `serve` on the embedded default in a fresh
//! directory, then the operator commands against it, then SIGTERM.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_knowton-coordinator");

fn command(dir: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.current_dir(dir);
    for var in [
        "DATABASE_URL",
        "KNOWTON_ADMIN_TOKEN",
        "KNOWTON_ADMIN_TOKEN_FILE",
        "KNOWTON_SECRET_KEY",
        "KNOWTON_SECRET_KEY_FILE",
        "KNOWTON_SERVER",
        "KNOWTON_OUTPUT",
        "KNOWTON_HTTP_ADDR",
        "KUBECONFIG",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// Starts `serve` and returns it with the address it bound.
fn serve(dir: &Path) -> (Child, String) {
    let mut child = command(dir)
        .args([
            "serve",
            "--http-addr",
            "127.0.0.1:0",
            "--log-format",
            "json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let addr = loop {
        let line = lines
            .next()
            .expect("serve exited before it was ready")
            .unwrap();
        let log: serde_json::Value = serde_json::from_str(&line).unwrap();
        if log["fields"]["message"] == "coordinator ready" {
            break log["fields"]["http.addr"].as_str().unwrap().to_owned();
        }
    };
    // Keep draining the log so the child never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    (child, format!("http://{addr}"))
}

fn cli(dir: &Path, server: &str, args: &[&str]) -> Output {
    command(dir)
        .env("KNOWTON_SERVER", server)
        .args(args)
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[allow(
    clippy::disallowed_types,
    reason = "a synchronous test polling a child process"
)]
fn wait_for_exit(child: &mut Child, timeout: Duration) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(std::time::Instant::now() < deadline, "process did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn serve_provision_get_and_stop() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, url) = serve(dir.path());
    let dir = dir.path();
    for (file, mode) in [("knowton.key", 0o600), ("knowton-admin.token", 0o600)] {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(dir.join(file)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, mode, "{file}");
    }
    assert!(dir.join("knowton.db").exists());

    let out = cli(
        dir,
        &url,
        &[
            "provision",
            "Acme Corp",
            "acme",
            "enterprise",
            "admin@acme.com",
            "acme.knowton.com",
            "--primary-color",
            "#112233",
            "--disable-feature",
            "bonds",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for needle in [
        "Provisioned tenant acme",
        "kt_live_",
        "kt_test_",
        "temporary password",
        "https://acme.knowton.com",
    ] {
        assert!(stdout.contains(needle), "{needle}: {stdout}");
    }

    let out = cli(dir, &url, &["tenants", "get", "acme"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    for needle in [
        "Acme Corp (acme)",
        "plan:        enterprise",
        "status:      active",
        "#112233",
        "custom-development",
    ] {
        assert!(shown.contains(needle), "{needle}: {shown}");
    }
    assert!(!shown.contains("bonds"), "disabled feature listed: {shown}");
    assert!(
        !shown.contains("kt_live_") || shown.contains('…'),
        "no full key in get"
    );

    let out = cli(dir, &url, &["tenants", "get", "acme", "--output", "json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["features"]["enableBonds"], false);
    assert_eq!(json["plan"], "enterprise");

    let out = cli(dir, &url, &["tenants", "list"]);
    let listed = text(&out.stdout);
    assert!(listed.lines().next().unwrap().starts_with("SLUG"));
    assert!(listed.contains("acme") && listed.contains("acme.knowton.com"));

    let out = cli(dir, &url, &["set-plan", "acme", "professional"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("now on the professional plan"));

    // Failures: the server's message and a non-zero exit.
    let out = cli(
        dir,
        &url,
        &[
            "provision",
            "Acme Again",
            "acme",
            "basic",
            "a@acme.com",
            "other.acme.com",
        ],
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("slug is already taken"),
        "{}",
        text(&out.stderr)
    );
    let out = cli(dir, &url, &["tenants", "get", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("tenant nope not found"),
        "{}",
        text(&out.stderr)
    );
    let out = cli(
        dir,
        &url,
        &[
            "tenants",
            "get",
            "acme",
            "--token",
            "wrong-token-wrong-token",
        ],
    );
    assert!(
        text(&out.stderr).contains("unauthorized"),
        "{}",
        text(&out.stderr)
    );
    let out = cli(dir, "http://127.0.0.1:9", &["tenants", "list"]);
    assert!(
        text(&out.stderr).contains("cannot reach the coordinator"),
        "{}",
        text(&out.stderr)
    );

    // The monitoring commands the CronJobs run.
    let out = cli(dir, &url, &["check-all", "--timeout-seconds", "1"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let checked = text(&out.stdout);
    assert!(checked.contains("0 of 0 agents answered"), "{checked}");
    assert!(
        checked.contains("acme") && checked.contains("unknown"),
        "{checked}"
    );
    let out = cli(dir, &url, &["report", "daily"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report = text(&out.stdout);
    assert!(
        report.contains("TENANT") && report.contains("acme"),
        "{report}"
    );
    let out = cli(dir, &url, &["report", "daily", "--output", "json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["tenants"][0]["tenant"], "acme");
    let out = cli(dir, &url, &["cleanup", "--older-than", "30d"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("Deleted data older than"));
    let out = cli(dir, &url, &["cleanup", "--older-than", "30y"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("olderThan"),
        "{}",
        text(&out.stderr)
    );

    let out = cli(dir, &url, &["deprovision", "acme"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("data kept until"));
    let out = cli(dir, &url, &["tenants", "get", "acme"]);
    assert!(text(&out.stdout).contains("deprovisioned"));

    // SIGTERM drains and exits cleanly.
    let status = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(wait_for_exit(&mut server, Duration::from_secs(30)).success());

    // The data survives a restart.
    let (mut again, url) = serve(dir);
    let out = cli(dir, &url, &["tenants", "get", "acme", "--output", "json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["status"], "deprovisioned");
    again.kill().unwrap();
    again.wait().unwrap();

    // Started with another secret key, the coordinator refuses to run.
    let out = command(dir)
        .args(["serve", "--http-addr", "127.0.0.1:0"])
        .env(
            "KNOWTON_SECRET_KEY",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        )
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("does not match"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn bad_configuration_is_reported_all_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let out = command(dir.path())
        .args([
            "serve",
            "--database-url",
            "mysql://root:hunter2@db/x",
            "--admin-token",
            "short",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("--database-url") && stderr.contains("at least 16"),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"), "password leaked: {stderr}");
    assert!(
        std::fs::read_dir(dir.path()).unwrap().next().is_none(),
        "nothing created"
    );

    let out = command(dir.path())
        .args(["set-plan", "acme", "gold"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("unknown plan"));
}

/// Hardening review, finding 12: the secret key file's permissions were
/// checked, the admin token file's were not.
#[cfg(unix)]
#[test]
fn an_admin_token_file_others_may_read_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "0123456789abcdefghijklmnop\n").unwrap();
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = command(dir.path())
        .args(["serve", "--http-addr", "127.0.0.1:0"])
        .arg("--admin-token-file")
        .arg(&token)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("readable or writable by other users") && stderr.contains("chmod 600"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("0123456789abcdef"),
        "token leaked: {stderr}"
    );
}

#[test]
fn deploy_client_dry_run_prints_the_tenant_objects_without_a_cluster() {
    let dir = tempfile::tempdir().unwrap();
    let base = [
        "deploy",
        "--slug",
        "acme",
        "--id",
        "01938f5e-7c3a-7000-8000-00000000a1b2",
        "--plan",
        "enterprise",
        "--domain",
        "acme.knowton.com",
    ];
    let out = command(dir.path())
        .args(base)
        .args(["--dry-run", "--allow", "203.0.113.0/24"])
        .args(["--tenant-storage-access-mode", "read-write-many"])
        .args(["--tenant-storage-class", "shared-nfs"])
        .args(["--tenant-database-host", "db.internal"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let yaml = text(&out.stdout);
    let kinds: Vec<&str> = yaml
        .lines()
        .filter_map(|l| l.strip_prefix("kind: "))
        .collect();
    assert_eq!(kinds.first(), Some(&"Namespace"), "{yaml}");
    for kind in [
        "Deployment",
        "Ingress",
        "HorizontalPodAutoscaler",
        "NetworkPolicy",
        "Secret",
        "PersistentVolumeClaim",
    ] {
        assert!(kinds.contains(&kind), "{kind}: {kinds:?}");
    }
    assert!(yaml.contains("whitelist-source-range: 203.0.113.0/24"));
    assert!(yaml.contains("storageClassName: shared-nfs"), "{yaml}");
    assert!(yaml.contains("- ReadWriteMany"), "{yaml}");
    assert!(yaml.contains("DATABASE_HOST: db.internal"), "{yaml}");
    assert!(yaml.contains("DATABASE_NAME: tenant_acme"), "{yaml}");
    assert!(yaml.contains("<redacted>"), "no secret value is printed");

    let out = command(dir.path())
        .args(base)
        .args(["--dry-run=client", "--allow", "10.0.0/8"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("is not a CIDR"),
        "{}",
        text(&out.stderr)
    );
    assert!(out.stdout.is_empty(), "nothing printed on bad input");
}

#[test]
fn deploy_goes_through_the_coordinator_and_checks_the_flags_against_its_tenant() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, url) = serve(dir.path());
    let dir = dir.path();
    let out = cli(
        dir,
        &url,
        &[
            "provision",
            "Acme Corp",
            "acme",
            "professional",
            "admin@acme.com",
            "acme.knowton.com",
            "-o",
            "json",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let provisioned: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = provisioned["tenant"]["id"].as_str().unwrap().to_owned();
    let flags = |plan: &'static str| {
        vec![
            "deploy",
            "--slug",
            "acme",
            "--id",
            id.as_str(),
            "--plan",
            plan,
            "--domain",
            "acme.knowton.com",
        ]
    };

    // No cluster anywhere: the deployment is rendered and recorded as skipped.
    let out = cli(dir, &url, &flags("professional"));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let shown = text(&out.stdout);
    assert!(
        shown.contains("skipped") && shown.contains("no cluster"),
        "{shown}"
    );

    // A server dry-run needs a cluster, and says so.
    let mut args = flags("professional");
    args.push("--dry-run=server");
    let out = cli(dir, &url, &args);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no Kubernetes cluster"),
        "{}",
        text(&out.stderr)
    );

    // Flags that do not describe the coordinator's tenant are refused.
    let out = cli(dir, &url, &flags("enterprise"));
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("plan is professional, not enterprise"),
        "{}",
        text(&out.stderr)
    );

    // An image reference that is not one: refused before anything is asked.
    let mut args = flags("professional");
    args.extend(["--backend-image", "Registry.Example.com/Bad Image"]);
    let out = cli(dir, &url, &args);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("--backend-image"),
        "{}",
        text(&out.stderr)
    );

    let status = Command::new("kill")
        .args(["-TERM", &server.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(wait_for_exit(&mut server, Duration::from_secs(30)).success());
}
