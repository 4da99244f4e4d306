//! What the HTTP front ends learn about a request and hand to the handlers: its id, and who
//! made it once a handler knows.

/// A request's id: the client's `X-Request-Id` when it is a sane short token, else one the
/// server made. Handlers find it in the request's extensions and carry it into the build and
/// deploy logs the request starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(String);

impl RequestId {
    /// The longest id taken from a client.
    pub const MAX_LEN: usize = 64;

    /// `text` as an id when it is 1 to 64 ASCII letters, digits, `-`, `_`, `.` or `:`; `None`
    /// otherwise (the server then makes one): an id goes into log lines and response headers,
    /// so nothing that could break either is taken.
    pub fn parse(text: &str) -> Option<RequestId> {
        let sane = !text.is_empty()
            && text.len() <= Self::MAX_LEN
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
        sane.then(|| RequestId(text.to_owned()))
    }

    /// An id made from 16 random bytes, as 32 hex digits.
    pub fn from_random(bytes: [u8; 16]) -> RequestId {
        RequestId(hex::encode(bytes))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Who made a request, as the handler that authenticated it names them (a user name, or
/// `anonymous`): set in the request's extensions for the request log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestUser(pub String);

#[cfg(test)]
mod tests {
    use super::RequestId;

    #[track_caller]
    fn check(text: &str, taken: bool) {
        assert_eq!(RequestId::parse(text).is_some(), taken, "{text:?}");
    }

    #[test]
    fn only_short_plain_tokens_are_taken() {
        check("abc-123", true);
        check("0f8e3c1d-6f4b-4a5e-9c1e-2b7d8a9f0e11", true);
        check("trace:span.1_2", true);
        check(&"a".repeat(64), true);
        check(&"a".repeat(65), false);
        check("", false);
        check("two words", false);
        check("line\nbreak", false);
        check("quote\"", false);
        check("é", false);
    }

    #[test]
    fn made_ids_are_hex() {
        let id = RequestId::from_random([0xab; 16]);
        assert_eq!(id.as_str(), "ab".repeat(16));
        assert!(RequestId::parse(id.as_str()).is_some());
    }
}
