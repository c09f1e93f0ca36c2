//! nftables text: the `nft list ruleset` listing (`table inet x { chain y { ... } }`) and the
//! command form `nft -f` reads (`add table`, `add chain ... { type ... }`, `add rule`,
//! `insert rule ... index N`, `flush`, `delete`), in any mix. Istio's nftables goldens use the
//! command form.

use super::addr::{IpFamily, IpNet};
use super::error::DumpError;
use super::iptables::{parse_nat_destination, parse_number};
use super::model::{
    named_priority, protocol_number, Backend, BaseChain, ChainKind, Direction, Effect, Hook,
    IfaceDirection, IfaceName, Match, OwnerId, OwnerKind, Policy, Rule, Ruleset, Table,
    TableFamily, Verdict,
};

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    /// A `"quoted"` string (quotes removed).
    Str(String),
    LBrace,
    RBrace,
    Semi,
    Comma,
    Newline,
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    line: usize,
}

fn tokenize(text: &str, source: &str) -> Result<Vec<Token>, DumpError> {
    let mut out = Vec::new();
    for (idx, raw) in text.lines().enumerate() {
        let line = idx + 1;
        let mut chars = raw.chars().peekable();
        while let Some(&c) = chars.peek() {
            match c {
                '#' => break,
                c if c.is_whitespace() => {
                    chars.next();
                }
                '{' | '}' | ';' | ',' => {
                    chars.next();
                    let tok = match c {
                        '{' => Tok::LBrace,
                        '}' => Tok::RBrace,
                        ';' => Tok::Semi,
                        _ => Tok::Comma,
                    };
                    out.push(Token { tok, line });
                }
                '"' => {
                    chars.next();
                    let mut s = String::new();
                    loop {
                        match chars.next() {
                            Some('\\') => {
                                if let Some(e) = chars.next() {
                                    s.push(e);
                                }
                            }
                            Some('"') => break,
                            Some(x) => s.push(x),
                            None => return Err(DumpError::syntax(source, line, "unclosed quote")),
                        }
                    }
                    out.push(Token {
                        tok: Tok::Str(s),
                        line,
                    });
                }
                _ => {
                    let mut w = String::new();
                    while let Some(&c) = chars.peek() {
                        if c.is_whitespace() || matches!(c, '{' | '}' | ';' | ',' | '"' | '#') {
                            break;
                        }
                        w.push(c);
                        chars.next();
                    }
                    out.push(Token {
                        tok: Tok::Word(w),
                        line,
                    });
                }
            }
        }
        out.push(Token {
            tok: Tok::Newline,
            line,
        });
    }
    Ok(out)
}

fn tok_text(t: &Tok) -> String {
    match t {
        Tok::Word(w) => w.clone(),
        Tok::Str(s) => format!("{s:?}"),
        Tok::LBrace => "{".into(),
        Tok::RBrace => "}".into(),
        Tok::Semi => ";".into(),
        Tok::Comma => ",".into(),
        Tok::Newline => "\n".into(),
    }
}

fn join(tokens: &[Token]) -> String {
    let mut s = String::new();
    for t in tokens {
        if matches!(t.tok, Tok::Comma) {
            s.push(',');
            continue;
        }
        if !s.is_empty() {
            s.push(' ');
        }
        s.push_str(&tok_text(&t.tok));
    }
    s
}

struct Parser<'a> {
    toks: Vec<Token>,
    pos: usize,
    source: &'a str,
    ruleset: Ruleset,
}

const FAMILIES: [&str; 6] = ["ip", "ip6", "inet", "arp", "bridge", "netdev"];

/// Parses `nft list ruleset` output or an `nft -f` command file.
pub fn parse(text: &str, source: &str) -> Result<Ruleset, DumpError> {
    let toks = tokenize(text, source)?;
    let mut p = Parser {
        toks,
        pos: 0,
        source,
        ruleset: Ruleset::default(),
    };
    p.top()?;
    Ok(p.ruleset)
}

impl<'a> Parser<'a> {
    fn line(&self) -> usize {
        self.toks
            .get(self.pos)
            .or_else(|| self.toks.last())
            .map_or(0, |t| t.line)
    }

