//! The flat `name=value` fields of a chat request, whether it came form-encoded or as a JSON
//! object, and the check that the required ones are there. Shared by Slack's slash commands and
//! Mattermost's webhooks and commands. Must never guess a value for a missing required field.

use crate::ChatError;

/// A request's top-level fields. An empty value counts as absent: platforms send `user_id=`
/// rather than leaving a field out, and an empty id or command is as useless as a missing one.
pub(crate) struct Fields {
    pairs: Vec<(String, String)>,
}

impl Fields {
    /// Reads an `application/x-www-form-urlencoded` body. Form decoding cannot fail (bytes that
    /// are not percent-escapes are taken literally), so a body in another format shows up as
    /// missing fields.
    pub(crate) fn from_form(body: &[u8]) -> Fields {
        let pairs = form_urlencoded::parse(body)
            .map(|(name, value)| (name.into_owned(), value.into_owned()))
            .collect();
        Fields { pairs }
    }

    /// Reads a JSON object body. Strings are taken as they are; numbers and booleans as their
    /// JSON text, because Mattermost sends `timestamp` as a number; `null` counts as absent.
    /// Arrays and objects are refused only when the field is one squall reads.
    pub(crate) fn from_json(body: &[u8], what: &str, read: &[&str]) -> Result<Fields, ChatError> {
        let value: serde_json::Value = serde_json::from_slice(body)
            .map_err(|err| ChatError::BadBody(format!("{what} is not JSON: {err}")))?;
        let serde_json::Value::Object(object) = value else {
            return Err(ChatError::BadBody(format!(
                "{what} is not a JSON object but {}",
                json_kind(&value)
            )));
        };
        let mut pairs = Vec::with_capacity(object.len());
        for (name, value) in object {
            let text = match value {
                serde_json::Value::String(text) => text,
                serde_json::Value::Number(number) => number.to_string(),
                serde_json::Value::Bool(flag) => flag.to_string(),
                serde_json::Value::Null => continue,
                other if read.contains(&name.as_str()) => {
                    return Err(ChatError::BadBody(format!(
                        "{what}: field `{name}` is {}, not a string",
                        json_kind(&other)
                    )));
                }
                _ => continue,
            };
            pairs.push((name, text));
        }
        Ok(Fields { pairs })
    }

    /// The first non-empty value of `name`. The first one wins, as in the web frameworks the
    /// platforms' own examples use, so a value appended to a signed body cannot override it.
    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
            .filter(|value| !value.is_empty())
    }

    /// `get` as an owned string, for optional struct fields.
    pub(crate) fn optional(&self, name: &str) -> Option<String> {
        self.get(name).map(str::to_owned)
    }

    /// `get` with absent read as the empty string, for fields that may legitimately be empty.
    pub(crate) fn or_empty(&self, name: &str) -> String {
        self.get(name).unwrap_or_default().to_owned()
    }

    /// Fails naming every one of `names` that is absent, so one log line shows all that is
    /// wrong with a platform's configuration rather than one field per attempt.
    pub(crate) fn require(&self, what: &str, names: &[&str]) -> Result<(), ChatError> {
        let missing: Vec<&str> = names
            .iter()
            .copied()
            .filter(|name| self.get(name).is_none())
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let list = missing
            .iter()
            .map(|name| format!("`{name}`"))
            .collect::<Vec<_>>()
            .join(", ");
        let noun = if missing.len() == 1 {
            "field"
        } else {
            "fields"
        };
        Err(ChatError::BadBody(format!(
            "{what} lacks required {noun} {list} (absent or empty)"
        )))
    }
}

/// A JSON value's kind in words, for error messages.
pub(crate) fn json_kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_fields_are_decoded_and_the_first_value_wins() {
        let fields = Fields::from_form(b"a=1&b=x%20y+z&a=2&c=");
        assert_eq!(fields.get("a"), Some("1"));
        assert_eq!(fields.get("b"), Some("x y z"));
        assert_eq!(fields.get("c"), None);
        assert_eq!(fields.or_empty("c"), "");
        assert_eq!(fields.get("d"), None);
    }

    #[test]
    fn require_names_every_missing_field() {
        let fields = Fields::from_form(b"a=1&c=");
        assert_eq!(fields.require("thing", &["a"]), Ok(()));
        assert_eq!(
            fields.require("thing", &["a", "b", "c"]),
            Err(ChatError::BadBody(
                "thing lacks required fields `b`, `c` (absent or empty)".into()
            ))
        );
        assert_eq!(
            fields.require("thing", &["b"]),
            Err(ChatError::BadBody(
                "thing lacks required field `b` (absent or empty)".into()
            ))
        );
    }

    #[test]
    fn json_scalars_become_text_and_containers_are_refused_only_when_read() {
        let body = br#"{"s":"x","n":1445532266,"b":true,"z":null,"arr":[1],"obj":{}}"#;
        let fields = Fields::from_json(body, "thing", &["s", "n"]).unwrap();
        assert_eq!(fields.get("s"), Some("x"));
        assert_eq!(fields.get("n"), Some("1445532266"));
        assert_eq!(fields.get("b"), Some("true"));
        assert_eq!(fields.get("z"), None);
        assert_eq!(fields.get("arr"), None);
        assert_eq!(
            Fields::from_json(body, "thing", &["arr"]).err(),
            Some(ChatError::BadBody(
                "thing: field `arr` is an array, not a string".into()
            ))
        );
    }

    #[test]
    fn json_that_is_not_an_object_is_refused() {
        assert_eq!(
            Fields::from_json(b"[1]", "thing", &[]).err(),
            Some(ChatError::BadBody(
                "thing is not a JSON object but an array".into()
            ))
        );
        let Some(ChatError::BadBody(message)) = Fields::from_json(b"{", "thing", &[]).err() else {
            panic!("truncated JSON must be refused as a bad body");
        };
        assert!(message.starts_with("thing is not JSON: "), "{message}");
    }
}
