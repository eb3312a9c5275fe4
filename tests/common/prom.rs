//! Reading the Prometheus text exposition.

/// The value of the sample `name{labels}` with exactly these labels (any order).
pub fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut want: Vec<(String, String)> = labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    want.sort();
    samples(text)
        .into_iter()
        .find(|(n, l, _)| n == name && *l == want)
        .map(|(_, _, v)| v)
}

/// The sum of the samples of `name` whose labels include `labels` (others may differ).
pub fn metric_where(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    samples(text)
        .into_iter()
        .filter(|(n, l, _)| {
            n == name
                && labels
                    .iter()
                    .all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v))
        })
        .map(|(_, _, v)| v)
        .sum()
}

/// Like [`metric`], 0 when the sample is absent (counters appear on first increment).
pub fn counter(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    metric(text, name, labels).unwrap_or(0.0)
}

/// Asserts a counter's value, showing the whole exposition when it differs.
#[track_caller]
pub fn assert_counter(text: &str, name: &str, labels: &[(&str, &str)], want: f64) {
    assert_eq!(
        counter(text, name, labels),
        want,
        "{name}{labels:?} in\n{text}"
    );
}

/// The sum of every sample of `name`.
pub fn metric_sum(text: &str, name: &str) -> f64 {
    samples(text)
        .into_iter()
        .filter(|(n, _, _)| n == name)
        .map(|(_, _, v)| v)
        .sum()
}

/// One sample of the exposition: name, labels sorted by name, value.
pub type Sample = (String, Vec<(String, String)>, f64);

/// Every sample: name, sorted labels, value.
pub fn samples(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, labels, rest) = match line.find('{') {
            Some(open) => {
                let close = line.rfind('}').expect("closing brace");
                (
                    &line[..open],
                    parse_labels(&line[open + 1..close]),
                    &line[close + 1..],
                )
            }
            None => {
                let (name, rest) = line.split_once(' ').expect("sample value");
                (name, Vec::new(), rest)
            }
        };
        let value = rest.split_whitespace().next().expect("value");
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse()
                .unwrap_or_else(|_| panic!("bad sample value in {line:?}")),
        };
        out.push((name.to_owned(), labels, value));
    }
    out
}

fn parse_labels(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' {
                break;
            }
            key.push(c);
            chars.next();
        }
        if key.is_empty() {
            break;
        }
        chars.next(); // '='
        assert_eq!(
            chars.next(),
            Some('"'),
            "label value must be quoted in {s:?}"
        );
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(other) => value.push(other),
                    None => break,
                },
                '"' => break,
                c => value.push(c),
            }
        }
        out.push((key.trim().to_owned(), value));
    }
    out.sort();
    out
}
