//! Python literals as `ast.literal_eval` reads them (strings, numbers, `True`, `False`, `None`,
//! lists, tuples, dicts with string keys): how st2 reads back a value written as Python's repr
//! (an object passed to a string parameter, an array parameter given as `"['a', 'b']"`). Pure.

use serde_json::{Map, Value};

/// Python's `ast.literal_eval` for the literals JSON can hold: strings, numbers, `True`,
/// `False`, `None`, lists, tuples and dicts with string keys.
pub fn literal_eval(text: &str) -> Result<Value, String> {
    let mut parser = Literal {
        chars: text.chars().collect(),
        at: 0,
    };
    let value = parser.value()?;
    parser.blank();
    match parser.peek() {
        None => Ok(value),
        Some(c) => Err(format!("unexpected {c:?} at character {}", parser.at + 1)),
    }
}

struct Literal {
    chars: Vec<char>,
    at: usize,
}

impl Literal {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.at).copied()
    }

    fn blank(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.at += 1;
        }
    }

    fn fail<T>(&self, what: &str) -> Result<T, String> {
        match self.peek() {
            Some(c) => Err(format!("{what}, found {c:?} at character {}", self.at + 1)),
            None => Err(format!("{what}, found the end of the text")),
        }
    }

    fn value(&mut self) -> Result<Value, String> {
        self.blank();
        match self.peek() {
            Some('{') => self.dict(),
            Some('[') => self.sequence(']'),
            Some('(') => self.sequence(')'),
            Some('\'' | '"') => self.string().map(Value::String),
            Some('u' | 'U') if matches!(self.chars.get(self.at + 1), Some('\'' | '"')) => {
                self.at += 1;
                self.string().map(Value::String)
            }
            Some(c) if c == '-' || c == '+' || c == '.' || c.is_ascii_digit() => self.number(),
            Some(c) if c.is_alphabetic() => {
                let start = self.at;
                while self.peek().is_some_and(|c| c.is_alphanumeric() || c == '_') {
                    self.at += 1;
                }
                let word: String = self.chars[start..self.at].iter().collect();
                match word.as_str() {
                    "True" => Ok(Value::Bool(true)),
                    "False" => Ok(Value::Bool(false)),
                    "None" => Ok(Value::Null),
                    _ => Err(format!("{word:?} is not a literal")),
                }
            }
            _ => self.fail("expected a value"),
        }
    }

    /// The items of a list or tuple up to `close`.
    fn sequence(&mut self, close: char) -> Result<Value, String> {
        self.at += 1;
        let mut items = Vec::new();
        loop {
            self.blank();
            if self.peek() == Some(close) {
                self.at += 1;
                return Ok(Value::Array(items));
            }
            items.push(self.value()?);
            self.blank();
            match self.peek() {
                Some(',') => self.at += 1,
                Some(c) if c == close => {}
                _ => return self.fail(&format!("expected ',' or {close:?}")),
            }
        }
    }

    fn dict(&mut self) -> Result<Value, String> {
        self.at += 1;
        let mut map = Map::new();
        loop {
            self.blank();
            if self.peek() == Some('}') {
                self.at += 1;
                return Ok(Value::Object(map));
            }
            let key = match self.value()? {
                Value::String(key) => key,
                other => {
                    return Err(format!(
                        "a dict key must be a string to be sent as JSON, got {other}"
                    ))
                }
            };
            self.blank();
            if self.peek() != Some(':') {
                return self.fail("expected ':' after a dict key");
            }
            self.at += 1;
            let value = self.value()?;
            map.insert(key, value);
            self.blank();
            match self.peek() {
                Some(',') => self.at += 1,
                Some('}') => {}
                _ => return self.fail("expected ',' or '}'"),
            }
        }
    }

    fn string(&mut self) -> Result<String, String> {
        let Some(quote) = self.peek() else {
            return self.fail("expected a string");
        };
        self.at += 1;
        let mut out = String::new();
        loop {
            let Some(c) = self.peek() else {
                return self.fail("unterminated string");
            };
            self.at += 1;
            match c {
                c if c == quote => return Ok(out),
                '\\' => {
                    let Some(escaped) = self.peek() else {
                        return self.fail("unterminated string");
                    };
                    self.at += 1;
                    match escaped {
                        'n' => out.push('\n'),
                        'r' => out.push('\r'),
                        't' => out.push('\t'),
                        '0' => out.push('\0'),
                        'a' => out.push('\u{7}'),
                        'b' => out.push('\u{8}'),
                        'f' => out.push('\u{c}'),
                        'v' => out.push('\u{b}'),
                        '\n' => {}
                        'x' => out.push(self.code_point(2)?),
                        'u' => out.push(self.code_point(4)?),
                        'U' => out.push(self.code_point(8)?),
                        '\\' | '\'' | '"' => out.push(escaped),
                        // Python keeps an unknown escape as it is.
                        other => {
                            out.push('\\');
                            out.push(other);
                        }
                    }
                }
                c => out.push(c),
            }
        }
    }

    fn code_point(&mut self, digits: usize) -> Result<char, String> {
        let end = self.at + digits;
        let hex: String = self
            .chars
            .get(self.at..end)
            .map(|c| c.iter().collect())
            .unwrap_or_default();
        let c = u32::from_str_radix(&hex, 16)
            .ok()
            .filter(|_| hex.len() == digits)
            .and_then(char::from_u32);
        match c {
            Some(c) => {
                self.at = end;
                Ok(c)
            }
            None => self.fail(&format!("expected {digits} hex digits in an escape")),
        }
    }

    fn number(&mut self) -> Result<Value, String> {
        let start = self.at;
        let mut negative = false;
        while let Some(sign @ ('-' | '+')) = self.peek() {
            negative ^= sign == '-';
            self.at += 1;
            self.blank();
        }
        let digits_start = self.at;
        while self
            .peek()
            .is_some_and(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_'))
            || (matches!(self.peek(), Some('-' | '+'))
                && matches!(
                    self.at.checked_sub(1).and_then(|i| self.chars.get(i)),
                    Some('e' | 'E')
                ))
        {
            self.at += 1;
        }
        let digits: String = self.chars[digits_start..self.at]
            .iter()
            .filter(|c| **c != '_')
            .collect();
        let signed = if negative {
            format!("-{digits}")
        } else {
            digits.clone()
        };
        let is_float = digits.contains(['.', 'e', 'E']);
        if !is_float {
            if let Ok(i) = signed.parse::<i64>() {
                return Ok(Value::from(i));
            }
            if let Ok(u) = signed.parse::<u64>() {
                return Ok(Value::from(u));
            }
        }
        match signed.parse::<f64>() {
            Ok(f)
                if f.is_finite()
                    && digits.starts_with(|c: char| c.is_ascii_digit() || c == '.') =>
            {
                serde_json::Number::from_f64(f)
                    .map(Value::Number)
                    .ok_or_else(|| format!("{signed} cannot be sent as JSON"))
            }
            _ => {
                let text: String = self.chars[start..self.at].iter().collect();
                Err(format!("{text:?} is not a number"))
            }
        }
    }
}
