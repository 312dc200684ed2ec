//! Generators shared by the seeded property tests of ebb's hand-written
//! HTTP/1 readers (`proxy/framing_props.rs`, `http1/props.rs`): the
//! seed and case count from the environment, and the pieces of a message.

/// `EBB_PROP_SEED=N` replays (or explores) another seed than `default`.
pub(crate) fn seed(default: u64) -> u64 {
    std::env::var("EBB_PROP_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

/// `EBB_PROP_CASES=N` runs more (or fewer) cases than `default`.
pub(crate) fn cases(default: usize) -> usize {
    std::env::var("EBB_PROP_CASES").ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

/// `name` with each letter upper- or lower-case at random.
pub(crate) fn any_case(rng: &mut fastrand::Rng, name: &str) -> String {
    name.chars().map(|c| if rng.bool() { c.to_ascii_uppercase() } else { c }).collect()
}

/// `len` random letters and digits.
pub(crate) fn token(rng: &mut fastrand::Rng, len: usize) -> String {
    (0..len).map(|_| rng.alphanumeric()).collect()
}

/// `len` random bytes, half the time holding `fake` (bytes that look like
/// the framing a reader must not be fooled into seeing in a body).
pub(crate) fn body_bytes(rng: &mut fastrand::Rng, len: usize, fake: &[u8]) -> Vec<u8> {
    let mut body: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
    if len > fake.len() && rng.bool() {
        let at = rng.usize(..=len - fake.len());
        body[at..at + fake.len()].copy_from_slice(fake);
    }
    body
}
