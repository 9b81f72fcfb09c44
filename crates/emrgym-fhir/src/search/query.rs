//! Parsing search query parameters into typed clauses: prefixes, modifiers, OR values,
//! chains, composites, and the result parameters (_count, _sort, _include, ...).

use crate::error::{FhirError, FhirResult};
use crate::params::{ParamDef, ParamType, Registry};
use crate::values::{DateRange, normalize_reference, parse_date};
use std::sync::Arc;
/// Default page size.
pub const DEFAULT_COUNT: usize = 50;
/// Largest page size served; bigger `_count`s are clamped with a warning.
pub(crate) const MAX_COUNT: usize = 1000;
/// Most links in one chained parameter (`subject.organization.name` has 2). Each link is
/// a nested search; deeper chains are refused (400), never recursed into.
pub(crate) const MAX_CHAIN_DEPTH: usize = 4;
/// Most parameters in one search (each is a clause evaluated on every candidate).
pub(crate) const MAX_PARAMS: usize = 100;

/// Comparison prefixes for ordered values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prefix {
    /// equal (default)
    Eq,
    /// not equal
    Ne,
    /// greater than
    Gt,
    /// less than
    Lt,
    /// greater or equal
    Ge,
    /// less or equal
    Le,
    /// starts after
    Sa,
    /// ends before
    Eb,
    /// approximately
    Ap,
}

fn split_prefix(s: &str) -> (Prefix, &str) {
    if s.len() > 2 && s.is_char_boundary(2) {
        let (p, rest) = s.split_at(2);
        let next_ok = rest.chars().next().is_some_and(|c| c.is_ascii_digit() || c == '-' || c == '.');
        if next_ok {
            let prefix = match p {
                "eq" => Some(Prefix::Eq),
                "ne" => Some(Prefix::Ne),
                "gt" => Some(Prefix::Gt),
                "lt" => Some(Prefix::Lt),
                "ge" => Some(Prefix::Ge),
                "le" => Some(Prefix::Le),
                "sa" => Some(Prefix::Sa),
                "eb" => Some(Prefix::Eb),
                "ap" => Some(Prefix::Ap),
                _ => None,
            };
            if let Some(p) = prefix {
                return (p, rest);
            }
        }
    }
    (Prefix::Eq, s)
}

/// How a token's system must match.
#[derive(Debug, Clone, PartialEq)]
pub enum SystemMatch {
    /// `code`: any system.
    Any,
    /// `|code`: no system.
    NoSystem,
    /// `system|code` or `system|`.
    Is(String),
}

/// One parsed search value (one of the comma-separated OR alternatives).
#[derive(Debug, Clone, PartialEq)]
pub enum SearchValue {
    /// Token.
    Token {
        /// System constraint.
        system: SystemMatch,
        /// Code; `None` for `system|`.
        code: Option<String>,
        /// Raw text for `:text`.
        raw: String,
    },
    /// String (raw, normalised when compared).
    Str(String),
    /// Date with its prefix.
    Date(Prefix, DateRange),
    /// Reference: any of these normalised keys (`Type/id`, or a URL).
    Reference(Vec<String>),
    /// Number or quantity: prefix, value, implicit precision range, optional unit system and code.
    Quantity {
        /// Comparison.
        prefix: Prefix,
        /// The number as given.
        value: f64,
        /// Lower bound of the precision range.
        low: f64,
        /// Upper bound of the precision range.
        high: f64,
        /// Unit system, if given.
        system: Option<String>,
        /// Unit code, if given.
        code: Option<String>,
    },
    /// URI (exact match).
    Uri(String),
    /// Composite: one value per component.
    Composite(Vec<SearchValue>),
}

/// Search modifiers.
#[derive(Debug, Clone, PartialEq)]
pub enum Modifier {
    /// No modifier.
    None,
    /// `:missing=true|false`
    Missing(bool),
    /// `:exact` (string)
    Exact,
    /// `:contains` (string)
    Contains,
    /// `:text` (token)
    Text,
    /// `:not` (token)
    Not,
    /// `:Type` (reference)
    Type(String),
}

