//! `nft -j list ruleset`: the JSON listing (libnftables JSON schema). Each expression is rendered
//! in nft's own syntax, which both reads as evidence and goes through the same rule reader as the
//! text listing, so the two forms cannot disagree about what a rule does.

use serde_json::Value;

use super::error::DumpError;
use super::model::{
    named_priority, Backend, BaseChain, ChainKind, Effect, Hook, Match, Policy, Rule, Ruleset,
    Table, TableFamily, Verdict,
};
use super::nft_text::parse_rule_text;

pub fn parse(text: &str, source: &str) -> Result<Ruleset, DumpError> {
    let doc: Value = serde_json::from_str(text).map_err(|error| DumpError::Json {
        source_name: source.to_string(),
        error,
    })?;
    let items = doc
        .get("nftables")
        .and_then(Value::as_array)
        .ok_or_else(|| {
            DumpError::format(source, "expected an object with an \"nftables\" array")
        })?;
    let mut ruleset = Ruleset::default();
    for (i, item) in items.iter().enumerate() {
        let at = |msg: String| DumpError::format(source, format!("nftables[{i}]: {msg}"));
        let Some(obj) = item.as_object() else {
            return Err(at("expected an object".into()));
        };
        if let Some(t) = obj.get("table") {
            let (family, name) = family_name(t, "name").map_err(at)?;
            table_index(&mut ruleset, &family, &name, source);
        } else if let Some(c) = obj.get("chain") {
            let (family, table) = family_name(c, "table").map_err(at)?;
            let name = str_field(c, "name").map_err(at)?;
            let t = table_index(&mut ruleset, &family, &table, source);
            let chain = ruleset.tables[t].chain_or_insert(&name);
            if let Some(hook) = c.get("hook").and_then(Value::as_str) {
                let hook = Hook::parse(hook).ok_or_else(|| at(format!("unknown hook {hook:?}")))?;
                let kind_text = c.get("type").and_then(Value::as_str).unwrap_or("filter");
                let kind = ChainKind::parse(kind_text)
                    .ok_or_else(|| at(format!("unknown chain type {kind_text:?}")))?;
                let priority = match c.get("prio") {
                    Some(Value::Number(n)) => n
                        .as_i64()
                        .and_then(|n| i32::try_from(n).ok())
                        .ok_or_else(|| at(format!("bad priority {n}")))?,
                    Some(Value::String(s)) => {
                        named_priority(s).ok_or_else(|| at(format!("unknown priority {s:?}")))?
                    }
                    _ => 0,
                };
                let policy = match c.get("policy").and_then(Value::as_str) {
                    Some("drop") => Policy::Drop,
                    _ => Policy::Accept,
                };
                chain.base = Some(BaseChain {
                    hook,
                    kind,
                    priority,
                    policy,
                });
            }
        } else if let Some(r) = obj.get("rule") {
            let (family, table) = family_name(r, "table").map_err(at)?;
            let chain = str_field(r, "chain").map_err(at)?;
            let exprs = r
                .get("expr")
                .and_then(Value::as_array)
                .ok_or_else(|| at("rule without an \"expr\" array".into()))?;
            let rule =
                rule_from_exprs(exprs).map_err(|m| at(format!("rule in chain {chain}: {m}")))?;
            let t = table_index(&mut ruleset, &family, &table, source);
            ruleset.tables[t].chain_or_insert(&chain).rules.push(rule);
        }
        // metainfo, set, map, element, flowtable, counter, ...: not rules.
    }
    Ok(ruleset)
}

fn table_index(ruleset: &mut Ruleset, family: &TableFamily, name: &str, source: &str) -> usize {
    if let Some(i) = ruleset
        .tables
        .iter()
        .position(|t| &t.family == family && t.name == name)
    {
        return i;
    }
    let mut table = Table::new(family.clone(), name, Backend::Nftables);
    table.source = source.to_string();
    ruleset.tables.push(table);
    ruleset.tables.len() - 1
}

fn str_field(v: &Value, key: &str) -> Result<String, String> {
    v.get(key)
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| format!("missing string field {key:?}"))
}

fn family_name(v: &Value, key: &str) -> Result<(TableFamily, String), String> {
    Ok((
        TableFamily::parse(&str_field(v, "family")?),
        str_field(v, key)?,
    ))
}

/// Renders a value in nft syntax; `quote` for strings that nft prints quoted (interface names).
fn render_value(v: &Value, quote: bool) -> Option<String> {
    Some(match v {
        Value::Number(n) => n.to_string(),
        Value::String(s) if s.starts_with('@') => s.clone(),
        Value::String(s)
            if quote
                || s.is_empty()
                || s.contains(|c: char| !c.is_ascii_graphic() || "{},;\"#".contains(c)) =>
        {
            format!("{s:?}")
        }
        Value::String(s) => s.clone(),
        Value::Array(items) => items
            .iter()
            .map(|i| render_value(i, quote))
            .collect::<Option<Vec<_>>>()?
            .join(","),
        Value::Object(o) => {
            if let Some(p) = o.get("prefix") {
                format!("{}/{}", p.get("addr")?.as_str()?, p.get("len")?.as_u64()?)
            } else if let Some(r) = o.get("range").and_then(Value::as_array) {
                format!(
                    "{}-{}",
                    render_value(r.first()?, false)?,
                    render_value(r.get(1)?, false)?
                )
            } else if let Some(s) = o.get("set").and_then(Value::as_array) {
                let items = s
                    .iter()
                    .map(|i| render_value(i, quote))
                    .collect::<Option<Vec<_>>>()?;
                format!("{{ {} }}", items.join(", "))
            } else if let Some(s) = o.get("set") {
                // A one-element set is printed without the array.
                format!("{{ {} }}", render_value(s, quote)?)
            } else {
                return None;
            }
        }
        _ => return None,
    })
}

