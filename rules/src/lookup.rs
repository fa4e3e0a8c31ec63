//! Criteria keys: how a key such as `trigger.headers['X-Key']` or `trigger.list[0].x#2` is
//! parsed once, at load time, and looked up in a payload, the way st2 does it with jsonpath.
//!
//! Must never allocate per lookup beyond what the caller keeps: keys are parsed when a rule is
//! loaded, and a lookup only walks borrowed JSON.

use serde_json::Value;

/// One step of a key path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Segment {
    /// `.name`, `.'quoted'`, `['quoted']`.
    Field(String),
    /// `[3]`.
    Index(usize),
    /// `[*]` or `.*`: every element of a list or every value of a map.
    Wildcard,
}

/// A parsed criteria key: its root (`trigger`, or `item` inside `search`) and its path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyPath {
    pub root: String,
    pub segments: Vec<Segment>,
}

impl KeyPath {
    /// Parses a criteria key. A `#suffix` (outside quotes) is dropped: it only exists so that a
    /// YAML map can hold the same key twice.
    pub fn parse(key: &str) -> Result<KeyPath, String> {
        let chars: Vec<char> = key.chars().collect();
        let mut i = 0;
        let mut parts: Vec<Segment> = Vec::new();
        let mut expect_field = true;
        while i < chars.len() {
            let c = chars[i];
            match c {
                '#' => break,
                '.' => {
                    if expect_field {
                        return Err(format!("empty name before '.' at position {}", i + 1));
                    }
                    expect_field = true;
                    i += 1;
                    if i >= chars.len() {
                        return Err("key ends with '.'".to_string());
                    }
                }
                '[' => {
                    if parts.is_empty() && expect_field {
                        return Err(format!("'[' at position {} has nothing to index", i + 1));
                    }
                    let close = find_bracket_end(&chars, i)?;
                    let inner: String = chars[i + 1..close].iter().collect();
                    parts.push(parse_bracket(inner.trim())?);
                    i = close + 1;
                    expect_field = false;
                }
                '\'' | '"' if expect_field => {
                    let end = chars[i + 1..]
                        .iter()
                        .position(|&q| q == c)
                        .map(|p| p + i + 1)
                        .ok_or_else(|| format!("unclosed quote at position {}", i + 1))?;
                    parts.push(Segment::Field(chars[i + 1..end].iter().collect()));
                    i = end + 1;
                    expect_field = false;
                }
                _ if expect_field => {
                    let start = i;
                    while i < chars.len() && !matches!(chars[i], '.' | '[' | '#') {
                        i += 1;
                    }
                    let name: String = chars[start..i].iter().collect();
                    let name = name.trim().to_string();
                    if name.is_empty() {
                        return Err(format!("empty name at position {}", start + 1));
                    }
                    if name == "*" {
                        parts.push(Segment::Wildcard);
                    } else {
                        parts.push(Segment::Field(name));
                    }
                    expect_field = false;
                }
                _ => {
                    return Err(format!("unexpected '{c}' at position {}", i + 1));
                }
            }
        }
        if parts.is_empty() {
            return Err("empty key".to_string());
        }
        let root = match parts.remove(0) {
            Segment::Field(name) => name,
            _ => return Err("a key must start with a name such as 'trigger'".to_string()),
        };
        Ok(KeyPath {
            root,
            segments: parts,
        })
    }

    /// True when the path can select more than one value.
    pub fn has_wildcard(&self) -> bool {
        self.segments.contains(&Segment::Wildcard)
    }

    /// Looks the path up under `root_value` (the value the root name stands for). Like st2,
    /// when the path selects several values the first one is used; a missing value is `None`.
    pub fn lookup<'a>(&self, root_value: &'a Value) -> Option<&'a Value> {
        if !self.has_wildcard() {
            let mut current = root_value;
            for seg in &self.segments {
                current = step(current, seg)?;
            }
            return Some(current);
        }
        first_match(root_value, &self.segments)
    }
}

fn step<'a>(value: &'a Value, seg: &Segment) -> Option<&'a Value> {
    match (seg, value) {
        (Segment::Field(name), Value::Object(map)) => map.get(name),
        (Segment::Index(i), Value::Array(items)) => items.get(*i),
        _ => None,
    }
}

fn first_match<'a>(value: &'a Value, segments: &[Segment]) -> Option<&'a Value> {
    let Some((seg, rest)) = segments.split_first() else {
        return Some(value);
    };
    match seg {
        Segment::Wildcard => {
            let children: Box<dyn Iterator<Item = &Value>> = match value {
                Value::Array(items) => Box::new(items.iter()),
                Value::Object(map) => Box::new(map.values()),
                _ => return None,
            };
            children.into_iter().find_map(|c| first_match(c, rest))
        }
        _ => first_match(step(value, seg)?, rest),
    }
}

fn find_bracket_end(chars: &[char], open: usize) -> Result<usize, String> {
    let mut quote: Option<char> = None;
    for (j, &c) in chars.iter().enumerate().skip(open + 1) {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '\'' || c == '"' => quote = Some(c),
            None if c == ']' => return Ok(j),
            None => {}
        }
    }
    Err(format!("unclosed '[' at position {}", open + 1))
}

fn parse_bracket(inner: &str) -> Result<Segment, String> {
    if inner == "*" {
        return Ok(Segment::Wildcard);
    }
    for q in ['\'', '"'] {
        if inner.len() >= 2 && inner.starts_with(q) && inner.ends_with(q) {
            return Ok(Segment::Field(inner[1..inner.len() - 1].to_string()));
        }
    }
    inner
        .parse::<usize>()
        .map(Segment::Index)
        .map_err(|_| format!("'[{inner}]' is neither an index, '*' nor a quoted key"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn get(key: &str, payload: &Value) -> Option<Value> {
        KeyPath::parse(key).unwrap().lookup(payload).cloned()
    }

    #[test]
    fn parses_every_key_form() {
        let p = json!({
            "a": {"b": 1},
            "headers": {"X-Key": "k", "com.example.app": "web"},
            "list": [{"x": "first"}, {"x": "second"}],
        });
        assert_eq!(get("trigger.a.b", &p), Some(json!(1)));
        assert_eq!(get("trigger.headers['X-Key']", &p), Some(json!("k")));
        assert_eq!(get("trigger.headers[\"X-Key\"]", &p), Some(json!("k")));
        assert_eq!(get("trigger.headers.X-Key", &p), Some(json!("k")));
        assert_eq!(
            get("trigger.headers['com.example.app']", &p),
            Some(json!("web"))
        );
        assert_eq!(
            get("trigger.headers.'com.example.app'", &p),
            Some(json!("web"))
        );
        assert_eq!(get("trigger.list[1].x", &p), Some(json!("second")));
        assert_eq!(get("trigger.list[*].x", &p), Some(json!("first")));
        assert_eq!(get("trigger.a.b#2", &p), Some(json!(1)));
        assert_eq!(get("trigger.list[5].x", &p), None);
        assert_eq!(get("trigger.a.c", &p), None);
        assert_eq!(KeyPath::parse("trigger.a#x").unwrap().root, "trigger");
    }

    #[test]
    fn rejects_malformed_keys() {
        for bad in [
            "",
            ".a",
            "trigger..a",
            "trigger.a[",
            "trigger.a['x]",
            "trigger.a[x]",
        ] {
            assert!(KeyPath::parse(bad).is_err(), "{bad} should be rejected");
        }
    }
}