/// A chained reference search (`subject:Patient.name=peter`), resolved by the store.
#[derive(Debug, Clone, PartialEq)]
pub struct Chain {
    /// Candidate target types.
    pub targets: Vec<String>,
    /// The parameter on the target (`name`), with its own modifier text if any.
    pub param: String,
    /// The raw value.
    pub value: String,
}

/// One AND-ed search clause.
#[derive(Debug, Clone)]
pub struct Clause {
    /// The parameter name as written (including modifier), for links and messages.
    pub raw_name: String,
    /// The definition.
    pub param: Arc<ParamDef>,
    /// The modifier.
    pub modifier: Modifier,
    /// OR alternatives.
    pub values: Vec<SearchValue>,
    /// Set for chained parameters; `values` are filled in by the store.
    pub chain: Option<Chain>,
}

/// One `_sort` key.
#[derive(Debug, Clone)]
pub struct SortKey {
    /// The parameter sorted on.
    pub param: Arc<ParamDef>,
    /// Descending?
    pub descending: bool,
}

/// An `_include` or `_revinclude` directive.
#[derive(Debug, Clone, PartialEq)]
pub struct Include {
    /// Source resource type.
    pub source: String,
    /// Reference parameter on the source (`None` for `*`).
    pub param: Option<String>,
    /// Optional target type.
    pub target: Option<String>,
    /// `:iterate` given.
    pub iterate: bool,
}

/// `_summary` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Summary {
    /// Full resources.
    False,
    /// Only the total.
    Count,
    /// Without narrative.
    Data,
    /// Narrative, id, meta only.
    Text,
}

/// `_total` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TotalMode {
    /// No total.
    None,
    /// Estimated (we always know it exactly).
    Estimate,
    /// Exact.
    Accurate,
}

/// A fully parsed search on one resource type.
#[derive(Debug, Clone)]
pub struct SearchQuery {
    /// Resource type searched.
    pub ty: String,
    /// AND-ed clauses.
    pub clauses: Vec<Clause>,
    /// Sort order.
    pub sort: Vec<SortKey>,
    /// Page size.
    pub count: usize,
    /// Offset of the page.
    pub offset: usize,
    /// `_include`s.
    pub include: Vec<Include>,
    /// `_revinclude`s.
    pub revinclude: Vec<Include>,
    /// `_summary`.
    pub summary: Summary,
    /// `_total`.
    pub total: TotalMode,
    /// `_elements`.
    pub elements: Option<Vec<String>>,
    /// Parameters that were ignored (lenient handling) with reasons.
    pub warnings: Vec<String>,
    /// The parameters actually used, for the `self` link.
    pub used: Vec<(String, String)>,
}

/// Split on a separator not preceded by a backslash, then unescape `\,` `\|` `\$` `\\`.
pub(crate) fn split_escaped(s: &str, sep: char) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(&n) = chars.peek() {
                if n == sep {
                    cur.push(n);
                    chars.next();
                    continue;
                }
                cur.push(c);
                continue;
            }
            cur.push(c);
        } else if c == sep {
            out.push(std::mem::take(&mut cur));
        } else {
            cur.push(c);
        }
    }
    out.push(cur);
    out
}

fn unescape(s: &str) -> String {
    s.replace("\\,", ",").replace("\\|", "|").replace("\\$", "$").replace("\\\\", "\\")
}

fn bad(param: &str, value: &str, why: &str) -> FhirError {
    FhirError::BadRequest(format!("search parameter '{param}': value '{value}' {why}"))
}

fn parse_number(param: &str, raw: &str) -> FhirResult<(Prefix, f64, f64, f64)> {
    let (prefix, num) = split_prefix(raw);
    let value: f64 = num
        .parse()
        .map_err(|_| bad(param, raw, "is not a number (optionally prefixed: eq ne gt lt ge le sa eb ap)"))?;
    if !value.is_finite() {
        return Err(bad(param, raw, "is not a finite number"));
    }
    // implicit precision: half a unit of the last significant digit
    let half = if num.contains(['e', 'E']) {
        0.0
    } else {
        let decimals = num.split_once('.').map(|(_, d)| d.len()).unwrap_or(0);
        0.5 * 10f64.powi(-(decimals as i32))
    };
    Ok((prefix, value, value - half, value + half))
}

