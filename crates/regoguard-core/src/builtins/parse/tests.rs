//! The converter's shapes, checked against what OPA's `rego.parse_module` returns (the
//! differential tests in `tests/test_builtins_parse.py` compare whole modules with OPA).

use regorus::Value;

use super::module_json;
use crate::builtins::Refused;

fn json(src: &str) -> serde_json::Value {
    let v = module_json("x.rego", src).expect("parses");
    serde_json::from_str(&v.to_json_str().expect("json")).expect("valid json")
}

#[test]
fn package_and_complete_rule() {
    let got = json("package a.b\n\np := 1\n");
    let want = serde_json::json!({
        "package": {"path": [
            {"type": "var", "value": "data"},
            {"type": "string", "value": "a"},
            {"type": "string", "value": "b"},
        ]},
        "rules": [{
            "head": {
                "name": "p",
                "ref": [{"type": "var", "value": "p"}],
                "value": {"type": "number", "value": 1},
                "assign": true,
            },
            "body": [{"index": 0, "terms": {"type": "boolean", "value": true}}],
        }],
    });
    assert_eq!(got, want);
}

#[test]
fn operators_are_calls_of_their_builtins() {
    let got = json("package t\n\nr if {\n\tx := 1 + 2\n\tx > 2\n\tnot x in [1]\n}\n");
    let body = &got["rules"][0]["body"];
    assert_eq!(body[0]["terms"][0]["value"][0]["value"], "assign");
    assert_eq!(body[0]["terms"][2]["type"], "call");
    assert_eq!(body[0]["terms"][2]["value"][0]["value"][0]["value"], "plus");
    assert_eq!(body[1]["terms"][0]["value"][0]["value"], "gt");
    assert_eq!(body[2]["negated"], true);
    assert_eq!(body[2]["terms"][0]["value"][1]["value"], "member_2");
    assert_eq!(body[2]["index"], 2);
}

#[test]
fn wildcards_are_numbered_in_source_order() {
    let got = json("package t\n\nr if {\n\tinput.a[_] == input.b[_]\n}\n");
    let terms = &got["rules"][0]["body"][0]["terms"];
    assert_eq!(terms[1]["value"][2]["value"], "$0");
    assert_eq!(terms[2]["value"][2]["value"], "$1");
}

#[test]
fn comments_are_kept_with_their_location() {
    let got = json("package t\n# one\nr := \"#no\" # two\n");
    let comments = got["comments"].as_array().expect("comments");
    assert_eq!(comments.len(), 2);
    assert_eq!(comments[0]["Location"]["row"], 2);
    assert_eq!(comments[1]["Location"]["col"], 12);
}

#[test]
fn invalid_source_is_an_error_not_a_refusal() {
    let err = module_json("x.rego", "package\n").expect_err("invalid");
    assert!(!err.is::<Refused>());
    let err = module_json("x.rego", "package t\np { true }\n").expect_err("v0 body");
    assert!(!err.is::<Refused>());
}

#[test]
fn metadata_stays_comments() {
    let got = json("# METADATA\n# title: x\npackage t\n");
    assert!(got.get("annotations").is_none());
    assert_eq!(got["comments"][1]["Text"], "IHRpdGxlOiB4");
}

#[test]
fn what_opa_accepts_and_regorus_cannot_read_is_refused() {
    for src in [
        "package t\n\nimport data.a\nimport data.a\n",
        "package t\n\ninput := 1\n",
        "package t\n\nr := 1\n\nimport data.a\n",
        "package t\n\nimport rego.v1 as v\n",
        "package t\n\nr := $\"x{1}\"\n",
        "package t\n\n__target__ := \"x\"\n",
    ] {
        let err = module_json("x.rego", src).expect_err(src);
        assert!(err.is::<Refused>(), "{src}: {err}");
    }
}

#[test]
fn what_opa_rejects_is_an_error() {
    for src in [
        "package t\n\nimport rego.v2\n",
        "package t\n\nimport future.keywords.foo\n",
        "package t\n\ndefault p := input.x\n",
        "package t\n\ndefault p := [x]\n",
        "package t\n\nr := -(1)\n",
        "package t\n\nr := -[1]\n",
    ] {
        let err = module_json("x.rego", src).expect_err(src);
        assert!(!err.is::<Refused>(), "{src}: {err}");
    }
    assert!(matches!(
        module_json("x.rego", "package t\n"),
        Ok(Value::Object(_))
    ));
}

#[test]
fn deep_brackets_are_refused_before_parsing() {
    // regorus's parser backtracks on `[`/`{` (array or comprehension?), four times the work
    // per level: 40 levels would never finish.
    let src = format!("package t\nr := {}1{}\n", "[".repeat(40), "]".repeat(40));
    let t = std::time::Instant::now();
    let err = module_json("x.rego", &src).expect_err("refused");
    assert!(err.is::<Refused>());
    assert!(t.elapsed() < std::time::Duration::from_secs(1));
    let ok = format!("package t\nr := {}1{}\n", "[{".repeat(5), "}]".repeat(5));
    assert!(module_json("x.rego", &ok).is_ok());
    // Width counts too: many shallow-enough structures add up.
    let one = format!("{}1{}", "[".repeat(9), "]".repeat(9));
    let wide = format!("package t\nr := [{}]\n", vec![one; 64].join(", "));
    let t = std::time::Instant::now();
    assert!(module_json("x.rego", &wide)
        .expect_err("refused")
        .is::<Refused>());
    assert!(t.elapsed() < std::time::Duration::from_secs(1));
}

#[test]
fn the_bracket_budget_bounds_the_parse() {
    // The most a source may cost parses in well under a second (this is a debug build).
    let one = format!("{}1{}", "[".repeat(8), "]".repeat(8));
    let src = format!("package t\nr := [{}]\n", vec![one; 10].join(", "));
    let t = std::time::Instant::now();
    assert!(module_json("x.rego", &src).is_ok());
    assert!(
        t.elapsed() < std::time::Duration::from_secs(2),
        "{:?}",
        t.elapsed()
    );
}
