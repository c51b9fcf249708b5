use super::*;

fn decoded_request(frame: &[u8]) -> Result<Request, ProtocolError> {
    let (tag, len) = header(frame[..HEADER].try_into().unwrap())?;
    assert_eq!(len, frame.len() - HEADER);
    Request::decode(tag, &frame[HEADER..])
}

fn decoded_reply(frame: &[u8]) -> Result<Reply, ProtocolError> {
    let (tag, len) = header(frame[..HEADER].try_into().unwrap())?;
    assert_eq!(len, frame.len() - HEADER);
    Reply::decode(tag, &frame[HEADER..])
}

#[test]
fn every_request_and_reply_survives_the_round_trip() {
    let requests = [
        Request::Walk,
        Request::Read {
            path: b"docs/a.txt".to_vec(),
            limit: 12,
        },
        Request::Begin,
        Request::Mkdir {
            path: b"docs".to_vec(),
            mode: 0o750,
        },
        Request::Symlink {
            path: b"passwd".to_vec(),
            target: b"/etc/passwd".to_vec(),
        },
        Request::File {
            path: b"caf\xe9".to_vec(),
            mode: 0o4755,
        },
        Request::Content(vec![7; 1000]),
        Request::FileEnd { mtime_ns: -5 },
        Request::Commit,
    ];
    for request in requests {
        assert_eq!(decoded_request(&request.encode()).unwrap(), request);
    }
    let replies = [
        Reply::Entry(EntryInfo {
            path: b"a/b".to_vec(),
            kind: Kind::Symlink,
            mode: 0o777,
            size: 3,
            mtime_ns: 1,
            ctime_ns: 2,
            dev: 3,
            ino: 4,
            target: b"../x".to_vec(),
        }),
        Reply::WalkEnd { count: 9 },
        Reply::Data(b"bytes".to_vec()),
        Reply::ReadEnd,
        Reply::Done,
        Reply::Failed("no such file".to_owned()),
    ];
    for reply in replies {
        assert_eq!(decoded_reply(&reply.encode()).unwrap(), reply);
    }
}

#[test]
fn a_frame_larger_than_the_cap_is_refused_from_its_header() {
    let mut head = [b'd', 0, 0, 0, 0];
    head[1..].copy_from_slice(&(MAX_FRAME as u32 + 1).to_be_bytes());
    assert_eq!(
        header(head),
        Err(ProtocolError::TooLarge {
            len: MAX_FRAME as u64 + 1,
            max: MAX_FRAME
        })
    );
    head[1..].copy_from_slice(&u32::MAX.to_be_bytes());
    assert!(header(head).is_err());
}

#[test]
fn paths_that_could_leave_the_root_are_refused() {
    for bad in [
        &b""[..],
        b"/etc/passwd",
        b"../x",
        b"a/../../x",
        b"a//b",
        b"a/",
        b"./a",
        b"a\0b",
        &[b'a'; 256],
    ] {
        assert!(
            check_path(bad).is_err(),
            "{:?}",
            String::from_utf8_lossy(bad)
        );
        let frame = Request::Read {
            path: bad.to_vec(),
            limit: 1,
        }
        .encode();
        assert!(decoded_request(&frame).is_err());
    }
    let long = vec![b'a'; MAX_PATH + 1];
    assert!(check_path(&long).is_err());
    for good in [&b"a"[..], b"a/b/c", b"..a", b".hidden", b"caf\xe9"] {
        check_path(good).unwrap();
    }
}

#[test]
fn malformed_frames_are_errors_not_panics() {
    // Every cut of a valid entry is refused.
    let entry = Reply::Entry(EntryInfo {
        path: b"a".to_vec(),
        kind: Kind::File,
        mode: 0o644,
        size: 1,
        mtime_ns: 0,
        ctime_ns: 0,
        dev: 0,
        ino: 0,
        target: Vec::new(),
    })
    .encode();
    for cut in 0..entry.len() - HEADER - 1 {
        assert!(Reply::decode(b'e', &entry[HEADER..HEADER + cut]).is_err());
    }
    // A file with a link target, a bad kind, a bad mode, trailing bytes.
    let mut with_target = entry[HEADER..].to_vec();
    with_target.extend_from_slice(b"/etc");
    assert!(Reply::decode(b'e', &with_target).is_err());
    let mut kind = entry[HEADER..].to_vec();
    kind[0] = 9;
    assert!(Reply::decode(b'e', &kind).is_err());
    assert!(Request::decode(b'D', &[0, 1, 0, 0, 0, 1, b'a']).is_err());
    assert!(Reply::decode(b'w', &[0; 9]).is_err());
    assert!(Reply::decode(b'?', &[]).is_err());
    // A link entry with no target.
    let link = Reply::Entry(EntryInfo {
        kind: Kind::Symlink,
        target: b"t".to_vec(),
        ..match Reply::decode(b'e', &entry[HEADER..]).unwrap() {
            Reply::Entry(e) => e,
            _ => unreachable!(),
        }
    })
    .encode();
    assert!(Reply::decode(b'e', &link[HEADER..link.len() - 1]).is_err());
}