fn parse_value(def: &ParamDef, ty: ParamType, name: &str, raw: &str, modifier: &Modifier) -> FhirResult<SearchValue> {
    Ok(match ty {
        ParamType::Token => {
            if *modifier == Modifier::Text {
                return Ok(SearchValue::Token {
                    system: SystemMatch::Any,
                    code: None,
                    raw: unescape(raw),
                });
            }
            let parts = split_escaped(raw, '|');
            match parts.as_slice() {
                [code] => SearchValue::Token {
                    system: SystemMatch::Any,
                    code: Some(code.clone()),
                    raw: raw.to_string(),
                },
                [sys, code] => {
                    let system = if sys.is_empty() {
                        SystemMatch::NoSystem
                    } else {
                        SystemMatch::Is(sys.clone())
                    };
                    let code = if code.is_empty() { None } else { Some(code.clone()) };
                    if system == SystemMatch::NoSystem && code.is_none() {
                        return Err(bad(name, raw, "is empty: give code, system|code, |code or system|"));
                    }
                    SearchValue::Token {
                        system,
                        code,
                        raw: raw.to_string(),
                    }
                }
                _ => return Err(bad(name, raw, "has more than one unescaped '|'")),
            }
        }
        ParamType::String => SearchValue::Str(unescape(raw)),
        ParamType::Uri => SearchValue::Uri(unescape(raw)),
        ParamType::Date => {
            let (prefix, d) = split_prefix(raw);
            let range = parse_date(d).ok_or_else(|| bad(name, raw, "is not a FHIR date (YYYY, YYYY-MM, YYYY-MM-DD, or YYYY-MM-DDThh:mm[:ss[.sss]][Z|±hh:mm]), optionally prefixed with eq ne gt lt ge le sa eb ap"))?;
            SearchValue::Date(prefix, range)
        }
        ParamType::Number => {
            let (prefix, value, low, high) = parse_number(name, raw)?;
            SearchValue::Quantity {
                prefix,
                value,
                low,
                high,
                system: None,
                code: None,
            }
        }
        ParamType::Quantity => {
            let parts = split_escaped(raw, '|');
            let (num, system, code) = match parts.as_slice() {
                [n] => (n.clone(), None, None),
                [n, s, c] => (
                    n.clone(),
                    Some(s.clone()).filter(|s| !s.is_empty()),
                    Some(c.clone()).filter(|c| !c.is_empty()),
                ),
                _ => {
                    return Err(bad(
                        name,
                        raw,
                        "is not a quantity: use [prefix]number or [prefix]number|system|code",
                    ));
                }
            };
            let (prefix, value, low, high) = parse_number(name, &num)?;
            SearchValue::Quantity {
                prefix,
                value,
                low,
                high,
                system,
                code,
            }
        }
        ParamType::Reference => {
            let v = unescape(raw);
            let targets: Vec<String> = match modifier {
                Modifier::Type(t) => vec![t.clone()],
                _ => def.targets.clone(),
            };
            let keys = if v.contains('/') {
                let n = normalize_reference(&v);
                if let Modifier::Type(t) = modifier
                    && !n.starts_with(&format!("{t}/"))
                {
                    return Err(bad(name, raw, &format!("does not point at a {t}")));
                }
                vec![n]
            } else if targets.is_empty() {
                vec![v]
            } else {
                targets.iter().map(|t| format!("{t}/{v}")).collect()
            };
            SearchValue::Reference(keys)
        }
        ParamType::Composite => {
            let parts = split_escaped(raw, '$');
            if parts.len() != def.components.len() {
                return Err(bad(
                    name,
                    raw,
                    &format!("needs {} components separated by '$'", def.components.len()),
                ));
            }
            let mut vals = Vec::new();
            for (c, p) in def.components.iter().zip(parts.iter()) {
                vals.push(parse_value(def, c.ty, name, p, &Modifier::None)?);
            }
            SearchValue::Composite(vals)
        }
    })
}

