//! Developer tooling on the production engine: Rego unit tests (`opa test`), line coverage,
//! arbitrary queries (`opa eval`), and the small adoption helpers the decision path calls
//! (package entrypoints, the Rego v0 hint).
//!
//! Everything here runs on an engine configured exactly as the [`crate::engine`] one (same
//! parser settings, OPA's non-strict builtin errors), so a test that passes here passes on the
//! engine that decides in production. Nothing here is on the request path.

use std::collections::BTreeMap;
use std::time::Instant;

use regorus::{Engine, Value};

use crate::engine::{self, PolicyFile};
// Here for their users; they live in `engine` (which uses them) so `engine` needs no `tooling`.
pub use crate::engine::{hint_rego_v0, package_allow};
use crate::error::{anyhow_like::ErrorText, Error, Result};

/// A `test_*` rule found in a policy file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestCase {
    /// `data.<package>.<rule>`, the name `--run` matches against (as in `opa test`).
    pub name: String,
    pub package: String,
    pub rule: String,
    pub file: String,
    /// 1-based line of the rule's head.
    pub line: u32,
    /// Last line of the rule (the line before the next top-level statement).
    pub end_line: u32,
    /// `todo_test_*`: reported as skipped, never run.
    pub todo: bool,
}

/// How one test ended.
#[derive(Clone, Debug, PartialEq)]
pub enum TestOutcome {
    /// The rule was `true`.
    Pass,
    /// The rule was `false` or undefined (`value` says which).
    Fail { value: Value },
    /// The rule raised (conflict, budget, a builtin error in strict spots).
    Error { message: String },
    /// `todo_test_*`.
    Skip,
}

/// One test's result.
#[derive(Clone, Debug)]
pub struct TestReport {
    pub case: TestCase,
    pub outcome: TestOutcome,
    pub duration_ns: u64,
    /// `print()` output of the test.
    pub prints: Vec<String>,
    /// For a failed test, the last line of its body that was evaluated: the expression that
    /// stopped it (found from line coverage, so only with `explain`).
    pub failed_at: Option<(u32, String)>,
}

/// Per-file line coverage.
#[derive(Clone, Debug, PartialEq)]
pub struct FileCoverage {
    pub file: String,
    pub covered: Vec<u32>,
    pub not_covered: Vec<u32>,
}

impl FileCoverage {
    /// Covered lines over coverable lines, in percent (100 for a file with none).
    pub fn percent(&self) -> f64 {
        let total = self.covered.len() + self.not_covered.len();
        if total == 0 {
            return 100.0;
        }
        #[allow(clippy::cast_precision_loss)]
        let p = self.covered.len() as f64 * 100.0 / total as f64;
        p
    }
}

/// Policies and data loaded for the tools.
pub struct Workspace {
    files: Vec<PolicyFile>,
    engine: Engine,
}

impl Workspace {
    /// Reads and parses `policies` (files or folders, as `Authorizer`) over `data`.
    ///
    /// # Errors
    /// As the `Authorizer` constructor: `Error::Config` for bad paths, `Error::Policy` for
    /// parse errors, `Error::Data` for data that is not an object or conflicts with rules.
    pub fn load(policies: &[String], data: Vec<Value>, rego_v0: bool) -> Result<Self> {
        let files = engine::read_policies(policies)?;
        let mut engine = engine::parse_policies(&files, rego_v0)?;
        for d in data {
            engine::check_data_root(&d, "data")?;
            // Several documents merge at the root, as `opa eval -d a.json -d b.json` does.
            engine
                .add_data(d)
                .map_err(|e| Error::data(format!("{e:#}")))?;
        }
        engine.set_gather_prints(true);
        Ok(Self { files, engine })
    }

    /// The packages of the loaded policies, as `data.a.b`.
    pub fn packages(&self) -> Vec<String> {
        let mut out: Vec<String> = self.engine.get_packages().unwrap_or_default();
        out.sort();
        out.dedup();
        out
    }

    /// Every `test_*` (and `todo_test_*`) rule, in file order.
    pub fn tests(&self) -> Vec<TestCase> {
        let mut out: Vec<TestCase> = Vec::new();
        for f in &self.files {
            discover(f, &mut out);
        }
        out
    }

