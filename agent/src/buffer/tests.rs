use super::*;

fn results(n: usize) -> Vec<PodResult> {
    (0..n)
        .map(|i| PodResult {
            tenant: "acme".into(),
            pod: format!("acme-{i}"),
            ..Default::default()
        })
        .collect()
}

fn replica(n: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, n], 8443))
}

fn sequences<'a>(batches: impl Iterator<Item = &'a ResultBatch>) -> Vec<u64> {
    batches.map(|b| b.sequence).collect()
}

/// A buffer of `capacity` bytes that `replicas` read from.
fn buffer_for(capacity: usize, replicas: &[SocketAddr]) -> ResultBuffer {
    let mut buffer = ResultBuffer::new(capacity);
    for replica in replicas {
        buffer.add_replica(*replica);
    }
    buffer
}

/// The encoded size of a batch of `n` results.
fn size_of(n: usize) -> usize {
    ResultBatch {
        sequence: 1,
        results: results(n),
        node: None,
    }
    .encoded_len()
}

#[test]
fn sequences_increase_and_acks_are_cumulative() {
    let a = replica(1);
    let mut buffer = buffer_for(1 << 20, &[a]);
    let seqs: Vec<u64> = (0..5).map(|_| buffer.push(results(2), None)).collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5]);
    buffer.ack(a, 3);
    assert_eq!(sequences(buffer.pending(a)), [4, 5]);
    buffer.ack(a, 2);
    assert_eq!(buffer.len(), 2, "an older ack changes nothing");
    buffer.ack(a, 9);
    assert!(buffer.is_empty());
    assert_eq!(buffer.bytes(), 0);
    assert_eq!(
        buffer.cursor(a).unwrap().acked,
        5,
        "never past the last batch"
    );
    assert_eq!(buffer.push(results(1), None), 6);
}

#[test]
fn a_full_buffer_drops_the_oldest_and_counts_them() {
    let a = replica(1);
    let one = size_of(10);
    let mut buffer = buffer_for(one * 3 + one / 2, &[a]);
    for _ in 0..5 {
        buffer.push(results(10), None);
    }
    assert_eq!(sequences(buffer.pending(a)), [3, 4, 5]);
    assert_eq!(
        (buffer.dropped_batches(), buffer.dropped_results()),
        (2, 20)
    );
    let cursor = buffer.cursor(a).unwrap();
    assert_eq!((cursor.dropped_batches, cursor.dropped_results), (2, 20));
    assert!(buffer.bytes() <= one * 3 + one / 2);
}

#[test]
fn batches_are_kept_until_every_replica_acknowledged_them() {
    let (a, b) = (replica(1), replica(2));
    let mut buffer = buffer_for(1 << 20, &[a, b]);
    for _ in 0..4 {
        buffer.push(results(1), None);
    }
    buffer.ack(a, 4);
    assert_eq!(buffer.len(), 4, "b has acknowledged nothing");
    assert!(buffer.pending(a).next().is_none());
    assert_eq!(sequences(buffer.pending(b)), [1, 2, 3, 4]);
    buffer.ack(b, 2);
    assert_eq!(sequences(buffer.pending(b)), [3, 4]);
    assert_eq!(buffer.len(), 2, "1 and 2 are acknowledged by both");
    buffer.ack(b, 4);
    assert!(buffer.is_empty());
    assert_eq!(buffer.bytes(), 0);
}

#[test]
fn a_removed_replica_no_longer_holds_batches() {
    let (a, b) = (replica(1), replica(2));
    let mut buffer = buffer_for(1 << 20, &[a, b]);
    for _ in 0..3 {
        buffer.push(results(1), None);
    }
    buffer.ack(a, 3);
    buffer.remove_replica(b);
    assert!(buffer.is_empty(), "only b was missing them");
    assert_eq!(buffer.cursor(b), None);
    buffer.ack(b, 3);
    assert_eq!(
        buffer.cursors().count(),
        1,
        "an unknown replica's ack is ignored"
    );
}

#[test]
fn with_no_replica_known_batches_wait_for_the_first() {
    let mut buffer = ResultBuffer::new(1 << 20);
    buffer.push(results(1), None);
    buffer.push(results(1), None);
    let late = replica(3);
    buffer.add_replica(late);
    assert_eq!(sequences(buffer.pending(late)), [1, 2]);
}

