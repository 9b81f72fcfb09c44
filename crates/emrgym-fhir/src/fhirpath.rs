//! A small FHIRPath subset: exactly what the official R4 SearchParameter expressions use
//! (paths, `|` unions, `as`/`.as()`/`.ofType()`, `.where(resolve() is T)`,
//! `.where(field='x')`, `.exists()`, and the `deceased` truthiness idiom), evaluated on JSON.

use serde_json::Value;

/// A parsed expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// `a | b | c`
    Union(Vec<Expr>),
    /// A navigation chain.
    Path {
        /// Where the chain starts.
        base: Base,
        /// Navigation steps applied in order.
        steps: Vec<Step>,
    },
    /// `X.exists() and X != false`: true when X is present and not the boolean `false`.
    Truthy(Box<Expr>),
}

/// The start of a path.
#[derive(Debug, Clone, PartialEq)]
pub enum Base {
    /// A resource type (or `Resource`/`DomainResource`): the focus, if its type matches.
    Root(String),
    /// A field of the focus (relative expressions, as in composite components).
    Field(String),
    /// A parenthesised sub-expression.
    Group(Box<Expr>),
}

/// One navigation step.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// `.name` (polymorphic `name[x]` elements are found by their type suffix).
    Field(String),
    /// `as T`, `.as(T)`, `.ofType(T)`: keep items of that type.
    As(String),
    /// `.where(resolve() is T)`: keep references that point at type T.
    ResolveIs(String),
    /// `.where(field = 'value')`.
    FieldEq(String, String),
    /// `.exists()`: a boolean.
    Exists,
}

/// A value found by evaluation, with its FHIR type when the path revealed it.
#[derive(Debug, Clone)]
pub struct Item<'a> {
    /// The JSON value.
    pub value: ItemValue<'a>,
    /// FHIR type name from a `[x]` suffix, e.g. `Quantity`, `DateTime`.
    pub ty: Option<String>,
}

/// Either a borrowed JSON node or a computed boolean.
#[derive(Debug, Clone)]
pub enum ItemValue<'a> {
    /// A node of the resource.
    Json(&'a Value),
    /// The result of `exists()` or a truthiness test.
    Bool(bool),
}

/// Parse failure; the message names the expression.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("cannot parse FHIRPath '{expr}': {reason}")]
pub struct ParseError {
    /// The expression text.
    pub expr: String,
    /// Why.
    pub reason: String,
}

/// Parse an expression.
pub fn parse(text: &str) -> Result<Expr, ParseError> {
    let err = |reason: &str| ParseError {
        expr: text.to_string(),
        reason: reason.to_string(),
    };
    // The one boolean idiom the R4 parameters use (Patient.deceased).
    if let Some((left, right)) = text.split_once(" and ") {
        let left = left.trim();
        let right = right.trim();
        let path = left
            .strip_suffix(".exists()")
            .ok_or_else(|| err("only 'X.exists() and X != false' is supported"))?;
        if right != format!("{path} != false") {
            return Err(err("only 'X.exists() and X != false' is supported"));
        }
        let inner = parse(path)?;
        return Ok(Expr::Truthy(Box::new(inner)));
    }
    let tokens = tokenize(text).map_err(|r| err(&r))?;
    let mut p = Parser {
        toks: tokens,
        pos: 0,
        depth: 0,
    };
    let e = p.union().map_err(|r| err(&r))?;
    if p.pos != p.toks.len() {
        return Err(err(&format!("unexpected '{}'", p.toks[p.pos].text())));
    }
    Ok(e)
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Sym(char),
    Op(String),
}

impl Tok {
    fn text(&self) -> String {
        match self {
            Tok::Ident(s) | Tok::Op(s) => s.clone(),
            Tok::Str(s) => format!("'{s}'"),
            Tok::Sym(c) => c.to_string(),
        }
    }
}

