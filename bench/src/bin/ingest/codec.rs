//! A gRPC codec that sends pre-encoded agent messages, so the load
//! generator spends its CPU on TLS and HTTP/2 rather than on protobuf: a
//! batch is the pre-encoded results of its node plus a fresh sequence
//! number, byte-for-byte what prost would produce for the same message.

use std::sync::Arc;

use knowton_proto::agent::v1::CoordinatorMessage;
use prost::Message;
use prost::bytes::BufMut;
use prost::encoding::{encode_varint, encoded_len_varint};
use tonic::Status;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

/// `AgentMessage.batch` is field 2, length-delimited.
const AGENT_MESSAGE_BATCH_KEY: u8 = (2 << 3) | 2;
/// `ResultBatch.sequence` is field 1, a varint.
const RESULT_BATCH_SEQUENCE_KEY: u8 = 1 << 3;

/// One outgoing message.
#[derive(Debug, Clone)]
pub enum Frame {
    /// A whole encoded `AgentMessage` (the hello).
    Encoded(Arc<[u8]>),
    /// `AgentMessage { batch: ResultBatch { sequence, ..body } }`, where
    /// `body` is an encoded `ResultBatch` without its sequence.
    Batch { sequence: u64, body: Arc<[u8]> },
}

impl Frame {
    fn encode(&self, dst: &mut impl BufMut) {
        match self {
            Frame::Encoded(bytes) => dst.put_slice(bytes),
            Frame::Batch { sequence, body } => {
                let batch_len = 1 + encoded_len_varint(*sequence) + body.len();
                dst.put_u8(AGENT_MESSAGE_BATCH_KEY);
                encode_varint(batch_len as u64, dst);
                dst.put_u8(RESULT_BATCH_SEQUENCE_KEY);
                encode_varint(*sequence, dst);
                dst.put_slice(body);
            }
        }
    }
}

/// Sends [`Frame`]s, receives `CoordinatorMessage`s.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawCodec;

#[derive(Debug)]
pub struct FrameEncoder;

#[derive(Debug)]
pub struct MessageDecoder;

impl Codec for RawCodec {
    type Encode = Frame;
    type Decode = CoordinatorMessage;
    type Encoder = FrameEncoder;
    type Decoder = MessageDecoder;

    fn encoder(&mut self) -> FrameEncoder {
        FrameEncoder
    }

    fn decoder(&mut self) -> MessageDecoder {
        MessageDecoder
    }
}

impl Encoder for FrameEncoder {
    type Item = Frame;
    type Error = Status;

    fn encode(&mut self, item: Frame, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        item.encode(dst);
        Ok(())
    }
}

impl Decoder for MessageDecoder {
    type Item = CoordinatorMessage;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<CoordinatorMessage>, Status> {
        CoordinatorMessage::decode(src)
            .map(Some)
            .map_err(|err| Status::internal(format!("undecodable coordinator message: {err}")))
    }
}

#[cfg(test)]
mod tests {
    use knowton_proto::agent::v1::agent_message::Body;
    use knowton_proto::agent::v1::{AgentMessage, NodeMetrics, PodResult, ResultBatch};

    use super::*;

    #[test]
    fn a_batch_frame_is_what_prost_encodes() {
        let results = vec![
            PodResult {
                tenant: "acme".into(),
                pod: "acme-backend-0".into(),
                pod_ip: "10.244.0.7".into(),
                ..PodResult::default()
            };
            300
        ];
        let node = Some(NodeMetrics {
            cpu_percent: 12.5,
            ..NodeMetrics::default()
        });
        let body: Arc<[u8]> = ResultBatch {
            sequence: 0,
            results: results.clone(),
            node,
        }
        .encode_to_vec()
        .into();
        for sequence in [1, 127, 128, 1 << 40] {
            let expected = AgentMessage {
                body: Some(Body::Batch(ResultBatch {
                    sequence,
                    results: results.clone(),
                    node,
                })),
            };
            let mut framed = Vec::new();
            Frame::Batch {
                sequence,
                body: body.clone(),
            }
            .encode(&mut framed);
            assert_eq!(AgentMessage::decode(&framed[..]).unwrap(), expected);
            assert_eq!(framed, expected.encode_to_vec(), "sequence {sequence}");
        }
    }
}
