//! Compare introspection XML by meaning: for each interface, the set of its members with
//! their argument names, types and directions, property access and annotations. Formatting,
//! comments, member order and default directions do not matter.

use std::collections::{BTreeMap, BTreeSet};

/// interface name → set of member descriptions.
pub type Api = BTreeMap<String, BTreeSet<String>>;

/// The interfaces of `xml` whose names start with `prefix`.
pub fn parse(xml: &str, prefix: &str) -> Api {
    let mut api = Api::new();
    let mut interface: Option<String> = None;
    let mut member: Option<(String, String, Vec<String>)> = None; // (kind, name, parts)
    for (tag, attrs, self_closing) in tags(xml) {
        match tag.as_str() {
            "interface" => {
                let name = attrs.get("name").cloned().unwrap_or_default();
                interface = name.starts_with(prefix).then_some(name);
            }
            "/interface" => interface = None,
            "method" | "signal" | "property" if interface.is_some() => {
                let name = attrs.get("name").cloned().unwrap_or_default();
                let mut parts = Vec::new();
                if tag == "property" {
                    parts.push(format!(
                        "type={} access={}",
                        attrs.get("type").cloned().unwrap_or_default(),
                        attrs.get("access").cloned().unwrap_or_default()
                    ));
                }
                member = Some((tag.clone(), name, parts));
                if self_closing {
                    finish(&mut api, &interface, &mut member);
                }
            }
            "/method" | "/signal" | "/property" => finish(&mut api, &interface, &mut member),
            "arg" => {
                if let Some((kind, _, parts)) = member.as_mut() {
                    let direction = match (kind.as_str(), attrs.get("direction")) {
                        ("signal", _) => "",
                        (_, Some(d)) => d.as_str(),
                        (_, None) => "in",
                    };
                    parts.push(format!(
                        "arg {}:{}:{}",
                        attrs.get("name").cloned().unwrap_or_default(),
                        attrs.get("type").cloned().unwrap_or_default(),
                        direction
                    ));
                }
            }
            "annotation" => {
                if let Some((_, _, parts)) = member.as_mut() {
                    parts.push(format!(
                        "annotation {}={}",
                        attrs.get("name").cloned().unwrap_or_default(),
                        attrs.get("value").cloned().unwrap_or_default()
                    ));
                }
            }
            _ => {}
        }
    }
    api
}

fn finish(
    api: &mut Api,
    interface: &Option<String>,
    member: &mut Option<(String, String, Vec<String>)>,
) {
    if let (Some(iface), Some((kind, name, mut parts))) = (interface.as_ref(), member.take()) {
        // Argument order matters; annotations may come in any order.
        let (mut annotations, args): (Vec<String>, Vec<String>) =
            parts.drain(..).partition(|p| p.starts_with("annotation"));
        annotations.sort();
        let text = format!("{kind} {name} [{}] [{}]", args.join(", "), annotations.join(", "));
        api.entry(iface.clone()).or_default().insert(text);
    }
}

/// (tag name with '/' for closing tags, attributes, self-closing) for each element tag.
fn tags(xml: &str) -> Vec<(String, BTreeMap<String, String>, bool)> {
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find('<') {
        rest = &rest[start..];
        if rest.starts_with("<!--") {
            let end = rest.find("-->").map(|e| e + 3).unwrap_or(rest.len());
            rest = &rest[end..];
            continue;
        }
        let end = rest.find('>').unwrap_or(rest.len() - 1);
        let body = &rest[1..end];
        rest = &rest[end + 1..];
        if body.starts_with('!') || body.starts_with('?') {
            continue;
        }
        let self_closing = body.ends_with('/');
        let body = body.trim_end_matches('/');
        let mut words = body.splitn(2, char::is_whitespace);
        let name = words.next().unwrap_or("").to_string();
        let attrs = attributes(words.next().unwrap_or(""));
        out.push((name, attrs, self_closing));
    }
    out
}

fn attributes(text: &str) -> BTreeMap<String, String> {
    let mut attrs = BTreeMap::new();
    let mut rest = text;
    while let Some(eq) = rest.find('=') {
        let key = rest[..eq].trim().to_string();
        let after = rest[eq + 1..].trim_start();
        let quote = after.chars().next().unwrap_or('"');
        let value_start = &after[1..];
        let value_end = value_start.find(quote).unwrap_or(value_start.len());
        attrs.insert(key, value_start[..value_end].to_string());
        rest = &value_start[(value_end + 1).min(value_start.len())..];
    }
    attrs
}
