//! Facts for the planner: sensing queries run on an untouched fork of the cohort (the
//! record as it stands at the scenario's "now"), with strict parameter checking so a typo
//! in a scenario is an error rather than an empty fact; computed facts run the calculators.

use emrgym_fhir::Sandbox;
use emrgym_fhir::search::SearchQuery;
use emrgym_scenario::htn::plan::FactSource;
use serde_json::Value;

/// A fact query: resource type and search parameters.
type Query = (String, Vec<(String, String)>);

/// A [`FactSource`] over a sandbox nobody writes to.
#[derive(Debug)]
pub struct SandboxFacts {
    sandbox: Sandbox,
    /// Answers already computed: the sandbox is never written through this type, so a query
    /// gives the same answer every time (a guide re-plans after every step).
    memo: std::collections::HashMap<Query, Result<Vec<Value>, String>>,
}

impl SandboxFacts {
    /// Facts from `sandbox` (normally a fresh fork of the cohort).
    pub fn new(sandbox: Sandbox) -> SandboxFacts {
        SandboxFacts {
            sandbox,
            memo: std::collections::HashMap::new(),
        }
    }

    /// The sandbox.
    pub fn sandbox(&self) -> &Sandbox {
        &self.sandbox
    }
}

impl FactSource for SandboxFacts {
    fn search(&mut self, resource_type: &str, params: &[(String, String)]) -> Result<Vec<Value>, String> {
        let key = (resource_type.to_string(), params.to_vec());
        if let Some(hit) = self.memo.get(&key) {
            return hit.clone();
        }
        let answer = self.search_uncached(resource_type, params);
        self.memo.insert(key, answer.clone());
        answer
    }

    /// Calculators only: the same function the agent's calculator tool runs, so a computed
    /// fact is exactly what an agent gets from the tool on the same inputs.
    fn call(&mut self, name: &str, args: &Value) -> Result<Value, String> {
        let calc = emrgym_calc::find(name).ok_or_else(|| format!("'{name}' is not a calculator"))?;
        let result = emrgym_calc::run(calc, args).map_err(|e| e.to_string())?;
        serde_json::to_value(&result).map_err(|e| e.to_string())
    }
}

impl SandboxFacts {
    fn search_uncached(&self, resource_type: &str, params: &[(String, String)]) -> Result<Vec<Value>, String> {
        if !emrgym_fhir::validate::SchemaValidator::r4().is_resource_type(resource_type) {
            return Err(format!("'{resource_type}' is not a FHIR R4 resource type"));
        }
        let query = SearchQuery::parse(resource_type, params, self.sandbox.cohort().registry(), true).map_err(|e| e.to_string())?;
        let result = self.sandbox.search(&query).map_err(|e| e.to_string())?;
        Ok(result.matches.iter().filter_map(|v| v.resource().map(|r| (*r).clone())).collect())
    }
}
