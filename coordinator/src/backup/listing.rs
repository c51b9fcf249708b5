//! A storage backup's entries as stored: one JSON array, cut between
//! entries into pieces that are written as chunks (deduplicated, in meta
//! packs), so that a backup that changed a few files writes the pieces
//! holding their entries, not the whole listing again.
//!
//! A piece ends where a directory's entries end, once it holds
//! [`MIN_PIECE`] bytes (as restic writes a tree per directory, and so
//! rewrites only the directories that changed), or, once it holds that
//! much, after an entry whose hash says so (about one in [`CUT_EVERY`]:
//! a large directory is cut by its content), or at [`MAX_PIECE`]. Every rule looks only at the
//! entries around the cut, so an unchanged stretch of the tree is cut the
//! same way from one backup to the next.

use super::manifest::Entry;

/// A piece ends at a directory's end only once it holds this much.
pub const MIN_PIECE: usize = 4 * 1024;
/// A piece of at least [`MIN_PIECE`] ends after an entry whose hash is 0
/// modulo this.
pub const CUT_EVERY: u64 = 256;
/// A piece ends once it holds this much.
pub const MAX_PIECE: usize = 128 * 1024;

/// The listing of `entries`, in pieces whose concatenation is their JSON
/// array.
pub fn pieces(entries: &[Entry]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut piece = b"[".to_vec();
    for (i, entry) in entries.iter().enumerate() {
        let start = piece.len();
        if i > 0 {
            piece.push(b',');
        }
        serde_json::to_writer(&mut piece, entry).expect("an entry serialises");
        let last = i + 1 == entries.len();
        let cut = !last
            && (piece.len() >= MAX_PIECE
                || (piece.len() >= MIN_PIECE
                    && (parent(entry) != parent(&entries[i + 1])
                        || fnv1a(&piece[start..]).is_multiple_of(CUT_EVERY))));
        if cut {
            out.push(std::mem::take(&mut piece));
        }
    }
    piece.push(b']');
    out.push(piece);
    out
}

/// The entries of a listing's pieces, in order.
pub fn parse(pieces: &[Vec<u8>]) -> Result<Vec<Entry>, serde_json::Error> {
    serde_json::from_slice(&pieces.concat())
}

/// The directory an entry is in, as stored.
fn parent(entry: &Entry) -> (&str, bool) {
    match &entry.raw_path {
        // Not UTF-8: all such entries count as one directory.
        Some(_) => ("", true),
        None => (
            entry.path.rsplit_once('/').map_or("", |(dir, _)| dir),
            false,
        ),
    }
}

/// FNV-1a: stable across builds and platforms, unlike std's hasher.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backup::chunk::ChunkRef;
    use crate::backup::manifest::Node;

    fn file(path: &str, seed: u64) -> Entry {
        Entry {
            path: path.to_owned(),
            raw_path: None,
            mode: 0o644,
            node: Node::File {
                size: 100,
                mtime_ns: seed as i64,
                chunks: vec![ChunkRef {
                    id: format!("{seed:064x}"),
                    len: 100,
                }],
                seen: Some((1, seed, seed as i64)),
            },
        }
    }

    fn tree(changed: u64) -> Vec<Entry> {
        let mut out: Vec<Entry> = (0..50)
            .map(|d| Entry {
                path: format!("d{d:02}"),
                raw_path: None,
                mode: 0o755,
                node: Node::Dir,
            })
            .collect();
        for d in 0..50u64 {
            for f in 0..60u64 {
                let seed = d * 1000 + f + if d == 7 { changed } else { 0 };
                out.push(file(&format!("d{d:02}/f{f:03}"), seed));
            }
        }
        out
    }

    #[test]
    fn the_pieces_concatenate_to_the_entries() {
        for entries in [tree(0), Vec::new(), tree(0)[..1].to_vec()] {
            let pieces = pieces(&entries);
            assert_eq!(parse(&pieces).unwrap(), entries);
        }
    }

    /// Every file of one directory changed: only the pieces holding that
    /// directory's entries differ.
    #[test]
    fn a_changed_directory_changes_only_its_pieces() {
        let (before, after) = (pieces(&tree(0)), pieces(&tree(500_000)));
        assert!(before.len() > 20, "{}", before.len());
        let old: std::collections::HashSet<_> = before.iter().collect();
        let new: Vec<_> = after.iter().filter(|p| !old.contains(p)).collect();
        assert!(
            !new.is_empty() && new.len() <= 3,
            "{} new pieces",
            new.len()
        );
        let rewritten: usize = new.iter().map(|p| p.len()).sum();
        assert!(rewritten < 3 * 60 * 250, "{rewritten} bytes rewritten");
    }
}
