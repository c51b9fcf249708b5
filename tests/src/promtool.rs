//! `promtool check metrics` on a scrape: the exposition format as
//! Prometheus itself reads it.

use std::io::Write;
use std::process::{Command, Stdio};

/// Whether promtool accepts `text`, and what it said.
pub fn promtool(text: &str) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is installed (tests/tools installs Debian's prometheus package)");
    child
        .stdin
        .take()
        .expect("promtool's stdin")
        .write_all(text.as_bytes())
        .expect("promtool reads the scrape");
    let out = child.wait_with_output().expect("promtool ran");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}
