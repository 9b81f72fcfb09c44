//! Search: parsing query parameters into typed clauses (`query`) and matching them against
//! resources (`matching`). Execution over a sandbox (indexes, sorting, paging, includes)
//! lives in `store`.

mod matching;
mod query;
#[cfg(test)]
mod tests;

pub use matching::{SortValue, clause_matches, extract, index_keys, lookup_keys, sort_value, value_matches};
pub use query::{
    Chain, Clause, DEFAULT_COUNT, Include, MAX_COUNT, Modifier, Prefix, SearchQuery, SearchValue, SortKey, Summary, SystemMatch, TotalMode,
    split_escaped,
};
