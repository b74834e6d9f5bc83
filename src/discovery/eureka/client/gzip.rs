//! Inflating gzip bodies within a size bound.

use std::io::Read;

use bytes::Bytes;

use super::super::wire::WireError;

/// Decompresses a gzip body, refusing output beyond `limit` bytes (the
/// inflated size is bounded as it is produced, not after).
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
pub(crate) fn gunzip(body: &[u8], limit: usize) -> Result<Bytes, WireError> {
    let gzip = |source| WireError::Gzip { source };
    let bound = (limit as u64).saturating_add(1);
    let hint = body
        .len()
        .checked_sub(4)
        .and_then(|at| body.get(at..))
        .and_then(|tail| <[u8; 4]>::try_from(tail).ok())
        .map_or(0, |tail| u32::from_le_bytes(tail) as usize)
        .min(limit)
        .min(body.len().saturating_mul(1032));
    let mut out = Vec::with_capacity(hint);
    let mut decoder = flate2::read::MultiGzDecoder::new(body).take(bound);
    // Fill the buffer, not past its capacity.
    let room = (out.capacity() - out.len()) as u64;
    (&mut decoder)
        .take(room)
        .read_to_end(&mut out)
        .map_err(gzip)?;
    let rest = std::io::copy(&mut decoder, &mut std::io::sink()).map_err(gzip)?;
    let total = (out.len() as u64).saturating_add(rest);
    if total > limit as u64 {
        return Err(WireError::TooLarge { limit });
    }
    if rest > 0 {
        drop(out);
        let mut whole = Vec::with_capacity(usize::try_from(total).unwrap_or(limit));
        flate2::read::MultiGzDecoder::new(body)
            .take(total)
            .read_to_end(&mut whole)
            .map_err(gzip)?;
        return Ok(Bytes::from(whole));
    }
    Ok(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gunzip_limits() {
        use std::io::Write;
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(&[b'a'; 1000]).unwrap();
        let gz = enc.finish().unwrap();
        assert_eq!(gunzip(&gz, 1000).unwrap().len(), 1000);
        assert!(matches!(
            gunzip(&gz, 999),
            Err(WireError::TooLarge { limit: 999 })
        ));
        assert!(gunzip(&gz[..gz.len() / 2], 1000).is_err());
        assert!(gunzip(&[0x1f, 0x8b, 0, 0], 1000).is_err());
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
        assert_eq!(gunzip(&two, 1000).unwrap(), &br#"{"a":1}"#[..]);
        assert!(matches!(
            gunzip(&two, 6),
            Err(WireError::TooLarge { limit: 6 })
        ));
        let mut junk = gzip(br#"{"a":1}"#);
        junk.extend(b"junk");
        assert!(matches!(gunzip(&junk, 1000), Err(WireError::Gzip { .. })));
    }
}
