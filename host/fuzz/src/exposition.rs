//! A strict reader of the Prometheus text exposition, as a scraper reads
//! it: a sample line that does not parse, a second `# TYPE` for one name,
//! or the same series twice fails the whole scrape, so each is an error
//! here.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use switchyard::telemetry::metrics::APP_PREFIX;

pub struct Exposition {
    /// Component-emitted series (family and labels, `le` left out), by the
    /// component that emitted them.
    app_series: HashMap<String, BTreeSet<String>>,
}

impl Exposition {
    pub fn app_series(&self, component: &str) -> usize {
        self.app_series.get(component).map_or(0, BTreeSet::len)
    }
}

pub fn parse(text: &str) -> Result<Exposition, String> {
    let mut types: HashMap<&str, &str> = HashMap::new();
    let mut seen = HashSet::new();
    let mut app_series: HashMap<String, BTreeSet<String>> = HashMap::new();
    for (number, line) in text.lines().enumerate().map(|(i, line)| (i + 1, line)) {
        if line.is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let mut words = comment.trim_start().splitn(3, ' ');
            if words.next() == Some("TYPE") {
                let (Some(name), Some(kind)) = (words.next(), words.next()) else {
                    return Err(format!("line {number}: a TYPE line without a name and type"));
                };
                if !is_metric_name(name) {
                    return Err(format!("line {number}: TYPE for {name:?}"));
                }
                if types.insert(name, kind).is_some() {
                    return Err(format!("line {number}: a second TYPE line for {name}"));
                }
            }
            continue;
        }
        let (name, labels, value) = sample(line).map_err(|problem| format!("line {number}: {problem}: {line:?}"))?;
        if value.parse::<f64>().is_err() && !["+Inf", "-Inf", "NaN"].contains(&value) {
            return Err(format!("line {number}: value {value:?}"));
        }
        if !seen.insert((name.to_owned(), labels.clone())) {
            return Err(format!("line {number}: the same series twice"));
        }
        if let Some(family) = name.strip_prefix(APP_PREFIX).map(|_| family_of(name, &types)) {
            let Some(component) = labels.get("component") else {
                return Err(format!("line {number}: a component metric without its component"));
            };
            let mut key = family.to_owned();
            for (label, value) in labels.iter().filter(|(label, _)| *label != "le" && *label != "component") {
                key.push_str(&format!("\u{1f}{label}={value}"));
            }
            app_series.entry(component.clone()).or_default().insert(key);
        }
    }
    Ok(Exposition { app_series })
}

/// The family a sample belongs to: a histogram's `_bucket`, `_sum` and
/// `_count` samples belong to the histogram.
fn family_of<'a>(name: &'a str, types: &HashMap<&str, &str>) -> &'a str {
    for suffix in ["_bucket", "_sum", "_count"] {
        if let Some(family) = name.strip_suffix(suffix)
            && types.get(family) == Some(&"histogram")
        {
            return family;
        }
    }
    name
}

type Labels = BTreeMap<String, String>;

/// `name{label="value",...} value [timestamp]`.
fn sample(line: &str) -> Result<(&str, Labels, &str), String> {
    let name_end = line.find(['{', ' ']).ok_or("no value")?;
    let name = &line[..name_end];
    if !is_metric_name(name) {
        return Err(format!("metric name {name:?}"));
    }
    let mut labels = Labels::new();
    let mut rest = &line[name_end..];
    if let Some(mut inner) = rest.strip_prefix('{') {
        loop {
            if let Some(after) = inner.strip_prefix('}') {
                rest = after;
                break;
            }
            let eq = inner.find('=').ok_or("a label without a value")?;
            let label = &inner[..eq];
            if !is_label_name(label) {
                return Err(format!("label name {label:?}"));
            }
            let quoted = inner[eq + 1..].strip_prefix('"').ok_or("an unquoted label value")?;
            let (value, after) = label_value(quoted)?;
            if labels.insert(label.to_owned(), value).is_some() {
                return Err(format!("label {label} twice"));
            }
            inner = after.strip_prefix(',').unwrap_or(after);
            if !after.starts_with([',', '}']) {
                return Err("labels not separated by commas".to_owned());
            }
        }
    }
    let rest = rest.strip_prefix(' ').ok_or("no space before the value")?;
    let mut fields = rest.split(' ');
    let value = fields.next().ok_or("no value")?;
    match (fields.next(), fields.next()) {
        (None, _) => {}
        (Some(timestamp), None) if timestamp.parse::<i64>().is_ok() => {}
        _ => return Err("text after the value".to_owned()),
    }
    Ok((name, labels, value))
}

/// A quoted label value up to its closing quote, unescaped, and what
/// follows the quote.
fn label_value(quoted: &str) -> Result<(String, &str), String> {
    let mut value = String::new();
    let mut chars = quoted.char_indices();
    while let Some((at, c)) = chars.next() {
        match c {
            '"' => return Ok((value, &quoted[at + 1..])),
            '\\' => match chars.next() {
                Some((_, '\\')) => value.push('\\'),
                Some((_, '"')) => value.push('"'),
                Some((_, 'n')) => value.push('\n'),
                other => return Err(format!("escape \\{:?} in a label value", other.map(|(_, c)| c))),
            },
            c => value.push(c),
        }
    }
    Err("an unterminated label value".to_owned())
}

fn is_metric_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn is_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn a_valid_exposition_parses_and_counts_component_series() {
        let text = "# HELP app_latency Emitted.\n# TYPE app_latency histogram\n\
                    app_latency_bucket{component=\"a\",route=\"x\",le=\"1\"} 1\n\
                    app_latency_bucket{component=\"a\",route=\"x\",le=\"+Inf\"} 1\n\
                    app_latency_sum{component=\"a\",route=\"x\"} 0.5\n\
                    app_latency_count{component=\"a\",route=\"x\"} 1\n\
                    # TYPE app_orders counter\napp_orders{component=\"a\",note=\"say \\\"hi\\\"\\n\"} 3\n";
        let exposition = parse(text).map_err(|e| e.to_string());
        assert_eq!(exposition.as_ref().map(|e| e.app_series("a")), Ok(2));
    }

    #[test]
    fn what_breaks_a_scrape_is_refused() {
        for text in [
            "# TYPE x counter\n# TYPE x histogram\n",
            "x{a=\"1\"} 1\nx{a=\"1\"} 2\n",
            "x{a=\"1} 1\n",
            "x{a=\"1\"}1\n",
            "x{9=\"1\"} 1\n",
            "x 1 2 3\n",
            "x{a=\"\\q\"} 1\n",
            "x one\n",
            "app_x 1\n",
        ] {
            assert!(parse(text).is_err(), "{text:?} was accepted");
        }
    }
}
