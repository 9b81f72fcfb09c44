//! Search: parsing query parameters into typed clauses (`query`) and matching them against
//! resources (`matching`). Execution over a sandbox (indexes, sorting, paging, includes)
//! lives in `store`.

mod matching;
mod query;
#[cfg(test)]
mod tests;

pub use matching::{SortValue, extract};
pub(crate) use matching::{clause_matches, index_keys, lookup_keys, sort_value};
#[cfg(test)]
use query::split_escaped;
pub use query::{
    Chain, Clause, DEFAULT_COUNT, Include, Modifier, Prefix, SearchQuery, SearchValue, SortKey, Summary, SystemMatch, TotalMode,
};
