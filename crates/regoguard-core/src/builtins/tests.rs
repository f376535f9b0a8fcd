//! The registration mechanism, through policies, on both evaluators.

use std::sync::Arc;

use regorus::Value;

use crate::engine::{parse_policies, Compiled, Evaluator, PolicyFile, Revision};

/// Evaluates `data.t.x` of `policy` on `evaluator`; also returns which evaluator ran it.
pub(crate) fn eval_on(
    policy: &str,
    evaluator: Evaluator,
    input: &str,
) -> (crate::Result<Value>, &'static str) {
    let files = vec![PolicyFile {
        path: "t.rego".into(),
        text: policy.into(),
    }];
    let parsed = match parse_policies(&files, false) {
        Ok(p) => p,
        Err(e) => return (Err(e), "none"),
    };
    let data = Value::new_object();
    let revision = Revision::of(&files, &data, false).expect("revision");
    let entry: Vec<Arc<str>> = vec![Arc::from("data.t.x")];
    let compiled = match Compiled::build(
        7,
        &parsed,
        revision,
        data,
        &entry,
        evaluator,
        crate::budget::Budget::default(),
    ) {
        Ok(c) => Arc::new(c),
        Err(e) => return (Err(e), "none"),
    };
    let which = compiled.entrypoints[0].evaluator_name();
    let input = Value::from_json_str(input).expect("input json");
    (compiled.evaluate(0, input), which)
}

fn both(policy: &str, input: &str) -> Value {
    let (rvm, which) = eval_on(policy, Evaluator::Rvm, input);
    assert_eq!(which, "rvm");
    let (interp, which) = eval_on(policy, Evaluator::Interpreter, input);
    assert_eq!(which, "interpreter");
    let (rvm, interp) = (rvm.expect("rvm"), interp.expect("interpreter"));
    assert_eq!(rvm, interp, "the evaluators disagree on\n{policy}");
    rvm
}

fn json(text: &str) -> Value {
    Value::from_json_str(text).expect("json")
}