fn parse_modifier(def: &ParamDef, name: &str, m: &str, value: &str) -> FhirResult<Modifier> {
    let unsupported = || {
        FhirError::NotSupported(format!(
            "modifier ':{m}' is not supported on {} parameter '{name}'",
            def.ty.as_str()
        ))
    };
    Ok(match m {
        "missing" => match value {
            "true" => Modifier::Missing(true),
            "false" => Modifier::Missing(false),
            other => return Err(bad(&format!("{name}:missing"), other, "must be true or false")),
        },
        "exact" if def.ty == ParamType::String => Modifier::Exact,
        "contains" if def.ty == ParamType::String => Modifier::Contains,
        "text" if def.ty == ParamType::Token => Modifier::Text,
        "not" if def.ty == ParamType::Token => Modifier::Not,
        t if def.ty == ParamType::Reference && t.chars().next().is_some_and(|c| c.is_ascii_uppercase()) => {
            if !def.targets.is_empty() && !def.targets.iter().any(|x| x == t) {
                return Err(FhirError::BadRequest(format!(
                    "'{t}' is not a target type of reference parameter '{name}' (targets: {})",
                    def.targets.join(", ")
                )));
            }
            Modifier::Type(t.to_string())
        }
        _ => return Err(unsupported()),
    })
}

impl SearchQuery {
    /// Parse a query for `ty`. With `strict`, unknown parameters are an error; otherwise
    /// they are ignored and reported in `warnings`.
    pub fn parse(ty: &str, params: &[(String, String)], reg: &Registry, strict: bool) -> FhirResult<SearchQuery> {
        if params.len() > MAX_PARAMS {
            return Err(FhirError::BadRequest(format!(
                "{} search parameters given; at most {MAX_PARAMS} are accepted in one search",
                params.len()
            )));
        }
        let mut q = SearchQuery {
            ty: ty.to_string(),
            clauses: Vec::new(),
            sort: Vec::new(),
            count: DEFAULT_COUNT,
            offset: 0,
            include: Vec::new(),
            revinclude: Vec::new(),
            summary: Summary::False,
            total: TotalMode::Accurate,
            elements: None,
            warnings: Vec::new(),
            used: Vec::new(),
        };
        for (name, value) in params {
            let used = (name.clone(), value.clone());
            match name.as_str() {
                "_count" => {
                    let n: usize = value.parse().map_err(|_| bad("_count", value, "is not a non-negative integer"))?;
                    if n > MAX_COUNT {
                        q.warnings.push(format!("_count={n} reduced to the maximum page size {MAX_COUNT}"));
                    }
                    q.count = n.min(MAX_COUNT);
                }
                "_offset" => q.offset = value.parse().map_err(|_| bad("_offset", value, "is not a non-negative integer"))?,
                "_sort" => {
                    for key in value.split(',').filter(|k| !k.is_empty()) {
                        let (desc, code) = match key.strip_prefix('-') {
                            Some(c) => (true, c),
                            None => (false, key),
                        };
                        let param = reg
                            .get(ty, code)
                            .ok_or_else(|| FhirError::BadRequest(format!("_sort: '{code}' is not a search parameter of {ty}")))?;
                        if param.ty == ParamType::Composite {
                            return Err(FhirError::NotSupported(format!(
                                "_sort on composite parameter '{code}' is not supported"
                            )));
                        }
                        q.sort.push(SortKey {
                            param: param.clone(),
                            descending: desc,
                        });
                    }
                }
                "_include" | "_revinclude" | "_include:iterate" | "_revinclude:iterate" => {
                    let inc = parse_include(name, value, reg)?;
                    if name.starts_with("_include") {
                        q.include.push(inc);
                    } else {
                        q.revinclude.push(inc);
                    }
                }
                "_summary" => {
                    q.summary = match value.as_str() {
                        "count" => Summary::Count,
                        "false" => Summary::False,
                        "data" => Summary::Data,
                        "text" => Summary::Text,
                        other => {
                            return Err(FhirError::NotSupported(format!(
                                "_summary={other} is not supported (use count, data, text or false)"
                            )));
                        }
                    }
                }
                "_total" => {
                    q.total = match value.as_str() {
                        "none" => TotalMode::None,
                        "estimate" => TotalMode::Estimate,
                        "accurate" => TotalMode::Accurate,
                        other => return Err(bad("_total", other, "must be none, estimate or accurate")),
                    }
                }
                "_elements" => q.elements = Some(value.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect()),
                "_format" => {
                    if !(value.contains("json")) {
                        return Err(FhirError::NotSupported(format!(
                            "_format={value} is not supported: this server speaks application/fhir+json only"
                        )));
                    }
                    continue;
                }
                "_pretty" => continue,
                _ => match parse_clause(ty, name, value, reg) {
                    Ok(Some(c)) => q.clauses.push(c),
                    Ok(None) => {
                        let msg = format!("unknown search parameter '{name}' for {ty}");
                        if strict {
                            return Err(FhirError::BadRequest(msg));
                        }
                        q.warnings.push(format!("{msg}: ignored"));
                        continue;
                    }
                    Err(e) => return Err(e),
                },
            }
            // paging parameters are added to links separately
            if name != "_offset" && name != "_count" {
                q.used.push(used);
            }
        }
        Ok(q)
    }
}

