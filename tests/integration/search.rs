//! Search through the router: every parameter type, modifier and result parameter.

use crate::common::app;
use axum::http::StatusCode;
use serde_json::{Value, json};

const P: &str = "S3241217"; // Grace Whitfield: K 4.0 (10 days ago) and 3.2 (6 h ago), CKD, HTN

fn values(body: &Value) -> Vec<f64> {
    body["entry"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter(|e| e["search"]["mode"] == "match")
        .map(|e| e["resource"]["valueQuantity"]["value"].as_f64().unwrap())
        .collect()
}

#[tokio::test]
async fn token_forms() {
    let a = app();
    let local = a.get(&format!("/fhir/Observation?patient={P}&code=K")).await;
    assert_eq!(local.body["total"], 2);
    let loinc = a.get(&format!("/fhir/Observation?patient={P}&code=http://loinc.org|2823-3")).await;
    assert_eq!(loinc.ids(), local.ids());
    assert_eq!(
        a.get(&format!("/fhir/Observation?patient={P}&code=http://snomed.info/sct|2823-3"))
            .await
            .body["total"],
        0
    );
    assert_eq!(
        a.get(&format!("/fhir/Observation?patient={P}&code=|K")).await.body["total"],
        0,
        "|code means no system"
    );
    let or = a.get(&format!("/fhir/Observation?patient={P}&code=K,MG")).await;
    assert_eq!(or.body["total"], 4);
    let text = a.get(&format!("/fhir/Observation?patient={P}&code:text=potassium")).await;
    assert_eq!(text.body["total"], 2);
    let all = a.get(&format!("/fhir/Observation?patient={P}&_summary=count")).await.body["total"]
        .as_u64()
        .unwrap();
    let not = a
        .get(&format!("/fhir/Observation?patient={P}&code:not=K&_summary=count"))
        .await
        .body["total"]
        .as_u64()
        .unwrap();
    assert_eq!(not, all - 2);
    let sys = a
        .get(&format!("/fhir/Condition?patient={P}&code=http://hl7.org/fhir/sid/icd-10-cm|"))
        .await;
    assert_eq!(sys.body["total"], 2);
    let icd = a.get("/fhir/Condition?code=http://hl7.org/fhir/sid/icd-10-cm|N18.30").await;
    assert_eq!(icd.body["total"], 3, "three CKD patients");
    assert_eq!(a.get("/fhir/Patient?gender=female&_summary=count").await.body["total"], 6);
    assert_eq!(a.get("/fhir/Patient?identifier=S6534835").await.ids(), vec!["S6534835"]);
    assert_eq!(
        a.get("/fhir/Patient?email=peter.stafford@example.org").await.ids(),
        vec!["S6534835"]
    );
    assert_eq!(a.get("/fhir/Patient?deceased=false").await.ids(), vec!["S1311412"]);
    assert_eq!(a.get("/fhir/Patient?_id=S6534835,S2874099").await.body["total"], 2);
    assert_eq!(
        a.get("/fhir/MedicationRequest?code=http://www.nlm.nih.gov/research/umls/rxnorm|855332&_summary=count")
            .await
            .body["total"],
        3,
        "warfarin for the AF patients"
    );
}

#[tokio::test]
async fn string_forms() {
    let a = app();
    assert_eq!(a.get("/fhir/Patient?name=staf").await.ids(), vec!["S6534835"]);
    assert_eq!(a.get("/fhir/Patient?family=STAFFORD").await.ids(), vec!["S6534835"]);
    assert_eq!(a.get("/fhir/Patient?given=chloe").await.ids(), vec!["S2823623"], "accents fold");
    assert_eq!(a.get("/fhir/Patient?family:exact=Stafford").await.ids(), vec!["S6534835"]);
    assert_eq!(a.get("/fhir/Patient?family:exact=stafford").await.body["total"], 0);
    assert_eq!(a.get("/fhir/Patient?name:contains=affo").await.ids(), vec!["S6534835"]);
    assert_eq!(
        a.get("/fhir/Patient?name=affo").await.body["total"],
        0,
        "plain string search is a prefix match"
    );
    assert_eq!(a.get("/fhir/Patient?address-state=MA&_summary=count").await.body["total"], 12);
    assert_eq!(a.get("/fhir/Patient?name=peter&birthdate=1932-12-29").await.ids(), vec!["S6534835"]);
    assert_eq!(a.get("/fhir/Patient?name=peter&birthdate=1932-12-30").await.body["total"], 0);
}

#[tokio::test]
async fn date_prefixes_and_precision() {
    let a = app();
    // K values: 2023-11-03T10:15Z (4.0) and 2023-11-13T04:15Z (3.2)
    let q = |d: &str| format!("/fhir/Observation?patient={P}&code=K&date={d}");
    assert_eq!(values(&a.get(&q("2023-11-13")).await.body), vec![3.2]);
    assert_eq!(a.get(&q("2023-11")).await.body["total"], 2);
    assert_eq!(a.get(&q("2023")).await.body["total"], 2);
    assert_eq!(values(&a.get(&q("ge2023-11-12T10:15:00Z")).await.body), vec![3.2], "last 24 hours");
    assert_eq!(values(&a.get(&q("lt2023-11-12")).await.body), vec![4.0]);
    assert_eq!(
        values(&a.get(&q("gt2023-11-13T00:00:00-05:00")).await.body),
        Vec::<f64>::new(),
        "offsets honoured: 05:00Z is after 04:15Z"
    );
    assert_eq!(values(&a.get(&q("gt2023-11-13T00:00:00-04:00")).await.body), vec![3.2]);
    assert_eq!(values(&a.get(&q("le2023-11-03")).await.body), vec![4.0]);
    assert_eq!(values(&a.get(&q("sa2023-11-12")).await.body), vec![3.2]);
    assert_eq!(values(&a.get(&q("eb2023-11-04")).await.body), vec![4.0]);
    assert_eq!(values(&a.get(&q("ne2023-11-13")).await.body), vec![4.0]);
    assert_eq!(
        values(&a.get(&q("ap2023-11-02")).await.body),
        vec![4.0],
        "ap widens by 10% of the distance to now (11 days: about 1.1 days)"
    );
    assert_eq!(values(&a.get(&q("2023-11-02")).await.body), Vec::<f64>::new());
    let both = a
        .get(&format!("/fhir/Observation?patient={P}&code=K&date=ge2023-11-01&date=lt2023-11-10"))
        .await;
    assert_eq!(values(&both.body), vec![4.0], "repeated parameters AND");
    let r = a.get(&q("2023-13-01")).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.diag().contains("'2023-13-01'"));
    // Period-valued dates (Encounter.period) and open periods
    assert_eq!(
        a.get(&format!("/fhir/Encounter?patient={P}&date=2023-11-12")).await.body["total"],
        0,
        "eq needs the whole period inside the day"
    );
    assert_eq!(
        a.get(&format!("/fhir/Encounter?patient={P}&date=ge2023-11-12")).await.body["total"],
        1,
        "the open in-progress admission reaches past the date"
    );
    assert_eq!(
        a.get(&format!("/fhir/Encounter?patient={P}&date=le2023-11-12")).await.body["total"],
        2
    );
}

