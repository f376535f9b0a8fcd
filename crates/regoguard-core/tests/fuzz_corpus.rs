//! The fuzz targets' properties on stable, as part of `cargo test` (README, "Fuzzing"): every
//! file of `fuzz/corpus/<target>/` and `fuzz/regressions/<target>/`, then a few thousand
//! random and mutated inputs from a fixed seed, through the functions the `cargo fuzz`
//! targets call (`fuzz/src/lib.rs`, included here).

#[path = "../../../fuzz/src/lib.rs"]
mod harness;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz")
}

/// The files of `fuzz/<kind>/<target>/`, sorted (a missing directory has none).
fn files(kind: &str, target: &str) -> Vec<PathBuf> {
    let Ok(dir) = std::fs::read_dir(fuzz_dir().join(kind).join(target)) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = dir
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    out.sort();
    out
}

/// Runs `f` on each input, then fails naming every input whose property failed.
fn check_all(target: &str, f: fn(&[u8]), inputs: impl IntoIterator<Item = (String, Vec<u8>)>) {
    let mut failed = Vec::new();
    for (name, data) in inputs {
        if catch_unwind(AssertUnwindSafe(|| f(&data))).is_err() {
            failed.push(name);
        }
    }
    assert!(failed.is_empty(), "{target}: failed on {failed:?}");
}

fn run_files(kind: &str, min: usize) {
    for &(target, f) in harness::TARGETS {
        let paths = files(kind, target);
        assert!(
            paths.len() >= min,
            "fuzz/{kind}/{target} has {} files, expected at least {min}",
            paths.len()
        );
        check_all(
            target,
            f,
            paths
                .into_iter()
                .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap())),
        );
    }
}

#[test]
fn corpus_files_hold() {
    run_files("corpus", 5);
}

#[test]
fn regressions_hold() {
    run_files("regressions", 0);
}

/// xorshift64*: a fixed sequence, so a failure here reproduces on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).unwrap()
    }

    fn byte(&mut self) -> u8 {
        self.next().to_le_bytes()[0]
    }
}

/// A mutation of `seed` as libFuzzer would make one: flips, inserts, removals, repeats.
fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut out = seed.to_vec();
    for _ in 0..=rng.below(4) {
        match rng.below(5) {
            0 if !out.is_empty() => {
                let i = rng.below(out.len());
                out[i] ^= rng.byte().max(1);
            }
            1 => {
                let i = rng.below(out.len() + 1);
                out.insert(i, rng.byte());
            }
            2 if !out.is_empty() => {
                out.remove(rng.below(out.len()));
            }
            3 if !out.is_empty() => {
                let (a, b) = (rng.below(out.len()), rng.below(out.len()));
                let piece = out[a.min(b)..a.max(b)].to_vec();
                let at = rng.below(out.len() + 1);
                out.splice(at..at, piece);
            }
            _ => {
                // Interesting bytes of the formats: separators, quotes, escapes, digits.
                const SPECIAL: &[u8] = b"\0 \"\\{}[],:-+.eE0%&=u\xff\xc3";
                let i = rng.below(out.len() + 1);
                out.insert(i, SPECIAL[rng.below(SPECIAL.len())]);
            }
        }
    }
    out
}

#[test]
fn seeded_random_and_mutated_inputs_hold() {
    const PER_TARGET: usize = 2000;
    for (n, &(target, f)) in harness::TARGETS.iter().enumerate() {
        let seeds: Vec<Vec<u8>> = files("corpus", target)
            .into_iter()
            .chain(files("regressions", target))
            .map(|p| std::fs::read(p).unwrap())
            .collect();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (n as u64 + 1));
        let inputs = (0..PER_TARGET).map(|i| {
            let data = if i % 4 == 0 || seeds.is_empty() {
                (0..rng.below(200)).map(|_| rng.byte()).collect()
            } else {
                let seed = &seeds[rng.below(seeds.len())];
                mutate(&mut rng, seed)
            };
            (format!("seeded input {i}: {data:?}"), data)
        });
        check_all(target, f, inputs);
    }
}
