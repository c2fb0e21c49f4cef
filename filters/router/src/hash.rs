//! The hash behind weighted splits: FNV-1a (64 bit) over the key, then the
//! MurmurHash3 `fmix64` finalizer so that keys differing only in their last
//! bytes (`user-1`, `user-2`, ...) spread over the whole range, not just the
//! low bits. Deterministic across processes, threads and releases: a key
//! always lands on the same arm for the same weights.

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// FNV-1a of `bytes`, finalized with `fmix64`.
pub fn hash(bytes: &[u8]) -> u64 {
    fmix64(fnv1a(bytes))
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h = FNV_OFFSET;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

/// MurmurHash3's 64-bit finalizer: every input bit affects every output bit.
pub fn fmix64(mut h: u64) -> u64 {
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    h ^= h >> 33;
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fnv1a_reference_values() {
        // Published FNV-1a 64 test vectors: "" and "a".
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn deterministic_and_spread() {
        assert_eq!(hash(b"user-1"), hash(b"user-1"));
        assert_ne!(hash(b"user-1"), hash(b"user-2"));
        // The top bit is set for about half of sequential keys.
        let high = (0..10_000)
            .filter(|i| hash(format!("user-{i}").as_bytes()) >> 63 == 1)
            .count();
        assert!((4_800..=5_200).contains(&high), "{high}");
    }
}
