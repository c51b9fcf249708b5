//! Decoding a chunked response body, every size and offset checked (they
//! all come from the pod).

use super::response::HEAD_LIMIT;

/// Progress through a chunked body.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Dechunk {
    /// The body ended; this many bytes of the input were its end.
    Done(usize),
    /// This many bytes were consumed; more input is needed.
    More(usize),
}

#[derive(Debug, PartialEq, Eq)]
pub(super) enum Dechunked {
    TooLarge,
    Malformed(&'static str),
}

/// Longest chunk size line (size and extensions).
pub(super) const CHUNK_LINE_LIMIT: usize = 1024;

/// Decodes whole chunks from `input` into `body`. Every size and offset
/// comes from the pod, so all arithmetic on them is checked.
pub(super) fn dechunk(
    input: &[u8],
    body: &mut Vec<u8>,
    limit: usize,
) -> Result<Dechunk, Dechunked> {
    let mut at = 0;
    loop {
        let rest = &input[at..];
        let Some(line_end) = find_crlf(rest, CHUNK_LINE_LIMIT) else {
            if rest.len() > CHUNK_LINE_LIMIT {
                return Err(Dechunked::Malformed("chunk size line too long"));
            }
            return Ok(Dechunk::More(at));
        };
        let size = chunk_size(&rest[..line_end])?;
        let data = line_end + 2;
        if size == 0 {
            // Trailers, if any, end with an empty line.
            let trailers = &rest[data..];
            let mut t = 0;
            loop {
                let Some(end) = find_crlf(&trailers[t..], HEAD_LIMIT) else {
                    if trailers.len() > HEAD_LIMIT {
                        return Err(Dechunked::Malformed("trailers too long"));
                    }
                    return Ok(Dechunk::More(at));
                };
                if end == 0 {
                    return Ok(Dechunk::Done(at + data + t + 2));
                }
                t += end + 2;
                if t > HEAD_LIMIT {
                    return Err(Dechunked::Malformed("trailers too long"));
                }
            }
        }
        if body
            .len()
            .checked_add(size)
            .is_none_or(|total| total > limit)
        {
            return Err(Dechunked::TooLarge);
        }
        let end = data
            .checked_add(size)
            .and_then(|n| n.checked_add(2))
            .ok_or(Dechunked::TooLarge)?;
        if rest.len() < end {
            return Ok(Dechunk::More(at));
        }
        if &rest[end - 2..end] != b"\r\n" {
            return Err(Dechunked::Malformed("chunk not followed by CRLF"));
        }
        body.extend_from_slice(&rest[data..end - 2]);
        at += end;
    }
}

/// Where the first CRLF in the first `within` bytes of `bytes` starts.
fn find_crlf(bytes: &[u8], within: usize) -> Option<usize> {
    let window = &bytes[..bytes.len().min(within.saturating_add(2))];
    window.windows(2).position(|w| w == b"\r\n")
}

/// The size on a chunk size line: hexadecimal digits only (no sign, no
/// space inside), optionally followed by `;extensions`.
fn chunk_size(line: &[u8]) -> Result<usize, Dechunked> {
    let hex = line.split(|&b| b == b';').next().unwrap_or_default();
    let hex = hex.trim_ascii();
    if hex.is_empty() || !hex.iter().all(u8::is_ascii_hexdigit) {
        return Err(Dechunked::Malformed("chunk size is not hexadecimal"));
    }
    let mut size: usize = 0;
    for &digit in hex {
        let value = (digit as char).to_digit(16).unwrap_or(0) as usize;
        size = size
            .checked_mul(16)
            .and_then(|n| n.checked_add(value))
            .ok_or(Dechunked::TooLarge)?;
    }
    Ok(size)
}
