//! YAQL's lexer and parser: source text to a syntax tree, with yaql 1.x's operator table.
//!
//! Precedence, tightest first, as `yaql.language.factory.YaqlFactory` builds it:
//! `.` `?.` / `[]` / unary `+ -` / `=~ !~` / `* / mod` / `+ -` /
//! `> < >= <= != = in` / `not` / `and` / `or` / `->` (right associative).
//! This file never evaluates anything.

use serde_json::Value;

use crate::ParseError;

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Node {
    Const(Value),
    /// A bare word: yaql evaluates it to the string itself (`foo` is `'foo'`).
    Keyword(String),
    /// `$` (empty name), `$x`, `$1`.
    Var(String),
    List(Vec<Arg>),
    Map(Vec<Arg>),
    Call {
        name: String,
        args: Vec<Arg>,
    },
    Dot {
        recv: Box<Node>,
        rhs: Box<Node>,
        safe: bool,
    },
    Index {
        recv: Box<Node>,
        args: Vec<Arg>,
    },
    Unary {
        op: &'static str,
        operand: Box<Node>,
    },
    Binary {
        op: &'static str,
        left: Box<Node>,
        right: Box<Node>,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Arg {
    Pos(Node),
    Named(Node, Node),
}

impl Node {
    /// The names of the functions and methods the expression calls, in order.
    pub(crate) fn calls(&self, out: &mut Vec<String>) {
        match self {
            Node::Const(_) | Node::Keyword(_) | Node::Var(_) => {}
            Node::List(args) | Node::Map(args) => args.iter().for_each(|a| a.calls(out)),
            Node::Call { name, args } => {
                out.push(name.clone());
                args.iter().for_each(|a| a.calls(out));
            }
            Node::Dot { recv, rhs, .. } => {
                recv.calls(out);
                rhs.calls(out);
            }
            Node::Index { recv, args } => {
                recv.calls(out);
                args.iter().for_each(|a| a.calls(out));
            }
            Node::Unary { operand, .. } => operand.calls(out),
            Node::Binary { left, right, .. } => {
                left.calls(out);
                right.calls(out);
            }
        }
    }
}

impl Arg {
    fn calls(&self, out: &mut Vec<String>) {
        match self {
            Arg::Pos(n) => n.calls(out),
            Arg::Named(k, v) => {
                k.calls(out);
                v.calls(out);
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Num(Value),
    Str(String),
    Dollar(String),
    Func(String),
    Word(String),
    Op(&'static str),
    End,
}

const SYMBOLS: &[&str] = &[
    "=>", "->", "?.", "!=", "<=", ">=", "=~", "!~", ".", "+", "-", "*", "/", "<", ">", "=", "[",
    "]", "{", "}", "(", ")", ",",
];
const WORD_OPS: &[&str] = &["and", "or", "not", "in", "mod"];

fn lex(src: &str) -> Result<Vec<(Tok, usize)>, ParseError> {
    let chars: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let word_char = |c: char| c.is_alphanumeric() || c == '_';
    while i < chars.len() {
        let c = chars[i];
        let start = i;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        if c.is_ascii_digit() {
            while i < chars.len() && chars[i].is_ascii_digit() {
                i += 1;
            }
            let mut is_float = false;
            if i + 1 < chars.len() && chars[i] == '.' && chars[i + 1].is_ascii_digit() {
                is_float = true;
                i += 1;
                while i < chars.len() && chars[i].is_ascii_digit() {
                    i += 1;
                }
            }
            let text: String = chars[start..i].iter().collect();
            let value = if is_float {
                text.parse::<f64>()
                    .ok()
                    .and_then(serde_json::Number::from_f64)
                    .map(Value::Number)
            } else {
                text.parse::<i64>().ok().map(Value::from)
            };
            let value =
                value.ok_or_else(|| ParseError::new(format!("bad number {text}"), start))?;
            out.push((Tok::Num(value), start));
            continue;
        }
        if c == '$' {
            i += 1;
            while i < chars.len() && word_char(chars[i]) {
                i += 1;
            }
            out.push((Tok::Dollar(chars[start + 1..i].iter().collect()), start));
            continue;
        }
        if c.is_alphabetic() || c == '_' {
            while i < chars.len() && word_char(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            if i < chars.len() && chars[i] == '(' {
                i += 1;
                out.push((Tok::Func(word), start));
                continue;
            }
            let tok = match word.as_str() {
                "true" => Tok::Num(Value::Bool(true)),
                "false" => Tok::Num(Value::Bool(false)),
                "null" => Tok::Num(Value::Null),
                w => match WORD_OPS.iter().find(|op| **op == w) {
                    Some(op) => Tok::Op(op),
                    None => Tok::Word(word),
                },
            };
            out.push((tok, start));
            continue;
        }
        if c == '\'' || c == '"' || c == '`' {
            i += 1;
            let mut raw = String::new();
            loop {
                match chars.get(i) {
                    None => return Err(ParseError::new("unterminated string", start)),
                    Some('\\') if i + 1 < chars.len() => {
                        raw.push('\\');
                        raw.push(chars[i + 1]);
                        i += 2;
                    }
                    Some(&ch) if ch == c => {
                        i += 1;
                        break;
                    }
                    Some(&ch) => {
                        raw.push(ch);
                        i += 1;
                    }
                }
            }
            let text = if c == '`' {
                raw.replace("\\`", "`")
            } else {
                decode_escapes(&raw)
            };
            out.push((Tok::Str(text), start));
            continue;
        }
        let rest: String = chars[i..chars.len().min(i + 2)].iter().collect();
        match SYMBOLS.iter().find(|s| rest.starts_with(**s)) {
            Some(sym) => {
                i += sym.chars().count();
                out.push((Tok::Op(sym), start));
            }
            None => {
                return Err(ParseError::new(
                    format!("unexpected character {c:?}"),
                    start,
                ))
            }
        }
    }
    out.push((Tok::End, chars.len()));
    Ok(out)
}

/// Python's `unicode-escape` for the sequences yaql's lexer decodes; others stay as written.
fn decode_escapes(raw: &str) -> String {
    let chars: Vec<char> = raw.chars().collect();
    let mut out = String::new();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] != '\\' || i + 1 >= chars.len() {
            out.push(chars[i]);
            i += 1;
            continue;
        }
        let hex = |from: usize, n: usize| -> Option<char> {
            let s: String = chars.get(from..from + n)?.iter().collect();
            char::from_u32(u32::from_str_radix(&s, 16).ok()?)
        };
        let (decoded, used) = match chars[i + 1] {
            'n' => (Some('\n'), 2),
            't' => (Some('\t'), 2),
            'r' => (Some('\r'), 2),
            'a' => (Some('\x07'), 2),
            'b' => (Some('\x08'), 2),
            'f' => (Some('\x0c'), 2),
            'v' => (Some('\x0b'), 2),
            '\\' => (Some('\\'), 2),
            '\'' => (Some('\''), 2),
            '"' => (Some('"'), 2),
            'x' => (hex(i + 2, 2), 4),
            'u' => (hex(i + 2, 4), 6),
            'U' => (hex(i + 2, 8), 10),
            _ => (None, 1),
        };
        match decoded {
            Some(ch) => {
                out.push(ch);
                i += used;
            }
            None => {
                out.push('\\');
                i += 1;
            }
        }
    }
    out
}

struct Parser {
    toks: Vec<(Tok, usize)>,
    pos: usize,
}

fn infix_power(op: &str) -> Option<(u8, bool)> {
    // (binding power, right associative)
    Some(match op {
        "." | "?." => (19, false),
        "[" => (18, false),
        "=~" | "!~" => (16, false),
        "*" | "/" | "mod" => (15, false),
        "+" | "-" => (14, false),
        ">" | "<" | ">=" | "<=" | "!=" | "=" | "in" => (13, false),
        "and" => (11, false),
        "or" => (10, false),
        "->" => (9, true),
        _ => return None,
    })
}

impl Parser {
    fn peek(&self) -> &Tok {
        &self.toks[self.pos.min(self.toks.len() - 1)].0
    }
    fn offset(&self) -> usize {
        self.toks[self.pos.min(self.toks.len() - 1)].1
    }
    fn next(&mut self) -> Tok {
        let t = self.peek().clone();
        self.pos += 1;
        t
    }
    fn error<T>(&self, what: &str) -> Result<T, ParseError> {
        let found = match self.peek() {
            Tok::End => "end of expression".to_string(),
            t => format!("{t:?}"),
        };
        Err(ParseError::new(
            format!("{what}, found {found}"),
            self.offset(),
        ))
    }
    fn expect(&mut self, op: &str) -> Result<(), ParseError> {
        if self.peek() == &Tok::Op(leak(op)) {
            self.pos += 1;
            Ok(())
        } else {
            self.error(&format!("expected '{op}'"))
        }
    }

    fn expr(&mut self, min_bp: u8) -> Result<Node, ParseError> {
        let mut left = self.prefix()?;
        while let Tok::Op(op) = self.peek() {
            let op = *op;
            let Some((bp, right_assoc)) = infix_power(op) else {
                break;
            };
            if bp <= min_bp {
                break;
            }
            self.pos += 1;
            left = match op {
                "[" => {
                    let args = self.args("]")?;
                    Node::Index {
                        recv: Box::new(left),
                        args,
                    }
                }
                "." | "?." => Node::Dot {
                    recv: Box::new(left),
                    rhs: Box::new(self.expr(bp)?),
                    safe: op == "?.",
                },
                _ => {
                    let right = self.expr(if right_assoc { bp - 1 } else { bp })?;
                    Node::Binary {
                        op,
                        left: Box::new(left),
                        right: Box::new(right),
                    }
                }
            };
        }
        Ok(left)
    }

    fn prefix(&mut self) -> Result<Node, ParseError> {
        match self.next() {
            Tok::Num(v) => Ok(Node::Const(v)),
            Tok::Str(s) => Ok(Node::Const(Value::String(s))),
            Tok::Dollar(name) => Ok(Node::Var(name)),
            Tok::Word(w) => Ok(Node::Keyword(w)),
            Tok::Func(name) => Ok(Node::Call {
                name,
                args: self.args(")")?,
            }),
            Tok::Op("(") => {
                let inner = self.expr(0)?;
                self.expect(")")?;
                Ok(inner)
            }
            Tok::Op("[") => Ok(Node::List(self.args("]")?)),
            Tok::Op("{") => Ok(Node::Map(self.args("}")?)),
            Tok::Op(op @ ("-" | "+")) => Ok(Node::Unary {
                op,
                operand: Box::new(self.expr(17)?),
            }),
            Tok::Op("not") => Ok(Node::Unary {
                op: "not",
                operand: Box::new(self.expr(12)?),
            }),
            _ => {
                self.pos -= 1;
                self.error("expected a value")
            }
        }
    }

    fn args(&mut self, close: &str) -> Result<Vec<Arg>, ParseError> {
        let mut args = Vec::new();
        if self.peek() == &Tok::Op(leak(close)) {
            self.pos += 1;
            return Ok(args);
        }
        loop {
            let first = self.expr(0)?;
            if self.peek() == &Tok::Op("=>") {
                self.pos += 1;
                let value = self.expr(0)?;
                args.push(Arg::Named(first, value));
            } else {
                if matches!(args.last(), Some(Arg::Named(..))) {
                    return self.error("positional argument after named argument");
                }
                args.push(Arg::Pos(first));
            }
            match self.next() {
                Tok::Op(",") => continue,
                Tok::Op(op) if op == close => return Ok(args),
                _ => {
                    self.pos -= 1;
                    return self.error(&format!("expected ',' or '{close}'"));
                }
            }
        }
    }
}

/// Maps a closing symbol to the `'static` spelling the lexer uses.
fn leak(op: &str) -> &'static str {
    SYMBOLS.iter().find(|s| **s == op).copied().unwrap_or("")
}

pub(crate) fn parse(src: &str) -> Result<Node, ParseError> {
    let toks = lex(src)?;
    let mut parser = Parser { toks, pos: 0 };
    let node = parser.expr(0)?;
    if parser.peek() != &Tok::End {
        return parser.error("unexpected input after the expression");
    }
    Ok(node)
}
