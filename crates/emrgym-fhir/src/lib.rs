//! The mock EMR: a FHIR R4 store with copy-on-write sandboxes, search driven by the
//! official SearchParameter definitions, schema validation, cohort loading and the axum
//! REST server.
//!
//! Entry points: [`load::load`] (a cohort by name or path) built into a [`Cohort`] with a
//! [`Clock`] ([`parse_instant`] reads one), [`Sandbox::fork`] (a copy-on-write sandbox),
//! [`rest::handle`] / [`rest::handle_read`] (the FHIR API as functions over a sandbox:
//! [`FhirRequest`] to [`FhirResponse`]), and [`server::router`] / [`server::serve`] (HTTP).

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

pub use clock::{Clock, InstantError, parse_instant};
pub use error::{FhirError, FhirResult};
pub use rest::{FhirRequest, FhirResponse};
pub use store::{Cohort, CohortBuilder, Sandbox, SandboxOptions};