#[tokio::test]
async fn reference_forms() {
    let a = app();
    let by_id = a.get(&format!("/fhir/Observation?patient={P}&_summary=count")).await.body["total"].clone();
    for q in [
        format!("subject=Patient/{P}"),
        format!("subject:Patient={P}"),
        format!("subject={P}"),
        format!("patient=http://emr.test/fhir/Patient/{P}"),
    ] {
        assert_eq!(
            a.get(&format!("/fhir/Observation?{q}&_summary=count")).await.body["total"],
            by_id,
            "{q}"
        );
    }
    assert_eq!(
        a.get(&format!("/fhir/Observation?subject:Group={P}&_summary=count")).await.body["total"],
        0
    );
    let r = a.get("/fhir/Observation?subject:Medication=1").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.diag().contains("'Medication'"));
    // chained
    let chained = a.get("/fhir/Observation?subject:Patient.family=Whitfield&_summary=count").await;
    assert_eq!(chained.body["total"], by_id);
}

#[tokio::test]
async fn quantity_missing_and_components() {
    let a = app();
    assert_eq!(
        values(
            &a.get(&format!("/fhir/Observation?patient={P}&code=K&value-quantity=lt3.5"))
                .await
                .body
        ),
        vec![3.2]
    );
    assert_eq!(
        values(
            &a.get(&format!(
                "/fhir/Observation?patient={P}&code=K&value-quantity=3.2|http://unitsofmeasure.org|mmol/L"
            ))
            .await
            .body
        ),
        vec![3.2]
    );
    assert_eq!(
        values(
            &a.get(&format!("/fhir/Observation?patient={P}&code=K&value-quantity=3.2||mg/dL"))
                .await
                .body
        ),
        Vec::<f64>::new()
    );
    assert_eq!(
        values(
            &a.get(&format!("/fhir/Observation?patient={P}&code=K&value-quantity=3.24"))
                .await
                .body
        ),
        Vec::<f64>::new(),
        "3.24 means [3.235, 3.245)"
    );
    assert_eq!(
        values(&a.get(&format!("/fhir/Observation?patient={P}&code=K&value-quantity=3")).await.body),
        vec![3.2],
        "3 means [2.5, 3.5)"
    );
    // blood pressure lives in components
    let bp = a.get(&format!("/fhir/Observation?patient={P}&code=BP&_summary=count")).await.body["total"].clone();
    assert_eq!(bp, 3);
    assert_eq!(
        a.get(&format!("/fhir/Observation?patient={P}&combo-code=8480-6&_summary=count"))
            .await
            .body["total"],
        bp
    );
    assert_eq!(
        a.get(&format!("/fhir/Observation?patient={P}&code=8480-6&_summary=count"))
            .await
            .body["total"],
        0
    );
    let high = a
        .get(&format!(
            "/fhir/Observation?patient={P}&component-code-value-quantity=http://loinc.org|8480-6$gt0"
        ))
        .await
        .body["total"]
        .clone();
    assert_eq!(high, bp);
    let none = a
        .get(&format!(
            "/fhir/Observation?patient={P}&component-code-value-quantity=http://loinc.org|8480-6$gt300"
        ))
        .await;
    assert_eq!(none.body["total"], 0);
    let r = a.get("/fhir/Observation?component-code-value-quantity=8480-6").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "composite needs two components");
    // :missing
    assert_eq!(
        a.get(&format!("/fhir/Observation?patient={P}&value-quantity:missing=true&_summary=count"))
            .await
            .body["total"],
        bp
    );
    let r = a.get("/fhir/Observation?value-quantity:missing=maybe").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.diag().contains("'maybe'"));
    assert_eq!(a.get("/fhir/Patient?deceased:missing=false").await.ids(), vec!["S1311412"]);
}

