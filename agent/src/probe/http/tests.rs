//! Tests of the pod HTTP client's URL parsing, response heads and chunked bodies.

use super::chunked::{CHUNK_LINE_LIMIT, Dechunk, Dechunked, dechunk};
use super::response::{Framing, HEAD_LIMIT, parse_head};
use super::*;

#[test]
fn parses_plain_http_urls() {
    let e = Endpoint::parse("http://10.0.3.7:3000").unwrap();
    assert_eq!(
        (e.authority.as_str(), e.host.as_str()),
        ("10.0.3.7:3000", "10.0.3.7")
    );
    assert_eq!(e.base_path, "");
    let e = Endpoint::parse("http://[fd00::7]:3000/app/").unwrap();
    assert_eq!(
        (e.authority.as_str(), e.host.as_str()),
        ("[fd00::7]:3000", "fd00::7")
    );
    assert_eq!(e.base_path, "/app");
    assert_eq!(Endpoint::parse("http://pod").unwrap().authority, "pod:80");
}

#[test]
fn response_heads_give_status_framing_and_reuse() {
    let head = |text: &str| parse_head(text.as_bytes()).unwrap().unwrap();
    let h = head("HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\nbody");
    assert_eq!(
        (h.status, h.framing, h.keep_alive, h.len),
        (200, Framing::Length(12), true, 39)
    );
    let h = head(
        "HTTP/1.1 503 Unavailable\r\ntransfer-encoding: gzip, chunked\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(
        (h.status, h.framing, h.keep_alive),
        (503, Framing::Chunked, false)
    );
    let h = head("HTTP/1.0 200 OK\r\n\r\n");
    assert_eq!((h.framing, h.keep_alive), (Framing::Close, false));
    let h = head("HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n");
    assert_eq!((h.framing, h.keep_alive), (Framing::Length(0), true));
    let h = head("HTTP/1.1 204 No Content\r\n\r\n");
    assert_eq!(h.framing, Framing::Length(0));
    assert!(
        parse_head(b"HTTP/1.1 200 OK\r\nContent-Le")
            .unwrap()
            .is_none()
    );
    for bad in [
        "<html>502</html>\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
    ] {
        assert!(parse_head(bad.as_bytes()).is_err(), "{bad:?}");
    }
}

#[test]
fn chunked_bodies_decode_across_reads() {
    let input = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\nX-Trailer: 1\r\n\r\n";
    let mut body = Vec::new();
    assert_eq!(
        dechunk(input, &mut body, 100),
        Ok(Dechunk::Done(input.len()))
    );
    assert_eq!(body, b"hello, world");
    // Cut anywhere, it asks for more and never consumes a partial chunk.
    for cut in 0..input.len() {
        let mut body = Vec::new();
        match dechunk(&input[..cut], &mut body, 100).unwrap() {
            Dechunk::More(used) => {
                let mut rest = body.clone();
                assert_eq!(
                    dechunk(&input[used..], &mut rest, 100),
                    Ok(Dechunk::Done(input.len() - used))
                );
                assert_eq!(rest, b"hello, world", "cut at {cut}");
            }
            Dechunk::Done(_) => panic!("done at {cut} of {}", input.len()),
        }
    }
    let mut body = Vec::new();
    assert_eq!(dechunk(input, &mut body, 8), Err(Dechunked::TooLarge));
    assert!(matches!(
        dechunk(b"zz\r\n", &mut Vec::new(), 100),
        Err(Dechunked::Malformed(_))
    ));
    assert!(matches!(
        dechunk(b"2\r\nabXY", &mut Vec::new(), 100),
        Err(Dechunked::Malformed(_))
    ));
}

#[test]
fn https_and_nonsense_are_reported_not_panicked_on() {
    let err = Endpoint::parse("https://10.0.3.7:3000").unwrap_err();
    assert_eq!(err.failure, Failure::Other);
    assert!(
        err.detail.contains("https is not supported"),
        "{}",
        err.detail
    );
    assert_eq!(
        Endpoint::parse("not a url").unwrap_err().failure,
        Failure::Other
    );
    assert_eq!(
        Endpoint::parse("ftp://x").unwrap_err().failure,
        Failure::Other
    );
}

