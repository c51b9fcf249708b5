//! The agent <-> coordinator protocol: one bidirectional gRPC stream per
//! node agent (`knowton.agent.v1.AgentStream/Connect`).
//!
//! The Rust code under `src/gen/` is generated from
//! `proto/knowton/agent/v1/agent.proto` and committed, so the build needs no
//! `protoc`; `tests/bootstrap.rs` regenerates it with a pure-Rust compiler
//! and fails if it is stale (`KNOWTON_UPDATE_PROTO=1 cargo test -p
//! knowton-proto` rewrites it).

/// Version of the protocol this crate speaks, sent in `Hello`.
pub const PROTOCOL_VERSION: u32 = 1;

pub mod agent {
    pub mod v1 {
        #![allow(clippy::all, missing_debug_implementations, missing_docs)]
        include!("gen/knowton.agent.v1.rs");
    }
}

impl agent::v1::Failure {
    /// The reason as used in metrics labels and the REST API (`refused`, …).
    pub fn label(self) -> &'static str {
        use agent::v1::Failure;
        match self {
            Failure::None => "none",
            Failure::Refused => "refused",
            Failure::Timeout => "timeout",
            Failure::Tls => "tls",
            Failure::HttpStatus => "http_status",
            Failure::BadBody => "bad_body",
            Failure::Dns => "dns",
            Failure::Other => "other",
        }
    }

    /// The label of a wire value; unknown values (from a newer peer) are `other`.
    pub fn label_of(code: i32) -> &'static str {
        Self::try_from(code).unwrap_or(Self::Other).label()
    }
}
