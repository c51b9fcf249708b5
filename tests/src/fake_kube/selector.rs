//! Label and field selectors, parsed and applied as the API server does.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

/// One term of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Requirement {
    /// `key`
    Exists(String),
    /// `!key`
    NotExists(String),
    /// `key=value` or `key==value`
    Equals(String, String),
    /// `key!=value` (also true when the label is absent)
    NotEquals(String, String),
    /// `key in (a,b)`
    In(String, BTreeSet<String>),
    /// `key notin (a,b)` (also true when the label is absent)
    NotIn(String, BTreeSet<String>),
}

/// A parsed `labelSelector`; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector(pub Vec<Requirement>);

impl LabelSelector {
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut requirements = Vec::new();
        for term in split_terms(text)? {
            requirements.push(parse_requirement(&term)?);
        }
        Ok(LabelSelector(requirements))
    }

    /// Whether an object's `metadata.labels` satisfy every term.
    pub fn matches(&self, labels: Option<&Map<String, Value>>) -> bool {
        let label = |key: &str| labels.and_then(|l| l.get(key)).and_then(Value::as_str);
        self.0.iter().all(|r| match r {
            Requirement::Exists(k) => label(k).is_some(),
            Requirement::NotExists(k) => label(k).is_none(),
            Requirement::Equals(k, v) => label(k) == Some(v.as_str()),
            Requirement::NotEquals(k, v) => label(k) != Some(v.as_str()),
            Requirement::In(k, vs) => label(k).is_some_and(|l| vs.contains(l)),
            Requirement::NotIn(k, vs) => !label(k).is_some_and(|l| vs.contains(l)),
        })
    }
}

/// Splits on the commas outside parentheses; no terms for an empty text.
fn split_terms(text: &str) -> Result<Vec<String>, String> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let (mut terms, mut current, mut depth) = (Vec::new(), String::new(), 0u32);
    for c in text.chars() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth = depth.checked_sub(1).ok_or_else(|| {
                    format!("unable to parse requirement: unbalanced ')' in {text:?}")
                })?;
            }
            ',' if depth == 0 => {
                terms.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    if depth != 0 {
        return Err(format!(
            "unable to parse requirement: unclosed '(' in {text:?}"
        ));
    }
    terms.push(current);
    Ok(terms.into_iter().map(|t| t.trim().to_owned()).collect())
}

fn parse_requirement(term: &str) -> Result<Requirement, String> {
    let err = |why: &str| format!("unable to parse requirement: {why}: {term:?}");
    if term.is_empty() {
        return Err(err("empty term"));
    }
    if let Some(key) = term.strip_prefix('!') {
        return Ok(Requirement::NotExists(
            key_of(key.trim()).map_err(|e| err(&e))?,
        ));
    }
    if let Some(open) = term.find('(') {
        let close = term
            .strip_suffix(')')
            .ok_or_else(|| err("expected ')' at the end"))?;
        let mut head = term[..open].split_whitespace();
        let (key, op) = (head.next().unwrap_or(""), head.next().unwrap_or(""));
        if head.next().is_some() {
            return Err(err("expected `key in (...)` or `key notin (...)`"));
        }
        let key = key_of(key).map_err(|e| err(&e))?;
        let values = close[open + 1..]
            .split(',')
            .map(|v| value_of(v.trim()).map_err(|e| err(&e)))
            .collect::<Result<BTreeSet<_>, _>>()?;
        return match op {
            "in" => Ok(Requirement::In(key, values)),
            "notin" => Ok(Requirement::NotIn(key, values)),
            _ => Err(err("expected `in` or `notin` before '('")),
        };
    }
    for (op, make) in [
        (
            "!=",
            Requirement::NotEquals as fn(String, String) -> Requirement,
        ),
        ("==", Requirement::Equals),
        ("=", Requirement::Equals),
    ] {
        if let Some((key, value)) = term.split_once(op) {
            let key = key_of(key.trim()).map_err(|e| err(&e))?;
            let value = value_of(value.trim()).map_err(|e| err(&e))?;
            return Ok(make(key, value));
        }
    }
    Ok(Requirement::Exists(key_of(term).map_err(|e| err(&e))?))
}

/// A label key: an optional DNS prefix and `/`, then a name of at most 63
/// alphanumerics, `-`, `_` or `.`, starting and ending alphanumeric.
fn key_of(key: &str) -> Result<String, String> {
    let name = match key.rsplit_once('/') {
        Some((prefix, name)) => {
            let ok = !prefix.is_empty()
                && prefix.len() <= 253
                && prefix
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
            if !ok {
                return Err(format!("invalid label key prefix {prefix:?}"));
            }
            name
        }
        None => key,
    };
    if name.is_empty() || !is_label_name(name) {
        return Err(format!("invalid label key {key:?}"));
    }
    Ok(key.to_owned())
}

/// A label value: empty, or a name as in [`key_of`].
fn value_of(value: &str) -> Result<String, String> {
    if value.is_empty() || is_label_name(value) {
        Ok(value.to_owned())
    } else {
        Err(format!("invalid label value {value:?}"))
    }
}

fn is_label_name(s: &str) -> bool {
    let edge = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    s.len() <= 63
        && edge(s.chars().next())
        && edge(s.chars().last())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// One term of a field selector.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldRequirement {
    pub field: String,
    pub value: String,
    /// `=`/`==` when true, `!=` when false.
    pub equal: bool,
}

/// A parsed `fieldSelector`; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector(pub Vec<FieldRequirement>);

impl FieldSelector {
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.trim().is_empty() {
            return Ok(FieldSelector::default());
        }
        let mut requirements = Vec::new();
        for term in text.split(',') {
            let term = term.trim();
            let parsed = [("!=", false), ("==", true), ("=", true)]
                .into_iter()
                .find_map(|(op, equal)| {
                    let (field, value) = term.split_once(op)?;
                    Some(FieldRequirement {
                        field: field.trim().to_owned(),
                        value: value.trim().to_owned(),
                        equal,
                    })
                })
                .filter(|r| !r.field.is_empty())
                .ok_or_else(|| format!("invalid selector: '{term}'; can't understand '{term}'"))?;
            requirements.push(parsed);
        }
        Ok(FieldSelector(requirements))
    }

    /// The first field the resource cannot be selected by, as an error.
    pub fn check_supported(&self, supported: impl Fn(&str) -> bool) -> Result<(), String> {
        match self.0.iter().find(|r| !supported(&r.field)) {
            Some(r) => Err(format!("field label not supported: {}", r.field)),
            None => Ok(()),
        }
    }

    /// Whether the object satisfies every term; `value_of` gives a field's
    /// value as the API server compares it (absent fields are "").
    pub fn matches(&self, value_of: impl Fn(&str) -> String) -> bool {
        self.0
            .iter()
            .all(|r| (value_of(&r.field) == r.value) == r.equal)
    }
}

/// The value of the dotted `field` of `object` as a field selector sees it:
/// strings as they are, booleans and numbers as text, anything absent "".
pub fn field_value(object: &Value, field: &str) -> String {
    let pointer = format!("/{}", field.replace('.', "/"));
    match object.pointer(&pointer) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(Value::Number(n)) => n.to_string(),
        _ => String::new(),
    }
}
