//! The session against a far end that sends whatever a test writes.

use knowton_common::volume::{EntryInfo, Kind, Reply};
use tokio::io::AsyncWriteExt;

use super::*;

/// A session whose far end's replies are `replies` (raw bytes), then
/// the end of its output.
fn session_replying(replies: Vec<u8>, caps: Caps) -> Session {
    let (mut far, output) = tokio::io::duplex(1 << 16);
    tokio::spawn(async move {
        let _ = far.write_all(&replies).await;
    });
    Session::new(
        "knowton-tenant-acme/knowton-volume".to_owned(),
        tokio::io::sink(),
        output,
        Stderr::default(),
        caps,
    )
}

fn entry(path: &str) -> Vec<u8> {
    Reply::Entry(EntryInfo {
        path: path.as_bytes().to_vec(),
        kind: Kind::File,
        mode: 0o644,
        size: 1,
        mtime_ns: 0,
        ctime_ns: 0,
        dev: 1,
        ino: 1,
        target: Vec::new(),
    })
    .encode()
}

fn refused(err: VolumeError) -> String {
    match err {
        VolumeError::Refused { problem, .. } => problem,
        other => panic!("not refused: {other}"),
    }
}

#[tokio::test]
async fn a_walk_of_more_entries_than_the_cap_is_refused() {
    let caps = Caps {
        entries: 3,
        path_bytes: 1 << 20,
        ..Caps::default()
    };
    let replies: Vec<u8> = (0..5).flat_map(|i| entry(&format!("f{i}"))).collect();
    let err = session_replying(replies, caps).walk().await.unwrap_err();
    assert_eq!(refused(err), "more than 3 files and directories");

    let mut replies: Vec<u8> = (0..3).flat_map(|i| entry(&format!("f{i}"))).collect();
    replies.extend(Reply::WalkEnd { count: 3 }.encode());
    assert_eq!(
        session_replying(replies, caps).walk().await.unwrap().len(),
        3
    );

    let caps = Caps {
        entries: 100,
        path_bytes: 10,
        ..Caps::default()
    };
    let replies: Vec<u8> = (0..5).flat_map(|i| entry(&format!("file{i}"))).collect();
    let err = session_replying(replies, caps).walk().await.unwrap_err();
    assert_eq!(refused(err), "more than 10 bytes of paths");
}

#[tokio::test]
async fn oversized_frames_escaping_paths_and_lies_are_refused() {
    // A header announcing 2 GiB: refused before anything is allocated.
    let mut huge = vec![b'e'];
    huge.extend_from_slice(&(2u32 << 30).to_be_bytes());
    let err = session_replying(huge, Caps::default())
        .walk()
        .await
        .unwrap_err();
    assert!(refused(err).contains("more than the 1048576 allowed"));

    let mut escaping = entry("abc");
    let at = escaping.len() - 3;
    escaping[at..].copy_from_slice(b"../");
    let err = session_replying(escaping, Caps::default())
        .walk()
        .await
        .unwrap_err();
    assert!(refused(err).contains("refused"));

    let mut replies = entry("a");
    replies.extend(Reply::WalkEnd { count: 7 }.encode());
    let err = session_replying(replies, Caps::default())
        .walk()
        .await
        .unwrap_err();
    assert_eq!(refused(err), "ended a walk of 1 entries saying 7");

    // More bytes than asked for.
    let mut replies = Reply::Data(vec![1; 10]).encode();
    replies.extend(Reply::ReadEnd.encode());
    let session = tokio::sync::Mutex::new(session_replying(replies, Caps::default()));
    let mut reader = tokio_util::io::StreamReader::new(Box::pin(read_stream(
        session.lock().await,
        b"f".to_vec(),
        4,
    )));
    let mut out = Vec::new();
    let err = reader.read_to_end(&mut out).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("sent more of f than the bytes asked for"),
        "{err}"
    );
    drop(reader);
    // The session is unusable after that.
    assert!(session.lock().await.walk().await.is_err());
}

#[tokio::test]
async fn a_far_end_that_stops_is_reported_with_its_stderr() {
    let stderr = Stderr::default();
    stderr
        .lock()
        .unwrap()
        .extend_from_slice(b"error: failed to open the volume root /data\n");
    let mut session = Session::new(
        "ns/pod".to_owned(),
        tokio::io::sink(),
        tokio::io::empty(),
        stderr,
        Caps::default(),
    );
    let err = session.walk().await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "volume pod ns/pod: the volume process ended early (error: failed to open the volume root /data)"
    );
}

/// A session with a far end that holds its output open: it says
/// `replies`, then nothing; and takes `room` bytes of requests, then
/// none. The far end's streams are returned, to be kept open.
async fn session_falling_silent(
    replies: Vec<u8>,
    room: usize,
) -> (Session, tokio::io::DuplexStream, tokio::io::DuplexStream) {
    let (mut far_out, output) = tokio::io::duplex(1 << 16);
    let (input, far_in) = tokio::io::duplex(room);
    let caps = Caps {
        silence: std::time::Duration::from_secs(120),
        ..Caps::default()
    };
    let session = Session::new("ns/pod".to_owned(), input, output, Stderr::default(), caps);
    // Written at once: the pipe holds it.
    far_out.write_all(&replies).await.unwrap();
    (session, far_out, far_in)
}

#[tokio::test(start_paused = true)]
async fn a_far_end_that_falls_silent_is_given_up_after_the_silence() {
    // Two entries of a walk, then nothing, the stream still open.
    let replies: Vec<u8> = (0..2).flat_map(|i| entry(&format!("f{i}"))).collect();
    let (mut session, _out, _in) = session_falling_silent(replies, 1 << 16).await;
    let started = tokio::time::Instant::now();
    let err = session.walk().await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "volume pod ns/pod sent no reply for 120s: given up"
    );
    assert_eq!(started.elapsed(), std::time::Duration::from_secs(120));
    // Whatever it sends later is not taken for the answer to anything.
    assert!(session.walk().await.is_err());

    // Half a frame, then nothing.
    let half = entry("f0")[..7].to_vec();
    let (mut session, _out, _in) = session_falling_silent(half, 1 << 16).await;
    let err = session.walk().await.unwrap_err();
    assert!(
        err.to_string().contains("sent no more of a reply for 120s"),
        "{err}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_far_end_that_takes_no_more_requests_is_given_up_after_the_silence() {
    // Its stdin takes 8 bytes and is never read: a file's content to
    // restore does not fit.
    let (mut session, _out, _in) = session_falling_silent(Vec::new(), 8).await;
    let content = knowton_common::volume::Request::Content(vec![7; 4096]);
    let started = tokio::time::Instant::now();
    let err = session.push(&content).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "volume pod ns/pod took no more of a request for 120s: given up"
    );
    assert_eq!(started.elapsed(), std::time::Duration::from_secs(120));
}