fn tokenize(s: &str) -> Result<Vec<Tok>, String> {
    let chars: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c.is_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            out.push(Tok::Ident(chars[start..i].iter().collect()));
        } else if c == '\'' {
            let start = i + 1;
            i += 1;
            while i < chars.len() && chars[i] != '\'' {
                i += 1;
            }
            if i >= chars.len() {
                return Err("unterminated string".into());
            }
            out.push(Tok::Str(chars[start..i].iter().collect()));
            i += 1;
        } else if c == '!' && chars.get(i + 1) == Some(&'=') {
            out.push(Tok::Op("!=".into()));
            i += 2;
        } else if "().|=,".contains(c) {
            out.push(Tok::Sym(c));
            i += 1;
        } else {
            return Err(format!("unexpected character '{c}'"));
        }
    }
    Ok(out)
}

/// Deepest parenthesis nesting the parser follows (the R4 expressions use 2).
pub const MAX_DEPTH: usize = 32;

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
    depth: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }
    fn eat_sym(&mut self, c: char) -> bool {
        if self.peek() == Some(&Tok::Sym(c)) {
            self.pos += 1;
            true
        } else {
            false
        }
    }
    fn expect_sym(&mut self, c: char) -> Result<(), String> {
        if self.eat_sym(c) { Ok(()) } else { Err(format!("expected '{c}'")) }
    }
    fn ident(&mut self) -> Result<String, String> {
        match self.peek().cloned() {
            Some(Tok::Ident(s)) => {
                self.pos += 1;
                Ok(s)
            }
            other => Err(format!(
                "expected a name, found {}",
                other.map(|t| t.text()).unwrap_or("end".into())
            )),
        }
    }
    fn union(&mut self) -> Result<Expr, String> {
        let mut parts = vec![self.term()?];
        while self.eat_sym('|') {
            parts.push(self.term()?);
        }
        Ok(if parts.len() == 1 { parts.remove(0) } else { Expr::Union(parts) })
    }
    fn term(&mut self) -> Result<Expr, String> {
        let base = if self.eat_sym('(') {
            self.depth += 1;
            if self.depth > MAX_DEPTH {
                return Err(format!("parentheses nested deeper than {MAX_DEPTH}"));
            }
            let e = self.union()?;
            self.depth -= 1;
            self.expect_sym(')')?;
            Base::Group(Box::new(e))
        } else {
            let name = self.ident()?;
            if name.chars().next().is_some_and(|c| c.is_uppercase()) {
                Base::Root(name)
            } else {
                Base::Field(name)
            }
        };
        let mut steps = Vec::new();
        loop {
            if self.eat_sym('.') {
                let name = self.ident()?;
                match name.as_str() {
                    "as" | "ofType" => {
                        self.expect_sym('(')?;
                        let t = self.ident()?;
                        self.expect_sym(')')?;
                        steps.push(Step::As(t));
                    }
                    "exists" => {
                        self.expect_sym('(')?;
                        self.expect_sym(')')?;
                        steps.push(Step::Exists);
                    }
                    "where" => {
                        self.expect_sym('(')?;
                        let first = self.ident()?;
                        if first == "resolve" {
                            self.expect_sym('(')?;
                            self.expect_sym(')')?;
                            if self.ident()? != "is" {
                                return Err("expected 'is' after resolve()".into());
                            }
                            let t = self.ident()?;
                            steps.push(Step::ResolveIs(t));
                        } else {
                            self.expect_sym('=')?;
                            match self.peek().cloned() {
                                Some(Tok::Str(v)) => {
                                    self.pos += 1;
                                    steps.push(Step::FieldEq(first, v));
                                }
                                _ => return Err("expected a string literal in where()".into()),
                            }
                        }
                        self.expect_sym(')')?;
                    }
                    _ => steps.push(Step::Field(name)),
                }
            } else if self.peek() == Some(&Tok::Ident("as".into())) {
                self.pos += 1;
                let t = self.ident()?;
                steps.push(Step::As(t));
            } else {
                break;
            }
        }
        Ok(Expr::Path { base, steps })
    }
}

