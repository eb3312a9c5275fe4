//! Image exemption patterns.

/// `*`-glob match over bytes: `*` matches any run of characters, including `/`.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            backtrack = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((star, matched)) = backtrack {
            // Let the last `*` swallow one more character and retry.
            pi = star + 1;
            ti = matched + 1;
            backtrack = Some((star, matched + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&b| b == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match(
            "docker.io/library/busybox:*",
            "docker.io/library/busybox:1.37"
        ));
        assert!(!glob_match(
            "docker.io/library/busybox:*",
            "docker.io/library/busybox"
        ));
        assert!(glob_match("*", ""));
        assert!(glob_match("*/debug/*", "gcr.io/x/debug/tool:1"));
        assert!(glob_match("a*b*c", "aXXbYYc"));
        assert!(!glob_match("a*b*c", "aXXbYY"));
        assert!(glob_match("exact", "exact"));
        assert!(!glob_match("exact", "exactly"));
        // Pathological patterns stay linear-ish, not exponential.
        let text = "a".repeat(10_000);
        assert!(!glob_match("*a*a*a*a*a*b", &text));
    }
}
