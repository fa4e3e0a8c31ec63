//! YAQL (the `yaql` 1.x Python package, as StackStorm's Orquesta uses it): parse an expression,
//! evaluate it over JSON data, and render Orquesta's `<% ... %>` text form.
//!
//! Pure: no I/O, no clock, no global state. Functions that need the workflow (`ctx()`,
//! `result()`, `task_status()`, `st2kv()` ...) come from the caller through [`Context::call`]
//! (and [`Context::call_kw`] when named, `st2kv('k', decrypt => true)`).

#![deny(clippy::unwrap_used)]

mod eval;
mod library;
mod pyrepr;
mod syntax;

use serde_json::Value;

pub use pyrepr::{python_repr, python_str};

/// A parsed expression, cheap to evaluate many times.
#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    root: syntax::Node,
}

/// A syntax error with the character offset where parsing stopped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} at offset {offset}")]
pub struct ParseError {
    pub message: String,
    pub offset: usize,
}

impl ParseError {
    pub(crate) fn new(message: impl Into<String>, offset: usize) -> Self {
        ParseError {
            message: message.into(),
            offset,
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum EvalError {
    #[error("cannot parse expression '{expr}': {source}")]
    Parse {
        expr: String,
        #[source]
        source: ParseError,
    },
    #[error("{0}")]
    Failed(String),
    #[error("unable to resolve key '{0}'")]
    MissingKey(String),
    /// No function answers to the name: yaql's `NoFunctionRegisteredException`. A member
    /// access on something that is not a map is yaql's `#property#NAME` function, which no
    /// type but a map has.
    #[error("Unknown function \"{0}\"")]
    NoFunction(String),
}

impl EvalError {
    /// The Python exception Orquesta's YAQL evaluator would have caught, by class name.
    pub fn python_class(&self) -> &'static str {
        match self {
            EvalError::Parse { .. } => "YaqlGrammarException",
            EvalError::Failed(_) => "YaqlException",
            EvalError::MissingKey(_) => "KeyError",
            EvalError::NoFunction(_) => "NoFunctionRegisteredException",
        }
    }
}

/// An error of one `<% %>` of a text, with that expression as written (delimiters included),
/// which Orquesta's messages quote.
#[derive(Debug, Clone, PartialEq)]
pub struct LocatedError {
    pub expr: String,
    pub error: EvalError,
}

/// What an expression sees of its host.
pub trait Context {
    /// The value of `$` at the top of an expression.
    fn root(&self) -> &Value;
    /// A host function; `None` when the host does not know the name (the standard library
    /// then gets to try).
    fn call(&self, name: &str, args: &[Value]) -> Option<Result<Value, String>>;
    /// A host function called with named arguments too (`f(a, decrypt => true)`, yaql's
    /// keyword arguments), in the order written. A host that takes none answers only calls
    /// without them; a call with named arguments that no host function answers is an error
    /// naming them.
    fn call_kw(
        &self,
        name: &str,
        args: &[Value],
        kwargs: &[(String, Value)],
    ) -> Option<Result<Value, String>> {
        if kwargs.is_empty() {
            self.call(name, args)
        } else {
            None
        }
    }
}

pub fn parse(src: &str) -> Result<Expr, ParseError> {
    Ok(Expr {
        root: syntax::parse(src)?,
    })
}

impl Expr {
    /// The names of the functions and methods the expression calls, in order, repeats kept.
    pub fn calls(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.root.calls(&mut out);
        out
    }
}

/// Whether YAQL's standard library (as squall has it) answers to `name`, as a function or a
/// method; the host's functions (`ctx()`...) are the caller's to know.
pub fn is_standard_function(name: &str) -> bool {
    library::FUNCTIONS.contains(&name)
}

/// The functions and methods every `<% %>` of a text calls; the first that does not parse is
/// an error.
pub fn calls_in_text(src: &str) -> Result<Vec<String>, EvalError> {
    let mut out = Vec::new();
    for (start, end) in expressions_in(src) {
        let whole = &src[start..end];
        let stripped = whole
            .trim_matches(|c| c == '<' || c == '%' || c == '>')
            .trim();
        let parsed = parse(stripped).map_err(|source| EvalError::Parse {
            expr: whole.to_string(),
            source,
        })?;
        out.extend(parsed.calls());
    }
    Ok(out)
}

pub fn evaluate(expr: &Expr, ctx: &dyn Context) -> Result<Value, EvalError> {
    eval::evaluate(&expr.root, ctx)
}

/// Orquesta's `<%.*?%>` (without DOTALL: an expression does not span lines).
fn expressions_in(src: &str) -> Vec<(usize, usize)> {
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(open) = src[from..].find("<%") {
        let start = from + open;
        let body = start + 2;
        let Some(close) = src[body..].find("%>") else {
            break;
        };
        if src[body..body + close].contains('\n') {
            from = start + 1;
            continue;
        }
        let end = body + close + 2;
        found.push((start, end));
        from = end;
    }
    found
}

pub fn has_expressions(src: &str) -> bool {
    !expressions_in(src).is_empty()
}

/// Parses every `<% %>` of a text (nothing is evaluated): the first that does not parse.
pub fn check_text(src: &str) -> Result<(), EvalError> {
    for (start, end) in expressions_in(src) {
        let whole = &src[start..end];
        let stripped = whole
            .trim_matches(|c| c == '<' || c == '%' || c == '>')
            .trim();
        parse(stripped).map_err(|source| EvalError::Parse {
            expr: whole.to_string(),
            source,
        })?;
    }
    Ok(())
}

/// Python's truth of a value (what a `when: <% ... %>` condition takes).
pub fn is_true(value: &Value) -> bool {
    eval::truthy(value)
}

/// Orquesta's `YAQLEvaluator.evaluate`: a text that is exactly one `<% %>` gives the value itself
/// (any JSON type); otherwise each expression is replaced by Python's `str()` of its value
/// (`True`, `None`, `{'a': 1}`). A string result that itself holds `<% %>` is rendered again.
pub fn render_text(src: &str, ctx: &dyn Context) -> Result<Value, EvalError> {
    render_depth(src, ctx, 0).map_err(|e| e.error)
}

/// [`render_text`], its error naming the expression that failed.
pub fn render_text_located(src: &str, ctx: &dyn Context) -> Result<Value, LocatedError> {
    render_depth(src, ctx, 0)
}

fn render_depth(src: &str, ctx: &dyn Context, depth: usize) -> Result<Value, LocatedError> {
    if depth > 32 {
        return Err(LocatedError {
            expr: src.to_string(),
            error: EvalError::Failed("expression results nest more than 32 levels of <% %>".into()),
        });
    }
    let spans = expressions_in(src);
    let mut output = Value::String(src.to_string());
    for (start, end) in &spans {
        let whole = &src[*start..*end];
        // Python's `expr.strip("<%>").strip()`.
        let stripped = whole
            .trim_matches(|c| c == '<' || c == '%' || c == '>')
            .trim();
        let located = |error| LocatedError {
            expr: whole.to_string(),
            error,
        };
        let expr = parse(stripped).map_err(|source| {
            located(EvalError::Parse {
                expr: whole.to_string(),
                source,
            })
        })?;
        let mut result = evaluate(&expr, ctx).map_err(located)?;
        if let Value::String(s) = &result {
            if has_expressions(s) {
                result = render_depth(s, ctx, depth + 1)?;
            }
        }
        let current_len = match &output {
            Value::String(s) => s.chars().count(),
            _ => 0,
        };
        if spans.len() > 1 || current_len > whole.chars().count() {
            let text = match &output {
                Value::String(s) => s.clone(),
                other => python_str(other),
            };
            output = Value::String(text.replace(whole, &python_str(&result)));
        } else {
            output = result;
        }
    }
    Ok(output)
}
