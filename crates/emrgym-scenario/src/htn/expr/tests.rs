//! Expression language tests: parsing (with positions), navigation, operators, functions,
//! dates and durations, three-valued logic with unrevealed facts, and templates.

use super::*;
use crate::htn::MapScope;
use proptest::prelude::*;
use serde_json::{Value, json};
use std::collections::BTreeMap;

fn scope(vars: &[(&str, Option<Value>)]) -> MapScope {
    let mut m = BTreeMap::new();
    for (k, v) in vars {
        m.insert(k.to_string(), v.as_ref().map(V::from_json));
    }
    MapScope {
        vars: m,
        now: parse_datetime("2023-11-13T10:15:00+00:00").unwrap(),
    }
}

fn ev(src: &str, focus: Value, s: &MapScope) -> Value {
    let e = parse(src).unwrap_or_else(|e| panic!("{e}"));
    coll_json(&eval(&e, &V::from_json(&focus), s).unwrap_or_else(|e| panic!("{src}: {e}")))
}

fn obs(value: f64, when: &str) -> Value {
    json!({"resourceType": "Observation", "status": "final", "code": {"coding": [{"system": "http://loinc.org", "code": "2823-3"}], "text": "K"},
        "subject": {"reference": "Patient/p1"}, "effectiveDateTime": when, "valueQuantity": {"value": value, "unit": "mmol/L"}})
}

#[test]
fn paths_functions_and_operators() {
    let s = scope(&[
        ("k", Some(json!([obs(3.1, "2023-11-13T06:00:00+00:00")]))),
        ("patient", Some(json!("p1"))),
    ]);
    let o = obs(3.1, "2023-11-13T06:00:00+00:00");
    assert_eq!(ev("valueQuantity.value", o.clone(), &s), json!(3.1));
    assert_eq!(
        ev(
            "code.coding.where(system = 'http://loinc.org' and code = '2823-3').exists()",
            o.clone(),
            &s
        ),
        json!(true)
    );
    assert_eq!(ev("code.coding.code.first()", o.clone(), &s), json!("2823-3"));
    assert_eq!(ev("subject.reference = 'Patient/' + %patient", o.clone(), &s), json!(true));
    assert_eq!(ev("%k.valueQuantity.value < 3.5", json!(null), &s), json!(true));
    assert_eq!(
        ev("((3.5 - %k.valueQuantity.value) / 0.1 * 10).round(1)", json!(null), &s),
        json!(40)
    );
    assert_eq!(ev("iif(%k.exists(), %k.valueQuantity.value, -1)", json!(null), &s), json!(3.1));
    assert_eq!(ev("(1 | 2 | 2).count()", json!(null), &s), json!(2));
    assert_eq!(ev("(1 | 2).combine(2).count()", json!(null), &s), json!(3));
    assert_eq!(ev("(110 | 145 | 188).avg().round(2)", json!(null), &s), json!(147.67));
    assert_eq!(ev("'Ab  C' ~ 'ab c'", json!(null), &s), json!(true));
    assert_eq!(ev("7 div 2", json!(null), &s), json!(3));
    assert_eq!(ev("2.power(10)", json!(null), &s), json!(1024));
    assert_eq!(ev("1.ln()", json!(null), &s), json!(0));
    assert!(eval(&parse("(-1).ln()").unwrap(), &Vec::new(), &s).is_err());
    assert_eq!(ev("7 mod 2", json!(null), &s), json!(1));
    assert_eq!(ev("-(2) + 5", json!(null), &s), json!(3));
    assert_eq!(ev("{}.empty()", json!(null), &s), json!(true));
    assert_eq!(ev("{} = 1", json!(null), &s), Value::Null, "comparison with empty is empty");
    assert_eq!(ev("'x' & {}", json!(null), &s), json!("x"));
    assert_eq!(ev("code.coding[0].code", o.clone(), &s), json!("2823-3"));
    assert_eq!(ev("`code`.text.lower()", o, &s), json!("k"));
}

#[test]
fn dates_and_durations() {
    let s = scope(&[]);
    assert_eq!(ev("%now - 24 hours", json!(null), &s), json!("2023-11-12T10:15:00+00:00"));
    assert_eq!(ev("now() + 1 day", json!(null), &s), json!("2023-11-14T10:15:00+00:00"));
    assert_eq!(ev("@2024-02-29 + 1 year", json!(null), &s), json!("2025-02-28T00:00:00+00:00"));
    assert_eq!(
        ev("'2022-11-13T10:15:00+00:00'.toDateTime() < %now - 1 year", json!(null), &s),
        json!(false)
    );
    assert_eq!(
        ev("'2022-11-13T10:14:59+00:00'.toDateTime() < %now - 1 year", json!(null), &s),
        json!(true)
    );
    assert_eq!(
        ev("'2023-11-13T06:00:00Z' > '2023-11-13T05:00:00+00:00'", json!(null), &s),
        json!(true)
    );
    assert_eq!(ev("'1932-12-29'.yearsUntil(%now)", json!(null), &s), json!(90));
    assert_eq!(ev("'1961-11-13'.yearsUntil(%now)", json!(null), &s), json!(62));
    assert_eq!(ev("'1961-11-14'.yearsUntil(%now)", json!(null), &s), json!(61));
    assert_eq!(ev("today()", json!(null), &s), json!("2023-11-13T00:00:00+00:00"));
}

