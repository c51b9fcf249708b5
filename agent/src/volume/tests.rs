use std::os::unix::fs::{MetadataExt, PermissionsExt};

use super::*;

fn args(root: &Path, read_only: bool) -> VolumeArgs {
    VolumeArgs {
        root: root.to_owned(),
        read_only,
        idle: false,
    }
}

/// Serves `requests` and returns every reply.
fn exchange(args: &VolumeArgs, requests: &[Request]) -> Vec<Reply> {
    let input: Vec<u8> = requests.iter().flat_map(Request::encode).collect();
    let mut output = Vec::new();
    serve(args, input.as_slice(), &mut output).unwrap();
    let mut replies = Vec::new();
    let mut rest = output.as_slice();
    while !rest.is_empty() {
        let (tag, len) = header(rest[..HEADER].try_into().unwrap()).unwrap();
        replies.push(Reply::decode(tag, &rest[HEADER..HEADER + len]).unwrap());
        rest = &rest[HEADER + len..];
    }
    replies
}

fn entries(replies: &[Reply]) -> Vec<(String, Kind, u32, String)> {
    replies
        .iter()
        .filter_map(|r| match r {
            Reply::Entry(e) => Some((shown(&e.path), e.kind, e.mode, shown(&e.target))),
            _ => None,
        })
        .collect()
}

#[test]
fn the_walk_lists_links_as_links_and_never_follows_one() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    std::fs::create_dir_all(root.join("docs/empty")).unwrap();
    std::fs::create_dir_all(root.join(STAGING)).unwrap();
    std::fs::create_dir_all(dir.path().join("outside")).unwrap();
    std::fs::write(dir.path().join("outside/secret"), "not the tenant's").unwrap();
    std::fs::write(root.join("docs/a.txt"), "tenant data").unwrap();
    std::fs::set_permissions(
        root.join("docs/a.txt"),
        std::fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    std::os::unix::fs::symlink("/etc/passwd", root.join("passwd")).unwrap();
    std::os::unix::fs::symlink(dir.path().join("outside"), root.join("out")).unwrap();

    let replies = exchange(&args(&root, true), &[Request::Walk]);
    assert_eq!(replies.last(), Some(&Reply::WalkEnd { count: 5 }));
    let mut found = entries(&replies);
    found.iter_mut().for_each(|e| e.2 &= 0o7);
    assert_eq!(
        found
            .iter()
            .map(|e| (e.0.as_str(), e.1, e.3.as_str()))
            .collect::<Vec<_>>(),
        [
            ("docs", Kind::Dir, ""),
            (
                "out",
                Kind::Symlink,
                dir.path().join("outside").to_str().unwrap()
            ),
            ("passwd", Kind::Symlink, "/etc/passwd"),
            ("docs/a.txt", Kind::File, ""),
            ("docs/empty", Kind::Dir, ""),
        ]
    );
    let Reply::Entry(file) = &replies[3] else {
        panic!("{replies:?}")
    };
    let meta = std::fs::metadata(root.join("docs/a.txt")).unwrap();
    assert_eq!(
        (file.mode, file.size, file.ino, file.dev),
        (0o640, 11, meta.ino(), meta.dev())
    );
    assert_eq!(
        file.mtime_ns,
        meta.mtime() * 1_000_000_000 + meta.mtime_nsec()
    );

    // Reads: within the root only, never through a link, at most `limit`.
    let read = |path: &[u8], limit| {
        exchange(
            &args(&root, true),
            &[Request::Read {
                path: path.to_vec(),
                limit,
            }],
        )
    };
    assert_eq!(
        read(b"docs/a.txt", 100),
        [Reply::Data(b"tenant data".to_vec()), Reply::ReadEnd]
    );
    assert_eq!(
        read(b"docs/a.txt", 6),
        [Reply::Data(b"tenant".to_vec()), Reply::ReadEnd]
    );
    for path in [&b"passwd"[..], b"out/secret", b"docs"] {
        let replies = read(path, 100);
        assert!(
            matches!(replies.as_slice(), [Reply::Failed(_)]),
            "{}: {replies:?}",
            shown(path)
        );
    }
}

