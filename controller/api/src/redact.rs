//! Hiding credentials that URLs carry, for every message, status and source
//! that shows a URL someone wrote.

/// `s` with the user and password of every URL in it hidden
/// (`https://user:pass@host` → `https://***@host`): what messages, statuses
/// and sources show.
pub fn redact(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let end = tail
            .find(|c: char| c == '/' || c.is_whitespace() || c == '"' || c == '\'')
            .unwrap_or(tail.len());
        match tail[..end].rfind('@') {
            Some(at) => {
                out.push_str("***");
                out.push_str(&tail[at..end]);
            }
            None => out.push_str(&tail[..end]),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn credentials_in_urls_are_hidden() {
        assert_eq!(
            super::redact("fetching https://ada:s3cret@host/x.git failed; see http://h/y"),
            "fetching https://***@host/x.git failed; see http://h/y"
        );
        assert_eq!(super::redact("git@host:repo"), "git@host:repo");
        assert_eq!(
            super::redact("'ssh://u@h/r' and file:///p"),
            "'ssh://***@h/r' and file:///p"
        );
    }
}
