//! Results waiting for the coordinator replicas' acknowledgements: one
//! buffer for every replica, bounded in bytes, with a cursor per replica;
//! oldest dropped (and counted per replica) first, re-sent in order from a
//! replica's cursor after it reconnects.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;

use knowton_proto::agent::v1::{NodeMetrics, PodResult, ResultBatch};
use prost::Message;

/// What one replica has acknowledged, and lost to a full buffer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cursor {
    /// The highest sequence this replica acknowledged (0: none).
    pub acked: u64,
    /// Batches dropped for space before this replica acknowledged them.
    pub dropped_batches: u64,
    /// Results in those batches.
    pub dropped_results: u64,
}

/// Batches of this session (sequence numbers without holes, oldest
/// first), each kept until every replica acknowledged it or it is dropped
/// for space. The replicas share the batches: memory is bounded by
/// `max_bytes` whatever their number.
#[derive(Debug)]
pub struct ResultBuffer {
    batches: VecDeque<(ResultBatch, usize)>,
    bytes: usize,
    max_bytes: usize,
    next_sequence: u64,
    cursors: BTreeMap<SocketAddr, Cursor>,
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
            cursors: BTreeMap::new(),
            dropped_batches: 0,
            dropped_results: 0,
        }
    }

    /// Starts keeping batches for `replica`, from everything still held
    /// (nothing if it is known already).
    pub fn add_replica(&mut self, replica: SocketAddr) {
        self.cursors.entry(replica).or_default();
    }

    /// Stops keeping batches for `replica`: what only it was missing goes.
    pub fn remove_replica(&mut self, replica: SocketAddr) {
        self.cursors.remove(&replica);
        self.trim();
    }

    /// Adds a batch with the next sequence number and returns that number;
    /// drops the oldest batches while the buffer is over its size, each
    /// counted for the replicas that had not acknowledged it.
    pub fn push(&mut self, results: Vec<PodResult>, node: Option<NodeMetrics>) -> u64 {
        let batch = ResultBatch {
            sequence: self.next_sequence,
            results,
            node,
        };
        let sequence = batch.sequence;
        self.next_sequence += 1;
        let size = batch.encoded_len();
        self.batches.push_back((batch, size));
        self.bytes += size;
        while self.bytes > self.max_bytes {
            let Some((old, size)) = self.batches.pop_front() else {
                break;
            };
            self.bytes -= size;
            let results = old.results.len() as u64;
            self.dropped_batches += 1;
            self.dropped_results += results;
            for cursor in self.cursors.values_mut() {
                if cursor.acked < old.sequence {
                    cursor.dropped_batches += 1;
                    cursor.dropped_results += results;
                }
            }
        }
        sequence
    }

    /// `replica` acknowledged every batch up to `sequence` (cumulative);
    /// forgets the batches every replica acknowledged. An unknown replica
    /// or an older acknowledgement changes nothing.
    pub fn ack(&mut self, replica: SocketAddr, sequence: u64) {
        let Some(cursor) = self.cursors.get_mut(&replica) else {
            return;
        };
        // Never past what was handed out: a confused peer cannot make the
        // agent skip batches it has not seen yet.
        cursor.acked = cursor
            .acked
            .max(sequence.min(self.next_sequence.saturating_sub(1)));
        self.trim();
    }

    /// Forgets the batches every replica acknowledged. With no replica
    /// known, everything is kept (within the bound) for the first to come.
    fn trim(&mut self) {
        let Some(floor) = self.cursors.values().map(|c| c.acked).min() else {
            return;
        };
        while self
            .batches
            .front()
            .is_some_and(|(b, _)| b.sequence <= floor)
        {
            let (_, size) = self.batches.pop_front().expect("front exists");
            self.bytes -= size;
        }
    }

    /// The oldest batch held after `sequence`: what a replica that has
    /// been sent everything up to `sequence` gets next.
    pub fn next_after(&self, sequence: u64) -> Option<&ResultBatch> {
        let first = self.batches.front()?.0.sequence;
        let index = usize::try_from((sequence + 1).saturating_sub(first)).ok()?;
        self.batches.get(index).map(|(b, _)| b)
    }

    /// The batches `replica` has not acknowledged, oldest first (none for
    /// an unknown replica).
    pub fn pending(&self, replica: SocketAddr) -> impl Iterator<Item = &ResultBatch> {
        let acked = self.cursors.get(&replica).map(|c| c.acked);
        self.batches
            .iter()
            .map(|(b, _)| b)
            .filter(move |b| acked.is_some_and(|acked| b.sequence > acked))
    }

    /// `replica`'s cursor, if it is known.
    pub fn cursor(&self, replica: SocketAddr) -> Option<Cursor> {
        self.cursors.get(&replica).copied()
    }

    /// Every known replica's cursor.
    pub fn cursors(&self) -> impl Iterator<Item = (SocketAddr, Cursor)> + '_ {
        self.cursors.iter().map(|(r, c)| (*r, *c))
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

    /// Results dropped for space before at least one replica acknowledged them.
    pub fn dropped_results(&self) -> u64 {
        self.dropped_results
    }

    /// Batches dropped for space before at least one replica acknowledged them.
    pub fn dropped_batches(&self) -> u64 {
        self.dropped_batches
    }

    /// The sequence the next batch will get.
    pub fn next_sequence(&self) -> u64 {
        self.next_sequence
    }

    /// The sequence of the latest batch (0: none yet).
    pub fn last_sequence(&self) -> u64 {
        self.next_sequence - 1
    }
}

#[cfg(test)]
mod tests;
