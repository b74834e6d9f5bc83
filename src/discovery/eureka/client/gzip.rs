//! Inflating gzip bodies within a size bound.

use std::io::Read;

use bytes::Bytes;

use super::super::wire::WireError;

/// Decompresses a gzip body, refusing output beyond `limit` bytes (the
/// inflated size is bounded as it is produced, not after).
///
/// The output buffer is sized once from the gzip trailer's size field,
/// trusted only up to `limit` and to deflate's largest ratio (1032:1), so
/// it is not grown by doubling (which would hold 1.5 × the body at peak).
pub(crate) fn gunzip(body: &[u8], limit: usize) -> Result<Bytes, WireError> {
    let hint = body
        .len()
        .checked_sub(4)
        .and_then(|at| body.get(at..))
        .and_then(|tail| <[u8; 4]>::try_from(tail).ok())
        .map_or(0, |tail| u32::from_le_bytes(tail) as usize)
        .min(limit)
        .min(body.len().saturating_mul(1032));
    let mut out = Vec::with_capacity(hint.saturating_add(1));
    let mut decoder = flate2::read::GzDecoder::new(body).take((limit as u64).saturating_add(1));
    decoder
        .read_to_end(&mut out)
        .map_err(|source| WireError::Gzip { source })?;
    if out.len() > limit {
        return Err(WireError::TooLarge { limit });
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
}