/// Finding 12 of issue 11: a chunk size near `usize::MAX` after a first
/// chunk overflowed `body.len() + size` (a panic in debug builds; in
/// release the sum wrapped, passed the limit and the slicing after it
/// panicked). Every size is now checked: too large, never a panic.
#[test]
fn huge_chunk_sizes_are_refused_not_overflowed() {
    for input in [
        &b"1\r\na\r\nffffffffffffffff\r\n"[..],
        b"1\r\na\r\nffffffffffffffff\r\nxyz\r\n",
        b"1\r\na\r\nfffffffffffffffe;x\r\n\r\n",
        b"ffffffffffffffffff\r\n",
        b"1\r\na\r\nffffffffffffffffff\r\n",
        b"000000000000000000000000000000000000001\r\na\r\n0\r\n\r\n",
    ] {
        let mut body = Vec::new();
        let got = dechunk(input, &mut body, 100);
        let expected = if input.starts_with(b"0000") {
            Ok(Dechunk::Done(input.len()))
        } else {
            Err(Dechunked::TooLarge)
        };
        assert_eq!(got, expected, "{:?}", String::from_utf8_lossy(input));
    }
    // Through the whole reader, cut into reads anywhere.
    let response =
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\na\r\nffffffffffffffff\r\n";
    for cut in 0..response.len() {
        let (a, b) = response.split_at(cut);
        let err = read_response([a, b], 100).unwrap_err();
        assert_eq!(err, "body larger than 100 bytes", "cut at {cut}");
    }
}

#[test]
fn chunk_sizes_are_plain_hexadecimal() {
    for bad in ["+5", "-1", "", " ", "5 5", "0x5", "g"] {
        let input = format!("{bad}\r\nhello\r\n0\r\n\r\n");
        assert_eq!(
            dechunk(input.as_bytes(), &mut Vec::new(), 100),
            Err(Dechunked::Malformed("chunk size is not hexadecimal")),
            "{bad:?}"
        );
    }
    let mut body = Vec::new();
    let input = b"5 ;name=value\r\nhello\r\n0\r\n\r\n";
    assert_eq!(
        dechunk(input, &mut body, 100),
        Ok(Dechunk::Done(input.len()))
    );
    assert_eq!(body, b"hello");
}

#[test]
fn long_trailers_and_size_lines_are_refused() {
    let mut input = b"0\r\n".to_vec();
    input.extend(std::iter::repeat_n(b'x', HEAD_LIMIT + 10));
    assert_eq!(
        dechunk(&input, &mut Vec::new(), 100),
        Err(Dechunked::Malformed("trailers too long"))
    );
    let mut input = b"5".to_vec();
    input.extend(std::iter::repeat_n(b';', CHUNK_LINE_LIMIT + 10));
    assert_eq!(
        dechunk(&input, &mut Vec::new(), 100),
        Err(Dechunked::Malformed("chunk size line too long"))
    );
}

#[test]
fn responses_are_read_whatever_the_reads() {
    type Read<'a> = Result<(u16, &'a [u8], bool), &'a str>;
    let cases: [(&[u8], Read); 6] = [
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
            Ok((200, b"hello", true)),
        ),
        (
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            Ok((200, b"ok", true)),
        ),
        (
            b"HTTP/1.1 503 No\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nno\r\n0\r\n\r\n",
            Ok((503, b"no", true)),
        ),
        (
            b"HTTP/1.0 200 OK\r\n\r\nuntil close",
            Ok((200, b"until close", false)),
        ),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhel",
            Err("connection closed mid-body"),
        ),
        (
            b"HTTP/1.1 200 OK\r\n",
            Err("connection closed before a response"),
        ),
    ];
    for (input, expected) in cases {
        for cut in 0..=input.len() {
            let (a, b) = input.split_at(cut);
            let got = read_response([a, b], 100);
            let got = got
                .as_ref()
                .map(|(status, body, reusable)| (*status, &body[..], *reusable))
                .map_err(String::as_str);
            assert_eq!(
                got,
                expected,
                "{:?} cut at {cut}",
                String::from_utf8_lossy(input)
            );
        }
    }
    // Bytes the pod sent unasked with the body: the connection is not reused
    // (sent later, the idle connection's check finds them).
    let (_, body, reusable) = read_response(
        [&b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokEXTRA"[..]],
        100,
    )
    .unwrap();
    assert_eq!((&body[..], reusable), (&b"ok"[..], false));
}

mod properties {
    //! Whatever a pod sends, however the socket cuts it: no panic, no body
    //! over the limit, and what was encoded is what is read.

    use proptest::prelude::*;

