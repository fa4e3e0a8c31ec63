//! HMAC-SHA256 and constant-time comparison of secrets, the two operations squall's request
//! authentication rests on. Must never compare a secret with `==`: the time an early-exit
//! comparison takes tells an attacker how many leading bytes they guessed right.

use hmac::digest::{Key, KeyInit};
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

pub(crate) type HmacSha256 = Hmac<Sha256>;

/// An HMAC-SHA256 keyed with `key`, of any length.
///
/// `Hmac::new_from_slice` would do, but it returns a `Result` (its error cannot happen for
/// HMAC) that would need an `unwrap`. Building the key block as RFC 2104 does (keys longer than
/// the hash's block are hashed first; shorter ones are zero-padded, which HMAC does anyway)
/// makes the constructor infallible by type instead.
pub(crate) fn hmac_sha256(key: &[u8]) -> HmacSha256 {
    let mut block = Key::<HmacSha256>::default();
    if key.len() > block.len() {
        let digest = Sha256::digest(key);
        block[..digest.len()].copy_from_slice(&digest);
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    <HmacSha256 as KeyInit>::new(&block)
}

/// Whether `a` and `b` are equal, in time that depends on neither their contents nor their
/// lengths. Both are reduced to a keyed digest and the digests compared with `verify_slice`,
/// which is constant time; the key is public because it only serves to make the comparison
/// length-independent, not to hide anything.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    const COMPARISON_KEY: &[u8] = b"squall-chat constant-time comparison";
    let digest_of = |bytes: &[u8]| {
        let mut mac = hmac_sha256(COMPARISON_KEY);
        mac.update(bytes);
        mac
    };
    let expected = digest_of(a).finalize().into_bytes();
    digest_of(b).verify_slice(&expected).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn infallible_constructor_agrees_with_hmac_for_short_exact_and_long_keys() {
        for len in [0usize, 1, 32, 63, 64, 65, 200] {
            let key: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            let mut ours = hmac_sha256(&key);
            ours.update(b"message");
            let mut reference = <HmacSha256 as Mac>::new_from_slice(&key).unwrap();
            reference.update(b"message");
            assert_eq!(
                ours.finalize().into_bytes(),
                reference.finalize().into_bytes(),
                "key length {len}"
            );
        }
    }

    #[test]
    fn constant_time_eq_is_equality() {
        assert!(constant_time_eq(b"token", b"token"));
        assert!(constant_time_eq(b"", b""));
        assert!(!constant_time_eq(b"token", b"tokem"));
        assert!(!constant_time_eq(b"token", b"token2"));
        assert!(!constant_time_eq(b"token", b""));
    }
}