/// The top-level element names an expression can reach on a resource (polymorphic names
/// without their type suffix), or `None` when it may need the whole resource.
pub fn top_fields(expr: &Expr) -> Option<Vec<String>> {
    match expr {
        Expr::Union(parts) => {
            let mut out = Vec::new();
            for p in parts {
                out.extend(top_fields(p)?);
            }
            Some(out)
        }
        Expr::Truthy(inner) => top_fields(inner),
        Expr::Path { base, steps } => match base {
            Base::Field(name) => Some(vec![name.clone()]),
            Base::Group(g) => top_fields(g),
            Base::Root(_) => match steps.first() {
                Some(Step::Field(name)) => Some(vec![name.clone()]),
                _ => None,
            },
        },
    }
}

/// Evaluate `expr` with `focus` as the resource (or element) of type `focus_type`.
pub fn eval<'a>(expr: &Expr, focus_type: &str, focus: &'a Value) -> Vec<Item<'a>> {
    match expr {
        Expr::Union(parts) => parts.iter().flat_map(|p| eval(p, focus_type, focus)).collect(),
        Expr::Truthy(inner) => {
            let items = eval(inner, focus_type, focus);
            if items.is_empty() {
                return Vec::new();
            }
            let is_false = items.iter().all(|i| matches!(i.value, ItemValue::Json(Value::Bool(false))));
            vec![Item {
                value: ItemValue::Bool(!is_false),
                ty: Some("boolean".into()),
            }]
        }
        Expr::Path { base, steps } => {
            let mut items: Vec<Item<'a>> = match base {
                Base::Root(name) => {
                    if name == focus_type || name == "Resource" || name == "DomainResource" {
                        vec![Item {
                            value: ItemValue::Json(focus),
                            ty: Some(focus_type.to_string()),
                        }]
                    } else {
                        Vec::new()
                    }
                }
                Base::Field(name) => field(
                    &[Item {
                        value: ItemValue::Json(focus),
                        ty: None,
                    }],
                    name,
                ),
                Base::Group(e) => eval(e, focus_type, focus),
            };
            for step in steps {
                items = apply(items, step);
                if items.is_empty() && !matches!(step, Step::Exists) {
                    // keep going only for exists(), which turns empty into false
                    continue;
                }
            }
            items
        }
    }
}

fn push_flat<'a>(out: &mut Vec<Item<'a>>, v: &'a Value, ty: Option<String>) {
    match v {
        Value::Array(a) => out.extend(a.iter().map(|x| Item {
            value: ItemValue::Json(x),
            ty: ty.clone(),
        })),
        Value::Null => {}
        other => out.push(Item {
            value: ItemValue::Json(other),
            ty,
        }),
    }
}

fn field<'a>(items: &[Item<'a>], name: &str) -> Vec<Item<'a>> {
    let mut out = Vec::new();
    for it in items {
        let ItemValue::Json(Value::Object(map)) = it.value else { continue };
        if let Some(v) = map.get(name) {
            push_flat(&mut out, v, None);
            continue;
        }
        // polymorphic element: name[x] stored as nameQuantity, nameDateTime, ...
        for (k, v) in map {
            if let Some(suffix) = k.strip_prefix(name)
                && suffix.chars().next().is_some_and(|c| c.is_ascii_uppercase())
            {
                push_flat(&mut out, v, Some(suffix.to_string()));
            }
        }
    }
    out
}

fn type_matches(ty: &Option<String>, wanted: &str, v: &ItemValue<'_>) -> bool {
    match ty {
        Some(t) => t.eq_ignore_ascii_case(wanted),
        None => match (wanted, v) {
            // non-polymorphic primitives: allow string-ish casts
            ("string", ItemValue::Json(Value::String(_))) => true,
            _ => false,
        },
    }
}

fn reference_type(v: &Value) -> Option<String> {
    let obj = v.as_object()?;
    if let Some(Value::String(t)) = obj.get("type") {
        return Some(t.clone());
    }
    let r = obj.get("reference")?.as_str()?;
    crate::values::split_reference(r).map(|(t, _)| t)
}

