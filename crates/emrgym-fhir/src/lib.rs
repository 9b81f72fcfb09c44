//! The mock EMR: a FHIR R4 store with copy-on-write sandboxes, search driven by the
//! official SearchParameter definitions, schema validation, cohort loading and the axum
//! REST server.

pub mod access;
pub mod bundle;
pub mod capability;
pub mod clock;
pub mod deadline;
pub mod error;
pub mod fhirpath;
pub mod load;
pub mod params;
pub mod rest;
pub mod search;
pub mod server;
pub mod store;
pub mod validate;
pub mod values;

pub use clock::Clock;
pub use error::{FhirError, FhirResult};
pub use store::{Cohort, CohortBuilder, Sandbox, SandboxOptions};
