//! Randomness from the operating system, for serials and name suffixes.

use rcgen::SerialNumber;

use crate::CaError;

/// `N` bytes from the operating system's random number generator.
pub(crate) fn bytes<const N: usize>() -> Result<[u8; N], CaError> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).map_err(CaError::Random)?;
    Ok(b)
}

/// A serial of 16 random bytes (RFC 5280 allows up to 20; CAs use at least
/// 64 random bits). The top bit is cleared because DER integers are signed
/// and a serial must be positive; the first byte is made non-zero so the
/// encoding keeps all 16 bytes instead of being shortened.
pub(crate) fn serial() -> Result<SerialNumber, CaError> {
    let mut b = bytes::<16>()?;
    b[0] = (b[0] & 0x7f) | 0x01;
    Ok(SerialNumber::from_slice(&b))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    #[test]
    fn serials_are_positive_full_length_and_distinct() {
        let mut seen = std::collections::HashSet::new();
        for _ in 0..256 {
            let s = super::serial().unwrap();
            let b = s.to_bytes();
            assert_eq!(b.len(), 16);
            assert_eq!(b[0] & 0x80, 0, "positive");
            assert_ne!(b[0], 0, "no leading zero byte");
            assert!(seen.insert(b));
        }
    }
}
