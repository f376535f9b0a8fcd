//! Criterion benches of the core: key derivation, L1 hit, RVM and interpreter evaluation.
//!
//! `cargo bench --bench authorizer` (add `-- --quick` for a short run). The policy is the
//! realistic one in tests/policies/good/realistic.

use std::path::Path;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use regoguard_core::{
    canonical, key::KeySeed, Authorizer, AuthorizerConfig, DataSource, Evaluator,
};
use regorus::Value;
use std::hint::black_box;

fn realistic(evaluator: Evaluator, cached: bool) -> Authorizer {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/policies/good/realistic");
    let mut cfg = AuthorizerConfig::new(vec![dir.to_string_lossy().into_owned()]);
    cfg.data = DataSource::File(dir.join("data.json").to_string_lossy().into_owned());
    cfg.evaluator = evaluator;
    if !cached {
        cfg.cache = None;
    }
    Authorizer::new(cfg).unwrap()
}

fn input(user: &str) -> Value {
    Value::from_json_str(&format!(
        r#"{{"method":"GET","path":"/api/v1/projects/42","path_segments":["api","v1","projects","42"],"user":{{"id":"{user}","roles":["user"]}}}}"#
    ))
    .unwrap()
}

fn benches(c: &mut Criterion) {
    let small = canonical::to_bytes(&input("u17"), "input").unwrap();
    let mut big_json = String::from("{\"claims\":[");
    for i in 0..200 {
        if i > 0 {
            big_json.push(',');
        }
        big_json.push_str(&format!("{{\"k{i}\":\"value number {i}\"}}"));
    }
    big_json.push_str("]}");
    let large = canonical::to_bytes(&Value::from_json_str(&big_json).unwrap(), "input").unwrap();
    let seed = KeySeed::new(&[7; 32], "data.authz.allow");
    c.bench_function("key/small (170 B)", |b| {
        b.iter(|| seed.key(black_box(&small)));
    });
    c.bench_function(&format!("key/large ({} B)", large.len()), |b| {
        b.iter(|| seed.key(black_box(&large)));
    });
    c.bench_function("canonical/decode small", |b| {
        b.iter(|| canonical::decode(black_box(&small)).unwrap());
    });

    let cached = realistic(Evaluator::Auto, true);
    cached.check_canonical(None, &small).unwrap();
    c.bench_function("check/l1 hit", |b| {
        b.iter(|| cached.check_canonical(None, black_box(&small)).unwrap());
    });

    for (name, evaluator) in [
        ("rvm", Evaluator::Rvm),
        ("interpreter", Evaluator::Interpreter),
    ] {
        let a = realistic(evaluator, false);
        c.bench_function(&format!("check/evaluate {name} (no cache)"), |b| {
            b.iter(|| a.check_canonical(None, black_box(&small)).unwrap());
        });
    }

    // A miss with the cache on: a new input each time (key, single-flight guard, insert).
    let a = realistic(Evaluator::Auto, true);
    let mut n = 0u64;
    c.bench_function("check/l1 miss + rvm + insert", |b| {
        b.iter_batched(
            || {
                n += 1;
                canonical::to_bytes(&input(&format!("x{n}")), "input").unwrap()
            },
            |bytes| a.check_canonical(None, &bytes).unwrap(),
            BatchSize::SmallInput,
        );
    });
}

criterion_group!(core, benches);
criterion_main!(core);
