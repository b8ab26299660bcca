//! The causal-context token clients carry (docs/): a [`VersionVector`], encoded as URL-safe
//! base64 of its bincode form.
//!
//! Size bound, by construction: a vector holds one entry per lineage (node incarnation, plus
//! hint actors, see [`crate::core::clock`]), each at most [`MAX_ENTRY_BYTES`] encoded, so a token
//! naming `n` lineages is at most [`max_chars`]`(n)` long. View changes and trusted restarts add
//! no lineage; only a node that loses its disk or its counter (a new incarnation) does. Never
//! O(keys), never O(view changes).
//!
//! Tokens from different sessions merge by [`merge`] (the join of version vectors); the merged token names
//! the union of both causal pasts.

use super::clock::VersionVector;
use super::dot::Actor;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// Longest token text accepted; bounds decoding work before any allocation is made for it.
pub const MAX_TOKEN_CHARS: usize = 16 * 1024;

/// Why a token could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("causal context token is longer than {MAX_TOKEN_CHARS} characters")]
    TooLong,
    #[error("causal context token is not URL-safe base64")]
    NotBase64,
    #[error("causal context token is malformed")]
    Malformed,
}

/// One token entry: an actor's node hash, epoch, incarnation and hint code (cluster id above
/// bit 32: a varint, so tokens issued before clusters had ids decode unchanged), and its counter.
type Entry = (u32, u64, u32, u64, u64);

/// Most bytes one entry takes encoded (bincode varints: a `u32` at most 5, a `u64` at most 9).
pub const MAX_ENTRY_BYTES: usize = 5 + 9 + 5 + 9 + 9;

/// Longest token, in characters, of a context with `entries` entries (length prefix included).
pub fn max_chars(entries: usize) -> usize {
    let bytes = 9 + entries * MAX_ENTRY_BYTES;
    (bytes * 4).div_ceil(3)
}

/// Encodes a context as a token. The empty context encodes as the empty string.
pub fn encode(ctx: &VersionVector) -> String {
    if ctx.is_empty() {
        return String::new();
    }
    let entries: Vec<Entry> = ctx
        .iter()
        .map(|(a, n)| (a.node(), a.epoch(), a.incarnation(), a.hint_code(), n))
        .collect();
    let bytes = bincode::serde::encode_to_vec(&entries, bincode::config::standard())
        .expect("encoding a vector of integer tuples cannot fail");
    let token = URL_SAFE_NO_PAD.encode(bytes);
    debug_assert!(token.len() <= max_chars(ctx.len()));
    token
}

/// Decodes a token; the empty string (or only whitespace) is the empty context.
pub fn decode(token: &str) -> Result<VersionVector, TokenError> {
    let token = token.trim();
    if token.is_empty() {
        return Ok(VersionVector::new());
    }
    if token.len() > MAX_TOKEN_CHARS {
        return Err(TokenError::TooLong);
    }
    let bytes = URL_SAFE_NO_PAD
        .decode(token.trim_end_matches('='))
        .map_err(|_| TokenError::NotBase64)?;
    // bincode's limit also counts what decoding allocates (a `Vec<Entry>` claims its length
    // times the entry's in-memory size), so the bound is the most entries a token of
    // `MAX_TOKEN_CHARS` can hold, at their in-memory size: not the text's length.
    let cfg = bincode::config::standard()
        .with_limit::<{ MAX_TOKEN_CHARS * std::mem::size_of::<Entry>() }>();
    let (entries, used): (Vec<Entry>, usize) =
        bincode::serde::decode_from_slice(&bytes, cfg).map_err(|_| TokenError::Malformed)?;
    if used != bytes.len() {
        return Err(TokenError::Malformed);
    }
    let mut ctx = VersionVector::new();
    for (node, epoch, inc, hint, n) in entries {
        ctx.insert_entry(Actor::from_parts(node, epoch, inc, hint), n);
    }
    Ok(ctx)
}

/// Merges tokens from several sessions into one naming all their causal pasts.
pub fn merge<'a>(tokens: impl IntoIterator<Item = &'a str>) -> Result<String, TokenError> {
    let mut ctx = VersionVector::new();
    for t in tokens {
        ctx.merge(&decode(t)?);
    }
    Ok(encode(&ctx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_merge() {
        let a: VersionVector = [(Actor::new(1, 7, 2), 7), (Actor::new(3, 7, 1), 2)]
            .into_iter()
            .collect();
        let b: VersionVector = [
            (Actor::new(1, 7, 2), 9),
            (Actor::new(1, 7, 2).hint(5, 2), 1),
        ]
        .into_iter()
        .collect();
        assert_eq!(decode(&encode(&a)).unwrap(), a);
        let m = decode(&merge([encode(&a).as_str(), encode(&b).as_str()]).unwrap()).unwrap();
        assert_eq!(m.get(Actor::new(1, 7, 2)), 9);
        assert_eq!(m.get(Actor::new(3, 7, 1)), 2);
        assert_eq!(m.get(Actor::new(1, 7, 2).hint(5, 2)), 1);
        assert_eq!(decode("").unwrap(), VersionVector::new());
        let mut floor = a.clone();
        floor.raise_floor(Actor::new(3, 9, 1));
        assert_eq!(
            decode(&encode(&floor)).unwrap(),
            floor,
            "a floor entry survives the trip"
        );
    }

    #[test]
    fn a_token_of_many_lineages_within_the_length_limit_decodes() {
        let many: VersionVector = (0..1_000u32).map(|n| (Actor::new(n, 1, 1), 1)).collect();
        let token = encode(&many);
        assert!(token.len() <= MAX_TOKEN_CHARS, "{} characters", token.len());
        assert_eq!(decode(&token), Ok(many));
    }

    #[test]
    fn rejects_garbage() {
        assert_eq!(decode("!!!"), Err(TokenError::NotBase64));
        assert_eq!(decode("AAAA"), Err(TokenError::Malformed));
        assert_eq!(
            decode(&"A".repeat(MAX_TOKEN_CHARS + 1)),
            Err(TokenError::TooLong)
        );
    }
}