    use super::*;

    /// `bytes` cut at `cuts` (positions taken modulo its length).
    fn split(bytes: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
        let mut at: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
        at.sort_unstable();
        let mut reads = Vec::new();
        let mut from = 0;
        for cut in at.into_iter().chain([bytes.len()]) {
            reads.push(bytes[from..cut].to_vec());
            from = cut;
        }
        reads
    }

    fn read(bytes: &[u8], cuts: &[usize], limit: usize) -> Result<(u16, Bytes, bool), String> {
        let reads = split(bytes, cuts);
        read_response(reads.iter().map(Vec::as_slice), limit)
    }

    /// A chunked encoding of `body`: chunks of the given sizes (the rest in
    /// one), each size in upper or lower case with optional extensions,
    /// then optional trailers.
    fn chunked(body: &[u8], sizes: &[usize], upper: bool, trailers: bool) -> Vec<u8> {
        let mut out = Vec::new();
        let mut rest = body;
        let mut sizes = sizes.iter();
        while !rest.is_empty() {
            let n = sizes.next().map_or(rest.len(), |s| (s % rest.len()) + 1);
            let (chunk, after) = rest.split_at(n);
            let size = if upper {
                format!("{n:X}")
            } else {
                format!("{n:x};ext=\"v\"")
            };
            out.extend_from_slice(size.as_bytes());
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(chunk);
            out.extend_from_slice(b"\r\n");
            rest = after;
        }
        out.extend_from_slice(b"0\r\n");
        if trailers {
            out.extend_from_slice(b"X-Checksum: 1\r\nX-Other: two\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn arbitrary_bytes_never_panic_nor_exceed_the_limit(
            bytes in proptest::collection::vec(any::<u8>(), 0..2048),
            cuts in proptest::collection::vec(any::<usize>(), 0..8),
            limit in 0usize..512,
        ) {
            if let Ok((_, body, _)) = read(&bytes, &cuts, limit) {
                prop_assert!(body.len() <= limit);
            }
        }

        #[test]
        fn arbitrary_bodies_after_a_valid_head_never_panic(
            framing in prop_oneof![
                Just("Transfer-Encoding: chunked\r\n".to_owned()),
                (0usize..300).prop_map(|n| format!("Content-Length: {n}\r\n")),
                Just(String::new()),
            ],
            body in proptest::collection::vec(
                prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'0'), Just(b'f'), Just(b';'), any::<u8>()],
                0..600,
            ),
            cuts in proptest::collection::vec(any::<usize>(), 0..8),
            limit in 0usize..256,
        ) {
            let mut bytes = format!("HTTP/1.1 200 OK\r\n{framing}\r\n").into_bytes();
            bytes.extend_from_slice(&body);
            if let Ok((status, body, _)) = read(&bytes, &cuts, limit) {
                prop_assert_eq!(status, 200);
                prop_assert!(body.len() <= limit);
            }
        }

        #[test]
        fn a_chunked_body_reads_back_whatever_the_reads(
            body in proptest::collection::vec(any::<u8>(), 0..1500),
            sizes in proptest::collection::vec(any::<usize>(), 0..20),
            upper in any::<bool>(),
            trailers in any::<bool>(),
            cuts in proptest::collection::vec(any::<usize>(), 0..12),
            limit in 0usize..2000,
        ) {
            let mut bytes = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            bytes.extend(chunked(&body, &sizes, upper, trailers));
            let got = read(&bytes, &cuts, limit);
            if body.len() <= limit {
                let (status, read_body, reusable) = got.unwrap();
                prop_assert_eq!(status, 200);
                prop_assert_eq!(&read_body[..], &body[..]);
                prop_assert!(reusable);
            } else {
                prop_assert_eq!(got.unwrap_err(), format!("body larger than {limit} bytes"));
            }
        }

        #[test]
        fn a_sized_body_reads_back_whatever_the_reads(
            body in proptest::collection::vec(any::<u8>(), 0..1500),
            cuts in proptest::collection::vec(any::<usize>(), 0..12),
        ) {
            let mut bytes = format!("HTTP/1.1 503 Busy\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
            bytes.extend_from_slice(&body);
            let (status, read_body, reusable) = read(&bytes, &cuts, 1500).unwrap();
            prop_assert_eq!(status, 503);
            prop_assert_eq!(&read_body[..], &body[..]);
            prop_assert!(reusable);
        }
    }
}