    fn err(&self, msg: impl Into<String>) -> DumpError {
        DumpError::syntax(self.source, self.line(), msg)
    }

    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|t| &t.tok)
    }

    fn peek_word(&self) -> Option<&str> {
        match self.peek() {
            Some(Tok::Word(w)) => Some(w),
            _ => None,
        }
    }

    fn next_word(&mut self, what: &str) -> Result<String, DumpError> {
        match self.toks.get(self.pos).map(|t| t.tok.clone()) {
            Some(Tok::Word(w)) | Some(Tok::Str(w)) => {
                self.pos += 1;
                Ok(w)
            }
            other => Err(self.err(format!(
                "expected {what}, found {}",
                other.map_or("end of input".to_string(), |t| tok_text(&t)
                    .replace('\n', "end of line"))
            ))),
        }
    }

    fn eat(&mut self, tok: &Tok) -> bool {
        if self.peek() == Some(tok) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn skip_separators(&mut self) {
        while matches!(self.peek(), Some(Tok::Newline | Tok::Semi)) {
            self.pos += 1;
        }
    }

    /// Skips to the end of the statement, over balanced braces.
    fn skip_statement(&mut self) {
        let mut depth = 0usize;
        while let Some(t) = self.peek() {
            match t {
                Tok::LBrace => depth += 1,
                Tok::RBrace if depth == 0 => return,
                Tok::RBrace => depth -= 1,
                Tok::Newline | Tok::Semi if depth == 0 => return,
                _ => {}
            }
            self.pos += 1;
        }
    }

    /// The tokens of one rule: to the end of the line or `;`, newlines inside sets allowed.
    fn statement_tokens(&mut self) -> Vec<Token> {
        let start = self.pos;
        let mut depth = 0usize;
        while let Some(t) = self.peek() {
            match t {
                Tok::LBrace => depth += 1,
                Tok::RBrace if depth == 0 => break,
                Tok::RBrace => depth -= 1,
                Tok::Newline | Tok::Semi if depth == 0 => break,
                _ => {}
            }
            self.pos += 1;
        }
        self.toks[start..self.pos]
            .iter()
            .filter(|t| t.tok != Tok::Newline)
            .cloned()
            .collect()
    }

    /// `[family] name`; family defaults to `ip` as in nft.
    fn family_and_name(&mut self) -> Result<(TableFamily, String), DumpError> {
        let first = self.next_word("a table family or name")?;
        // `table inet x` or `table x` (family ip): a family word followed by a name.
        let name_follows = matches!(self.peek(), Some(Tok::Word(_) | Tok::Str(_)));
        if FAMILIES.contains(&first.as_str()) && name_follows {
            let name = self.next_word("a table name")?;
            Ok((TableFamily::parse(&first), name))
        } else {
            Ok((TableFamily::Ip, first))
        }
    }

    fn table_index(&mut self, family: &TableFamily, name: &str) -> usize {
        if let Some(i) = self
            .ruleset
            .tables
            .iter()
            .position(|t| &t.family == family && t.name == name)
        {
            return i;
        }
        let mut table = Table::new(family.clone(), name, Backend::Nftables);
        table.source = self.source.to_string();
        self.ruleset.tables.push(table);
        self.ruleset.tables.len() - 1
    }

    fn existing_table(&self, family: &TableFamily, name: &str) -> Result<usize, DumpError> {
        self.ruleset
            .tables
            .iter()
            .position(|t| &t.family == family && t.name == name)
            .ok_or_else(|| self.err(format!("no table {family} {name}")))
    }

    fn top(&mut self) -> Result<(), DumpError> {
        loop {
            self.skip_separators();
            let Some(tok) = self.peek().cloned() else {
                return Ok(());
            };
            let Tok::Word(word) = tok else {
                return Err(self.err(format!("unexpected {:?}", tok_text(&tok))));
            };
            self.pos += 1;
            match word.as_str() {
                "table" => {
                    let (family, name) = self.family_and_name()?;
                    let t = self.table_index(&family, &name);
                    if self.eat(&Tok::LBrace) {
                        self.table_body(t)?;
                    }
                }
                "add" | "create" | "insert" => self.add_command(&word)?,
                "flush" => self.flush_command()?,
                "delete" | "destroy" => self.delete_command()?,
                "replace" => {
                    return Err(self
                        .err("`replace rule` needs rule handles; cannot apply it to a saved dump"))
                }
                "define" | "include" | "redefine" | "undefine" => {
                    return Err(self.err(format!("`{word}` is not supported in a rule dump")))
                }
                "list" | "reset" | "monitor" | "describe" | "export" | "import" => {
                    self.skip_statement()
                }
                other => return Err(self.err(format!("unexpected {other:?}"))),
            }
        }
    }

    fn table_body(&mut self, t: usize) -> Result<(), DumpError> {
        loop {
            self.skip_separators();
            match self.peek().cloned() {
                None => return Err(self.err("table block is not closed by `}`")),
                Some(Tok::RBrace) => {
                    self.pos += 1;
                    return Ok(());
                }
                Some(Tok::Word(w)) => {
                    self.pos += 1;
                    match w.as_str() {
                        "chain" => {
                            let name = self.next_word("a chain name")?;
                            let table = &mut self.ruleset.tables[t];
                            table.chain_or_insert(&name);
                            if !self.eat(&Tok::LBrace) {
                                return Err(self.err("expected `{` after the chain name"));
                            }
                            self.chain_body(t, &name, true)?;
                        }
                        // Sets, maps, flowtables, stateful objects: their contents do not route
                        // packets by themselves; rules that use them are judged as unknown.
                        _ => self.skip_statement(),
                    }
                }
                Some(other) => return Err(self.err(format!("unexpected {:?}", tok_text(&other)))),
            }
        }
    }

    /// The inside of `chain NAME { ... }`; with `rules` false only the declaration may appear.
    fn chain_body(&mut self, t: usize, chain: &str, rules: bool) -> Result<(), DumpError> {
        loop {
            self.skip_separators();
            match self.peek().cloned() {
                None => return Err(self.err("chain block is not closed by `}`")),
                Some(Tok::RBrace) => {
                    self.pos += 1;
                    return Ok(());
                }
                Some(Tok::Word(w)) if w == "type" => {
                    self.pos += 1;
                    let base = self.chain_type()?;
                    let c = self.ruleset.tables[t].chain_or_insert(chain);
                    let policy = c.base.map(|b| b.policy).unwrap_or(Policy::Accept);
                    c.base = Some(BaseChain { policy, ..base });
                }
                Some(Tok::Word(w)) if w == "policy" => {
                    self.pos += 1;
                    let p = self.next_word("a policy")?;
                    let policy = match p.as_str() {
                        "accept" => Policy::Accept,
                        "drop" => Policy::Drop,
                        other => return Err(self.err(format!("unknown policy {other:?}"))),
                    };
                    if let Some(b) = self.ruleset.tables[t].chain_or_insert(chain).base.as_mut() {
                        b.policy = policy;
                    }
                }
                Some(Tok::Word(w)) if w == "comment" || w == "devices" || w == "flags" => {
                    self.pos += 1;
                    self.skip_statement();
                }
                Some(_) if rules => {
                    let line = self.line();
                    let toks = self.statement_tokens();
                    if toks.is_empty() {
                        continue;
                    }
                    let rule = rule_from_tokens(&toks, line)
                        .map_err(|m| DumpError::syntax(self.source, line, m))?;
                    self.ruleset.tables[t]
                        .chain_or_insert(chain)
                        .rules
                        .push(rule);
                }
                Some(other) => {
                    return Err(self.err(format!(
                        "unexpected {:?} in a chain declaration",
                        tok_text(&other)
                    )))
                }
            }
        }
    }

    /// `type nat hook output [device X] priority -100`
    fn chain_type(&mut self) -> Result<BaseChain, DumpError> {
        let kind_word = self.next_word("a chain type")?;
        let kind = ChainKind::parse(&kind_word)
            .ok_or_else(|| self.err(format!("unknown chain type {kind_word:?}")))?;
        let hook_kw = self.next_word("`hook`")?;
        if hook_kw != "hook" {
            return Err(self.err(format!("expected `hook`, found {hook_kw:?}")));
        }
        let hook_word = self.next_word("a hook")?;
        let hook = Hook::parse(&hook_word)
            .ok_or_else(|| self.err(format!("unknown hook {hook_word:?}")))?;
        if self.peek_word() == Some("device") {
            self.pos += 1;
            self.next_word("a device")?;
        }
        let mut priority = 0;
        if self.peek_word() == Some("priority") {
            self.pos += 1;
            let p = self.next_word("a priority")?;
            priority = match p.parse::<i32>() {
                Ok(n) => n,
                Err(_) => {
                    named_priority(&p).ok_or_else(|| self.err(format!("unknown priority {p:?}")))?
                }
            };
            // `filter + 10`, `mangle - 5`
            if let Some(op @ ("+" | "-")) = self.peek_word().map(str::to_string).as_deref() {
                self.pos += 1;
                let n: i32 = self
                    .next_word("a number")?
                    .parse()
                    .map_err(|_| self.err("bad priority offset"))?;
                priority += if op == "+" { n } else { -n };
            }
        }
        Ok(BaseChain {
            hook,
            kind,
            priority,
            policy: Policy::Accept,
        })
    }

    fn add_command(&mut self, verb: &str) -> Result<(), DumpError> {
        let what = self.next_word("what to add")?;
        match what.as_str() {
            "table" => {
                let (family, name) = self.family_and_name()?;
                let t = self.table_index(&family, &name);
                if self.eat(&Tok::LBrace) {
                    self.table_body(t)?;
                }
            }
            "chain" => {
                let (family, table) = self.family_and_name()?;
                let t = self.existing_table(&family, &table)?;
                let name = self.next_word("a chain name")?;
                self.ruleset.tables[t].chain_or_insert(&name);
                if self.eat(&Tok::LBrace) {
                    self.chain_body(t, &name, false)?;
                }
            }
            "rule" => {
                let (family, table) = self.family_and_name()?;
                let t = self.existing_table(&family, &table)?;
                let chain = self.next_word("a chain name")?;
                if self.ruleset.tables[t].chain(&chain).is_none() {
                    return Err(self.err(format!("no chain {chain} in table {family} {table}")));
                }
                let mut index: Option<usize> = None;
                match self.peek_word() {
                    Some("index") => {
                        self.pos += 1;
                        let n = self.next_word("an index")?;
                        index = Some(
                            n.parse()
                                .map_err(|_| self.err(format!("bad index {n:?}")))?,
                        );
                    }
                    Some("position" | "handle") => return Err(self.err(
                        "rule positions by handle cannot be applied to a saved dump; use `index`",
                    )),
                    _ => {}
                }
                let line = self.line();
                let toks = self.statement_tokens();
                let rule = rule_from_tokens(&toks, line)
                    .map_err(|m| DumpError::syntax(self.source, line, m))?;
                let missing = self.err("chain vanished");
                let rules = self.ruleset.tables[t]
                    .chain_mut(&chain)
                    .map(|c| &mut c.rules)
                    .ok_or(missing)?;
                let len = rules.len();
                let at = match (verb, index) {
                    ("insert", None) => 0,
                    ("insert", Some(i)) => i.min(len),
                    (_, None) => len,
                    // `add rule ... index N` places the rule after the rule at index N.
                    (_, Some(i)) => (i + 1).min(len),
                };
                rules.insert(at, rule);
            }
            _ => self.skip_statement(),
        }
        Ok(())
    }

    fn flush_command(&mut self) -> Result<(), DumpError> {
        let what = self.next_word("what to flush")?;
        match what.as_str() {
            "ruleset" => {
                // `flush ruleset [family]`
                if let Some(f) = self.peek_word().map(str::to_string) {
                    if FAMILIES.contains(&f.as_str()) {
                        self.pos += 1;
                        let fam = TableFamily::parse(&f);
                        self.ruleset.tables.retain(|t| t.family != fam);
                        return Ok(());
                    }
                }
                self.ruleset.tables.clear();
            }
            "table" => {
                let (family, name) = self.family_and_name()?;
                if let Some(t) = self
                    .ruleset
                    .tables
                    .iter_mut()
                    .find(|t| t.family == family && t.name == name)
                {
                    t.chains.iter_mut().for_each(|c| c.rules.clear());
                }
            }
            "chain" => {
                let (family, table) = self.family_and_name()?;
                let chain = self.next_word("a chain name")?;
                if let Some(t) = self
                    .ruleset
                    .tables
                    .iter_mut()
                    .find(|t| t.family == family && t.name == table)
                {
                    if let Some(c) = t.chain_mut(&chain) {
                        c.rules.clear();
                    }
                }
            }
            _ => self.skip_statement(),
        }
        Ok(())
    }

    fn delete_command(&mut self) -> Result<(), DumpError> {
        let what = self.next_word("what to delete")?;
        match what.as_str() {
            "table" => {
                let (family, name) = self.family_and_name()?;
                self.ruleset
                    .tables
                    .retain(|t| !(t.family == family && t.name == name));
            }
            "chain" => {
                let (family, table) = self.family_and_name()?;
                let chain = self.next_word("a chain name")?;
                if let Some(t) = self
                    .ruleset
                    .tables
                    .iter_mut()
                    .find(|t| t.family == family && t.name == table)
                {
                    t.chains.retain(|c| c.name != chain);
                }
            }
            "rule" => {
                return Err(
                    self.err("`delete rule` needs rule handles; cannot apply it to a saved dump")
                )
            }
            _ => self.skip_statement(),
        }
        Ok(())
    }
}

