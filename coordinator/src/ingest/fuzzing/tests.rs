//! Property tests of ingest on decoded batches: never a panic, bounded
//! memory, every result either stored or counted as rejected.

use knowton_proto::agent::v1::PodResult;
use proptest::prelude::*;

use super::*;
use crate::ingest::RejectedResult;

fn result(tenant: String, pod: String) -> PodResult {
    PodResult {
        tenant,
        pod,
        ..PodResult::default()
    }
}

/// Tenants and pods as an agent could name them: the fixture's own, and
/// anything else.
fn results() -> impl Strategy<Value = Vec<PodResult>> {
    let tenant = prop_oneof![
        Just("acme".to_owned()),
        Just("globex".to_owned()),
        Just("ghost".to_owned()),
        "\\PC{0,12}",
    ];
    let pod = prop_oneof![
        Just("acme-0".to_owned()),
        Just("acme-1".to_owned()),
        Just("globex-0".to_owned()),
        Just("globex-1".to_owned()),
        "[a-z0-9-]{1,4}",
        "\\PC{0,20}",
    ];
    proptest::collection::vec((tenant, pod).prop_map(|(t, p)| result(t, p)), 0..80)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn arbitrary_bytes_never_panic_and_keep_the_bounds(
        inputs in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..512), 1..8),
        cluster in any::<bool>(),
    ) {
        let mut fixture = IngestFixture::new(cluster);
        for bytes in &inputs {
            let _ = fixture.ingest(bytes);
        }
        fixture.check_bounds(cluster);
    }

    #[test]
    fn every_result_is_stored_or_counted_and_only_bound_pods_are_stored(
        batches in proptest::collection::vec((0u64..4, results()), 1..6),
        cluster in any::<bool>(),
    ) {
        let mut fixture = IngestFixture::new(cluster);
        for (sequence, results) in batches {
            let expected_stored = results
                .iter()
                .filter(|r| TENANTS.contains(&r.tenant.as_str()))
                .filter(|r| !cluster || r.pod == format!("{}-0", r.tenant))
                .count();
            let sent = results.len();
            let batch = ResultBatch { sequence, results, node: None };
            match fixture.ingest_batch(batch) {
                Ok(BatchOutcome::Stored { accepted, rejected, .. }) => {
                    prop_assert_eq!(accepted as u64 + rejected.total(), sent as u64);
                    prop_assert_eq!(rejected.get(RejectedResult::PodsNotListed), 0);
                    if cluster {
                        prop_assert_eq!(accepted, expected_stored);
                    } else {
                        prop_assert_eq!(
                            accepted + rejected.get(RejectedResult::PodsOverLimit) as usize,
                            expected_stored
                        );
                    }
                }
                Ok(other) => prop_assert!(false, "a new session stores: {:?}", other),
                Err(why) => prop_assert!(sequence == 0, "{}", why),
            }
        }
        fixture.check_bounds(cluster);
    }
}

#[test]
fn an_agent_inventing_pod_names_is_bounded() {
    let mut fixture = IngestFixture::new(false);
    for round in 0..4 {
        let results = (0..200)
            .map(|i| result("acme".into(), format!("invented-{round}-{i}")))
            .collect();
        let batch = ResultBatch {
            sequence: 1,
            results,
            node: None,
        };
        fixture.ingest_batch(batch).unwrap();
    }
    assert_eq!(fixture.registry.latest("acme").len(), MAX_PODS_PER_NODE);
    fixture.check_bounds(false);
}