#[test]
fn unrevealed_facts_are_unknown_unless_logic_decides() {
    let s = scope(&[("k", None), ("yes", Some(json!(true))), ("no", Some(json!(false)))]);
    let t = |src: &str| truth(&parse(src).unwrap(), &Vec::new(), &s).unwrap();
    assert_eq!(t("%k.empty()"), None);
    assert_eq!(t("%k.valueQuantity.value < 3.5"), None);
    assert_eq!(t("%no and %k.exists()"), Some(false));
    assert_eq!(t("%yes or %k.exists()"), Some(true));
    assert_eq!(t("%yes and %k.exists()"), None);
    assert_eq!(t("%no implies %k.exists()"), Some(true));
    assert_eq!(t("%k.exists() implies %yes"), Some(true));
    assert_eq!(t("{}.exists()"), Some(false), "empty is known and false");
    let unbound = eval(&parse("%nope").unwrap(), &Vec::new(), &s).unwrap_err();
    assert_eq!(unbound, EvalError::Unbound("nope".into()));
}

#[test]
fn parse_errors_carry_positions() {
    let e = parse("a.where(b = 1").unwrap_err();
    assert!(e.to_string().contains("column"), "{e}");
    let e = parse("a.frobnicate()").unwrap_err();
    assert!(e.message.contains("frobnicate"), "{e}");
    let e = parse("1 +").unwrap_err();
    assert!(e.message.contains("end"), "{e}");
    let e = parse("'open").unwrap_err();
    assert!(e.message.contains("unterminated"), "{e}");
    let e = parse("a.round(1, 2, 3)").unwrap_err();
    assert!(e.message.contains("round()"), "{e}");
    assert!(parse("@not-a-date").is_err());
    assert!(parse("$that").is_err());
    assert_eq!(parse("%a.b + %c").unwrap().vars(), vec!["a".to_string(), "c".to_string()]);
}

#[test]
fn type_errors_are_errors_not_panics() {
    let s = scope(&[("two", Some(json!([1, 2])))]);
    let e = |src: &str| eval(&parse(src).unwrap(), &Vec::new(), &s).unwrap_err();
    assert!(matches!(e("%two < 3"), EvalError::Type(_)));
    assert!(matches!(e("1 / 0"), EvalError::Type(_)));
    assert!(matches!(e("'a' < 1"), EvalError::Type(_)));
    assert!(matches!(e("'x'.toDateTime()"), EvalError::Type(_)));
}

#[test]
fn templates() {
    let s = scope(&[
        ("patient", Some(json!("p1"))),
        ("dose", Some(json!(40))),
        ("none", Some(json!(null))),
    ]);
    assert_eq!(render("Order for ${%patient}: ${%dose} mEq", &s).unwrap(), "Order for p1: 40 mEq");
    let t = json!({"subject": {"reference": "Patient/${%patient}"}, "dose": "${%dose}", "note": "${%none}", "list": ["${%dose}", "x"], "at": "${%now + 1 day}"});
    assert_eq!(
        instantiate(&t, &s).unwrap(),
        json!({"subject": {"reference": "Patient/p1"}, "dose": 40, "list": [40, "x"], "at": "2023-11-14T10:15:00+00:00"})
    );
    let two = scope(&[("xs", Some(json!([{"a": 1}, {"a": 2}]))), ("one", Some(json!([{"a": 1}])))]);
    assert_eq!(
        instantiate(&json!(["${%xs}"]), &two).unwrap(),
        json!([{"a": 1}, {"a": 2}]),
        "array elements splice collections"
    );
    assert_eq!(instantiate(&json!(["${%one}", "z"]), &two).unwrap(), json!([{"a": 1}, "z"]));
    assert!(matches!(render("${%missing}", &s), Err(TemplateError::Eval { .. })));
    assert!(matches!(render("${1 +}", &s), Err(TemplateError::Parse(_))));
    assert!(render("${unterminated", &s).is_err());
    assert_eq!(template_exprs(&t).unwrap().len(), 5);
    assert_eq!(render("${iif(true, '{x}', 'y')}", &s).unwrap(), "{x}");
    // a hole over an unrevealed fact: an error, or a placeholder naming the variable
    let hidden = scope(&[("patient", Some(json!("p1"))), ("med", None)]);
    let t = "Stop ${%med.id.first()} for ${%patient}";
    assert!(matches!(
        render(t, &hidden),
        Err(TemplateError::Eval {
            error: EvalError::Unknown(_),
            ..
        })
    ));
    assert_eq!(
        render_with_unknowns(t, &hidden, &|v| format!("[{v}]")).unwrap(),
        "Stop [med] for p1"
    );
    // other errors still fail
    assert!(render_with_unknowns("${%missing}", &hidden, &|v| format!("[{v}]")).is_err());
}

