//! The search parameter registry, built from the official R4 SearchParameter bundle:
//! each parameter's type, FHIRPath expression (compiled once), reference targets and
//! composite components.

use super::fhirpath::{self, Expr};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock};

/// The official R4 SearchParameter bundle, embedded.
pub(crate) const SEARCH_PARAMETERS_JSON: &str = include_str!("../../../fhir-fixtures/spec/fhir-r4-search-parameters.json");

/// FHIR search parameter types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ParamType {
    /// `number`
    Number,
    /// `date`
    Date,
    /// `string`
    String,
    /// `token`
    Token,
    /// `reference`
    Reference,
    /// `composite`
    Composite,
    /// `quantity`
    Quantity,
    /// `uri`
    Uri,
}

impl ParamType {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "number" => ParamType::Number,
            "date" => ParamType::Date,
            "string" => ParamType::String,
            "token" => ParamType::Token,
            "reference" => ParamType::Reference,
            "composite" => ParamType::Composite,
            "quantity" => ParamType::Quantity,
            "uri" => ParamType::Uri,
            _ => return None,
        })
    }

    /// The FHIR code of the type.
    pub fn as_str(self) -> &'static str {
        match self {
            ParamType::Number => "number",
            ParamType::Date => "date",
            ParamType::String => "string",
            ParamType::Token => "token",
            ParamType::Reference => "reference",
            ParamType::Composite => "composite",
            ParamType::Quantity => "quantity",
            ParamType::Uri => "uri",
        }
    }
}

/// One component of a composite parameter.
#[derive(Debug, Clone)]
pub struct Component {
    /// Type of the component's own parameter.
    pub ty: ParamType,
    /// Expression relative to the composite's focus.
    pub expr: Expr,
}

/// One supported search parameter.
#[derive(Debug, Clone)]
pub struct ParamDef {
    /// The parameter name used in URLs (`patient`, `code`, ...).
    pub code: String,
    /// Its type.
    pub ty: ParamType,
    /// The canonical URL of its definition.
    pub url: String,
    /// The compiled expression.
    pub expr: Expr,
    /// Reference target types.
    pub targets: Vec<String>,
    /// Composite components, in order.
    pub components: Vec<Component>,
    /// Human description from the definition.
    pub description: String,
    /// The expression pruned to the union terms that apply to each base type (shared
    /// parameters such as `patient` list dozens of types; evaluating only the relevant
    /// terms keeps extraction cheap).
    pub per_type: BTreeMap<String, Expr>,
}

impl ParamDef {
    /// The expression to evaluate on a resource of type `ty`.
    pub(crate) fn expr_for(&self, ty: &str) -> &Expr {
        self.per_type.get(ty).unwrap_or(&self.expr)
    }
}

/// Keep the union terms of `expr` whose root is `ty` (or Resource/DomainResource, or relative).
fn prune(expr: &Expr, ty: &str) -> Expr {
    fn applies(e: &Expr, ty: &str) -> bool {
        match e {
            Expr::Union(parts) => parts.iter().any(|p| applies(p, ty)),
            Expr::Truthy(inner) => applies(inner, ty),
            Expr::Path { base, .. } => match base {
                fhirpath::Base::Root(r) => r == ty || r == "Resource" || r == "DomainResource",
                fhirpath::Base::Field(_) => true,
                fhirpath::Base::Group(g) => applies(g, ty),
            },
        }
    }
    match expr {
        Expr::Union(parts) => {
            let kept: Vec<Expr> = parts.iter().filter(|p| applies(p, ty)).cloned().collect();
            if kept.len() == 1 {
                kept.into_iter().next().unwrap_or(Expr::Union(Vec::new()))
            } else {
                Expr::Union(kept)
            }
        }
        other => other.clone(),
    }
}

/// All supported parameters, by resource type then code.
#[derive(Debug, Default)]
pub struct Registry {
    by_type: HashMap<String, BTreeMap<String, Arc<ParamDef>>>,
    common: BTreeMap<String, Arc<ParamDef>>,
    /// Parameters found in the definitions that this server cannot evaluate, with reasons.
    pub unsupported: Vec<(String, String)>,
}

impl Registry {
    /// The registry built from the embedded R4 definitions (parsed once per process).
    pub fn r4() -> Arc<Registry> {
        static REG: OnceLock<Arc<Registry>> = OnceLock::new();
        REG.get_or_init(|| Arc::new(Registry::from_bundle_str(SEARCH_PARAMETERS_JSON)))
            .clone()
    }