/// Renders the left side of a match; the flag says whether string values are quoted.
fn render_left(v: &Value) -> Option<(String, bool)> {
    let o = v.as_object()?;
    if let Some(m) = o.get("meta") {
        let key = m.get("key")?.as_str()?;
        return Some((format!("meta {key}"), key.ends_with("name")));
    }
    if let Some(p) = o.get("payload") {
        let proto = p.get("protocol")?.as_str()?;
        let field = p.get("field")?.as_str()?;
        return Some((format!("{proto} {field}"), false));
    }
    if let Some(c) = o.get("ct") {
        if c.get("dir").is_some() {
            return None;
        }
        let key = c.get("key")?.as_str()?;
        return Some((format!("ct {key}"), false));
    }
    if let Some(and) = o.get("&").and_then(Value::as_array) {
        let (left, q) = render_left(and.first()?)?;
        let mask = render_value(and.get(1)?, false)?;
        return Some((format!("{left} & {mask}"), q));
    }
    None
}

fn render_expr(e: &Value) -> Option<String> {
    let o = e.as_object()?;
    let (key, body) = o.iter().next()?;
    Some(match key.as_str() {
        "match" => {
            let (left, quote) = render_left(body.get("left")?)?;
            let op = match body.get("op").and_then(Value::as_str).unwrap_or("==") {
                "==" | "in" => "==",
                "!=" => "!=",
                other @ ("<" | ">" | "<=" | ">=") => other,
                _ => return None,
            };
            let right = render_value(body.get("right")?, quote)?;
            format!("{left} {op} {right}")
        }
        "counter" => "counter".into(),
        "log" => "log".into(),
        "accept" | "drop" | "return" | "continue" | "notrack" | "masquerade" | "queue"
        | "reject" => key.clone(),
        "jump" | "goto" => format!("{key} {}", body.get("target")?.as_str()?),
        "redirect" => match body.get("port") {
            Some(p) => format!("redirect to :{}", render_value(p, false)?),
            None => "redirect".into(),
        },
        "dnat" | "snat" => {
            let addr = body.get("addr").and_then(Value::as_str);
            let port = body.get("port").and_then(|p| render_value(p, false));
            let to = match (addr, port) {
                (Some(a), Some(p)) if a.contains(':') => format!("[{a}]:{p}"),
                (Some(a), Some(p)) => format!("{a}:{p}"),
                (Some(a), None) => a.to_string(),
                (None, Some(p)) => format!(":{p}"),
                (None, None) => return Some(key.clone()),
            };
            format!("{key} to {to}")
        }
        "tproxy" => {
            let port = body.get("port").and_then(|p| render_value(p, false));
            format!("tproxy to :{}", port.unwrap_or_else(|| "0".into()))
        }
        "mangle" => {
            let (left, _) = render_left(body.get("key")?)?;
            let value = match body.get("value")? {
                v @ (Value::Number(_) | Value::String(_)) => render_value(v, false)?,
                other => render_left(other)?.0,
            };
            format!("{left} set {value}")
        }
        "xt" => format!(
            "xt {} {}",
            body.get("type")?.as_str()?,
            body.get("name")?.as_str()?
        ),
        _ => return None,
    })
}

