//! A real SMTP server for the notification tests: `tests/smtp_server.py`
//! (aiosmtpd) run from the test venv, with STARTTLS or implicit TLS on a
//! certificate from a CA made for the test, optional AUTH, writing every
//! accepted message as JSON for the test to read.
//!
//! The venv is made by `tests/venv` (which `tests/run` calls). Without it
//! the test fails and says so: it never passes without having sent mail.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use knowton_coordinator::certs::{CertificateAuthority, Validity};
use serde::Deserialize;
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub const SMTP_USER: &str = "knowton";
pub const SMTP_PASSWORD: &str = "smtp-p@ss word";

/// How the server encrypts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// Offers STARTTLS and refuses mail without it.
    StartTlsRequired,
    /// Offers no STARTTLS at all (plaintext only).
    None,
    /// TLS from the first byte (smtps).
    Implicit,
}

/// A running SMTP server; stopped on drop.
#[derive(Debug)]
pub struct TestSmtp {
    pub port: u16,
    pub tls: SmtpTls,
    pub auth: bool,
    /// The CA that signed the server's certificate (for `--smtp-ca`).
    pub ca_file: PathBuf,
    dir: TempDir,
    _child: Child,
}

/// One message as the server received it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReceivedMail {
    pub mail_from: String,
    pub rcpt_tos: Vec<String>,
    /// Whether the session was encrypted when the message was sent.
    pub tls: bool,
    pub authenticated: bool,
    pub content_type: String,
    pub headers: Vec<(String, String)>,
    pub parts: Vec<MailPart>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MailPart {
    pub content_type: String,
    pub content: String,
}

impl ReceivedMail {
    /// The first header called `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The decoded part of `content_type` (`text/plain`, `text/html`).
    pub fn part(&self, content_type: &str) -> Option<&str> {
        self.parts
            .iter()
            .find(|p| p.content_type == content_type)
            .map(|p| p.content.as_str())
    }
}

/// The Python of the test venv, or a failure that says how to make it.
pub fn venv_python() -> PathBuf {
    let venv = std::env::var_os("KNOWTON_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/test-venv"));
    let python = venv.join("bin/python");
    let ready = std::process::Command::new(&python)
        .args(["-c", "import aiosmtpd"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ready,
        "the SMTP tests need aiosmtpd in {}: run tests/venv (tests/run does) first",
        venv.display()
    );
    python
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is in the workspace")
        .to_owned()
}

impl TestSmtp {
    /// Starts a server on a free loopback port; `auth` requires AUTH with
    /// [`SMTP_USER`] / [`SMTP_PASSWORD`].
    pub async fn start(tls: SmtpTls, auth: bool) -> Self {
        let python = venv_python();
        let dir = tempfile::tempdir().expect("temporary directory");
        let mail_dir = dir.path().join("mail");
        std::fs::create_dir(&mail_dir).unwrap();
        let ca = CertificateAuthority::generate("KnowTon test SMTP CA").unwrap();
        let issued = ca
            .issue_server(&["127.0.0.1".into(), "localhost".into()], Validity::days(2))
            .unwrap();
        let ca_file = dir.path().join("ca.pem");
        let cert = dir.path().join("server.pem");
        let key = dir.path().join("server-key.pem");
        std::fs::write(&ca_file, ca.cert_pem()).unwrap();
        std::fs::write(&cert, &issued.cert_pem).unwrap();
        std::fs::write(&key, &issued.key_pem).unwrap();

        let mut command = Command::new(python);
        command
            .arg(workspace().join("tests/smtp_server.py"))
            .args(["--host", "127.0.0.1", "--port", "0", "--dir"])
            .arg(&mail_dir);
        match tls {
            SmtpTls::StartTlsRequired => {
                command.arg("--require-starttls");
            }
            SmtpTls::None => {
                command.arg("--no-starttls");
            }
            SmtpTls::Implicit => {
                command.arg("--implicit-tls");
            }
        }
        command
            .arg("--tls-cert")
            .arg(&cert)
            .arg("--tls-key")
            .arg(&key);
        if auth {
            command
                .arg("--auth")
                .arg(format!("{SMTP_USER}:{SMTP_PASSWORD}"));
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start tests/smtp_server.py");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("the SMTP server starts within 30 s")
            .unwrap()
            .expect("the SMTP server prints its port");
        let port = line
            .strip_prefix("LISTENING ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("unexpected SMTP server output {line:?}"));
        TestSmtp {
            port,
            tls,
            auth,
            ca_file,
            dir,
            _child: child,
        }
    }

    /// The `--smtp-url` for this server, with credentials when it wants AUTH.
    pub fn url(&self) -> String {
        let scheme = if self.tls == SmtpTls::Implicit {
            "smtps"
        } else {
            "smtp"
        };
        let auth = if self.auth {
            format!(
                "{SMTP_USER}:{}@",
                SMTP_PASSWORD.replace('@', "%40").replace(' ', "%20")
            )
        } else {
            String::new()
        };
        format!("{scheme}://{auth}127.0.0.1:{}", self.port)
    }

    /// Every message received so far, oldest first.
    pub fn messages(&self) -> Vec<ReceivedMail> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.dir.path().join("mail"))
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        files
            .iter()
            .map(|f| serde_json::from_slice(&std::fs::read(f).unwrap()).unwrap())
            .collect()
    }
}