#[test]
fn drops_count_only_for_the_replicas_that_had_not_acknowledged() {
    let (up, down) = (replica(1), replica(2));
    let one = size_of(10);
    let mut buffer = buffer_for(one * 2 + one / 2, &[up, down]);
    // `up` acknowledges every batch as it comes; `down` is away.
    for _ in 0..6 {
        let sequence = buffer.push(results(10), None);
        buffer.ack(up, sequence);
    }
    assert_eq!(sequences(buffer.pending(down)), [5, 6]);
    assert!(buffer.pending(up).next().is_none());
    let (up_c, down_c) = (buffer.cursor(up).unwrap(), buffer.cursor(down).unwrap());
    assert_eq!((up_c.dropped_batches, up_c.dropped_results), (0, 0));
    assert_eq!((down_c.dropped_batches, down_c.dropped_results), (4, 40));
    assert_eq!(
        buffer.dropped_results(),
        40,
        "the total: lost to at least one"
    );
    // A batch `up` had not acknowledged yet is dropped for both.
    buffer.push(results(10), None);
    buffer.push(results(10), None);
    buffer.push(results(10), None);
    assert_eq!(buffer.cursor(up).unwrap().dropped_batches, 1);
    assert_eq!(buffer.cursor(down).unwrap().dropped_batches, 7);
}

#[test]
fn a_reconnecting_replica_resumes_from_its_cursor() {
    let (a, b) = (replica(1), replica(2));
    let mut buffer = buffer_for(1 << 20, &[a, b]);
    for _ in 0..3 {
        buffer.push(results(1), None);
    }
    buffer.ack(a, 3);
    buffer.ack(b, 2);
    // b goes away while two more batches come, and a takes them.
    buffer.push(results(1), None);
    buffer.push(results(1), None);
    buffer.ack(a, 5);
    // b's welcome says it has 2 (or less: it may have restarted): it is
    // sent what follows its cursor, in order.
    buffer.ack(b, 0);
    let cursor = buffer.cursor(b).unwrap().acked;
    assert_eq!(cursor, 2);
    assert_eq!(sequences(buffer.pending(b)), [3, 4, 5]);
    let mut sent = cursor;
    let mut resent = Vec::new();
    while let Some(batch) = buffer.next_after(sent) {
        sent = batch.sequence;
        resent.push(sent);
    }
    assert_eq!(resent, [3, 4, 5]);
    buffer.ack(b, 5);
    assert!(buffer.is_empty());
}

#[test]
fn next_after_skips_what_was_dropped() {
    let a = replica(1);
    let one = size_of(10);
    let mut buffer = buffer_for(one * 2 + one / 2, &[a]);
    assert!(buffer.next_after(0).is_none());
    for _ in 0..5 {
        buffer.push(results(10), None);
    }
    // Sent up to 1, then 2 and 3 were dropped: 4 is next.
    assert_eq!(buffer.next_after(1).map(|b| b.sequence), Some(4));
    assert_eq!(buffer.next_after(4).map(|b| b.sequence), Some(5));
    assert!(buffer.next_after(5).is_none());
    assert!(buffer.next_after(u64::MAX - 1).is_none());
}

#[test]
fn the_bound_holds_whatever_the_number_of_replicas() {
    let one = size_of(10);
    let max = one * 8;
    let replicas: Vec<SocketAddr> = (1..=16).map(replica).collect();
    let mut buffer = buffer_for(max, &replicas);
    for round in 0..200u64 {
        let sequence = buffer.push(results(10), None);
        // Each replica acknowledges at its own pace; the last never does.
        for (i, r) in replicas.iter().enumerate().take(15) {
            if round % (i as u64 + 1) == 0 {
                buffer.ack(*r, sequence);
            }
        }
        assert!(buffer.bytes() <= max, "{} > {max}", buffer.bytes());
        assert!(buffer.len() <= 8);
    }
    let silent = buffer.cursor(replicas[15]).unwrap();
    assert_eq!(silent.dropped_batches, 200 - buffer.len() as u64);
    assert_eq!(
        buffer.cursor(replicas[0]).unwrap().dropped_batches,
        0,
        "the replica that acknowledges everything loses nothing"
    );
}
