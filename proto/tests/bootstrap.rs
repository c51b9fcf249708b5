//! Regenerates the protocol code and fails if the committed copy is stale.

use std::path::Path;

#[test]
fn generated_code_matches_the_proto_file() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let fds = protox::compile(["knowton/agent/v1/agent.proto"], [root.join("proto")])
        .expect("agent.proto compiles");
    let out = tempfile::tempdir().unwrap();
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .build_transport(false)
        .emit_rerun_if_changed(false)
        .out_dir(out.path())
        .compile_fds(fds)
        .expect("code generation");
    let fresh = std::fs::read_to_string(out.path().join("knowton.agent.v1.rs")).unwrap();
    let committed_path = root.join("src/gen/knowton.agent.v1.rs");
    let committed = std::fs::read_to_string(&committed_path).unwrap_or_default();
    if fresh != committed {
        if std::env::var_os("KNOWTON_UPDATE_PROTO").is_some() {
            std::fs::write(&committed_path, fresh).unwrap();
        } else {
            panic!(
                "{} is stale: run KNOWTON_UPDATE_PROTO=1 cargo test -p knowton-proto and commit it",
                committed_path.display()
            );
        }
    }
}