/// Keywords that start an expression or statement; an unknown expression runs up to the next one.
const STARTERS: [&str; 40] = [
    "meta",
    "oifname",
    "iifname",
    "oif",
    "iif",
    "skuid",
    "skgid",
    "mark",
    "ip",
    "ip6",
    "tcp",
    "udp",
    "sctp",
    "udplite",
    "dccp",
    "th",
    "ct",
    "counter",
    "log",
    "limit",
    "comment",
    "notrack",
    "accept",
    "drop",
    "reject",
    "return",
    "continue",
    "jump",
    "goto",
    "queue",
    "redirect",
    "dnat",
    "snat",
    "masquerade",
    "tproxy",
    "xt",
    "nfproto",
    "l4proto",
    "fib",
    "socket",
];

const META_KEYS: [&str; 9] = [
    "oifname", "iifname", "oif", "iif", "skuid", "skgid", "mark", "nfproto", "l4proto",
];

struct RuleCursor<'t> {
    toks: &'t [Token],
    pos: usize,
}

impl<'t> RuleCursor<'t> {
    /// The tokens read since `start`, kept as a match the judge does not understand.
    fn unknown_since(&self, start: usize) -> Match {
        Match::Unknown {
            text: join(&self.toks[start..self.pos]),
        }
    }

