//! Inflating gzip bodies within a size bound and a deadline.

use std::io::{BufRead, Read};
use std::time::Instant;

use bytes::Bytes;

use super::super::wire::WireError;

/// The most body bytes the inflater is handed at a time; the deadline is
/// checked before each hand-out. Inflation time is not proportional to the
/// output: empty deflate blocks (10 bits each) cost miniz_oxide about
/// 2 µs per body byte in a release build as it rebuilds its fixed tables,
/// and empty members about 125 ns, so a 1 KiB step runs a few
/// milliseconds past the deadline at most.
const STEP: usize = 1024;

/// The body, handed out [`STEP`] bytes at a time until `deadline`.
struct Paced<'a> {
    body: &'a [u8],
    deadline: Instant,
    late: bool,
}

impl Read for Paced<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.fill_buf()?.read(buf)?;
        self.consume(n);
        Ok(n)
    }
}

impl BufRead for Paced<'_> {
    fn fill_buf(&mut self) -> std::io::Result<&[u8]> {
        if !self.body.is_empty() && Instant::now() >= self.deadline {
            self.late = true;
            return Err(std::io::Error::other("gzip inflation past the fetch deadline"));
        }
        Ok(&self.body[..self.body.len().min(STEP)])
    }

    fn consume(&mut self, amt: usize) {
        self.body = self.body.get(amt..).unwrap_or_default();
    }
}

/// Decompresses a gzip body, refusing output beyond `limit` bytes (the
/// inflated size is bounded as it is produced, not after) and giving up
/// with [`WireError::Deadline`] once `deadline` passes (checked every
/// [`STEP`] body bytes). The fetch's timeout cannot stop this work on the
/// blocking pool: before, a 500 KB body of empty deflate blocks went on
/// inflating for 6 s (debug build) after its fetch returned `Timeout`
/// at 200 ms, and each refresh started one more (helper 172).
///
/// Every member is inflated, as RFC 1952 (a gzip file is a series of
/// members) and Java's `GZIPInputStream` read it: a body compressed in
/// pieces (a proxy that gzips each flush) is the concatenation of its
/// members' texts. Bytes after the last member that do not start another
/// member are a [`WireError::Gzip`], not ignored.
///
/// The output buffer is sized once from the gzip trailer's size field,
/// trusted only up to `limit` and to deflate's largest ratio (1032:1), and
/// never grown by doubling (which held the old buffer and one twice its
/// size at each copy: 1.5 × the body at peak, 2 × `limit` of capacity for a
/// body just under it). When the trailer understates the text
/// (a body of several members, whose last trailer counts its own member
/// only, or a forged one), the rest is inflated once more to count it,
/// then the whole into a buffer of exactly its size: twice the inflation
/// time, and at most `limit` bytes of output held.
pub(crate) fn gunzip(body: &[u8], limit: usize, deadline: Instant) -> Result<Bytes, WireError> {
    let bound = (limit as u64).saturating_add(1);
    let hint = body
        .len()
        .checked_sub(4)
        .and_then(|at| body.get(at..))
        .and_then(|tail| <[u8; 4]>::try_from(tail).ok())
        .map_or(0, |tail| u32::from_le_bytes(tail) as usize)
        .min(limit)
        .min(body.len().saturating_mul(1032));
    let paced = |body| Paced {
        body,
        deadline,
        late: false,
    };
    let failed = |decoder: flate2::bufread::MultiGzDecoder<Paced<'_>>, source| {
        if decoder.get_ref().late {
            WireError::Deadline
        } else {
            WireError::Gzip { source }
        }
    };
    let mut out = Vec::with_capacity(hint);
    let mut decoder = flate2::bufread::MultiGzDecoder::new(paced(body)).take(bound);
    // Fill the buffer, not past its capacity.
    let room = (out.capacity() - out.len()) as u64;
    let first = (&mut decoder).take(room).read_to_end(&mut out);
    let rest = first.and_then(|_| std::io::copy(&mut decoder, &mut std::io::sink()));
    let rest = rest.map_err(|e| failed(decoder.into_inner(), e))?;
    let total = (out.len() as u64).saturating_add(rest);
    if total > limit as u64 {
        return Err(WireError::TooLarge { limit });
    }
    if rest > 0 {
        drop(out);
        let mut whole = Vec::with_capacity(usize::try_from(total).unwrap_or(limit));
        let mut decoder = flate2::bufread::MultiGzDecoder::new(paced(body)).take(total);
        if let Err(e) = decoder.read_to_end(&mut whole) {
            return Err(failed(decoder.into_inner(), e));
        }
        return Ok(Bytes::from(whole));
    }
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn far() -> Instant {
        Instant::now() + std::time::Duration::from_secs(3600)
    }

    #[test]
    fn gunzip_limits() {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(&[b'a'; 1000]).unwrap();
        let gz = enc.finish().unwrap();
        assert_eq!(gunzip(&gz, 1000, far()).unwrap().len(), 1000);
        assert!(matches!(
            gunzip(&gz, 999, far()),
            Err(WireError::TooLarge { limit: 999 })
        ));
        assert!(gunzip(&gz[..gz.len() / 2], 1000, far()).is_err());
        assert!(gunzip(&[0x1f, 0x8b, 0, 0], 1000, far()).is_err());
    }

    fn gzip(text: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(text).unwrap();
        enc.finish().unwrap()
    }

    /// Before: `{"a":` (the first member only, 5 of 9 bytes), and the body
    /// with junk after its member passed as `{"a":1}`.
    #[test]
    fn every_member_is_inflated_and_junk_after_them_refused() {
        let mut two = gzip(br#"{"a":"#);
        two.extend(gzip(b"1}"));
        two.extend(gzip(b""));
        assert_eq!(gunzip(&two, 1000, far()).unwrap(), &br#"{"a":1}"#[..]);
        assert!(matches!(
            gunzip(&two, 6, far()),
            Err(WireError::TooLarge { limit: 6 })
        ));
        let mut junk = gzip(br#"{"a":1}"#);
        junk.extend(b"junk");
        assert!(matches!(gunzip(&junk, 1000, far()), Err(WireError::Gzip { .. })));
    }

    /// A passed deadline stops inflation at its first step, alone or
    /// between members (the integration test `eureka_gzip_deadline.rs`
    /// has the bodies whose inflation takes seconds).
    #[test]
    fn inflation_stops_at_the_deadline() {
        let text = br#"{"applications":{"application":[]}}"#.repeat(100);
        let body = gzip(&text);
        assert_eq!(gunzip(&body, 1 << 20, far()).unwrap(), &text[..]);
        let past = gunzip(&body, 1 << 20, Instant::now());
        assert!(matches!(past, Err(WireError::Deadline)), "{past:?}");
        let mut members = gzip(b"[");
        members.extend(&body);
        members.extend(gzip(b"]"));
        assert_eq!(gunzip(&members, 1 << 20, far()).unwrap().len(), text.len() + 2);
        let past = gunzip(&members, 1 << 20, Instant::now());
        assert!(matches!(past, Err(WireError::Deadline)), "{past:?}");
        // A broken body stays a gzip error before the deadline.
        let broken = gunzip(&body[..body.len() / 2], 1 << 20, far());
        assert!(matches!(broken, Err(WireError::Gzip { .. })), "{broken:?}");
    }
}