#[test]
fn a_builtin_runs_on_both_evaluators() {
    let p = "package t\nx := array.flatten(input.a)\n";
    assert_eq!(
        both(p, r#"{"a": [1, [2, [3]], 4]}"#),
        json("[1, 2, [3], 4]")
    );
}

#[test]
fn a_builtin_inside_loops_functions_and_comprehensions() {
    let p = r#"package t
f(v) := array.flatten(v)
x := {"c": [y | some a in input.as; y := f(a)], "e": e, "n": count([1 | some a in input.as; array.flatten(a) == [1, 2]])}
e if { every a in input.as { count(array.flatten(a)) > 0 } } else := false
"#;
    assert_eq!(
        both(p, r#"{"as": [[1, [2]], [[3], 4]]}"#),
        json(r#"{"c": [[1, 2], [3, 4]], "e": true, "n": 1}"#)
    );
}

#[test]
fn a_failing_builtin_makes_its_expression_undefined_on_both() {
    // OPA non-strict: a type error in a builtin is undefined, so `x` falls to its default.
    let p = "package t\ndefault x := \"default\"\nx := array.flatten(input.a)\n";
    assert_eq!(both(p, r#"{"a": "not an array"}"#), json(r#""default""#));
    // ... and `not` of it is true.
    let p = "package t\nx if { not array.flatten(input.a) }\n";
    assert_eq!(both(p, r#"{"a": 1}"#), Value::Bool(true));
    // An undefined argument never reaches the builtin.
    let p = "package t\ndefault x := 0\nx := array.flatten(input.missing)\n";
    assert_eq!(both(p, "{}"), json("0"));
}

#[test]
fn a_policy_without_our_builtins_keeps_the_run_to_completion_path() {
    let p = "package t\nx := count(input.a)\n";
    assert_eq!(both(p, r#"{"a": [1]}"#), json("1"));
}

/// Every shape of a call of an unknown function is refused at construction, with its
/// location, on every evaluator.
#[test]
fn unknown_functions_are_refused_at_construction_in_every_shape() {
    let shapes: &[(&str, u32)] = &[
        ("x := nope(input.a)", 2),
        ("x if { y := nope(input.a); y }", 2),
        ("x if { [a, b] := nope(input.a); a == b }", 2),
        ("x if { nope(input.a) == 1 }", 2),
        ("x := [y | some a in input.as; y := nope(a)]", 2),
        ("x := {k: v | some k, v in input.o; v := io.nope(k)}", 2),
        ("x := {y | some a in nope(input.as); y := a}", 2),
        ("x := 1 if { false } else := nope(1)", 2),
        ("x := 1 if { false } else := 2 if { nope(1) }", 2),
        ("f(a) := nope(a)\nx := 1", 2),
        ("x if { every a in input.as { nope(a) } }", 2),
        ("x if { y := count(input.a) with input as nope(1); y }", 2),
        (
            "x if { y := count(input.a) with strings.nope as count; y }",
            2,
        ),
        ("x := 1\nunreached if { strings.nope(1) }", 3),
        ("default x := nope(1)", 2),
        ("x if { not nope(1) }", 2),
        ("x := data.t.nope(1)", 2),
    ];
    for (body, line) in shapes {
        let policy = format!("package t\n{body}\n");
        for evaluator in [Evaluator::Auto, Evaluator::Rvm, Evaluator::Interpreter] {
            let (r, _) = eval_on(&policy, evaluator, "{}");
            match r {
                Err(crate::Error::Policy(issues)) => {
                    assert!(
                        issues.iter().any(|i| i.code == "rego_type_error"
                            && i.message.starts_with("undefined function")
                            && i.file == "t.rego"
                            && i.line == *line
                            && i.column > 0),
                        "{evaluator:?} {body}: {issues:?}"
                    );
                }
                other => panic!("{evaluator:?} built {body:?}: {other:?}"),
            }
        }
    }
}

#[test]
fn the_location_is_where_the_name_starts_as_opa_reports_it() {
    let (r, _) = eval_on(
        "package t\nx := 1 + nope(input.a)\n",
        Evaluator::Interpreter,
        "{}",
    );
    let Err(crate::Error::Policy(issues)) = r else {
        panic!("built: {r:?}")
    };
    assert_eq!((issues[0].line, issues[0].column), (2, 10), "{issues:?}");
}

#[test]
fn known_functions_of_every_origin_resolve() {
    let policy = r#"package t
import data.lib
import data.lib.g as h
f(a) := a
x := [f(1), data.t.f(2), lib.g(3), h(4), count([1]), array.flatten([[5]]), lib.sub.k(6)]
y if { print("hi"); true }
z := c if { c := count(input.a) with count as f }
"#;
    let lib = "package lib\ng(a) := a\nsub.k(a) := a\n";
    let files = vec![
        PolicyFile {
            path: "t.rego".into(),
            text: policy.into(),
        },
        PolicyFile {
            path: "lib.rego".into(),
            text: lib.into(),
        },
    ];
    let mut engine = parse_policies(&files, false).expect("known functions parse and check");
    assert!(super::check::unknown_calls(&mut engine).is_empty());
}

/// A failing builtin inside a collection literal makes the literal undefined, on both
/// evaluators, for our builtins as for regorus's. (Inside a comprehension,
/// `[y | some k in [1, 2]; y := [k, to_number("x")]]`, regorus 0.14's RVM yields
/// `[undefined, undefined]` where the interpreter and OPA yield `[]`, and
/// `[k | some k in [1, 2]; y := to_number("x")]` yields `[1, 2]`: an assignment of an undefined
/// value does not fail a comprehension body on the RVM. An RVM bug independent of how builtins
/// are registered; README "Matching OPA" lists it.)
#[test]
fn an_undefined_builtin_inside_a_collection_literal_is_undefined_on_both() {
    for call in ["array.flatten(0)", "to_number(\"x\")"] {
        for body in [
            format!("default x := \"d\"\nx := [1, {call}]"),
            format!("default x := \"d\"\nx := {{\"a\": {call}}}"),
        ] {
            let p = format!("package t\n{body}\n");
            assert_eq!(both(&p, "{}"), json(r#""d""#), "{body}");
        }
    }
}

#[test]
fn glob_match_is_gobwas_on_both_evaluators() {
    // regorus's own glob.match matches `a/x` here; OPA's gobwas/glob (and ours) does not.
    let p = "package t\nx := [glob.match(\"{**/,}x\", [\"/\"], s) | some s in input.s]\n";
    assert_eq!(
        both(p, r#"{"s": ["x", "a/x", "a/b/x"]}"#),
        json("[false, false, false]")
    );
}