    /// Skips a value the parser does not know, then [`Self::unknown_since`].
    fn skip_unknown(&mut self, start: usize) -> Match {
        skip_unknown_value(self);
        self.unknown_since(start)
    }

    fn peek(&self) -> Option<&'t Tok> {
        self.toks.get(self.pos).map(|t| &t.tok)
    }
    fn peek_word(&self) -> Option<&'t str> {
        match self.peek() {
            Some(Tok::Word(w)) | Some(Tok::Str(w)) => Some(w),
            _ => None,
        }
    }
    fn word(&mut self, what: &str) -> Result<String, String> {
        match self.peek() {
            Some(Tok::Word(w)) | Some(Tok::Str(w)) => {
                self.pos += 1;
                Ok(w.clone())
            }
            _ => Err(format!("expected {what}")),
        }
    }
    fn at_end(&self) -> bool {
        self.pos >= self.toks.len()
    }
}

/// A value on the right of a match: one word (`80`, `10.0.0.0/8`, `"lo"`), a comma list
/// (`established,related`), or an anonymous set (`{ 53, 15008 }`). `None` for named sets/maps.
fn read_values(cur: &mut RuleCursor<'_>) -> Result<Option<Vec<String>>, String> {
    match cur.peek() {
        Some(Tok::LBrace) => {
            cur.pos += 1;
            let mut vals = Vec::new();
            loop {
                match cur.peek() {
                    Some(Tok::RBrace) => {
                        cur.pos += 1;
                        break;
                    }
                    Some(Tok::Comma) => cur.pos += 1,
                    Some(Tok::Word(w)) | Some(Tok::Str(w)) => {
                        vals.push(w.clone());
                        cur.pos += 1;
                    }
                    Some(Tok::LBrace) => return Err("nested set".into()),
                    _ => return Err("unclosed set".into()),
                }
            }
            Ok(Some(vals))
        }
        Some(Tok::Word(w)) if w.starts_with('@') || w.starts_with('$') => {
            cur.pos += 1;
            Ok(None)
        }
        Some(Tok::Word(_)) | Some(Tok::Str(_)) => {
            let mut vals = vec![cur.word("a value")?];
            while cur.peek() == Some(&Tok::Comma) {
                cur.pos += 1;
                vals.push(cur.word("a value")?);
            }
            Ok(Some(vals))
        }
        _ => Err("expected a value".into()),
    }
}

/// Reads an optional comparison operator. Returns (negated, range-bounds operator).
fn read_operator(cur: &mut RuleCursor<'_>) -> (bool, Option<String>) {
    match cur.peek_word() {
        Some("==" | "eq") => {
            cur.pos += 1;
            (false, None)
        }
        Some("!=" | "ne") => {
            cur.pos += 1;
            (true, None)
        }
        Some(op @ ("<" | ">" | "<=" | ">=" | "lt" | "gt" | "le" | "ge")) => {
            cur.pos += 1;
            (false, Some(op.to_string()))
        }
        _ => (false, None),
    }
}

fn port_value(v: &str) -> Result<(u16, u16), String> {
    let named = |n: &str| -> Option<u16> {
        Some(match n {
            "http" => 80,
            "https" => 443,
            "domain" => 53,
            "ssh" => 22,
            "http-alt" => 8080,
            _ => return n.parse().ok(),
        })
    };
    match v.split_once('-') {
        Some((a, b)) => {
            let a = named(a).ok_or_else(|| format!("bad port {v:?}"))?;
            let b = named(b).ok_or_else(|| format!("bad port {v:?}"))?;
            Ok((a.min(b), a.max(b)))
        }
        None => {
            let p = named(v).ok_or_else(|| format!("bad port {v:?}"))?;
            Ok((p, p))
        }
    }
}

