//! Host-side matchers offered to filters as foreign functions: regex sets
//! (`regex::bytes`) and phrase sets (Aho-Corasick, ASCII case-insensitive).
//!
//! A filter compiles a set once (at configure time) and gets a handle, valid for its VM.
//! Compiled sets are cached host-wide by the SHA-256 of their encoded arguments and held
//! weakly, so the VMs of every worker thread running one policy share one compiled set,
//! and a set no VM holds any more is freed.
//!
//! Wire format (all integers u32 little-endian): see `docs/ABI.md` and
//! [`super::abi`]'s `foreign` module; the functions here take and return those bytes.
//!
//! - [`regex_set`]: compiled regex sets ([`RegexMatcher`]).
//! - [`phrase_set`]: compiled phrase sets ([`PmMatcher`]).
//! - [`handles`]: the matchers one VM holds and the foreign-function calls on them.
//! - `cache`: the host-wide cache of compiled sets; `codec`: the list encoding.

mod cache;
mod codec;
pub mod handles;
pub mod phrase_set;
pub mod regex_set;
#[cfg(test)]
mod tests;

#[cfg(test)]
pub use cache::cached_counts;
#[cfg(test)]
pub use codec::encode_list;
pub use handles::Handles;
pub use phrase_set::PmMatcher;
pub use regex_set::RegexMatcher;

/// Longest pattern or phrase, bytes.
pub const MAX_PATTERN_BYTES: usize = 64 << 10;
/// Most patterns in one regex set.
pub const MAX_REGEX_PATTERNS: usize = 10_000;
/// Most phrases in one phrase set.
pub const MAX_PM_PHRASES: usize = 100_000;
/// Most bytes of phrases in one phrase set.
pub const MAX_PM_BYTES: usize = 8 << 20;
/// Compiled-program and lazy-DFA cache size limit of one regex set (each).
pub const REGEX_SIZE_LIMIT: usize = 64 << 20;
/// Longest input a matcher accepts, bytes.
pub const MAX_INPUT_BYTES: usize = 16 << 20;
/// Most handles one VM may hold.
pub const MAX_HANDLES: usize = 4096;

/// Why a matcher call failed; every case maps to `BAD_ARGUMENT` for the guest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MatchError {
    /// The arguments do not follow the encoding.
    #[error("malformed arguments: {0}")]
    Malformed(&'static str),
    /// A limit was exceeded.
    #[error("over limit: {0}")]
    Limit(&'static str),
    /// A pattern did not compile.
    #[error("pattern {index} does not compile: {reason}")]
    Pattern {
        /// Index of the pattern in the set.
        index: usize,
        /// The compiler's message.
        reason: String,
    },
    /// No such handle, or a handle of the other kind.
    #[error("unknown handle {0}")]
    Handle(u32),
}
