//! Decision ids. Its own module so that both [`crate::error`] (an evaluation error names its
//! decision) and [`crate::decision`] can use it without depending on each other.

/// A decision's id: a per-process random prefix and a counter, formatted as a UUID (version 4
/// layout) only when shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecisionId(pub u64);

fn id_prefix() -> u64 {
    static PREFIX: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *PREFIX.get_or_init(|| {
        let mut b = [0u8; 8];
        // Without randomness ids are still unique within the process.
        let _ = getrandom::fill(&mut b);
        u64::from_le_bytes(b) ^ u64::from(std::process::id())
    })
}

fn uuid(hi: u64, lo: u64) -> String {
    let hi = (hi & 0xffff_ffff_ffff_0fff) | 0x0000_0000_0000_4000;
    let lo = (lo & 0x3fff_ffff_ffff_ffff) | 0x8000_0000_0000_0000;
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        hi >> 32,
        (hi >> 16) & 0xffff,
        hi & 0xffff,
        lo >> 48,
        lo & 0xffff_ffff_ffff
    )
}

impl DecisionId {
    /// The next id of this process (a relaxed counter).
    #[inline]
    pub fn next() -> Self {
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        Self(COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
    }

    /// A UUID naming this process (the decision-log instance id).
    pub fn random_prefix_uuid() -> String {
        uuid(id_prefix(), id_prefix().rotate_left(32))
    }
}

impl std::fmt::Display for DecisionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&uuid(id_prefix(), self.0))
    }
}
