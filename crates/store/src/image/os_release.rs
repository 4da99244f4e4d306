//! `os-release(5)`: which distribution an image is.

/// The fields of an `os-release` file the image page shows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OsRelease {
    /// `NAME`, e.g. `Debian GNU/Linux`.
    pub name: Option<String>,
    /// `PRETTY_NAME`, e.g. `Debian GNU/Linux 12 (bookworm)`.
    pub pretty_name: Option<String>,
    /// `VERSION_ID`, e.g. `12`.
    pub version_id: Option<String>,
    /// `VERSION`, e.g. `12 (bookworm)`.
    pub version: Option<String>,
    /// `ID`, e.g. `debian`.
    pub id: Option<String>,
}

impl OsRelease {
    /// Parses `KEY=value` lines: values may be quoted (`"…"`, `'…'`) with backslash escapes in
    /// double quotes; comments, blank lines and malformed lines are passed over.
    pub fn parse(text: &str) -> OsRelease {
        let mut release = OsRelease::default();
        for line in text.lines() {
            let line = line.trim();
            if line.starts_with('#') {
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            let Some(value) = unquote(value.trim()).filter(|v| !v.is_empty()) else {
                continue;
            };
            let field = match key.trim() {
                "NAME" => &mut release.name,
                "PRETTY_NAME" => &mut release.pretty_name,
                "VERSION_ID" => &mut release.version_id,
                "VERSION" => &mut release.version,
                "ID" => &mut release.id,
                _ => continue,
            };
            *field = Some(value);
        }
        release
    }

    /// What to call the distribution: `PRETTY_NAME`, else `NAME VERSION_ID`, else `NAME`.
    pub fn display_name(&self) -> Option<String> {
        if let Some(pretty) = &self.pretty_name {
            return Some(pretty.clone());
        }
        match (&self.name, &self.version_id) {
            (Some(name), Some(version)) => Some(format!("{name} {version}")),
            (Some(name), None) => Some(name.clone()),
            _ => None,
        }
    }
}

fn unquote(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let quote = match bytes.first() {
        Some(b'"') => b'"',
        Some(b'\'') => b'\'',
        _ => return Some(value.to_owned()),
    };
    if bytes.len() < 2 || bytes[bytes.len() - 1] != quote {
        return None;
    }
    let inner = &value[1..value.len() - 1];
    if quote == b'\'' {
        return Some(inner.to_owned());
    }
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            out.extend(chars.next());
        } else {
            out.push(c);
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::OsRelease;

    #[track_caller]
    fn check(text: &str, expected: OsRelease) {
        assert_eq!(OsRelease::parse(text), expected);
    }

    fn some(text: &str) -> Option<String> {
        Some(text.to_owned())
    }

    #[test]
    fn parses_distributions() {
        check(
            "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\n\
             VERSION_ID=\"12\"\nVERSION=\"12 (bookworm)\"\nVERSION_CODENAME=bookworm\nID=debian\n",
            OsRelease {
                name: some("Debian GNU/Linux"),
                pretty_name: some("Debian GNU/Linux 12 (bookworm)"),
                version_id: some("12"),
                version: some("12 (bookworm)"),
                id: some("debian"),
            },
        );
        check(
            "NAME=\"Alpine Linux\"\nID=alpine\nVERSION_ID=3.19.1\n",
            OsRelease {
                name: some("Alpine Linux"),
                version_id: some("3.19.1"),
                id: some("alpine"),
                ..OsRelease::default()
            },
        );
    }

    #[test]
    fn handles_quotes_comments_and_junk() {
        check(
            "# comment\n\n  NAME='Single Quoted'  \nPRETTY_NAME=\"say \\\"hi\\\" \\\\ \\$x\"\n\
             VERSION_ID=\"unterminated\nnonsense line\nID=\n",
            OsRelease {
                name: some("Single Quoted"),
                pretty_name: some("say \"hi\" \\ $x"),
                ..OsRelease::default()
            },
        );
    }

    #[test]
    fn display_name_falls_back() {
        let release = OsRelease::parse("NAME=Foo\nVERSION_ID=2\n");
        assert_eq!(release.display_name(), some("Foo 2"));
        assert_eq!(OsRelease::parse("").display_name(), None);
    }
}
