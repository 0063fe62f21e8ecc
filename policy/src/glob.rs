//! Path globs for routes: `*` matches any run of characters (including `/`),
//! everything else matches itself. Globs are matched against the path only,
//! never the query string.

/// Why a route's path glob is refused. Holds the glob as written.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidGlob {
    /// Neither `*` nor a path starting with `/`.
    #[error("path '{0}' must start with '/'")]
    NoLeadingSlash(String),
    /// Holds a space, `?`, `#` or a control character (a glob matches the
    /// path only, never the query or fragment).
    #[error("path '{0}' may not contain spaces, '?', '#' or control characters")]
    ForbiddenCharacter(String),
}

/// A compiled path glob.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct PathGlob {
    source: String,
    parts: Vec<String>,
}

impl PathGlob {
    pub(crate) fn parse(source: &str) -> Result<Self, InvalidGlob> {
        if !source.starts_with('/') && source != "*" {
            return Err(InvalidGlob::NoLeadingSlash(source.to_owned()));
        }
        if source.bytes().any(|b| b.is_ascii_control() || b == b' ' || b == b'?' || b == b'#') {
            return Err(InvalidGlob::ForbiddenCharacter(source.to_owned()));
        }
        Ok(PathGlob { source: source.to_owned(), parts: source.split('*').map(str::to_owned).collect() })
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.source
    }

    pub(crate) fn matches(&self, path: &str) -> bool {
        let Some((first, rest)) = self.parts.split_first() else { return false };
        let Some(mut tail) = path.strip_prefix(first.as_str()) else { return false };
        let Some((last, middle)) = rest.split_last() else { return tail.is_empty() };
        for part in middle {
            match tail.find(part.as_str()) {
                Some(i) => tail = &tail[i + part.len()..],
                None => return false,
            }
        }
        tail.len() >= last.len() && tail.ends_with(last.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::{InvalidGlob, PathGlob};

    #[test]
    fn globs() {
        let cases = [
            ("/v3/a/*", "/v3/a/123/calls.json", true),
            ("/v3/a/*", "/v3/a/", true),
            ("/v3/a/*", "/v3/a", false),
            ("/v3/a/*", "/v3/b/1", false),
            ("/v3/*/calls.json", "/v3/a/1/calls.json", true),
            ("/v3/*/calls.json", "/v3/a/1/calls.jsonx", false),
            ("/exact", "/exact", true),
            ("/exact", "/exact/", false),
            ("*", "/anything", true),
            ("/a*b*c", "/abc", true),
            ("/a*b*c", "/ac", false),
            ("/a*bc*bc", "/abcbc", true),
            ("/a*aa", "/aa", false),
        ];
        for (glob, path, want) in cases {
            assert_eq!(PathGlob::parse(glob).expect("valid").matches(path), want, "{glob} {path}");
        }
        assert_eq!(PathGlob::parse("v3"), Err(InvalidGlob::NoLeadingSlash("v3".into())));
        assert_eq!(PathGlob::parse("/a?b"), Err(InvalidGlob::ForbiddenCharacter("/a?b".into())));
    }
}