#[tokio::test]
async fn sort_multi_key_and_by_instant() {
    let a = app();
    let r = a.get(&format!("/fhir/Observation?patient={P}&code=K,MG&_sort=-date")).await;
    let dates: Vec<String> = r.body["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resource"]["effectiveDateTime"].as_str().unwrap().to_string())
        .collect();
    let mut sorted = dates.clone();
    sorted.sort_by(|x, y| y.cmp(x));
    assert_eq!(dates, sorted);
    // instants, not strings: an offset time sorts by the moment it denotes
    a.post("/fhir/Observation", &json!({"resourceType":"Observation","status":"final","code":{"coding":[{"code":"K"}]},"subject":{"reference":format!("Patient/{P}")},"effectiveDateTime":"2023-11-13T01:00:00-05:00","valueQuantity":{"value":9.9}})).await;
    let r = a.get(&format!("/fhir/Observation?patient={P}&code=K&_sort=-date")).await;
    assert_eq!(values(&r.body), vec![9.9, 3.2, 4.0], "01:00-05:00 is 06:00Z, after 04:15Z");
    let r = a.get("/fhir/Patient?_sort=gender,-birthdate&_elements=gender,birthDate").await;
    let rows: Vec<(String, String)> = r.body["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["resource"]["gender"].as_str().unwrap().into(),
                e["resource"]["birthDate"].as_str().unwrap().into(),
            )
        })
        .collect();
    let mut expect = rows.clone();
    expect.sort_by(|x, y| x.0.cmp(&y.0).then(y.1.cmp(&x.1)));
    assert_eq!(rows, expect);
    let r = a.get("/fhir/Patient?_sort=-_id&_count=2").await;
    assert_eq!(r.ids(), vec!["S6534835", "S6315806"]);
}