    /// Runs `cases` (in order), each on a fresh evaluation of the policies, and with
    /// `coverage` collects line coverage across all of them. `explain` locates the failing
    /// expression of each failed test (one more run of it, with coverage).
    pub fn run_tests(
        &mut self,
        cases: &[TestCase],
        coverage: bool,
        explain: bool,
    ) -> (Vec<TestReport>, Option<Vec<FileCoverage>>) {
        self.engine.set_enable_coverage(coverage);
        self.engine.clear_coverage_data();
        let mut reports = Vec::with_capacity(cases.len());
        for case in cases {
            if case.todo {
                reports.push(TestReport {
                    case: case.clone(),
                    outcome: TestOutcome::Skip,
                    duration_ns: 0,
                    prints: Vec::new(),
                    failed_at: None,
                });
                continue;
            }
            let _ = self.engine.take_prints();
            let started = Instant::now();
            let result = self.engine.eval_rule(case.name.clone());
            let duration_ns = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
            let prints = self.engine.take_prints().unwrap_or_default();
            let outcome = match result {
                Ok(Value::Bool(true)) => TestOutcome::Pass,
                Ok(value) => TestOutcome::Fail { value },
                Err(e) => TestOutcome::Error {
                    message: located(&ErrorText::of(&e), &case.file),
                },
            };
            reports.push(TestReport {
                case: case.clone(),
                outcome,
                duration_ns,
                prints,
                failed_at: None,
            });
        }
        let report = if coverage {
            Some(self.coverage())
        } else {
            None
        };
        if explain {
            for r in &mut reports {
                if matches!(r.outcome, TestOutcome::Fail { .. }) {
                    r.failed_at = self.failing_line(&r.case);
                }
            }
        }
        self.engine.set_enable_coverage(false);
        (reports, report)
    }

    fn coverage(&self) -> Vec<FileCoverage> {
        let Ok(report) = self.engine.get_coverage_report() else {
            return Vec::new();
        };
        let mut by_file: BTreeMap<String, FileCoverage> = BTreeMap::new();
        for f in report.files {
            let entry = by_file
                .entry(f.path.clone())
                .or_insert_with(|| FileCoverage {
                    file: f.path.clone(),
                    covered: Vec::new(),
                    not_covered: Vec::new(),
                });
            entry.covered.extend(f.covered.iter().copied());
            entry.not_covered.extend(
                f.not_covered
                    .iter()
                    .copied()
                    .filter(|l| !f.covered.contains(l)),
            );
        }
        // Files no test touched at all are reported with every rule line uncovered by regorus
        // already; keep the order of the files as loaded.
        let mut out = Vec::new();
        for file in &self.files {
            if let Some(mut c) = by_file.remove(&file.path) {
                c.covered.sort_unstable();
                c.covered.dedup();
                c.not_covered.sort_unstable();
                c.not_covered.dedup();
                out.push(c);
            }
        }
        out.extend(by_file.into_values());
        out
    }

    /// The last line of a failed test's body that was evaluated.
    fn failing_line(&mut self, case: &TestCase) -> Option<(u32, String)> {
        self.engine.set_enable_coverage(true);
        self.engine.clear_coverage_data();
        let _ = self.engine.eval_rule(case.name.clone());
        let _ = self.engine.take_prints();
        let report = self.engine.get_coverage_report().ok()?;
        let file = report.files.iter().find(|f| f.path == case.file)?;
        let line = file
            .covered
            .iter()
            .copied()
            .filter(|l| *l > case.line && *l <= case.end_line)
            .max()?;
        let text = self
            .files
            .iter()
            .find(|f| f.path == case.file)?
            .text
            .lines()
            .nth(line as usize - 1)?
            .trim()
            .to_owned();
        Some((line, text))
    }

    /// Evaluates any query (`opa eval`) with `input` (`Value::Undefined` for none): one entry
    /// per result, each the values of its expressions and its variable bindings.
    ///
    /// # Errors
    /// `Error::Evaluation` (entrypoint `"query"`) when the query does not parse or fails.
    pub fn eval_query(&mut self, query: &str, input: Value) -> Result<Vec<(Vec<Value>, Value)>> {
        self.engine.set_input(input);
        let results = self
            .engine
            .eval_query(query.to_owned(), false)
            .map_err(|e| Error::evaluation("query", ErrorText::of(&e).0.trim()))?;
        let _ = self.engine.take_prints();
        Ok(results
            .result
            .into_iter()
            .map(|r| {
                (
                    r.expressions.into_iter().map(|e| e.value).collect(),
                    r.bindings,
                )
            })
            .collect())
    }
}

