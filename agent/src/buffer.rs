//! Results waiting for the coordinator's acknowledgement: bounded in bytes,
//! oldest dropped (and counted) first, re-sent in order after a reconnect.

use std::collections::VecDeque;

use knowton_proto::agent::v1::{NodeMetrics, PodResult, ResultBatch};
use prost::Message;

/// Unacknowledged batches, each with a sequence number of this session.
#[derive(Debug)]
pub struct ResultBuffer {
    batches: VecDeque<(ResultBatch, usize)>,
    bytes: usize,
    max_bytes: usize,
    next_sequence: u64,
    dropped_batches: u64,
    dropped_results: u64,
}

impl ResultBuffer {
    pub fn new(max_bytes: usize) -> Self {
        ResultBuffer {
            batches: VecDeque::new(),
            bytes: 0,
            max_bytes,
            next_sequence: 1,
            dropped_batches: 0,
            dropped_results: 0,
        }
    }

    /// Adds a batch with the next sequence number and returns it; drops the
    /// oldest batches while the buffer is over its size.
    pub fn push(&mut self, results: Vec<PodResult>, node: Option<NodeMetrics>) -> ResultBatch {
        let batch = ResultBatch {
            sequence: self.next_sequence,
            results,
            node,
        };
        self.next_sequence += 1;
        let size = batch.encoded_len();
        self.batches.push_back((batch.clone(), size));
        self.bytes += size;
        while self.bytes > self.max_bytes {
            let Some((old, size)) = self.batches.pop_front() else {
                break;
            };
            self.bytes -= size;
            self.dropped_batches += 1;
            self.dropped_results += old.results.len() as u64;
        }
        batch
    }

    /// Forgets every batch up to `sequence` (cumulative acknowledgement).
    pub fn ack(&mut self, sequence: u64) {
        while self
            .batches
            .front()
            .is_some_and(|(b, _)| b.sequence <= sequence)
        {
            let (_, size) = self.batches.pop_front().expect("front exists");
            self.bytes -= size;
        }
    }

    /// The unacknowledged batches, oldest first.
    pub fn pending(&self) -> impl Iterator<Item = &ResultBatch> {
        self.batches.iter().map(|(b, _)| b)
    }

    pub fn bytes(&self) -> usize {
        self.bytes
    }

    pub fn len(&self) -> usize {
        self.batches.len()
    }

    pub fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }

    pub fn dropped_results(&self) -> u64 {
        self.dropped_results
    }

    pub fn dropped_batches(&self) -> u64 {
        self.dropped_batches
    }

    /// The sequence the next batch will get.
    pub fn next_sequence(&self) -> u64 {
        self.next_sequence
    }
}

#[cfg(test)]
mod tests {
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

    #[test]
    fn sequences_increase_and_acks_are_cumulative() {
        let mut buffer = ResultBuffer::new(1 << 20);
        let seqs: Vec<u64> = (0..5)
            .map(|_| buffer.push(results(2), None).sequence)
            .collect();
        assert_eq!(seqs, [1, 2, 3, 4, 5]);
        buffer.ack(3);
        assert_eq!(
            buffer.pending().map(|b| b.sequence).collect::<Vec<_>>(),
            [4, 5]
        );
        buffer.ack(2);
        assert_eq!(buffer.len(), 2, "an older ack changes nothing");
        buffer.ack(9);
        assert!(buffer.is_empty());
        assert_eq!(buffer.bytes(), 0);
        assert_eq!(buffer.push(results(1), None).sequence, 6);
    }

    #[test]
    fn a_full_buffer_drops_the_oldest_and_counts_them() {
        let one = ResultBatch {
            sequence: 1,
            results: results(10),
            node: None,
        }
        .encoded_len();
        let mut buffer = ResultBuffer::new(one * 3 + one / 2);
        for _ in 0..5 {
            buffer.push(results(10), None);
        }
        assert_eq!(
            buffer.pending().map(|b| b.sequence).collect::<Vec<_>>(),
            [3, 4, 5]
        );
        assert_eq!(
            (buffer.dropped_batches(), buffer.dropped_results()),
            (2, 20)
        );
        assert!(buffer.bytes() <= one * 3 + one / 2);
    }
}