#[test]
fn a_restore_replaces_the_volume_contents_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    std::fs::create_dir_all(root.join("old/deep")).unwrap();
    std::fs::write(root.join("old/deep/f"), "stale").unwrap();
    std::fs::set_permissions(root.join("old"), std::fs::Permissions::from_mode(0o500)).unwrap();
    std::fs::write(root.join("kept-name"), "stale").unwrap();
    let mtime = 1_700_000_000_123_456_789;
    let replies = exchange(
        &args(&root, false),
        &[
            Request::Begin,
            Request::Mkdir {
                path: b"ro".to_vec(),
                mode: 0o555,
            },
            Request::File {
                path: b"ro/f".to_vec(),
                mode: 0o4750,
            },
            Request::Content(b"hello ".to_vec()),
            Request::Content(b"world".to_vec()),
            Request::FileEnd { mtime_ns: mtime },
            Request::File {
                path: b"kept-name".to_vec(),
                mode: 0o600,
            },
            Request::FileEnd { mtime_ns: 0 },
            Request::Symlink {
                path: b"ro-link".to_vec(),
                target: b"/etc/passwd".to_vec(),
            },
            Request::Commit,
        ],
    );
    assert!(replies.iter().all(|r| *r == Reply::Done), "{replies:?}");
    assert!(!root.join("old").exists());
    assert!(!root.join(STAGING).exists());
    assert_eq!(std::fs::read(root.join("ro/f")).unwrap(), b"hello world");
    let meta = std::fs::metadata(root.join("ro/f")).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o4750);
    assert_eq!(meta.mtime() * 1_000_000_000 + meta.mtime_nsec(), mtime);
    assert_eq!(
        std::fs::metadata(root.join("ro")).unwrap().mode() & 0o7777,
        0o555
    );
    assert_eq!(std::fs::read(root.join("kept-name")).unwrap(), b"");
    assert_eq!(
        std::fs::read_link(root.join("ro-link")).unwrap(),
        Path::new("/etc/passwd")
    );
    std::fs::set_permissions(root.join("ro"), std::fs::Permissions::from_mode(0o700)).unwrap();
}

#[test]
fn a_read_only_volume_refuses_writes_and_a_restore_never_writes_through_a_link() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    std::fs::create_dir_all(&root).unwrap();
    let replies = exchange(&args(&root, true), &[Request::Begin]);
    assert!(matches!(replies.as_slice(), [Reply::Failed(m)] if m.contains("read-only")));

    let outside = dir.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let replies = exchange(
        &args(&root, false),
        &[
            Request::Begin,
            Request::Symlink {
                path: b"l".to_vec(),
                target: outside.as_os_str().as_bytes().to_vec(),
            },
            Request::File {
                path: b"l/escape".to_vec(),
                mode: 0o644,
            },
            Request::Mkdir {
                path: b"l/d".to_vec(),
                mode: 0o755,
            },
        ],
    );
    assert_eq!(replies[..2], [Reply::Done, Reply::Done]);
    assert!(
        matches!(replies[2..], [Reply::Failed(_), Reply::Failed(_)]),
        "{replies:?}"
    );
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
    // Input ended without a commit: the staging directory is gone, the
    // volume as it was.
    assert_eq!(std::fs::read_dir(&root).unwrap().count(), 0);
}

/// The root holding `names` (files holding their name), made under `root`.
fn files(root: &Path, names: &[&str]) {
    std::fs::create_dir_all(root).unwrap();
    for name in names {
        std::fs::write(root.join(name), name).unwrap();
    }
}

/// The names in `dir`, sorted.
fn listed(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A swap cut short while the former contents were being moved aside, or
/// while the restored ones were being moved in, is carried through by the
/// next restore's start: the volume then holds exactly the restored
/// files, and the former ones are gone.
#[test]
fn a_swap_cut_short_at_either_step_is_carried_through() {
    for moved_in in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("data");
        if moved_in {
            // Every former file aside; one restored file already in.
            files(&root.join(REPLACED), &["old-a", "old-b", "old-c"]);
            files(&root.join(MOVING), &["new-2", "new-3"]);
            files(&root, &["new-1"]);
        } else {
            // Two of the former files aside, one left.
            files(&root.join(REPLACED), &["old-a", "old-b"]);
            files(&root, &["old-c"]);
            files(&root.join(READY), &["new-1", "new-2", "new-3"]);
        }
        finish_swap(&open_dir(&root).unwrap()).unwrap();
        assert_eq!(
            listed(&root),
            ["new-1", "new-2", "new-3"],
            "moved in: {moved_in}"
        );
        assert_eq!(std::fs::read(root.join("new-2")).unwrap(), b"new-2");
    }
}

/// A restore started after one cut short finishes that one first, then
/// replaces it; a walk never shows a restore's own directories; one of
/// their names that is not a directory is not taken for a restore's.
#[test]
fn a_restore_after_one_cut_short_and_a_walk_meanwhile_see_no_half_state() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("data");
    files(&root.join(REPLACED), &["old-a"]);
    files(&root.join(READY), &["new-1"]);
    files(&root, &["old-b"]);
    let walked = exchange(&args(&root, true), &[Request::Walk]);
    assert_eq!(
        entries(&walked)
            .into_iter()
            .map(|(path, ..)| path)
            .collect::<Vec<_>>(),
        ["old-b"]
    );

    let replies = exchange(
        &args(&root, false),
        &[
            Request::Begin,
            Request::File {
                path: b"newest".to_vec(),
                mode: 0o600,
            },
            Request::FileEnd { mtime_ns: 0 },
            Request::Commit,
        ],
    );
    assert!(replies.iter().all(|r| *r == Reply::Done), "{replies:?}");
    assert_eq!(listed(&root), ["newest"]);

    // A file the tenant named as the ready directory is only a file.
    std::fs::write(root.join(READY), "planted").unwrap();
    let replies = exchange(&args(&root, false), &[Request::Begin, Request::Commit]);
    assert!(replies.iter().all(|r| *r == Reply::Done), "{replies:?}");
    assert_eq!(listed(&root), Vec::<String>::new());
}