/// `file:line:col: message` and regorus's snippet, as `opa test` shows an error.
fn located(text: &ErrorText, file: &str) -> String {
    if !text.0.contains("--> ") {
        return text.0.trim().to_owned();
    }
    let issue = crate::error::issue_from_regorus(text, file, "eval_error");
    let mut out = format!(
        "{}:{}:{}: {}",
        issue.file, issue.line, issue.column, issue.message
    );
    if !issue.snippet.is_empty() {
        out.push('\n');
        out.push_str(&issue.snippet);
    }
    out
}

/// Finds the top-level `test_*` rules of one file by a line scan: a rule head starts a line at
/// column 0 (as `opa fmt` writes them); a test's body ends before the next line that does.
fn discover(f: &PolicyFile, out: &mut Vec<TestCase>) {
    let mut package = String::new();
    let lines: Vec<&str> = f.text.lines().collect();
    let first = out.len();
    for (n, line) in lines.iter().enumerate() {
        if let Some(rest) = line.strip_prefix("package ") {
            package = rest.split_whitespace().next().unwrap_or("").to_owned();
            continue;
        }
        let name: String = line
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let todo = name.starts_with("todo_test_");
        if !(name.starts_with("test_") || todo) || package.is_empty() {
            continue;
        }
        let rest = line[name.len()..].trim_start();
        let is_head = rest.is_empty()
            || rest.starts_with('{')
            || rest.starts_with("if")
            || rest.starts_with(":=")
            || rest.starts_with('=')
            || rest.starts_with("contains");
        if !is_head {
            continue;
        }
        let line_no = u32::try_from(n + 1).unwrap_or(u32::MAX);
        let full = format!("data.{package}.{name}");
        // A test defined in several bodies is one rule (OPA reports it once too).
        if out[first..].iter().any(|c| c.name == full) {
            continue;
        }
        out.push(TestCase {
            name: full,
            package: package.clone(),
            rule: name,
            file: f.path.clone(),
            line: line_no,
            end_line: line_no,
            todo,
        });
    }
    // Each test ends before the next top-level statement (a non-blank line at column 0 that is
    // not a closing brace).
    for case in &mut out[first..] {
        let start = case.line as usize;
        let mut end = start;
        for (i, line) in lines.iter().enumerate().skip(start) {
            let starts_statement = line
                .chars()
                .next()
                .is_some_and(|c| !c.is_whitespace() && c != '}' && c != ']' && c != ')');
            if starts_statement && !line.starts_with('#') {
                break;
            }
            if !line.trim().is_empty() {
                end = i + 1;
            }
        }
        case.end_line = u32::try_from(end).unwrap_or(u32::MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::PolicyIssue;

    fn file(text: &str) -> PolicyFile {
        PolicyFile {
            path: "t.rego".into(),
            text: text.into(),
        }
    }

    fn workspace(text: &str) -> Workspace {
        let dir = std::env::temp_dir().join(format!(
            "regoguard-tooling-{}-{}",
            std::process::id(),
            blake3::hash(text.as_bytes()).to_hex()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.rego");
        std::fs::write(&path, text).unwrap();
        Workspace::load(&[path.to_string_lossy().into_owned()], Vec::new(), false).unwrap()
    }

    #[test]
    fn discovers_top_level_tests_only() {
        let mut out = Vec::new();
        discover(
            &file("package a.b\n\ntest_one if {\n  true\n}\n\ntodo_test_two if false\nnot_a_test := 1\n  test_nested := 2\ntest_three := true\n"),
            &mut out,
        );
        let names: Vec<&str> = out.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "data.a.b.test_one",
                "data.a.b.todo_test_two",
                "data.a.b.test_three"
            ]
        );
        assert_eq!((out[0].line, out[0].end_line), (3, 5));
        assert!(out[1].todo);
    }

    #[test]
    fn runs_pass_fail_error_and_finds_the_failing_line() {
        let mut ws = workspace(
            "package t\n\nallow if input.x == 1\n\ntest_pass if {\n  allow with input as {\"x\": 1}\n}\n\ntest_fail if {\n  x := 2\n  x == 3\n  true\n}\n\nf(x) := 1 if x\nf(x) := 2 if x\n\ntest_error if {\n  f(true) == 1\n}\n",
        );
        let cases = ws.tests();
        assert_eq!(cases.len(), 3);
        let (reports, coverage) = ws.run_tests(&cases, true, true);
        assert_eq!(reports[0].outcome, TestOutcome::Pass);
        assert!(matches!(reports[1].outcome, TestOutcome::Fail { .. }));
        assert_eq!(reports[1].failed_at.as_ref().map(|f| f.0), Some(11));
        assert!(
            matches!(reports[2].outcome, TestOutcome::Error { .. }),
            "{:?}",
            reports[2].outcome
        );
        let cov = coverage.unwrap();
        assert_eq!(cov.len(), 1);
        assert!(cov[0].covered.contains(&3));
    }

    fn authorizer_for(
        text: &str,
        entrypoint: &str,
        evaluator: crate::Evaluator,
    ) -> Result<crate::Authorizer> {
        let ws_dir = std::env::temp_dir().join(format!(
            "regoguard-pkg-{}-{}",
            std::process::id(),
            blake3::hash(format!("{text}{entrypoint}{evaluator:?}").as_bytes()).to_hex()
        ));
        std::fs::create_dir_all(&ws_dir).unwrap();
        std::fs::write(ws_dir.join("p.rego"), text).unwrap();
        let mut cfg = crate::AuthorizerConfig::new(vec![ws_dir.to_string_lossy().into_owned()]);
        cfg.entrypoint = entrypoint.into();
        cfg.evaluator = evaluator;
        crate::Authorizer::new(cfg)
    }

    #[test]
    fn a_package_entrypoint_reads_its_allow_on_both_evaluators() {
        let policy = "package httpapi.authz\n\ndefault allow := false\n\nallow if input.request_method == \"GET\"\n\nhelper := 3\n";
        for evaluator in [crate::Evaluator::Auto, crate::Evaluator::Interpreter] {
            let a = authorizer_for(policy, "data.httpapi.authz", evaluator).unwrap();
            let get = Value::from_json_str(r#"{"request_method":"GET"}"#).unwrap();
            let post = Value::from_json_str(r#"{"request_method":"POST"}"#).unwrap();
            assert!(a.check_value(None, &get).unwrap().outcome.allow);
            assert!(!a.check_value(None, &post).unwrap().outcome.allow);
        }
        // A package without `allow`, and a name that is neither, keep their original errors.
        assert!(matches!(
            authorizer_for("package p\n\nx := 1\n", "data.p", crate::Evaluator::Auto),
            Err(Error::Evaluation(_))
        ));
        assert!(matches!(
            authorizer_for(policy, "data.nothing.here", crate::Evaluator::Auto),
            Err(Error::Evaluation(_))
        ));
    }

    #[test]
    fn a_v0_policy_error_suggests_rego_v0() {
        let err = authorizer_for(
            "package authz\n\nallow {\n  true\n}\n",
            "data.authz.allow",
            crate::Evaluator::Auto,
        )
        .err()
        .unwrap();
        let text = err.to_string();
        assert!(text.contains("rego_v0=True"), "{text}");
        // Not when the policy is parsed as v0 already (it then parses).
        let mut issue = PolicyIssue {
            file: "f".into(),
            line: 1,
            column: 1,
            code: "rego_parse_error",
            message: "`if` keyword is required before rule body".into(),
            snippet: String::new(),
        };
        hint_rego_v0(&mut issue, true);
        assert!(!issue.snippet.contains("rego_v0"));
        hint_rego_v0(&mut issue, false);
        assert_eq!(
            issue.to_string().lines().next(),
            Some("f:1:1: rego_parse_error: `if` keyword is required before rule body")
        );
        assert!(issue
            .to_string()
            .ends_with("pass rego_v0=True to parse it as v0, or add `if`/`contains` for v1"));
    }

    #[test]
    fn eval_query_returns_values_and_bindings() {
        let mut ws = workspace("package t\n\nxs := [1, 2]\n");
        let results = ws.eval_query("data.t.xs", Value::Undefined).unwrap();
        assert_eq!(results.len(), 1);
        assert_eq!(results[0].0[0], Value::from_json_str("[1,2]").unwrap());
        assert!(ws.eval_query("data.t.xs[", Value::Undefined).is_err());
    }
}