fn bound_range(op: &str, v: u16) -> (u16, u16) {
    match op {
        "<" | "lt" => (0, v.saturating_sub(1)),
        "<=" | "le" => (0, v),
        ">" | "gt" => (v.saturating_add(1), u16::MAX),
        _ => (v, u16::MAX),
    }
}

/// Parses one rule written on one line (as the JSON reader renders expressions).
pub(crate) fn parse_rule_text(text: &str, line: usize) -> Result<Rule, String> {
    let toks = tokenize(text, "rule").map_err(|e| e.to_string())?;
    let toks: Vec<Token> = toks.into_iter().filter(|t| t.tok != Tok::Newline).collect();
    rule_from_tokens(&toks, line)
}

/// Turns the tokens of one nft rule into matches, effects and a verdict.
fn rule_from_tokens(toks: &[Token], line: usize) -> Result<Rule, String> {
    let mut cur = RuleCursor { toks, pos: 0 };
    let mut matches = Vec::new();
    let mut effects = Vec::new();
    let mut verdict = None;

    while !cur.at_end() {
        let start = cur.pos;
        let word = match cur.peek() {
            Some(Tok::Word(w)) => w.clone(),
            Some(other) => return Err(format!("unexpected {:?}", tok_text(other))),
            None => break,
        };
        cur.pos += 1;
        match word.as_str() {
            "meta" => {
                let key = cur.word("a meta key")?;
                meta_expr(&key, &mut cur, &mut matches, &mut effects)?;
            }
            k if META_KEYS.contains(&k) => meta_expr(k, &mut cur, &mut matches, &mut effects)?,
            "ip" | "ip6" => {
                let family = if word == "ip" {
                    IpFamily::V4
                } else {
                    IpFamily::V6
                };
                let field = cur.word("an ip field")?;
                matches.push(Match::Family(family));
                match field.as_str() {
                    "saddr" | "daddr" => {
                        let (negated, op) = read_operator(&mut cur);
                        let vals = read_values(&mut cur)?;
                        let direction = if field == "saddr" {
                            Direction::Source
                        } else {
                            Direction::Destination
                        };
                        let nets = vals.and_then(|v| {
                            v.iter()
                                .map(|a| IpNet::parse(a))
                                .collect::<Option<Vec<_>>>()
                        });
                        match (nets, op) {
                            (Some(nets), None) => matches.push(Match::Address {
                                direction,
                                negated,
                                nets,
                            }),
                            _ => matches.push(cur.unknown_since(start)),
                        }
                    }
                    "protocol" | "nexthdr" => {
                        let (negated, _) = read_operator(&mut cur);
                        let vals = read_values(&mut cur)?;
                        match vals.and_then(|v| {
                            v.iter()
                                .map(|p| protocol_number(p))
                                .collect::<Option<Vec<_>>>()
                        }) {
                            Some(protocols) => matches.push(Match::Protocol { negated, protocols }),
                            None => matches.push(cur.unknown_since(start)),
                        }
                    }
                    _ => {
                        matches.push(cur.skip_unknown(start));
                    }
                }
            }
            "tcp" | "udp" | "sctp" | "udplite" | "dccp" | "th" => {
                let field = cur.word("a header field")?;
                let protocols = match word.as_str() {
                    "th" => Vec::new(),
                    p => vec![protocol_number(p).unwrap_or(0)],
                };
                if let Some(p) = protocols.first() {
                    matches.push(Match::Protocol {
                        negated: false,
                        protocols: vec![*p],
                    });
                }
                match field.as_str() {
                    "dport" | "sport" => {
                        let (negated, op) = read_operator(&mut cur);
                        let vals = read_values(&mut cur)?;
                        let direction = if field == "dport" {
                            Direction::Destination
                        } else {
                            Direction::Source
                        };
                        match vals {
                            Some(v) => {
                                let mut ranges = Vec::new();
                                for p in &v {
                                    let r = port_value(p)?;
                                    ranges.push(match &op {
                                        Some(op) => bound_range(op, r.0),
                                        None => r,
                                    });
                                }
                                matches.push(Match::Port {
                                    direction,
                                    negated,
                                    ranges,
                                    protocols,
                                });
                            }
                            None => matches.push(cur.unknown_since(start)),
                        }
                    }
                    _ => {
                        matches.push(cur.skip_unknown(start));
                    }
                }
            }
            "ct" => {
                let key = cur.word("a ct key")?;
                if cur.peek_word() == Some("set") {
                    cur.pos += 1;
                    skip_set_value(&mut cur);
                    effects.push(Effect::Other);
                    continue;
                }
                match key.as_str() {
                    "state" => {
                        let (negated, _) = read_operator(&mut cur);
                        match read_values(&mut cur)? {
                            Some(states) => matches.push(Match::CtState { negated, states }),
                            None => matches.push(cur.unknown_since(start)),
                        }
                    }
                    "mark" => match mark_match(&mut cur, true)? {
                        Some(m) => matches.push(m),
                        None => matches.push(cur.unknown_since(start)),
                    },
                    _ => {
                        matches.push(cur.skip_unknown(start));
                    }
                }
            }
            "counter" => {
                // `counter packets N bytes M` or `counter name X`
                while let Some(w) = cur.peek_word() {
                    if matches!(w, "packets" | "bytes" | "name") {
                        cur.pos += 2;
                    } else {
                        break;
                    }
                }
            }
            "log" => {
                while let Some(w) = cur.peek_word() {
                    if matches!(
                        w,
                        "prefix" | "level" | "group" | "snaplen" | "queue-threshold" | "flags"
                    ) {
                        cur.pos += 2;
                        // `flags tcp sequence,options`
                        while cur.peek() == Some(&Tok::Comma) {
                            cur.pos += 2;
                        }
                    } else {
                        break;
                    }
                }
            }
            "comment" => {
                cur.word("a comment")?;
            }
            "limit" | "quota" | "numgen" | "jhash" | "symhash" | "fib" | "rt" | "socket"
            | "osf" | "exthdr" | "icmp" | "icmpv6" | "ether" | "vlan" | "arp" | "ipsec"
            | "tunnel" | "frag" | "hbh" | "rt0" | "mh" | "dst" | "ah" | "esp" | "comp"
            | "cgroupv2" => {
                matches.push(cur.skip_unknown(start));
            }
            "notrack" => effects.push(Effect::NoTrack),
            "accept" => verdict = Some(Verdict::Accept),
            "drop" => verdict = Some(Verdict::Drop),
            "reject" => {
                // `reject with tcp reset`, `reject with icmpx type admin-prohibited`
                while !cur.at_end() {
                    cur.pos += 1;
                }
                verdict = Some(Verdict::Drop);
            }
            "return" => verdict = Some(Verdict::Return),
            "continue" => {}
            "jump" => verdict = Some(Verdict::Jump(cur.word("a chain to jump to")?)),
            "goto" => verdict = Some(Verdict::Goto(cur.word("a chain to go to")?)),
            "queue" => {
                while !cur.at_end() {
                    cur.pos += 1;
                }
                verdict = Some(Verdict::Queue);
            }
            "redirect" => {
                if cur.peek_word() == Some("to") {
                    cur.pos += 1;
                }
                let mut ports = None;
                if let Some(w) = cur.peek_word() {
                    let spec = w.strip_prefix(':').unwrap_or(w);
                    if spec.chars().next().is_some_and(|c| c.is_ascii_digit()) {
                        ports = Some(port_value(spec)?);
                        cur.pos += 1;
                    }
                }
                skip_nat_flags(&mut cur);
                verdict = Some(Verdict::Redirect { ports });
            }
            "dnat" => {
                if matches!(cur.peek_word(), Some("ip" | "ip6")) {
                    cur.pos += 1;
                }
                if cur.peek_word() == Some("to") {
                    cur.pos += 1;
                }
                let to = cur.word("a NAT destination")?;
                let (addr, port) = parse_nat_destination(&to)?;
                skip_nat_flags(&mut cur);
                verdict = Some(Verdict::Dnat { addr, port });
            }
            "snat" | "masquerade" => {
                while !cur.at_end() && !cur.peek_word().is_some_and(|w| STARTERS.contains(&w)) {
                    cur.pos += 1;
                }
                verdict = Some(Verdict::SourceNat);
            }
            "tproxy" => {
                // Non-terminal in nftables; only valid on prerouting.
                if matches!(cur.peek_word(), Some("ip" | "ip6")) {
                    cur.pos += 1;
                }
                if cur.peek_word() == Some("to") {
                    cur.pos += 1;
                }
                cur.word("a tproxy destination")?;
                effects.push(Effect::Other);
            }
            "xt" => {
                // iptables-nft rules listed by nft: `xt match owner`, `xt target TPROXY`.
                let kind = cur.word("xt kind")?;
                let name = cur.word("xt name")?;
                if kind == "target" {
                    verdict = Some(Verdict::Unknown(format!("xt target {name}")));
                } else {
                    matches.push(Match::Unknown {
                        text: format!("xt {kind} {name}"),
                    });
                }
            }
            "dup" | "fwd" | "synproxy" | "flow" | "add" | "update" | "delete" | "set" => {
                while !cur.at_end() && !cur.peek_word().is_some_and(|w| STARTERS.contains(&w)) {
                    cur.pos += 1;
                }
                if word == "fwd" {
                    verdict = Some(Verdict::Unknown("fwd".into()));
                } else {
                    effects.push(Effect::Other);
                }
            }
            // The word itself is already read, so the match is never empty.
            _ => matches.push(cur.skip_unknown(start)),
        }
    }
    Ok(Rule {
        matches,
        effects,
        verdict,
        text: join(toks),
        line,
    })
}

