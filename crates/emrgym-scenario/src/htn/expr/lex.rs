//! The tokenizer: numbers, `'text'` strings with their escapes, `@` date literals, names,
//! `%variables`, `$this`, backquoted identifiers and operator symbols, each with its byte
//! position.

use super::parse::ParseError;
use super::value::parse_datetime;
use chrono::{DateTime, FixedOffset};

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Tok {
    Num(f64),
    Str(String),
    Date(DateTime<FixedOffset>),
    Ident(String),
    Var(String),
    This,
    Sym(&'static str),
    End,
}

pub(super) fn lex(text: &str) -> Result<Vec<(usize, Tok)>, ParseError> {
    let err = |pos: usize, m: &str| ParseError {
        pos,
        message: m.to_string(),
        text: text.to_string(),
    };
    let b = text.as_bytes();
    let mut i = 0;
    let mut out = Vec::new();
    while i < b.len() {
        let c = b[i] as char;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        if c.is_ascii_digit() {
            while i < b.len() && (b[i].is_ascii_digit() || (b[i] == b'.' && i + 1 < b.len() && b[i + 1].is_ascii_digit())) {
                i += 1;
            }
            let n: f64 = text[start..i].parse().map_err(|_| err(start, "bad number"))?;
            out.push((start, Tok::Num(n)));
            continue;
        }
        if c == '\'' {
            i += 1;
            let mut s = String::new();
            loop {
                let Some(ch) = text[i..].chars().next() else {
                    return Err(err(start, "unterminated string"));
                };
                i += ch.len_utf8();
                match ch {
                    '\'' => break,
                    '\\' => {
                        let Some(e) = text[i..].chars().next() else {
                            return Err(err(start, "unterminated string"));
                        };
                        i += e.len_utf8();
                        s.push(match e {
                            'n' => '\n',
                            't' => '\t',
                            other => other,
                        });
                    }
                    other => s.push(other),
                }
            }
            out.push((start, Tok::Str(s)));
            continue;
        }
        if c == '@' {
            i += 1;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || matches!(b[i], b'-' | b':' | b'+' | b'.')) {
                i += 1;
            }
            let d = parse_datetime(&text[start + 1..i]).ok_or_else(|| err(start, "bad date literal"))?;
            out.push((start, Tok::Date(d)));
            continue;
        }
        if c == '%' || c.is_ascii_alphabetic() || c == '_' || c == '$' {
            i += 1;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            let word = &text[start..i];
            let tok = if let Some(v) = word.strip_prefix('%') {
                if v.is_empty() {
                    return Err(err(start, "empty variable name"));
                }
                Tok::Var(v.to_string())
            } else if word == "$this" {
                Tok::This
            } else if word.starts_with('$') {
                return Err(err(start, "only $this is supported"));
            } else {
                Tok::Ident(word.to_string())
            };
            out.push((start, tok));
            continue;
        }
        if c == '`' {
            i += 1;
            let close = text[i..].find('`').ok_or_else(|| err(start, "unterminated `identifier`"))?;
            out.push((start, Tok::Ident(text[i..i + close].to_string())));
            i += close + 1;
            continue;
        }
        let two = text.get(i..i + 2).unwrap_or("");
        let sym: &'static str = match two {
            "!=" => "!=",
            "<=" => "<=",
            ">=" => ">=",
            _ => match c {
                '=' => "=",
                '~' => "~",
                '<' => "<",
                '>' => ">",
                '|' => "|",
                '+' => "+",
                '-' => "-",
                '&' => "&",
                '*' => "*",
                '/' => "/",
                '(' => "(",
                ')' => ")",
                '[' => "[",
                ']' => "]",
                '{' => "{",
                '}' => "}",
                '.' => ".",
                ',' => ",",
                _ => return Err(err(start, &format!("unexpected character '{c}'"))),
            },
        };
        i += sym.len();
        out.push((start, Tok::Sym(sym)));
    }
    out.push((text.len(), Tok::End));
    Ok(out)
}