#[tokio::test]
async fn paging_links_cover_everything_once() {
    let a = app();
    let total = a.get("/fhir/Observation?_summary=count").await.body["total"].as_u64().unwrap() as usize;
    let mut url = "/fhir/Observation?_count=37&_sort=_id".to_string();
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let r = a.get(&url).await;
        assert_eq!(r.body["total"].as_u64().unwrap() as usize, total);
        seen.extend(r.ids());
        pages += 1;
        let links = r.body["link"].as_array().unwrap();
        if pages > 1 {
            assert!(links.iter().any(|l| l["relation"] == "previous"));
        }
        match links.iter().find(|l| l["relation"] == "next") {
            Some(l) => url = l["url"].as_str().unwrap().trim_start_matches("http://emr.test").to_string(),
            None => break,
        }
    }
    assert_eq!(pages, total.div_ceil(37));
    let mut dedup = seen.clone();
    dedup.sort();
    dedup.dedup();
    assert_eq!(dedup.len(), total);
    assert_eq!(seen.len(), total);
    let r = a.get("/fhir/Observation?_count=5000").await;
    let outcome = r.body["entry"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["search"]["mode"] == "outcome")
        .unwrap();
    assert!(outcome["resource"]["issue"][0]["diagnostics"].as_str().unwrap().contains("1000"));
    assert_eq!(a.get("/fhir/Observation?_count=abc").await.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn includes_summary_total_elements() {
    let a = app();
    let r = a
        .get(&format!(
            "/fhir/Observation?patient={P}&code=K&_include=Observation:patient&_include=Observation:encounter"
        ))
        .await;
    let modes: Vec<(String, String)> = r.body["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["search"]["mode"].as_str().unwrap().into(),
                e["resource"]["resourceType"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(modes.iter().filter(|m| m.0 == "match").count(), 2);
    assert_eq!(
        modes.iter().filter(|m| m.0 == "include" && m.1 == "Patient").count(),
        1,
        "included once"
    );
    assert_eq!(modes.iter().filter(|m| m.0 == "include" && m.1 == "Encounter").count(), 2);
    let r = a.get(&format!("/fhir/Patient?_id={P}&_revinclude=Condition:patient")).await;
    let conds = r.body["entry"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["search"]["mode"] == "include")
        .count();
    assert_eq!(conds, 2);
    let r = a
        .get(&format!(
            "/fhir/Observation?patient={P}&code=K&_include=Observation:encounter&_include:iterate=Encounter:service-provider"
        ))
        .await;
    let types: Vec<&str> = r.body["entry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["resource"]["resourceType"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        vec!["Observation", "Observation", "Encounter", "Encounter", "Organization"],
        "iterate follows included Encounters"
    );
    let r = a
        .get(&format!(
            "/fhir/Observation?patient={P}&code=K&_include=Observation:encounter&_include=Encounter:service-provider"
        ))
        .await;
    assert_eq!(
        r.body["entry"].as_array().unwrap().len(),
        4,
        "without :iterate, includes are not followed"
    );
    let r = a.get("/fhir/Patient?_revinclude=*").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "_revinclude=* is not claimed and not served");
    let meta = a.get("/fhir/metadata").await.body;
    let patient = meta["rest"][0]["resource"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["type"] == "Patient")
        .unwrap()
        .clone();
    let revs: Vec<&str> = patient["searchRevInclude"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        revs.contains(&"Condition:patient") && revs.contains(&"Observation:subject"),
        "{revs:?}"
    );
    // every advertised reverse include works
    for rv in revs.iter().take(40) {
        let r = a
            .req(
                "GET",
                &format!("/fhir/Patient?_id={P}&_revinclude={rv}"),
                None,
                &[("prefer", "handling=strict")],
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{rv}: {}", r.body);
    }
    let r = a.get("/fhir/Observation?_include=Observation:nothing").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = a.get("/fhir/Observation?_include=Observation:code").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "code is not a reference parameter");
    let r = a.get(&format!("/fhir/Observation?patient={P}&_summary=count")).await;
    assert!(r.body.get("entry").is_none());
    assert!(r.body["total"].as_u64().unwrap() > 0);
    let r = a.get(&format!("/fhir/Observation?patient={P}&_total=none&_count=1")).await;
    assert!(r.body.get("total").is_none());
    let r = a.get(&format!("/fhir/Patient?_id={P}&_elements=birthDate")).await;
    let p = &r.body["entry"][0]["resource"];
    assert_eq!(p["birthDate"], "1940-02-14");
    assert!(p.get("name").is_none());
    assert_eq!(p["meta"]["tag"][0]["code"], "SUBSETTED");
    assert_eq!(a.get("/fhir/Patient?_summary=true").await.status, StatusCode::BAD_REQUEST);
    insta::assert_json_snapshot!(
        "search_k_latest",
        a.get(&format!("/fhir/Observation?patient={P}&code=K&_sort=-date&_count=1"))
            .await
            .body
    );
}

#[tokio::test]
async fn lenient_and_strict_handling() {
    let a = app();
    let r = a.get("/fhir/Patient?colour=blue&family=Stafford").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.ids(), vec!["S6534835"]);
    let outcome = r.body["entry"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["search"]["mode"] == "outcome")
        .unwrap();
    assert_eq!(outcome["resource"]["issue"][0]["severity"], "warning");
    assert!(
        outcome["resource"]["issue"][0]["diagnostics"]
            .as_str()
            .unwrap()
            .contains("'colour'")
    );
    assert!(
        !r.body["link"][0]["url"].as_str().unwrap().contains("colour"),
        "self link shows only what was used"
    );
    let r = a
        .req("GET", "/fhir/Patient?colour=blue", None, &[("prefer", "handling=strict")])
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    assert!(r.diag().contains("'colour'"));
    let r = a.get("/fhir/Patient?family:fuzzy=x").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "unsupported modifiers are always rejected");
    assert_eq!(r.body["issue"][0]["code"], "not-supported");
    assert_eq!(a.get("/fhir/Nothing?x=1").await.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn post_search_equals_get() {
    let a = app();
    let get = a.get(&format!("/fhir/Observation?patient={P}&code=K")).await;
    let post = a
        .req(
            "POST",
            "/fhir/Observation/_search",
            Some(&format!("patient={P}&code=K")),
            &[("content-type", "application/x-www-form-urlencoded")],
        )
        .await;
    assert_eq!(post.status, StatusCode::OK);
    assert_eq!(post.ids(), get.ids());
    let r = a
        .req(
            "POST",
            "/fhir/Patient",
            Some("name=x"),
            &[("content-type", "application/x-www-form-urlencoded")],
        )
        .await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
}

#[tokio::test]
async fn last_updated_sees_writes() {
    let a = app();
    assert_eq!(a.get("/fhir/Patient?_lastUpdated=gt2023-11-13T10:15:00Z").await.body["total"], 0);
    a.put("/fhir/Patient/p-new", &json!({"resourceType":"Patient","id":"p-new"})).await;
    assert_eq!(
        a.get("/fhir/Patient?_lastUpdated=ge2023-11-13T10:15:00Z&_summary=count").await.body["total"],
        13
    );
}