fn skip_nat_flags(cur: &mut RuleCursor<'_>) {
    while let Some(w) = cur.peek_word() {
        if matches!(
            w,
            "random" | "fully-random" | "persistent" | "netmap" | "prefix"
        ) {
            cur.pos += 1;
            while cur.peek() == Some(&Tok::Comma) {
                cur.pos += 2;
            }
        } else {
            break;
        }
    }
}

/// Skips an unknown expression's operator and value(s): everything up to the next known keyword.
fn skip_unknown_value(cur: &mut RuleCursor<'_>) {
    let mut depth = 0usize;
    while let Some(t) = cur.peek() {
        match t {
            Tok::LBrace => depth += 1,
            Tok::RBrace => depth = depth.saturating_sub(1),
            Tok::Word(w) if depth == 0 && STARTERS.contains(&w.as_str()) => return,
            _ => {}
        }
        cur.pos += 1;
    }
}

/// Skips the value of `... set VALUE`, which may itself be an expression (`ct mark`).
fn skip_set_value(cur: &mut RuleCursor<'_>) {
    match cur.peek_word() {
        Some("ct" | "meta") => cur.pos += 2,
        Some(_) => cur.pos += 1,
        None => {
            if cur.peek() == Some(&Tok::LBrace) {
                skip_unknown_value(cur);
            }
        }
    }
    // `meta mark set ct mark and 0xff`
    while matches!(
        cur.peek_word(),
        Some("and" | "or" | "xor" | "&" | "|" | "^")
    ) {
        cur.pos += 2;
    }
}

