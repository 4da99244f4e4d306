//! Stored text shown on a terminal or in a log line. Names and fields come from requests
//! (a registry sign-in may carry any user name), so before such text is printed its control
//! characters are made visible: a newline cannot forge a second entry and an escape sequence
//! cannot reach the terminal.

use std::borrow::Cow;
use std::fmt::Write;

/// `text` with every control character (C0 including tab, DEL, C1), every bidirectional
/// formatting character (they reorder what a terminal shows) and the backslash written as an
/// escape: `\n`, `\r`, `\t`, `\\`, `\x1b`, `\u{202e}`. Text without any comes back borrowed.
pub fn escape_control(text: &str) -> Cow<'_, str> {
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut escaped = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => escaped.push_str("\\n"),
            '\r' => escaped.push_str("\\r"),
            '\t' => escaped.push_str("\\t"),
            '\\' => escaped.push_str("\\\\"),
            c if c.is_control() && (c as u32) < 0x80 => {
                let _ = write!(escaped, "\\x{:02x}", c as u32);
            }
            c if needs_escape(c) => {
                let _ = write!(escaped, "\\u{{{:x}}}", c as u32);
            }
            c => escaped.push(c),
        }
    }
    Cow::Owned(escaped)
}

fn needs_escape(c: char) -> bool {
    c == '\\' || c.is_control() || is_bidi_control(c)
}

/// The characters that change the direction text is shown in (Unicode's Bidi_Control).
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::escape_control;

    #[track_caller]
    fn check(input: &str, expected: &str) {
        assert_eq!(escape_control(input), expected);
    }

    #[test]
    fn plain_text_is_kept() {
        check("ann", "ann");
        check(
            "acme/shop.git-example-com x y",
            "acme/shop.git-example-com x y",
        );
        check("Zoë 名前 🚀", "Zoë 名前 🚀");
        assert!(matches!(
            escape_control("ann"),
            std::borrow::Cow::Borrowed(_)
        ));
    }

    #[test]
    fn control_characters_become_visible() {
        check("evil\nforged\x1b[31m", "evil\\nforged\\x1b[31m");
        check("a\r\tb", "a\\r\\tb");
        check("\0\x07\x7f", "\\x00\\x07\\x7f");
        check("\u{9b}31m", "\\u{9b}31m");
        check("back\\slash", "back\\\\slash");
        check("abc\u{202e}fed", "abc\\u{202e}fed");
        check("\u{2066}x\u{2069}", "\\u{2066}x\\u{2069}");
    }

    #[test]
    fn escaped_text_has_no_control_character_left() {
        let all: String = (0u32..0x3000).filter_map(char::from_u32).collect();
        let escaped = escape_control(&all);
        assert!(!escaped.chars().any(|c| c.is_control()));
        assert!(!escaped.contains('\u{202e}'));
    }
}