/// Builds a rule from its expressions; expressions that cannot be rendered become unknown
/// matches (or an unknown verdict for verdict maps), never silently dropped.
fn rule_from_exprs(exprs: &[Value]) -> Result<Rule, String> {
    let mut matches = Vec::new();
    let mut effects = Vec::new();
    let mut verdict = None;
    let mut texts = Vec::new();
    for e in exprs {
        match render_expr(e) {
            Some(text) => {
                let part = parse_rule_text(&text, 0)?;
                matches.extend(part.matches);
                effects.extend(part.effects);
                if part.verdict.is_some() {
                    verdict = part.verdict;
                }
                texts.push(text);
            }
            None => {
                let raw = serde_json::to_string(e).unwrap_or_default();
                let kind = e
                    .as_object()
                    .and_then(|o| o.keys().next().cloned())
                    .unwrap_or_default();
                match kind.as_str() {
                    "vmap" | "fwd" => verdict = Some(Verdict::Unknown(raw.clone())),
                    "limit" | "match" | "lookup" => {
                        matches.push(Match::Unknown { text: raw.clone() })
                    }
                    _ => effects.push(Effect::Other),
                }
                texts.push(raw);
            }
        }
    }
    Ok(Rule {
        matches,
        effects,
        verdict,
        text: texts.join(" "),
        line: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netfilter::addr::IpFamily;
    use crate::netfilter::model::{Direction, OwnerId, OwnerKind, PROTO_TCP};

    const DOC: &str = r#"{"nftables": [{"metainfo": {"version": "1.0.6", "json_schema_version": 1}},
 {"table": {"family": "inet", "name": "istio-proxy-nat", "handle": 1}},
 {"chain": {"family": "inet", "table": "istio-proxy-nat", "name": "output", "handle": 2, "type": "nat", "hook": "output", "prio": -100, "policy": "accept"}},
 {"chain": {"family": "inet", "table": "istio-proxy-nat", "name": "istio-output", "handle": 6}},
 {"rule": {"family": "inet", "table": "istio-proxy-nat", "chain": "output", "handle": 13, "expr": [{"counter": {"packets": 0, "bytes": 0}}, {"jump": {"target": "istio-output"}}]}},
 {"rule": {"family": "inet", "table": "istio-proxy-nat", "chain": "istio-output", "handle": 14, "expr": [
   {"match": {"op": "==", "left": {"meta": {"key": "oifname"}}, "right": "lo"}},
   {"match": {"op": "!=", "left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": "127.0.0.1"}},
   {"match": {"op": "!=", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": {"set": [53, 15008]}}},
   {"match": {"op": "==", "left": {"meta": {"key": "skuid"}}, "right": 1337}},
   {"counter": {"packets": 0, "bytes": 0}}, {"jump": {"target": "istio-in-redirect"}}]}},
 {"rule": {"family": "inet", "table": "istio-proxy-nat", "chain": "istio-output", "handle": 15, "expr": [
   {"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "daddr"}}, "right": {"prefix": {"addr": "9.9.0.0", "len": 16}}}},
   {"jump": {"target": "istio-redirect"}}]}},
 {"rule": {"family": "inet", "table": "istio-proxy-nat", "chain": "istio-redirect", "handle": 16, "expr": [
   {"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": "tcp"}}, {"redirect": {"port": 15001}}]}},
 {"rule": {"family": "inet", "table": "istio-proxy-nat", "chain": "istio-output", "handle": 17, "expr": [
   {"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": ["established", "related"]}},
   {"mangle": {"key": {"meta": {"key": "mark"}}, "value": 1338}},
   {"xt": {"type": "match", "name": "owner"}}, {"accept": null}]}},
 {"rule": {"family": "ip", "table": "nat", "chain": "OUTPUT", "handle": 3, "expr": [{"vmap": {"key": {"meta": {"key": "l4proto"}}, "data": "@m"}}]}}
]}"#;

    #[test]
    fn reads_the_listing() {
        let rs = parse(DOC, "nft.json").unwrap();
        let t = &rs.tables[0];
        let out = t.chain("output").unwrap();
        assert_eq!(out.base.unwrap().priority, -100);
        assert_eq!(
            out.rules[0].verdict,
            Some(Verdict::Jump("istio-output".into()))
        );
        let r = &t.chain("istio-output").unwrap().rules;
        assert!(r[0].matches.contains(&Match::Family(IpFamily::V4)));
        assert!(r[0].matches.contains(&Match::Owner {
            kind: OwnerKind::Uid,
            negated: false,
            ids: vec![OwnerId::Range(1337, 1337)]
        }));
        assert!(r[0].matches.contains(&Match::Port {
            direction: Direction::Destination,
            negated: true,
            ranges: vec![(53, 53), (15008, 15008)],
            protocols: vec![PROTO_TCP]
        }));
        assert_eq!(
            r[0].text,
            "meta oifname == \"lo\" ip daddr != 127.0.0.1 tcp dport != { 53, 15008 } meta skuid == 1337 counter jump istio-in-redirect"
        );
        assert!(
            matches!(&r[1].matches[1], Match::Address { nets, .. } if nets[0].to_string() == "9.9.0.0/16")
        );
        assert_eq!(
            t.chain("istio-redirect").unwrap().rules[0].verdict,
            Some(Verdict::Redirect {
                ports: Some((15001, 15001))
            })
        );
        let xt = &r[2];
        assert!(xt
            .matches
            .iter()
            .any(|m| matches!(m, Match::Unknown { text } if text == "xt match owner")));
        assert_eq!(xt.verdict, Some(Verdict::Accept));
        let vmap = &rs.tables[1].chain("OUTPUT").unwrap().rules[0];
        assert!(matches!(vmap.verdict, Some(Verdict::Unknown(_))));
    }

    #[test]
    fn errors_name_the_item() {
        let err = parse(
            "{\"nftables\": [{\"rule\": {\"family\": \"inet\"}}]}",
            "x.json",
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "x.json: nftables[0]: missing string field \"table\""
        );
        let err = parse("[1,2", "x.json").unwrap_err();
        assert!(
            err.to_string().starts_with("x.json: not valid nft JSON"),
            "{err}"
        );
    }
}
