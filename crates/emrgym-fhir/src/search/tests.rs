//! Unit tests of search parsing and matching.

use super::*;
use crate::error::FhirResult;
use crate::params::Registry;
use serde_json::Value;
use serde_json::json;

fn q(ty: &str, pairs: &[(&str, &str)]) -> FhirResult<SearchQuery> {
    let p: Vec<(String, String)> = pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
    SearchQuery::parse(ty, &p, &Registry::r4(), false)
}

fn m(ty: &str, pairs: &[(&str, &str)], r: &Value) -> bool {
    let q = q(ty, pairs).unwrap();
    q.clauses.iter().all(|c| clause_matches(c, ty, r, 0))
}

#[test]
fn token_forms() {
    let obs = json!({"resourceType":"Observation","code":{"coding":[{"system":"http://loinc.org","code":"2823-3","display":"Potassium"}],"text":"K serum"}});
    assert!(m("Observation", &[("code", "2823-3")], &obs));
    assert!(m("Observation", &[("code", "http://loinc.org|2823-3")], &obs));
    assert!(m("Observation", &[("code", "http://loinc.org|")], &obs));
    assert!(!m("Observation", &[("code", "|2823-3")], &obs));
    assert!(!m("Observation", &[("code", "http://snomed.info/sct|2823-3")], &obs));
    assert!(m("Observation", &[("code", "x,2823-3")], &obs));
    assert!(m("Observation", &[("code:text", "potass")], &obs));
    assert!(m("Observation", &[("code:text", "serum")], &obs));
    assert!(!m("Observation", &[("code:not", "2823-3")], &obs));
    assert!(m("Observation", &[("code:not", "1234-5")], &obs));
}

#[test]
fn date_prefixes() {
    let obs = json!({"resourceType":"Observation","effectiveDateTime":"2023-11-13T10:15:00-05:00"});
    let yes = |v: &str| m("Observation", &[("date", v)], &obs);
    assert!(yes("2023-11-13"));
    assert!(yes("2023-11"));
    assert!(!yes("2023-11-14"));
    assert!(yes("2023-11-13T15:15:00Z"));
    assert!(yes("gt2023-11-13T15:00:00Z"));
    assert!(!yes("gt2023-11-13"));
    assert!(yes("ge2023-11-13"));
    assert!(yes("lt2023-11-14"));
    assert!(yes("le2023-11-13"));
    assert!(yes("sa2023-11-12"));
    assert!(yes("eb2023-11-14"));
    assert!(yes("ne2023-11-12"));
    assert!(!yes("ne2023-11-13"));
}

#[test]
fn errors_name_the_value() {
    let e = q("Observation", &[("date", "yesterday")]).unwrap_err();
    assert!(e.to_string().contains("'yesterday'"), "{e}");
    let e = q("Observation", &[("code:exact", "x")]).unwrap_err();
    assert_eq!(e.status(), 400);
    assert!(e.to_string().contains(":exact"), "{e}");
    let e = q("Observation", &[("_sort", "nonsense")]).unwrap_err();
    assert!(e.to_string().contains("nonsense"));
    let e = q("Observation", &[("value-quantity", "abc")]).unwrap_err();
    assert!(e.to_string().contains("'abc'"));
    // strict rejects unknown, lenient warns
    let p = vec![("foo".to_string(), "1".to_string())];
    assert!(SearchQuery::parse("Observation", &p, &Registry::r4(), true).is_err());
    assert_eq!(
        SearchQuery::parse("Observation", &p, &Registry::r4(), false)
            .unwrap()
            .warnings
            .len(),
        1
    );
}

#[test]
fn quantity_and_composite() {
    let bp = json!({"resourceType":"Observation","code":{"coding":[{"system":"http://loinc.org","code":"85354-9"}]},
      "component":[{"code":{"coding":[{"system":"http://loinc.org","code":"8480-6"}]},"valueQuantity":{"value":150,"unit":"mmHg","system":"http://unitsofmeasure.org","code":"mm[Hg]"}},
                   {"code":{"coding":[{"system":"http://loinc.org","code":"8462-4"}]},"valueQuantity":{"value":95,"unit":"mmHg","system":"http://unitsofmeasure.org","code":"mm[Hg]"}}]});
    assert!(m("Observation", &[("combo-code", "8480-6")], &bp));
    assert!(m("Observation", &[("combo-code", "85354-9")], &bp));
    assert!(!m("Observation", &[("code", "8480-6")], &bp));
    assert!(m(
        "Observation",
        &[("component-code-value-quantity", "http://loinc.org|8480-6$gt140")],
        &bp
    ));
    assert!(!m(
        "Observation",
        &[("component-code-value-quantity", "http://loinc.org|8462-4$gt140")],
        &bp
    ));
    assert!(m("Observation", &[("component-value-quantity", "150||mm[Hg]")], &bp));
    assert!(m("Observation", &[("component-value-quantity", "150||mmHg")], &bp));
    assert!(!m("Observation", &[("component-value-quantity", "150|http://other|mm[Hg]")], &bp));
    assert!(m("Observation", &[("value-quantity:missing", "true")], &bp));
}

#[test]
fn strings_and_references() {
    let p = json!({"resourceType":"Patient","name":[{"family":"Müller","given":["Peter","James"]}],"generalPractitioner":[{"reference":"Practitioner/9"}]});
    assert!(m("Patient", &[("name", "mul")], &p));
    assert!(m("Patient", &[("family:exact", "Müller")], &p));
    assert!(!m("Patient", &[("family:exact", "muller")], &p));
    assert!(m("Patient", &[("given:contains", "ame")], &p));
    // the whole name as written, given names first, or one given name with the family name
    for whole in [
        "Peter James Müller",
        "peter james mul",
        "Peter Muller",
        "James Müller",
        "PETER  Müller",
    ] {
        assert!(m("Patient", &[("name", whole)], &p), "{whole}");
    }
    assert!(m("Patient", &[("name:exact", "Peter James Müller")], &p));
    assert!(m("Patient", &[("name:contains", "james mü")], &p));
    for other in ["Müller Peter", "Muller Peter James", "Peter Jameson Müller", "Pete Müller"] {
        assert!(!m("Patient", &[("name", other)], &p), "{other}");
    }
    assert!(!m("Patient", &[("name:exact", "Peter Müller James")], &p));
    // the family and given parameters still match their own part only
    assert!(!m("Patient", &[("family", "Peter Müller")], &p));
    assert!(!m("Patient", &[("given", "Peter James")], &p));
    // an address is not a name
    let a = json!({"resourceType":"Patient","address":[{"line":["1 Main St"],"city":"Boston"}]});
    assert!(!m("Patient", &[("address", "1 Main St Boston")], &a));
    assert!(m("Patient", &[("general-practitioner", "Practitioner/9")], &p));
    assert!(m("Patient", &[("general-practitioner", "9")], &p));
    assert!(m("Patient", &[("general-practitioner:Practitioner", "9")], &p));
    assert!(!m("Patient", &[("general-practitioner:Organization", "9")], &p));
    assert!(q("Patient", &[("general-practitioner:Observation", "9")]).is_err());
}

#[test]
fn escaping() {
    assert_eq!(split_escaped(r"a\,b,c", ','), vec!["a,b", "c"]);
    assert_eq!(split_escaped("a|b", '|'), vec!["a", "b"]);
}
