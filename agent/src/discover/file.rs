//! Targets from a file, re-read when it changes: for use without Kubernetes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::watch;

use super::Target;

#[derive(Debug, thiserror::Error)]
pub enum TargetsError {
    #[error("failed to read the targets file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the targets file {path} is not a YAML list of {{tenant, pod, url, storagePath?}}: {message}"
    )]
    Parse { path: PathBuf, message: String },
    #[error("the targets file {path} names pod {pod:?} of tenant {tenant:?} twice")]
    Duplicate {
        path: PathBuf,
        tenant: String,
        pod: String,
    },
    #[error("the targets file {path}: pod {pod:?} has url {url:?}; expected http://host:port")]
    Url {
        path: PathBuf,
        pod: String,
        url: String,
    },
}

/// Reads and checks a targets file.
pub fn read_targets(path: &Path) -> Result<Vec<Target>, TargetsError> {
    let bytes = std::fs::read(path).map_err(|source| TargetsError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse_targets(path, &bytes)
}

/// Checks the contents of the targets file at `path`.
pub(crate) fn parse_targets(path: &Path, bytes: &[u8]) -> Result<Vec<Target>, TargetsError> {
    let text = String::from_utf8_lossy(bytes);
    let targets: Vec<Target> = if text.trim().is_empty() {
        Vec::new()
    } else {
        serde_yaml_ng::from_str(&text).map_err(|e| TargetsError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })?
    };
    let mut seen = std::collections::HashSet::new();
    for t in &targets {
        if !(t.url.starts_with("http://") || t.url.starts_with("https://")) {
            return Err(TargetsError::Url {
                path: path.to_owned(),
                pod: t.pod.clone(),
                url: t.url.clone(),
            });
        }
        if !seen.insert((&t.tenant, &t.pod)) {
            return Err(TargetsError::Duplicate {
                path: path.to_owned(),
                tenant: t.tenant.clone(),
                pod: t.pod.clone(),
            });
        }
    }
    Ok(targets)
}