fn mark_match(cur: &mut RuleCursor<'_>, ct: bool) -> Result<Option<Match>, String> {
    let mut mask = u32::MAX;
    if matches!(cur.peek_word(), Some("&" | "and")) {
        cur.pos += 1;
        let m = cur.word("a mask")?;
        mask = parse_number(&m).ok_or_else(|| format!("bad mask {m:?}"))?;
    }
    let (negated, op) = read_operator(cur);
    let vals = read_values(cur)?;
    match (vals, op) {
        (Some(v), None) if v.len() == 1 => {
            let value = parse_number(&v[0]).ok_or_else(|| format!("bad mark {:?}", v[0]))?;
            Ok(Some(Match::Mark {
                ct,
                negated,
                value,
                mask,
            }))
        }
        _ => Ok(None),
    }
}

fn meta_expr(
    key: &str,
    cur: &mut RuleCursor<'_>,
    matches: &mut Vec<Match>,
    effects: &mut Vec<Effect>,
) -> Result<(), String> {
    let start = cur.pos;
    if cur.peek_word() == Some("set") {
        cur.pos += 1;
        if key == "mark" {
            if let Some(v) = cur.peek_word().and_then(parse_number) {
                cur.pos += 1;
                effects.push(Effect::SetMark {
                    value: v,
                    mask: u32::MAX,
                });
                return Ok(());
            }
        }
        skip_set_value(cur);
        effects.push(Effect::Other);
        return Ok(());
    }
    let unknown = |cur: &RuleCursor<'_>, matches: &mut Vec<Match>| {
        matches.push(Match::Unknown {
            text: format!("meta {key} {}", join(&cur.toks[start..cur.pos])),
        });
    };
    match key {
        "mark" => match mark_match(cur, false)? {
            Some(m) => matches.push(m),
            None => unknown(cur, matches),
        },
        "oifname" | "iifname" | "oif" | "iif" => {
            let (negated, _) = read_operator(cur);
            let direction = if key.starts_with('o') {
                IfaceDirection::Out
            } else {
                IfaceDirection::In
            };
            match read_values(cur)? {
                Some(v) => matches.push(Match::Interface {
                    direction,
                    negated,
                    names: v.iter().map(|n| IfaceName::parse(n)).collect(),
                }),
                None => unknown(cur, matches),
            }
        }
        "skuid" | "skgid" => {
            let (negated, op) = read_operator(cur);
            let kind = if key == "skuid" {
                OwnerKind::Uid
            } else {
                OwnerKind::Gid
            };
            match (read_values(cur)?, op) {
                (Some(v), None) => matches.push(Match::Owner {
                    kind,
                    negated,
                    ids: v.iter().map(|i| OwnerId::parse(i)).collect(),
                }),
                (Some(v), Some(op)) if v.len() == 1 => match v[0].parse::<u32>() {
                    Ok(n) => {
                        let (a, b) = match op.as_str() {
                            "<" | "lt" => (0, n.saturating_sub(1)),
                            "<=" | "le" => (0, n),
                            ">" | "gt" => (n.saturating_add(1), u32::MAX),
                            _ => (n, u32::MAX),
                        };
                        matches.push(Match::Owner {
                            kind,
                            negated,
                            ids: vec![OwnerId::Range(a, b)],
                        })
                    }
                    Err(_) => unknown(cur, matches),
                },
                _ => unknown(cur, matches),
            }
        }
        "l4proto" | "protocol" | "nfproto" => {
            let (negated, _) = read_operator(cur);
            let vals = read_values(cur)?;
            match (key, vals) {
                ("l4proto", Some(v)) => {
                    match v
                        .iter()
                        .map(|p| protocol_number(p))
                        .collect::<Option<Vec<_>>>()
                    {
                        Some(protocols) => matches.push(Match::Protocol { negated, protocols }),
                        None => unknown(cur, matches),
                    }
                }
                (_, Some(v)) if v.len() == 1 && !negated => {
                    let fam = match v[0].as_str() {
                        "ipv4" | "ip" => Some(IpFamily::V4),
                        "ipv6" | "ip6" => Some(IpFamily::V6),
                        _ => None,
                    };
                    match fam {
                        Some(f) => matches.push(Match::Family(f)),
                        None => unknown(cur, matches),
                    }
                }
                _ => unknown(cur, matches),
            }
        }
        _ => {
            skip_unknown_value(cur);
            unknown(cur, matches);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netfilter::model::{PROTO_TCP, PROTO_UDP};

    const LISTING: &str = r#"table inet istio-proxy-nat {
	chain output {
		type nat hook output priority -100; policy accept;
		oifname "not-istio-nic" counter packets 0 bytes 0 return
		counter packets 3 bytes 180 jump istio-output
	}

	chain istio-redirect {
		meta l4proto tcp counter packets 0 bytes 0 redirect to :15001
	}

	chain istio-output {
		oifname "lo" ip daddr != 127.0.0.1 tcp dport != { 53, 15008 } meta skuid 1337 counter packets 0 bytes 0 jump istio-redirect
		meta skgid 1337 counter packets 0 bytes 0 return
		ip6 daddr ::1 counter packets 0 bytes 0 return
		meta mark 0x00000539 return
		ct state established,related accept
		ip daddr { 10.0.0.1, 10.0.0.2,
			   10.0.0.3 } return
	}
}
table inet istio-proxy-mangle {
	chain output {
		type route hook output priority mangle; policy accept;
		meta l4proto tcp ct mark 0x00000539 counter packets 0 bytes 0 meta mark set ct mark
	}
}
"#;

    #[test]
    fn listing_form() {
        let rs = parse(LISTING, "nft").unwrap();
        assert_eq!(rs.tables.len(), 2);
        let nat = &rs.tables[0];
        assert_eq!(nat.family, TableFamily::Inet);
        let out = nat.chain("output").unwrap();
        let base = out.base.unwrap();
        assert_eq!(
            (base.hook, base.kind, base.priority),
            (Hook::Output, ChainKind::Nat, -100)
        );
        assert_eq!(out.rules.len(), 2);
        assert_eq!(
            out.rules[1].verdict,
            Some(Verdict::Jump("istio-output".into()))
        );
        assert_eq!(
            nat.chain("istio-redirect").unwrap().rules[0].verdict,
            Some(Verdict::Redirect {
                ports: Some((15001, 15001))
            })
        );
        let r = &nat.chain("istio-output").unwrap().rules;
        assert_eq!(r.len(), 6);
        assert!(r[0].matches.contains(&Match::Family(IpFamily::V4)));
        assert!(r[0].matches.contains(&Match::Port {
            direction: Direction::Destination,
            negated: true,
            ranges: vec![(53, 53), (15008, 15008)],
            protocols: vec![PROTO_TCP],
        }));
        assert!(r[0].matches.contains(&Match::Owner {
            kind: OwnerKind::Uid,
            negated: false,
            ids: vec![OwnerId::Range(1337, 1337)]
        }));
        assert!(r[2].matches.contains(&Match::Family(IpFamily::V6)));
        assert!(r[3].matches.contains(&Match::Mark {
            ct: false,
            negated: false,
            value: 0x539,
            mask: u32::MAX
        }));
        assert_eq!(
            r[4].matches,
            vec![Match::CtState {
                negated: false,
                states: vec!["established".into(), "related".into()]
            }]
        );
        match &r[5].matches[1] {
            Match::Address { nets, .. } => assert_eq!(nets.len(), 3),
            other => panic!("{other:?}"),
        }
        let mangle = rs.tables[1].chain("output").unwrap();
        assert_eq!(mangle.base.unwrap().priority, -150);
        assert_eq!(mangle.base.unwrap().kind, ChainKind::Route);
        assert_eq!(mangle.rules[0].effects, vec![Effect::Other]);
    }

    #[test]
    fn command_form_with_insert_index() {
        let cmds = "add table inet t\n\
            flush table inet t\n\
            add chain inet t prerouting { type nat hook prerouting priority -100 ; }\n\
            add chain inet t c\n\
            add rule inet t c iifname eth1 counter return\n\
            insert rule inet t c index 0 iifname eth2 counter return\n\
            add rule inet t c udp dport 53 counter redirect to :15053\n\
            add rule inet t c index 0 tcp dport 1-1024 accept\n\
            insert rule inet t c meta skgid != java skgid != 202 counter return\n";
        let rs = parse(cmds, "nft").unwrap();
        let c = rs.tables[0].chain("c").unwrap();
        let texts: Vec<_> = c.rules.iter().map(|r| r.text.as_str()).collect();
        assert_eq!(
            texts,
            vec![
                "meta skgid != java skgid != 202 counter return",
                "iifname eth2 counter return",
                "tcp dport 1-1024 accept",
                "iifname eth1 counter return",
                "udp dport 53 counter redirect to :15053",
            ]
        );
        assert!(c.rules[4].matches.contains(&Match::Protocol {
            negated: false,
            protocols: vec![PROTO_UDP]
        }));
        assert!(c.rules[0].matches.contains(&Match::Owner {
            kind: OwnerKind::Gid,
            negated: true,
            ids: vec![OwnerId::Name("java".into())]
        }));
        assert_eq!(
            rs.tables[0].chain("prerouting").unwrap().base.unwrap().hook,
            Hook::Prerouting
        );
    }

    #[test]
    fn unknown_expressions_are_kept_and_verdicts_still_read() {
        let rs = parse(
            "table ip t {\n chain c {\n  numgen random mod 2 0 ip daddr @blocked return\n  xt match owner counter accept\n }\n}\n",
            "nft",
        )
        .unwrap();
        let r = &rs.tables[0].chain("c").unwrap().rules;
        assert!(matches!(&r[0].matches[0], Match::Unknown { text } if text.starts_with("numgen")));
        assert!(r[0]
            .matches
            .iter()
            .any(|m| matches!(m, Match::Unknown { text } if text.contains("@blocked"))));
        assert_eq!(r[0].verdict, Some(Verdict::Return));
        assert!(matches!(&r[1].matches[0], Match::Unknown { .. }));
        assert_eq!(r[1].verdict, Some(Verdict::Accept));
    }

    #[test]
    fn errors_are_located() {
        let err = parse("add rule inet nope c accept\n", "f.nft").unwrap_err();
        assert_eq!(err.to_string(), "f.nft:1: no table inet nope");
        let err = parse(
            "table inet t {\n chain c {\n  tcp dport x accept\n }\n}\n",
            "f.nft",
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "f.nft:3: bad port \"x\"");
        let err = parse("table inet t {\n chain c {\n", "f.nft").unwrap_err();
        assert!(err.to_string().contains("not closed"), "{err}");
    }

    #[test]
    fn priorities_with_offsets() {
        let rs = parse(
            "table inet t {\n chain a {\n  type filter hook output priority filter + 10; policy drop;\n }\n chain b {\n  type filter hook output priority raw - 5;\n }\n}\n",
            "nft",
        )
        .unwrap();
        let a = rs.tables[0].chain("a").unwrap().base.unwrap();
        assert_eq!((a.priority, a.policy), (10, Policy::Drop));
        assert_eq!(
            rs.tables[0].chain("b").unwrap().base.unwrap().priority,
            -305
        );
    }
}
