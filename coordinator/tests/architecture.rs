//! The coordinator's layering, checked: every `crate::` path in its source
//! may only reach a module of the same layer or one below, and the
//! top-level modules never import each other in a loop.
//!
//! The table below is the map a newcomer reads first. To add a module, give
//! it a layer here; to import upwards, move the code instead.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Bottom to top. A module may use its own layer and those above it in
/// this list, never one below it.
const LAYERS: &[(&str, &[&str])] = &[
    (
        "keys, certificates and TLS",
        &["certs", "tls", "secrets", "credentials"],
    ),
    (
        "the store: tenants, alerts, outbox, deployments",
        &["store"],
    ),
    (
        "services on the store: leadership, the live tenant directory, notifications, agents' results, tenants' own databases and files, and their backups",
        &[
            "leader",
            "replicas",
            "directory",
            "notify",
            "ingest",
            "tenant_data",
            "backup",
        ],
    ),
    ("tenant health: evaluation, alerts, the engine", &["health"]),
    ("each tenant's Kubernetes objects", &["deploy"]),
    ("the tenant lifecycle (provision to purge)", &["provision"]),
    (
        "Prometheus exposition of what the layers below publish",
        &["metrics"],
    ),
    ("HTTP: listeners and the REST API", &["listen", "api"]),
    (
        "the `serve` process: flags and assembly",
        &["config", "server"],
    ),
    (
        "front ends: command line, REST client, demo (and the simulated pods it drives)",
        &["cli", "client", "demo", "sim"],
    ),
];

/// Crates the coordinator library may use only from some modules.
const RESTRICTED_CRATES: &[(&str, &[&str])] = &[
    // The demo composes a coordinator and an agent in one process; nothing
    // else in the coordinator needs the agent.
    ("knowton_agent", &["demo"]),
];

#[derive(Debug)]
struct Import {
    from: String,
    to: String,
    file: PathBuf,
    line: usize,
}

#[test]
fn imports_go_down_the_layers_and_never_loop() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let modules = top_level_modules(&src);
    let layer_of = layer_table();

    let unplaced: Vec<_> = modules
        .iter()
        .filter(|m| !layer_of.contains_key(m.as_str()))
        .collect();
    assert!(
        unplaced.is_empty(),
        "top-level modules without a layer in LAYERS: {unplaced:?}"
    );
    let gone: Vec<_> = layer_of.keys().filter(|m| !modules.contains(**m)).collect();
    assert!(
        gone.is_empty(),
        "LAYERS names modules that do not exist: {gone:?}"
    );

    let mut problems = Vec::new();
    let mut imports = Vec::new();
    for file in rust_files(&src) {
        let Some(from) = owner(&src, &file) else {
            continue;
        };
        let code = code_only(&fs::read_to_string(&file).unwrap());
        for (line, text) in code.lines().enumerate() {
            if text.contains("super::super") {
                problems.push(format!(
                    "{}:{}: `super::super`: name the module with `crate::` so the layering can be read",
                    file.display(),
                    line + 1
                ));
            }
            for (krate, allowed) in RESTRICTED_CRATES {
                if contains_path(text, krate) && !allowed.contains(&from.as_str()) {
                    problems.push(format!(
                        "{}:{}: `{from}` uses `{krate}`, which only {allowed:?} may use",
                        file.display(),
                        line + 1
                    ));
                }
            }
            for to in crate_paths(text) {
                if to != from && modules.contains(&to) {
                    imports.push(Import {
                        from: from.clone(),
                        to,
                        file: file.clone(),
                        line: line + 1,
                    });
                }
            }
        }
    }

    for import in &imports {
        let (from, to) = (layer_of[import.from.as_str()], layer_of[import.to.as_str()]);
        if to > from {
            problems.push(format!(
                "{}:{}: `{}` ({}) imports `{}` ({}), a layer above it",
                import.file.display(),
                import.line,
                import.from,
                LAYERS[from].0,
                import.to,
                LAYERS[to].0,
            ));
        }
    }
    if let Some(cycle) = find_cycle(&imports) {
        let witnesses: Vec<String> = cycle
            .windows(2)
            .map(|pair| {
                let import = imports
                    .iter()
                    .find(|i| i.from == pair[0] && i.to == pair[1])
                    .unwrap();
                format!(
                    "  {} -> {} ({}:{})",
                    pair[0],
                    pair[1],
                    import.file.display(),
                    import.line
                )
            })
            .collect();
        problems.push(format!(
            "import loop: {}\n{}",
            cycle.join(" -> "),
            witnesses.join("\n")
        ));
    }
    assert!(
        problems.is_empty(),
        "the coordinator's layering is broken:\n{}",
        problems.join("\n")
    );
}

