use chrono::TimeZone;

use super::*;
use crate::backup::pack::{PackKind, Placed};

fn at(minute: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, minute, 0).unwrap()
}

fn pack(id: &str, chunks: &[&str]) -> IndexedPack {
    IndexedPack {
        kind: PackKind::Data,
        id: id.to_owned(),
        chunks: chunks
            .iter()
            .enumerate()
            .map(|(i, c)| Placed((*c).to_owned(), 4 + 100 * i as u64, 100))
            .collect(),
    }
}

fn ids(chunks: &[&str]) -> HashSet<String> {
    chunks.iter().map(|c| (*c).to_owned()).collect()
}

/// A pack a kept backup uses in part keeps every chunk it uses; the
/// chunks marked unreferenced a prune ago leave the index, the pack stays.
#[test]
fn a_partly_referenced_pack_keeps_its_referenced_chunks() {
    let tenant = Uuid::nil();
    let packs = [pack("aa01", &["used", "gone", "fresh"])];
    let listed = HashMap::from([(pack::pack_path(tenant, PackKind::Data, "aa01"), at(1))]);
    let marked = Marked {
        chunks: HashMap::from([("gone", at(5)), ("used", at(5))]),
        packs: HashMap::new(),
    };
    let out = sweep(tenant, &packs, &listed, &ids(&["used"]), &marked);
    assert_eq!(out.delete, Vec::<String>::new(), "the pack stays");
    assert_eq!((out.dropped, out.deleted_chunks), (1, 1));
    assert_eq!(
        out.unreferenced_chunks,
        ["fresh"],
        "marked now, swept later"
    );
    assert_eq!(
        out.index.packs[0]
            .chunks
            .iter()
            .map(|p| p.0.as_str())
            .collect::<Vec<_>>(),
        ["used", "fresh"],
        "a referenced chunk is never dropped, even if a mark named it"
    );
}

/// A chunk marked, then written again (rescued) into a newer pack: the
/// old copy goes with its pack, the new one stays.
#[test]
fn a_rescued_chunk_survives_in_its_newer_pack() {
    let tenant = Uuid::nil();
    let packs = [pack("aa01", &["c", "d"]), pack("bb02", &["c"])];
    let listed = HashMap::from([
        (pack::pack_path(tenant, PackKind::Data, "aa01"), at(1)),
        (pack::pack_path(tenant, PackKind::Data, "bb02"), at(9)),
    ]);
    let marked = Marked {
        chunks: HashMap::from([("c", at(5)), ("d", at(5))]),
        packs: HashMap::new(),
    };
    let out = sweep(tenant, &packs, &listed, &HashSet::new(), &marked);
    assert_eq!(
        out.delete,
        [pack::pack_path(tenant, PackKind::Data, "aa01")]
    );
    assert_eq!(
        (out.dropped, out.deleted_chunks),
        (2, 1),
        "c is still in bb02"
    );
    assert_eq!(out.index.packs.len(), 1);
    assert_eq!(out.index.packs[0].id, "bb02");
    assert_eq!(out.unreferenced_chunks, ["c"]);
}

/// A pack no index lists is marked first, deleted at the next prune if
/// still unlisted; a pack the index lists but the store lacks stays in
/// the index (verification names it).
#[test]
fn unindexed_packs_are_marked_then_swept_and_missing_ones_kept() {
    let tenant = Uuid::nil();
    let (old, new) = (
        pack::pack_path(tenant, PackKind::Data, "cc03"),
        pack::pack_path(tenant, PackKind::Meta, "dd04"),
    );
    let listed = HashMap::from([(old.clone(), at(1)), (new.clone(), at(9))]);
    let marked = Marked {
        chunks: HashMap::new(),
        packs: HashMap::from([(old.as_str(), at(5)), (new.as_str(), at(5))]),
    };
    let missing = [pack("ee05", &["x"])];
    let out = sweep(tenant, &missing, &listed, &ids(&["x"]), &marked);
    assert_eq!(out.delete, [old]);
    assert_eq!(out.unindexed_packs, [new], "written after the mark");
    assert_eq!(out.index.packs, missing);
    assert_eq!(out.dropped, 0);
}