fn parse_include(name: &str, value: &str, reg: &Registry) -> FhirResult<Include> {
    let iterate = name.ends_with(":iterate");
    if value == "*" && name.starts_with("_revinclude") {
        return Err(FhirError::NotSupported(format!(
            "{name}=* is not supported: name the parameter, e.g. {name}=Observation:patient"
        )));
    }
    if value == "*" {
        return Ok(Include {
            source: "*".into(),
            param: None,
            target: None,
            iterate,
        });
    }
    let parts: Vec<&str> = value.split(':').collect();
    let (source, param, target) = match parts.as_slice() {
        [s, p] => (*s, *p, None),
        [s, p, t] => (*s, *p, Some(t.to_string())),
        _ => return Err(bad(name, value, "must be Type:param or Type:param:TargetType")),
    };
    let def = reg
        .get(source, param)
        .ok_or_else(|| FhirError::BadRequest(format!("{name}: '{param}' is not a search parameter of {source}")))?;
    if def.ty != ParamType::Reference {
        return Err(FhirError::BadRequest(format!(
            "{name}: '{source}:{param}' is not a reference parameter"
        )));
    }
    Ok(Include {
        source: source.to_string(),
        param: Some(param.to_string()),
        target,
        iterate,
    })
}

fn parse_clause(ty: &str, name: &str, value: &str, reg: &Registry) -> FhirResult<Option<Clause>> {
    // chain: subject:Patient.name or subject.name
    let (head, chain_rest) = match name.split_once('.') {
        Some((h, r)) => (h, Some(r)),
        None => (name, None),
    };
    let (code, modifier_text) = match head.split_once(':') {
        Some((c, m)) => (c, Some(m)),
        None => (head, None),
    };
    let Some(def) = reg.get(ty, code) else { return Ok(None) };
    if let Some(rest) = chain_rest {
        let depth = rest.matches('.').count() + 1;
        if depth > MAX_CHAIN_DEPTH {
            let shown: String = name.chars().take(80).collect();
            return Err(FhirError::BadRequest(format!(
                "chained parameter '{shown}{}' has {depth} links; at most {MAX_CHAIN_DEPTH} are supported",
                if shown.len() < name.len() { "..." } else { "" }
            )));
        }
        if def.ty != ParamType::Reference {
            return Err(FhirError::BadRequest(format!(
                "'{name}': only reference parameters can be chained, '{code}' is a {}",
                def.ty.as_str()
            )));
        }
        let targets = match modifier_text {
            Some(t) => vec![t.to_string()],
            None => def.targets.clone(),
        };
        let chain = Chain {
            targets,
            param: rest.to_string(),
            value: value.to_string(),
        };
        return Ok(Some(Clause {
            raw_name: name.to_string(),
            param: def.clone(),
            modifier: Modifier::None,
            values: Vec::new(),
            chain: Some(chain),
        }));
    }
    let modifier = match modifier_text {
        Some(m) => parse_modifier(def, name, m, value)?,
        None => Modifier::None,
    };
    let values = if let Modifier::Missing(_) = modifier {
        Vec::new()
    } else {
        split_escaped(value, ',')
            .iter()
            .map(|v| parse_value(def, def.ty, name, v, &modifier))
            .collect::<FhirResult<Vec<_>>>()?
    };
    if values.iter().any(|v| matches!(v, SearchValue::Str(s) if s.is_empty())) {
        return Err(bad(name, value, "is empty"));
    }
    Ok(Some(Clause {
        raw_name: name.to_string(),
        param: def.clone(),
        modifier,
        values,
        chain: None,
    }))
}
