//! Bytes per cached decision at 1,000,000 entries: regoguard's L1 against moka 0.12 holding the
//! same key and value. This is why the L1 is not moka (Cargo.toml, README).
//!
//! `cargo bench --bench cache_memory` — each variant runs in its own child process so the
//! allocator's high-water marks do not mix; RSS growth is divided by the entry count.

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use regoguard_core::cache::{CacheConfig, DecisionCache};
use regoguard_core::key::Key;
use regoguard_core::Outcome;
use regorus::Value;

const N: u64 = 1_000_000;

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn key(i: u64) -> Key {
    let mut k = [0u8; 32];
    k[..8].copy_from_slice(&i.to_le_bytes());
    // Spread like a digest would.
    k[8..16].copy_from_slice(&i.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_le_bytes());
    Key(k)
}

fn run(variant: &str) {
    // Entries share one interned outcome, as they do in the authorizer.
    let allow = Arc::new(Outcome::from_value("data.authz.allow", Value::Bool(true)).unwrap());
    let before = rss_bytes();
    let entries = match variant {
        "regoguard" => {
            let cache = DecisionCache::new(CacheConfig::new(N + N / 10, 600.0, None).unwrap());
            for i in 0..N {
                cache
                    .get_or_evaluate(&key(i), || Ok(allow.clone()))
                    .unwrap();
            }
            let n = cache.len() as u64;
            std::mem::forget(cache);
            n
        }
        "moka" => {
            #[derive(Clone)]
            struct Entry {
                _outcome: Arc<Outcome>,
                _expires_ns: u64,
            }
            let shared = allow;
            let cache: moka::sync::Cache<Key, Entry> = moka::sync::Cache::builder()
                .max_capacity(N + N / 10)
                .time_to_live(Duration::from_secs(600))
                .build();
            for i in 0..N {
                cache.insert(
                    key(i),
                    Entry {
                        _outcome: shared.clone(),
                        _expires_ns: i,
                    },
                );
            }
            cache.run_pending_tasks();
            let n = cache.entry_count();
            std::mem::forget(cache);
            n
        }
        other => panic!("unknown variant {other}"),
    };
    let after = rss_bytes();
    #[allow(clippy::cast_precision_loss)]
    let per = (after.saturating_sub(before)) as f64 / entries as f64;
    println!("| {variant} | {entries} | {per:.1} |");
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(pos) = args.iter().position(|a| a == "--variant") {
        run(&args[pos + 1]);
        return;
    }
    println!("| cache | entries | bytes per entry (RSS growth / entries) |");
    println!("|---|---|---|");
    for variant in ["regoguard", "moka"] {
        let out = Command::new(&args[0])
            .args(["--variant", variant])
            .output()
            .unwrap();
        print!("{}", String::from_utf8_lossy(&out.stdout));
    }
}
