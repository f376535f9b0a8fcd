//! Runs every decision case in `tests/cases/*.yaml` (the shared oracle, also read by pytest)
//! through the RVM path and the interpreter path, cached and uncached.

use std::path::{Path, PathBuf};

use regoguard_core::{Authorizer, AuthorizerConfig, CacheConfig, DataSource, Error, Evaluator};
use regorus::Value;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseFile {
    #[allow(dead_code)]
    description: String,
    #[serde(default = "default_entrypoint")]
    entrypoint: String,
    #[serde(default)]
    rego_v0: bool,
    policies: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    data: Option<serde_json::Value>,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    note: String,
    input: serde_json::Value,
    #[serde(default)]
    allow: Option<bool>,
    #[serde(default)]
    result: Option<serde_json::Value>,
    /// Absent: not checked; `null`: the decision has no reason.
    #[serde(default)]
    #[allow(clippy::option_option)]
    reason: Option<Option<String>>,
    #[serde(default)]
    status: Option<u16>,
    #[serde(default)]
    headers: Option<std::collections::BTreeMap<String, String>>,
    #[serde(default)]
    error: bool,
    /// Where regorus differs from OPA and we cannot wrap it: the case is skipped (and counted)
    /// so the oracle keeps OPA's answer; README lists each.
    #[serde(default)]
    known_difference: Option<String>,
    /// `interpreter` when only the interpreter differs; absent: every evaluator does.
    #[serde(default)]
    known_difference_on: Option<String>,
}

fn default_entrypoint() -> String {
    "data.authz.allow".to_owned()
}

fn case_files() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/cases");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no case files in {}", dir.display());
    files
}

fn json_value(v: &serde_json::Value) -> Value {
    Value::from_json_str(&v.to_string()).unwrap()
}

struct TempPolicies(PathBuf);

impl TempPolicies {
    fn write(name: &str, policies: &std::collections::BTreeMap<String, String>) -> Self {
        let dir =
            std::env::temp_dir().join(format!("regoguard-cases-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for (file, text) in policies {
            let path = dir.join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        TempPolicies(dir)
    }
}

impl Drop for TempPolicies {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn decision_cases() {
    let mut failures = Vec::new();
    let mut count = 0;
    let mut skipped = 0;
    for file in case_files() {
        let name = file.file_stem().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&file).unwrap();
        let cf: CaseFile = serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        let dir = TempPolicies::write(&name, &cf.policies);
        for evaluator in [Evaluator::Auto, Evaluator::Interpreter] {
            for cache in [Some(CacheConfig::default()), None] {
                let mut cfg = AuthorizerConfig::new(vec![dir.0.to_string_lossy().into_owned()]);
                cfg.entrypoint = cf.entrypoint.clone();
                cfg.rego_v0 = cf.rego_v0;
                cfg.evaluator = evaluator;
                cfg.cache = cache;
                cfg.data =
                    DataSource::Inline(cf.data.as_ref().map_or_else(Value::new_object, json_value));
                let authz = Authorizer::new(cfg).unwrap_or_else(|e| panic!("{name}: {e}"));
                // Twice: the second round is served from the cache when there is one.
                for round in 0..2 {
                    for case in &cf.cases {
                        let differs = case.known_difference.is_some()
                            && match case.known_difference_on.as_deref() {
                                None => true,
                                Some("interpreter") => {
                                    authz.current().entrypoints[0].evaluator_name() == "interpreter"
                                }
                                Some(other) => panic!("{name}: known_difference_on: {other}"),
                            };
                        if differs {
                            skipped += 1;
                            continue;
                        }
                        count += 1;
                        let label = format!(
                            "{name} / {} [{evaluator:?}, cache={}, round {round}]",
                            case.note,
                            cache.is_some()
                        );
                        if let Err(msg) = check_case(&authz, case) {
                            failures.push(format!("{label}: {msg}"));
                        }
                    }
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {count} case runs failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(count > 1000, "only {count} case runs");
    println!("{count} case runs passed, {skipped} skipped as known differences from OPA");
}

fn check_case(authz: &Authorizer, case: &Case) -> Result<(), String> {
    let input = json_value(&case.input);
    let decided = authz.check_value(None, &input);
    if case.error {
        return match decided {
            Err(Error::Evaluation(_)) => Ok(()),
            Err(e) => Err(format!(
                "expected an evaluation error, got another error: {e}"
            )),
            Ok(d) => Err(format!(
                "expected an evaluation error, got allow={} result={}",
                d.outcome.allow, d.outcome.result
            )),
        };
    }
    let d = decided.map_err(|e| format!("unexpected error: {e}"))?;
    let o = &d.outcome;
    if let Some(allow) = case.allow {
        if o.allow != allow {
            return Err(format!(
                "allow: expected {allow}, got {} (result {})",
                o.allow, o.result
            ));
        }
    }
    if let Some(result) = &case.result {
        if o.result != json_value(result) {
            return Err(format!("result: expected {result}, got {}", o.result));
        }
    }
    if let Some(reason) = &case.reason {
        if o.reason.as_deref() != reason.as_deref() {
            return Err(format!("reason: expected {reason:?}, got {:?}", o.reason));
        }
    }
    if let Some(status) = case.status {
        if o.status != Some(status) {
            return Err(format!("status: expected {status}, got {:?}", o.status));
        }
    }
    if let Some(headers) = &case.headers {
        let got: Vec<(String, String)> = o
            .headers
            .iter()
            .flatten()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let want: Vec<(String, String)> = headers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if got != want {
            return Err(format!("headers: expected {want:?}, got {got:?}"));
        }
    }
    Ok(())
}