fn apply<'a>(items: Vec<Item<'a>>, step: &Step) -> Vec<Item<'a>> {
    match step {
        Step::Field(name) => field(&items, name),
        Step::As(t) => items.into_iter().filter(|i| type_matches(&i.ty, t, &i.value)).collect(),
        Step::ResolveIs(t) => items
            .into_iter()
            .filter(|i| match i.value {
                ItemValue::Json(v) => reference_type(v).as_deref() == Some(t.as_str()),
                ItemValue::Bool(_) => false,
            })
            .collect(),
        Step::FieldEq(f, want) => items
            .into_iter()
            .filter(|i| match i.value {
                ItemValue::Json(v) => v.get(f).and_then(Value::as_str) == Some(want.as_str()),
                ItemValue::Bool(_) => false,
            })
            .collect(),
        Step::Exists => vec![Item {
            value: ItemValue::Bool(!items.is_empty()),
            ty: Some("boolean".into()),
        }],
    }
}

#[cfg(test)]
mod tests {

    /// Issue 16: parentheses nested without bound recursed once per level.
    #[test]
    fn deep_parentheses_are_refused_not_recursed() {
        let deep = format!("{}name{}", "(".repeat(100_000), ")".repeat(100_000));
        let e = parse(&deep).unwrap_err();
        assert!(e.reason.contains("deeper than 32"), "{e}");
        let ok = format!("{}Patient.name{}", "(".repeat(MAX_DEPTH), ")".repeat(MAX_DEPTH));
        assert!(parse(&ok).is_ok());
    }

    use super::*;
    use serde_json::json;

    fn strings(items: &[Item<'_>]) -> Vec<String> {
        items
            .iter()
            .map(|i| match i.value {
                ItemValue::Json(v) => v.to_string(),
                ItemValue::Bool(b) => b.to_string(),
            })
            .collect()
    }

    #[test]
    fn polymorphic_as_and_union() {
        let obs = json!({"resourceType":"Observation","valueQuantity":{"value":3.1},
            "component":[{"valueQuantity":{"value":120}},{"valueString":"x"}]});
        let e = parse("(Observation.value as Quantity) | (Observation.component.value as Quantity)").unwrap();
        assert_eq!(
            strings(&eval(&e, "Observation", &obs)),
            vec![r#"{"value":3.1}"#, r#"{"value":120}"#]
        );
        let e = parse("Condition.onset.as(dateTime)").unwrap();
        assert!(eval(&e, "Observation", &obs).is_empty(), "root type filters");
    }

    #[test]
    fn where_resolve_and_field_eq() {
        let c = json!({"subject":{"reference":"Patient/1"},"telecom":[{"system":"email","value":"a@b"},{"system":"phone","value":"1"}]});
        let e = parse("Condition.subject.where(resolve() is Patient)").unwrap();
        assert_eq!(eval(&e, "Condition", &c).len(), 1);
        let e = parse("Condition.subject.where(resolve() is Group)").unwrap();
        assert_eq!(eval(&e, "Condition", &c).len(), 0);
        let e = parse("Patient.telecom.where(system='email')").unwrap();
        assert_eq!(strings(&eval(&e, "Patient", &c)), vec![r#"{"system":"email","value":"a@b"}"#]);
    }

    #[test]
    fn deceased_truthiness() {
        let e = parse("Patient.deceased.exists() and Patient.deceased != false").unwrap();
        assert_eq!(strings(&eval(&e, "Patient", &json!({"deceasedBoolean": false}))), vec!["false"]);
        assert_eq!(strings(&eval(&e, "Patient", &json!({"deceasedDateTime": "2020"}))), vec!["true"]);
        assert!(eval(&e, "Patient", &json!({})).is_empty());
    }

    #[test]
    fn top_fields_of_expressions() {
        let e = parse("Observation.subject.where(resolve() is Patient) | (Observation.value as Quantity)").unwrap();
        assert_eq!(top_fields(&e), Some(vec!["subject".to_string(), "value".to_string()]));
        assert_eq!(top_fields(&parse("Resource.id").unwrap()), Some(vec!["id".to_string()]));
        assert_eq!(top_fields(&parse("Observation").unwrap()), None);
    }

    #[test]
    fn parse_errors_name_expression() {
        let e = parse("Patient.name.select(given)").unwrap_err();
        assert!(e.to_string().contains("Patient.name.select"), "{e}");
        assert!(parse("Patient.name.where(given = 'x'").is_err());
    }
}
