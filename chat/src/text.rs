//! Text clean-up shared by the platforms: turning the typographic quotes that chat clients and
//! operating systems substitute as one types back into the plain quotes the user pressed. Must
//! never touch anything else: every other character of a command is the user's.

/// Replaces curly double quotes with `"` and curly single quotes with `'`.
///
/// Slack's clients, and macOS/iOS autocorrection in any client, turn `"` into `“`/`”` as one
/// types. Alias matching strips only plain quotes from a parameter, so `cdos msg=“hello world”`
/// would otherwise reach the action with the curly quotes in its value.
pub(crate) fn plain_quotes(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\u{201C}' | '\u{201D}' | '\u{201E}' | '\u{201F}' => '"',
            '\u{2018}' | '\u{2019}' | '\u{201A}' | '\u{201B}' => '\'',
            other => other,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn curly_quotes_become_plain_and_nothing_else_changes() {
        assert_eq!(
            plain_quotes("say “hi” and ‘bye’ „x‟ ‚y‛ « é »"),
            "say \"hi\" and 'bye' \"x\" 'y' « é »"
        );
    }
}