    /// Build from a SearchParameter Bundle's JSON text. Entries whose expression the
    /// FHIRPath subset cannot parse are recorded in `unsupported`, never silently dropped.
    pub(crate) fn from_bundle_str(text: &str) -> Registry {
        let mut reg = Registry::default();
        let Ok(bundle) = serde_json::from_str::<Value>(text) else {
            reg.unsupported.push(("*".into(), "search parameter bundle is not JSON".into()));
            return reg;
        };
        let entries: Vec<&Value> = bundle
            .get("entry")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|e| e.get("resource")).collect())
            .unwrap_or_default();
        let url_types: HashMap<&str, &str> = entries
            .iter()
            .filter_map(|r| Some((r.get("url")?.as_str()?, r.get("type")?.as_str()?)))
            .collect();
        for r in &entries {
            let code = r.get("code").and_then(Value::as_str).unwrap_or_default().to_string();
            let url = r.get("url").and_then(Value::as_str).unwrap_or_default().to_string();
            let Some(ty) = r.get("type").and_then(Value::as_str).and_then(ParamType::parse) else {
                reg.unsupported.push((code, "special parameter type".into()));
                continue;
            };
            let Some(expression) = r.get("expression").and_then(Value::as_str) else {
                reg.unsupported.push((code, "no expression".into()));
                continue;
            };
            let expr = match fhirpath::parse(expression) {
                Ok(e) => e,
                Err(e) => {
                    reg.unsupported.push((code, e.to_string()));
                    continue;
                }
            };
            let mut components = Vec::new();
            let mut ok = true;
            for c in r.get("component").and_then(Value::as_array).into_iter().flatten() {
                let def = c.get("definition").and_then(Value::as_str).unwrap_or_default();
                let cty = url_types.get(def).and_then(|t| ParamType::parse(t));
                let cexpr = c.get("expression").and_then(Value::as_str).map(fhirpath::parse);
                match (cty, cexpr) {
                    (Some(ty), Some(Ok(expr))) => components.push(Component { ty, expr }),
                    _ => ok = false,
                }
            }
            if !ok {
                reg.unsupported.push((code, "composite component not understood".into()));
                continue;
            }
            let targets = r
                .get("target")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
                .unwrap_or_default();
            let description = r.get("description").and_then(Value::as_str).unwrap_or_default().to_string();
            let bases: Vec<&str> = r
                .get("base")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let per_type = bases
                .iter()
                .filter(|b| **b != "Resource" && **b != "DomainResource")
                .map(|b| (b.to_string(), prune(&expr, b)))
                .collect();
            let def = Arc::new(ParamDef {
                code: code.clone(),
                ty,
                url,
                expr,
                targets,
                components,
                description,
                per_type,
            });
            for base in bases {
                if base == "Resource" || base == "DomainResource" {
                    reg.common.insert(code.clone(), def.clone());
                } else {
                    reg.by_type.entry(base.to_string()).or_default().insert(code.clone(), def.clone());
                }
            }
        }
        reg
    }

    /// Look up `code` for resource type `ty` (type-specific first, then common ones).
    pub fn get(&self, ty: &str, code: &str) -> Option<&Arc<ParamDef>> {
        self.by_type.get(ty).and_then(|m| m.get(code)).or_else(|| self.common.get(code))
    }

    /// Every parameter usable on `ty`, ordered by code.
    pub(crate) fn for_type(&self, ty: &str) -> BTreeMap<&str, &Arc<ParamDef>> {
        let mut out: BTreeMap<&str, &Arc<ParamDef>> = self.common.iter().map(|(k, v)| (k.as_str(), v)).collect();
        if let Some(m) = self.by_type.get(ty) {
            out.extend(m.iter().map(|(k, v)| (k.as_str(), v)));
        }
        out
    }

    /// Reference parameters of `ty` (for `_include`/`_revinclude` and integrity).
    pub(crate) fn reference_params(&self, ty: &str) -> Vec<&Arc<ParamDef>> {
        self.for_type(ty).into_values().filter(|p| p.ty == ParamType::Reference).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn required_types_have_all_their_parameters() {
        let reg = Registry::r4();
        for (ty, code, pty) in [
            ("Observation", "patient", ParamType::Reference),
            ("Observation", "code", ParamType::Token),
            ("Observation", "combo-code", ParamType::Token),
            ("Observation", "component-code-value-quantity", ParamType::Composite),
            ("Observation", "date", ParamType::Date),
            ("Patient", "name", ParamType::String),
            ("Patient", "deceased", ParamType::Token),
            ("Patient", "email", ParamType::Token),
            ("MedicationRequest", "medication", ParamType::Reference),
            ("Condition", "onset-date", ParamType::Date),
            ("Encounter", "length", ParamType::Quantity),
            ("ServiceRequest", "authored", ParamType::Date),
            ("Procedure", "_id", ParamType::Token),
            ("Immunization", "_lastUpdated", ParamType::Date),
        ] {
            let p = reg.get(ty, code).unwrap_or_else(|| panic!("{ty}.{code} missing"));
            assert_eq!(p.ty, pty, "{ty}.{code}");
        }
        // every definition on the required types compiled
        let required = [
            "Patient",
            "Observation",
            "Condition",
            "MedicationRequest",
            "ServiceRequest",
            "Procedure",
            "Encounter",
            "AllergyIntolerance",
            "DiagnosticReport",
            "Immunization",
            "MedicationAdministration",
        ];
        let bundle: Value = serde_json::from_str(SEARCH_PARAMETERS_JSON).unwrap();
        for e in bundle["entry"].as_array().unwrap() {
            let r = &e["resource"];
            for b in r["base"].as_array().unwrap() {
                let b = b.as_str().unwrap();
                if required.contains(&b) {
                    let code = r["code"].as_str().unwrap();
                    assert!(
                        reg.get(b, code).is_some(),
                        "{b}.{code} not supported: {:?}",
                        reg.unsupported.iter().find(|u| u.0 == code)
                    );
                }
            }
        }
    }
}