proptest! {
    #[test]
    fn arithmetic_matches_f64(a in -1e6f64..1e6, b in -1e6f64..1e6) {
        let s = scope(&[("a", Some(json!(a))), ("b", Some(json!(b)))]);
        let sum = ev("%a + %b", json!(null), &s).as_f64().unwrap();
        prop_assert!((sum - (a + b)).abs() <= 1e-9 * (a.abs() + b.abs() + 1.0));
        let lt = ev("%a < %b", json!(null), &s);
        prop_assert_eq!(lt, json!(a < b));
    }

    #[test]
    fn parser_never_panics(src in "[a-z%.()'=<>0-9 +\\-@{}|\\[\\]]{0,30}") {
        let _ = parse(&src);
    }
}

/// Issue 16: the parser recursed once per parenthesis, unary minus, argument list and index,
/// and checking, evaluating and dropping the tree recursed once per level of it (a chain of
/// `.name` steps or `+` terms is as tall as it is long), with no limit: each of these
/// overflowed the stack and aborted the process. Now each is a parse error naming the limit.
#[test]
fn deep_nesting_is_a_parse_error_naming_the_limit_not_a_stack_overflow() {
    let n = 100_000;
    let hostile = [
        ("parentheses", format!("{}1{}", "(".repeat(n), ")".repeat(n))),
        ("unclosed parentheses", "(".repeat(n)),
        ("unary minus", format!("{}1", "-".repeat(n))),
        ("nested calls", format!("{}1{}", "iif(true, ".repeat(n), ")".repeat(n))),
        ("nested where", format!("{}true{}", "where(".repeat(n), ")".repeat(n))),
        ("nested indexes", format!("{}0{}", "a[".repeat(n), "]".repeat(n))),
        ("a chain of members", format!("a{}", ".b".repeat(n))),
        ("a chain of calls", format!("a{}", ".first()".repeat(n))),
        ("a chain of indexes", format!("a{}", "[0]".repeat(n))),
        ("a chain of sums", format!("1{}", " + 1".repeat(n))),
        ("a chain of ands", format!("true{}", " and true".repeat(n))),
        ("a chain of unions", format!("a{}", " | a".repeat(n))),
    ];
    for (what, src) in &hostile {
        let e = parse(src).expect_err(what);
        assert!(
            e.message.contains(&format!("nested deeper than {MAX_DEPTH} levels")),
            "{what}: {}",
            e.message
        );
        // the error names a position, not the 100 KB text twice
        assert!(e.pos < src.len(), "{what}");
    }
    // templates go through the same parser
    let s = scope(&[]);
    let t = format!("${{{}1{}}}", "(".repeat(n), ")".repeat(n));
    assert!(matches!(render(&t, &s), Err(TemplateError::Parse(_))));
}

#[test]
fn expressions_at_the_depth_limit_parse_and_evaluate() {
    let s = scope(&[]);
    // MAX_DEPTH - 1 minus signs over a literal: a tree exactly MAX_DEPTH tall
    let minus = format!("{}7", "-".repeat(MAX_DEPTH - 1));
    let want = if (MAX_DEPTH - 1).is_multiple_of(2) { 7 } else { -7 };
    assert_eq!(ev(&minus, json!(null), &s), json!(want));
    assert!(parse(&format!("-{minus}")).is_err(), "one more level is refused");
    // a sum of MAX_DEPTH terms (MAX_DEPTH - 1 additions over a literal)
    let sum = format!("1{}", " + 1".repeat(MAX_DEPTH - 1));
    assert_eq!(ev(&sum, json!(null), &s), json!(MAX_DEPTH));
    assert!(parse(&format!("{sum} + 1")).is_err());
    // parentheses do not add height, but only MAX_DEPTH of them may be open at once
    let parens = format!("{}1{}", "(".repeat(MAX_DEPTH), ")".repeat(MAX_DEPTH));
    assert_eq!(ev(&parens, json!(null), &s), json!(1));
    let more = format!("({parens})");
    assert!(parse(&more).is_err());
    // a path as long as the limit allows
    let path = format!("a{}", ".a".repeat(MAX_DEPTH - 1));
    let mut focus = json!(5);
    for _ in 0..MAX_DEPTH {
        focus = json!({ "a": focus });
    }
    assert_eq!(ev(&path, focus, &s), json!(5));
}

#[test]
fn date_literals_take_a_month_a_day_or_a_time_with_seconds_and_keep_their_offset() {
    assert!(parse_datetime("2023").is_none(), "a bare year is not a date here");
    assert!(parse_datetime("2023-11-13T10:15").is_none(), "a time needs its seconds");
    assert_eq!(parse_datetime("2023-11").unwrap().to_rfc3339(), "2023-11-01T00:00:00+00:00");
    assert_eq!(parse_datetime("2023-11-13").unwrap().to_rfc3339(), "2023-11-13T00:00:00+00:00");
    assert_eq!(
        parse_datetime("2023-11-13T10:15:00").unwrap().to_rfc3339(),
        "2023-11-13T10:15:00+00:00"
    );
    assert_eq!(
        parse_datetime("2023-11-13T10:15:00.5-04:00").unwrap().to_rfc3339(),
        "2023-11-13T10:15:00.500-04:00"
    );
}