/// Every crate's `lib.rs` names each of its modules in its docs (the
/// "Layout" a newcomer reads first).
#[test]
fn every_crate_layout_names_all_its_modules() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut missing = Vec::new();
    for krate in ["common", "proto", "coordinator", "agent", "tests", "bench"] {
        let lib = workspace.join(krate).join("src/lib.rs");
        let source = fs::read_to_string(&lib).unwrap();
        let docs: String = source
            .lines()
            .filter_map(|line| line.trim_start().strip_prefix("//!"))
            .collect::<Vec<_>>()
            .join("\n");
        for line in source.lines() {
            let declared = line
                .trim_start()
                .strip_prefix("pub mod ")
                .or_else(|| line.trim_start().strip_prefix("mod "));
            let Some(name) = declared.and_then(|rest| rest.strip_suffix(';')) else {
                continue;
            };
            if !docs.contains(&format!("`{name}`")) {
                missing.push(format!("{krate}: {name}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "modules missing from their crate's Layout docs: {missing:?}"
    );
}

#[test]
fn the_scanner_sees_paths_in_code_only() {
    let code = code_only(
        "use crate::{store::{self, Store}, health};\n\
         // crate::api in a comment\n\
         let s = \"crate::demo \\\" in a string\"; /* crate::cli */ let c = '\"';\n\
         let e = '\\\\'; let q = '\\''; let u = '\\u{1F600}'; crate::store::x();\n\
         let r = r#\"crate::client\"#; fn f<'a>(x: &'a crate::notify::Service) {}\n",
    );
    let found: BTreeSet<String> = code.lines().flat_map(crate_paths).collect();
    assert_eq!(
        found,
        ["health", "notify", "store"].map(String::from).into(),
        "{code}"
    );
    assert!(contains_path("x = knowton_agent::run()", "knowton_agent"));
    assert!(!contains_path("knowton_agents_connected", "knowton_agent"));
}

fn layer_table() -> BTreeMap<&'static str, usize> {
    let mut table = BTreeMap::new();
    for (layer, (_, modules)) in LAYERS.iter().enumerate() {
        for module in *modules {
            assert!(
                table.insert(*module, layer).is_none(),
                "{module} is in two layers"
            );
        }
    }
    table
}

/// `foo.rs` and `foo/` under `src`, but not the crate roots.
fn top_level_modules(src: &Path) -> BTreeSet<String> {
    fs::read_dir(src)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter_map(|path| {
            let name = path.file_name()?.to_str()?.to_owned();
            let name = match name.strip_suffix(".rs") {
                Some(stem) => stem.to_owned(),
                None if path.is_dir() => name,
                None => return None,
            };
            (name != "lib" && name != "main").then_some(name)
        })
        .collect()
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files.sort();
    files
}

/// The top-level module a file belongs to (none for `lib.rs`/`main.rs`).
fn owner(src: &Path, file: &Path) -> Option<String> {
    let first = file.strip_prefix(src).ok()?.components().next()?;
    let name = first.as_os_str().to_str()?;
    let name = name.strip_suffix(".rs").unwrap_or(name);
    (name != "lib" && name != "main").then(|| name.to_owned())
}

/// The source with comments, string and character literals blanked out
/// (lines kept, so line numbers still match).
fn code_only(source: &str) -> String {
    let chars: Vec<char> = source.chars().collect();
    let mut out = String::with_capacity(source.len());
    let blank = |out: &mut String, c: char| out.push(if c == '\n' { '\n' } else { ' ' });
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '/' if peek(&chars, i + 1) == Some('/') => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            '/' if peek(&chars, i + 1) == Some('*') => {
                let mut depth = 0;
                while i < chars.len() {
                    if chars[i] == '/' && peek(&chars, i + 1) == Some('*') {
                        depth += 1;
                        i += 2;
                        out.push_str("  ");
                    } else if chars[i] == '*' && peek(&chars, i + 1) == Some('/') {
                        depth -= 1;
                        i += 2;
                        out.push_str("  ");
                        if depth == 0 {
                            break;
                        }
                    } else {
                        blank(&mut out, chars[i]);
                        i += 1;
                    }
                }
            }
            'r' if matches!(peek(&chars, i + 1), Some('"' | '#'))
                && !chars
                    .get(i.wrapping_sub(1))
                    .is_some_and(|c| c.is_alphanumeric() || *c == '_') =>
            {
                let mut j = i + 1;
                let mut hashes = 0;
                while chars.get(j) == Some(&'#') {
                    hashes += 1;
                    j += 1;
                }
                if chars.get(j) != Some(&'"') {
                    out.push('r');
                    i += 1;
                    continue;
                }
                let close: String = std::iter::once('"')
                    .chain(std::iter::repeat_n('#', hashes))
                    .collect();
                let body: String = chars[j + 1..].iter().collect();
                let end = body.find(&close).map_or(chars.len(), |at| {
                    j + 1 + body[..at].chars().count() + close.chars().count()
                });
                for &c in &chars[i..end] {
                    blank(&mut out, c);
                }
                i = end;
            }
            '"' => {
                blank(&mut out, '"');
                i += 1;
                while i < chars.len() && chars[i] != '"' {
                    if chars[i] == '\\' {
                        blank(&mut out, chars[i]);
                        i += 1;
                    }
                    if i < chars.len() {
                        blank(&mut out, chars[i]);
                        i += 1;
                    }
                }
                i += 1;
                out.push(' ');
            }
            // A character literal ('x', '\n', '\u{..}'), not a lifetime.
            '\'' if peek(&chars, i + 2) == Some('\'') || peek(&chars, i + 1) == Some('\\') => {
                let end = match (peek(&chars, i + 1), peek(&chars, i + 2)) {
                    (Some('\\'), Some('u')) => (i..chars.len())
                        .find(|&k| chars[k] == '}')
                        .map_or(chars.len() - 1, |k| k + 1),
                    (Some('\\'), _) => i + 3,
                    _ => i + 2,
                }
                .min(chars.len() - 1);
                for &c in &chars[i..=end] {
                    blank(&mut out, c);
                }
                i = end + 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

fn peek(chars: &[char], at: usize) -> Option<char> {
    chars.get(at).copied()
}

/// The top-level modules named by `crate::` paths on a line, including
/// those in `use crate::{a::B, c}` groups.
fn crate_paths(line: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = line;
    while let Some(at) = rest.find("crate::") {
        let before = rest[..at].chars().next_back();
        rest = &rest[at + "crate::".len()..];
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue; // `knowton_crate::`, not ours
        }
        let rest_trimmed = rest.trim_start();
        if let Some(group) = rest_trimmed.strip_prefix('{') {
            let mut depth = 0;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        found.push(std::mem::take(&mut item));
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
            found.push(item);
        } else {
            found.push(rest_trimmed.to_owned());
        }
    }
    found
        .into_iter()
        .filter_map(|path| {
            let name: String = path
                .trim_start()
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            (!name.is_empty() && name != "self").then_some(name)
        })
        .collect()
}

fn contains_path(line: &str, krate: &str) -> bool {
    line.match_indices(krate).any(|(at, _)| {
        let before = line[..at].chars().next_back();
        let after = &line[at + krate.len()..];
        !before.is_some_and(|c| c.is_alphanumeric() || c == '_') && after.starts_with("::")
    })
}

/// A loop among the modules, as the path that closes it.
fn find_cycle(imports: &[Import]) -> Option<Vec<String>> {
    let mut edges: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for import in imports {
        edges.entry(&import.from).or_default().insert(&import.to);
    }
    fn visit<'a>(
        node: &'a str,
        edges: &BTreeMap<&'a str, BTreeSet<&'a str>>,
        path: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
    ) -> Option<Vec<String>> {
        if let Some(start) = path.iter().position(|n| *n == node) {
            let mut cycle: Vec<String> = path[start..].iter().map(|s| s.to_string()).collect();
            cycle.push(node.to_owned());
            return Some(cycle);
        }
        if !done.insert(node) {
            return None;
        }
        path.push(node);
        for next in edges.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, edges, path, done) {
                return Some(cycle);
            }
        }
        path.pop();
        None
    }
    let mut done = BTreeSet::new();
    for node in edges.keys() {
        if let Some(cycle) = visit(node, &edges, &mut Vec::new(), &mut done) {
            return Some(cycle);
        }
    }
    None
}