/// Loads the file, then re-reads it every `every`; a change is published,
/// an unreadable or invalid file is logged and the previous targets kept.
pub fn watch_targets(
    path: PathBuf,
    every: Duration,
) -> Result<watch::Receiver<Vec<Target>>, TargetsError> {
    let bytes = std::fs::read(&path).map_err(|source| TargetsError::Read {
        path: path.clone(),
        source,
    })?;
    let (tx, rx) = watch::channel(parse_targets(&path, &bytes)?);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        // Parsing 1,000 entries every few seconds is most of the cost of
        // watching: parse only when the bytes changed.
        let mut last = Some(bytes);
        loop {
            tick.tick().await;
            if tx.is_closed() {
                return;
            }
            let bytes = match std::fs::read(&path) {
                Ok(bytes) => bytes,
                Err(source) => {
                    let err = TargetsError::Read {
                        path: path.clone(),
                        source,
                    };
                    tracing::warn!(error = %err, "keeping the previous targets");
                    continue;
                }
            };
            if last.as_ref() == Some(&bytes) {
                continue;
            }
            let parsed = parse_targets(&path, &bytes);
            last = Some(bytes);
            match parsed {
                Ok(targets) => {
                    tx.send_if_modified(|current| {
                        if *current == targets {
                            return false;
                        }
                        tracing::info!(targets = targets.len(), "targets file changed");
                        *current = targets;
                        true
                    });
                }
                Err(err) => tracing::warn!(error = %err, "keeping the previous targets"),
            }
        }
    });
    Ok(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_files_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("targets.yaml");
        std::fs::write(
            &path,
            "- tenant: acme\n  pod: acme-0\n  url: http://127.0.0.2:3000\n  storagePath: /tmp\n",
        )
        .unwrap();
        let targets = read_targets(&path).unwrap();
        assert_eq!(targets[0].storage_path.as_deref(), Some(Path::new("/tmp")));
        for (bad, what) in [
            (
                "- tenant: acme\n  pod: a\n  url: http://x:1\n  colour: red\n",
                "colour",
            ),
            ("- tenant: acme\n  pod: a\n  url: ftp://x\n", "http://"),
            (
                "- {tenant: a, pod: p, url: 'http://x:1'}\n- {tenant: a, pod: p, url: 'http://y:1'}\n",
                "twice",
            ),
            ("tenant: acme\n", "YAML list"),
        ] {
            std::fs::write(&path, bad).unwrap();
            let err = read_targets(&path).unwrap_err().to_string();
            assert!(err.contains(what), "{what}: {err}");
        }
        std::fs::write(&path, "").unwrap();
        assert!(read_targets(&path).unwrap().is_empty());
    }

    mod properties {
        //! Whatever the file holds: no panic, at most one target per line;
        //! and a file written from targets reads back as those targets.

        use proptest::prelude::*;

        use super::*;

        /// A double-quoted YAML scalar of `value`. Not single-quoted: there
        /// a line separator (U+2028, U+2029) is a line break, folded with
        /// the spaces around it, and cannot be escaped (proptest found
        /// " \u{2028}" read back as "\u{2028}").
        fn quoted(value: &str) -> String {
            let mut out = String::from('"');
            for c in value.chars() {
                match c {
                    '"' => out.push_str("\\\""),
                    '\\' => out.push_str("\\\\"),
                    '\u{2028}' => out.push_str("\\L"),
                    '\u{2029}' => out.push_str("\\P"),
                    c => out.push(c),
                }
            }
            out.push('"');
            out
        }

        fn render(targets: &[Target]) -> String {
            let mut text = String::new();
            for t in targets {
                text.push_str(&format!(
                    "- tenant: {}\n  pod: {}\n  url: {}\n",
                    quoted(&t.tenant),
                    quoted(&t.pod),
                    quoted(&t.url)
                ));
                if let Some(path) = &t.storage_path {
                    text.push_str(&format!(
                        "  storagePath: {}\n",
                        quoted(&path.to_string_lossy())
                    ));
                }
            }
            text
        }

        fn targets() -> impl Strategy<Value = Vec<Target>> {
            let target = (
                "[a-z0-9-]{1,12}",
                "\\PC{1,16}",
                "(http|https)://[a-z0-9.]{1,12}:[0-9]{1,5}(/\\PC{0,8})?",
                proptest::option::of("/[a-z0-9/ ._-]{0,20}"),
            )
                .prop_map(|(tenant, pod, url, storage)| Target {
                    tenant,
                    pod,
                    url,
                    storage_path: storage.map(PathBuf::from),
                });
            proptest::collection::vec(target, 0..20).prop_map(|mut targets| {
                let mut seen = std::collections::HashSet::new();
                targets.retain(|t| seen.insert((t.tenant.clone(), t.pod.clone())));
                targets
            })
        }

        /// The case proptest found: a line separator after a space.
        #[test]
        fn line_separators_and_quotes_read_back() {
            let targets = vec![Target {
                tenant: "-".to_owned(),
                pod: " \u{2028} \u{2029}\"\\' x".to_owned(),
                url: "http://a:0".to_owned(),
                storage_path: None,
            }];
            let text = render(&targets);
            let read = parse_targets(Path::new("t.yaml"), text.as_bytes()).unwrap();
            assert_eq!(read, targets);
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]

            #[test]
            fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1024)) {
                if let Ok(targets) = parse_targets(Path::new("t.yaml"), &bytes) {
                    prop_assert!(targets.len() <= bytes.len());
                }
            }

            #[test]
            fn text_near_the_format_never_panics(text in "[-a-z:{}\\[\\],'\" \n&*!|>0-9]{0,300}") {
                if let Ok(targets) = parse_targets(Path::new("t.yaml"), text.as_bytes()) {
                    prop_assert!(targets.len() <= text.len());
                }
            }

            #[test]
            fn written_targets_read_back(targets in targets()) {
                let text = render(&targets);
                let read = parse_targets(Path::new("t.yaml"), text.as_bytes()).unwrap();
                prop_assert_eq!(read, targets);
            }
        }
    }
}
