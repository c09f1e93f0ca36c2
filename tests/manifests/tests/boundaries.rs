//! The workspace's layering, checked on every test run: which part of the code may name which.
//!
//! `docs/architecture.md` holds the rules as tables (one per crate, each after a
//! `<!-- layering: DIR -->` marker): a part, the modules that make it up, and the parts it may
//! name. This test reads those tables and every `.rs` file under the crate's directory, finds
//! each path that names a module of the crate (`crate::…`, `super::…`, `self::…`, the crate's
//! own name, `use` groups included, comments and string literals ignored) and fails on every
//! reference the table does not allow, naming the file, the line and the rule broken. Two more
//! rules have no table: the filter engine (everything in `filter/src` outside `filter/src/wasm/`)
//! never names `proxy_wasm` and declares no host import or export (`wasm_import_module`,
//! `no_mangle`, `export_name`, an `extern` block or fn), and the host (`tests/src`,
//! `tests/Cargo.toml`) never depends on the filter crate.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the crate lives two levels below the repository root")
}

const ARCHITECTURE: &str = "docs/architecture.md";

// ---------------------------------------------------------------------------------------------
// The rules
// ---------------------------------------------------------------------------------------------

/// One part of a crate: the module paths it is made of and the parts it may name.
#[derive(Debug, Clone, PartialEq)]
struct Part {
    name: String,
    /// Module paths (`cli::pipeline`); `*` is every module no other part claims, the crate
    /// root included.
    modules: Vec<String>,
    may_name: Vec<String>,
}

/// A crate's table: its source directory (relative to the repository root) and its parts.
#[derive(Debug, Clone, PartialEq)]
struct Layering {
    dir: String,
    /// The crate's own name, which its binary (`src/main.rs`) uses instead of `crate`.
    crate_name: String,
    parts: Vec<Part>,
}

impl Layering {
    /// The part a module path belongs to: the longest module prefix that matches, else `*`.
    fn part_of(&self, path: &[String]) -> Option<&Part> {
        let mut best: Option<(&Part, usize)> = None;
        let mut fallback = None;
        for part in &self.parts {
            for module in &part.modules {
                if module == "*" {
                    fallback = Some(part);
                    continue;
                }
                let segments: Vec<&str> = module.split("::").collect();
                let matches = segments.len() <= path.len()
                    && segments.iter().zip(path).all(|(a, b)| *a == b.as_str());
                if matches && best.is_none_or(|(_, n)| segments.len() > n) {
                    best = Some((part, segments.len()));
                }
            }
        }
        best.map(|(p, _)| p).or(fallback)
    }

    /// Whether a path names something a part holds: a module of a part, or anything at all
    /// when a part holds `*` (the crate root's items belong to it).
    fn names_a_module(&self, path: &[String]) -> bool {
        let Some(first) = path.first() else {
            return false;
        };
        self.parts
            .iter()
            .flat_map(|p| &p.modules)
            .any(|m| m == "*" || m.split("::").next() == Some(first.as_str()))
    }
}

/// Reads every `<!-- layering: DIR crate=NAME -->` table of the architecture document.
fn parse_layerings(doc: &str) -> Result<Vec<Layering>, String> {
    let mut out = Vec::new();
    let lines: Vec<&str> = doc.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i].trim();
        i += 1;
        let Some(spec) = line
            .strip_prefix("<!-- layering:")
            .and_then(|r| r.strip_suffix("-->"))
        else {
            continue;
        };
        let at = i;
        let mut words = spec.split_whitespace();
        let dir = words
            .next()
            .ok_or_else(|| format!("{ARCHITECTURE}:{at}: layering marker without a directory"))?
            .to_string();
        let crate_name = words
            .find_map(|w| w.strip_prefix("crate="))
            .ok_or_else(|| format!("{ARCHITECTURE}:{at}: layering marker without crate=NAME"))?
            .to_string();
        let mut parts = Vec::new();
        while i < lines.len() && lines[i].trim().starts_with('|') {
            let row = lines[i].trim();
            i += 1;
            let cells: Vec<&str> = row.trim_matches('|').split('|').map(str::trim).collect();
            if cells.len() != 3 {
                return Err(format!(
                    "{ARCHITECTURE}:{}: a layering row has three cells (part | modules | may name)",
                    i
                ));
            }
            if cells[0] == "Part" || cells[0].starts_with("---") {
                continue;
            }
            let list = |cell: &str| -> Vec<String> {
                cell.split(',')
                    .map(|s| s.trim().trim_matches('`').trim().to_string())
                    .filter(|s| !s.is_empty() && s != "—" && s != "-")
                    .collect()
            };
            parts.push(Part {
                name: cells[0].trim_matches('`').to_string(),
                modules: list(cells[1]),
                may_name: list(cells[2]),
            });
        }
        if parts.is_empty() {
            return Err(format!(
                "{ARCHITECTURE}:{at}: no table rows after the layering marker"
            ));
        }
        for part in &parts {
            for name in &part.may_name {
                if !parts.iter().any(|p| &p.name == name) {
                    return Err(format!(
                        "{ARCHITECTURE}: part {} may name {name:?}, which is not a part of {dir}",
                        part.name
                    ));
                }
            }
        }
        out.push(Layering {
            dir,
            crate_name,
            parts,
        });
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Reading Rust source
// ---------------------------------------------------------------------------------------------

/// The source with comments, string and character literals blanked out (line breaks kept), so
/// only code is searched.
fn code_only(src: &str) -> String {
    let chars: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
        } else if let Some(len) = raw_string_start(&chars, i) {
            // r"..", r#".."#, br"..": ends at a quote followed by as many #.
            let hashes = len - 1 - usize::from(chars[i] == 'b') - 1;
            for _ in 0..len {
                out.push(' ');
            }
            i += len;
            while i < chars.len() {
                let closes =
                    chars[i] == '"' && (1..=hashes).all(|k| chars.get(i + k) == Some(&'#'));
                if closes {
                    for _ in 0..=hashes {
                        out.push(' ');
                    }
                    i += hashes + 1;
                    break;
                }
                out.push(blank(chars[i]));
                i += 1;
            }
        } else if c == '"' {
            out.push(' ');
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                if chars[i] == '\\' {
                    out.push(' ');
                    i += 1;
                }
                if let Some(&ch) = chars.get(i) {
                    out.push(blank(ch));
                }
                i += 1;
            }
            out.push(' ');
            i += 1;
        } else if c == '\'' {
            // A character literal ('a', '\n', '\u{1F600}'), or a lifetime ('a), kept as is.
            let literal_end = if next == Some('\\') {
                (i + 3..chars.len()).find(|&k| chars[k] == '\'')
            } else if chars.get(i + 2) == Some(&'\'') {
                Some(i + 2)
            } else {
                None
            };
            match literal_end {
                Some(end) => {
                    for _ in i..=end {
                        out.push(' ');
                    }
                    i = end + 1;
                }
                None => {
                    out.push(c);
                    i += 1;
                }
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

/// The length of a raw string's opening (`r"`, `r#"`, `br##"`) starting at `i`, if one does.
fn raw_string_start(chars: &[char], i: usize) -> Option<usize> {
    let preceded_by_ident = i > 0 && is_ident_char(chars[i - 1]);
    if preceded_by_ident {
        return None;
    }
    let mut k = i;
    if chars.get(k) == Some(&'b') {
        k += 1;
    }
    if chars.get(k) != Some(&'r') {
        return None;
    }
    k += 1;
    while chars.get(k) == Some(&'#') {
        k += 1;
    }
    (chars.get(k) == Some(&'"')).then_some(k + 1 - i)
}

fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    PathSep,
    Open,
    Close,
    Comma,
    Other,
}

/// Tokens of code-only source, each with its 1-based line.
fn tokens(code: &str) -> Vec<(Token, usize)> {
    let chars: Vec<char> = code.chars().collect();
    let mut out = Vec::new();
    let mut line = 1;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c.is_whitespace() {
            i += 1;
        } else if is_ident_char(c) {
            let start = i;
            while i < chars.len() && is_ident_char(chars[i]) {
                i += 1;
            }
            out.push((Token::Ident(chars[start..i].iter().collect()), line));
        } else if c == ':' && chars.get(i + 1) == Some(&':') {
            out.push((Token::PathSep, line));
            i += 2;
        } else {
            out.push((
                match c {
                    '{' => Token::Open,
                    '}' => Token::Close,
                    ',' => Token::Comma,
                    _ => Token::Other,
                },
                line,
            ));
            i += 1;
        }
    }
    out
}

/// One path that names something of the crate, resolved to segments from the crate root.
#[derive(Debug, Clone, PartialEq)]
struct Reference {
    line: usize,
    path: Vec<String>,
}

/// The module path of a source file, from the crate's `src` directory.
fn module_of(relative: &Path) -> Vec<String> {
    let mut segments: Vec<String> = relative
        .iter()
        .map(|s| s.to_string_lossy().to_string())
        .collect();
    if let Some(last) = segments.pop() {
        let stem = last.strip_suffix(".rs").unwrap_or(&last).to_string();
        if !matches!(stem.as_str(), "mod" | "lib" | "main") {
            segments.push(stem);
        }
    }
    segments
}

/// Every path in `code` that starts at the crate (`crate::`, `super::`, `self::`, or the crate's
/// own name), `use` groups expanded, resolved against the module the file (and any inline
/// `mod name { ... }`) is.
fn references(code: &str, file_module: &[String], crate_name: &str) -> Vec<Reference> {
    let toks = tokens(code);
    let mut out = Vec::new();
    // Inline modules: (name, brace depth inside it).
    let mut inline: Vec<(String, usize)> = Vec::new();
    let mut depth = 0usize;
    let mut i = 0;
    while i < toks.len() {
        match &toks[i].0 {
            Token::Open => depth += 1,
            Token::Close => {
                if inline.last().is_some_and(|(_, d)| *d == depth) {
                    inline.pop();
                }
                depth = depth.saturating_sub(1);
            }
            Token::Ident(word) if word == "mod" => {
                if let (Some((Token::Ident(name), _)), Some((Token::Open, _))) =
                    (toks.get(i + 1), toks.get(i + 2))
                {
                    inline.push((name.clone(), depth + 1));
                }
            }
            Token::Ident(word) => {
                let preceded_by_sep = i > 0 && toks[i - 1].0 == Token::PathSep;
                let followed_by_sep = toks.get(i + 1).is_some_and(|t| t.0 == Token::PathSep);
                if !preceded_by_sep && followed_by_sep {
                    let mut module: Vec<String> = file_module.to_vec();
                    module.extend(inline.iter().map(|(n, _)| n.clone()));
                    let base: Option<Vec<String>> = if word == "crate" || word == crate_name {
                        Some(Vec::new())
                    } else if word == "self" {
                        Some(module.clone())
                    } else if word == "super" {
                        let mut m = module.clone();
                        m.pop();
                        Some(m)
                    } else {
                        None
                    };
                    if let Some(mut base) = base {
                        let line = toks[i].1;
                        let mut k = i + 2;
                        // `super::super::x`
                        while word == "super"
                            && matches!(&toks.get(k).map(|t| &t.0), Some(Token::Ident(w)) if w == "super")
                            && toks.get(k + 1).is_some_and(|t| t.0 == Token::PathSep)
                        {
                            base.pop();
                            k += 2;
                        }
                        let mut paths = Vec::new();
                        let end = path_tree(&toks, k, base, &mut paths);
                        out.extend(paths.into_iter().map(|path| Reference { line, path }));
                        i = end.max(i + 1);
                        continue;
                    }
                }
            }
            _ => {}
        }
        i += 1;
    }
    out
}

/// Reads a path (or a `use` tree: `a::{b, c::d}`) starting at token `k` after `prefix::`;
/// pushes every complete path and returns the index after it.
fn path_tree(
    toks: &[(Token, usize)],
    mut k: usize,
    mut prefix: Vec<String>,
    out: &mut Vec<Vec<String>>,
) -> usize {
    loop {
        match toks.get(k).map(|t| &t.0) {
            Some(Token::Ident(w)) => {
                if w != "self" {
                    prefix.push(w.clone());
                }
                k += 1;
                if toks.get(k).is_some_and(|t| t.0 == Token::PathSep) {
                    k += 1;
                    continue;
                }
                out.push(prefix);
                return k;
            }
            Some(Token::Open) => {
                k += 1;
                loop {
                    match toks.get(k).map(|t| &t.0) {
                        Some(Token::Close) => return k + 1,
                        Some(Token::Comma) => k += 1,
                        None => return k,
                        _ => {
                            let before = k;
                            k = path_tree(toks, k, prefix.clone(), out);
                            if k == before {
                                k += 1;
                            }
                        }
                    }
                }
            }
            // `*`, or something that ends the path.
            _ => {
                out.push(prefix);
                return k;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Checking
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq)]
struct Violation {
    file: String,
    line: usize,
    rule: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.rule)
    }
}

/// Checks one file of a crate against its table. `relative` is the path from the crate's
/// `src` directory; `shown` is how the file is named in messages.
fn check_layering(layering: &Layering, relative: &Path, shown: &str, src: &str) -> Vec<Violation> {
    let module = module_of(relative);
    let Some(from) = layering.part_of(&module) else {
        return vec![Violation {
            file: shown.to_string(),
            line: 1,
            rule: format!(
                "module {} belongs to no part of the {} table in {ARCHITECTURE}",
                module.join("::"),
                layering.dir
            ),
        }];
    };
    let mut out = Vec::new();
    for r in references(&code_only(src), &module, &layering.crate_name) {
        if !layering.names_a_module(&r.path) {
            continue;
        }
        let Some(to) = layering.part_of(&r.path) else {
            continue;
        };
        if to.name == from.name || from.may_name.contains(&to.name) {
            continue;
        }
        let allowed = if from.may_name.is_empty() {
            "nothing else".to_string()
        } else {
            from.may_name.join(", ")
        };
        out.push(Violation {
            file: shown.to_string(),
            line: r.line,
            rule: format!(
                "{} names {} (`{}`): part `{}` may name only {allowed} ({ARCHITECTURE}, {} table)",
                from.name,
                to.name,
                r.path.join("::"),
                from.name,
                layering.dir
            ),
        });
    }
    out
}

/// Identifiers that must not appear in a file's code (comments and strings aside), with why.
fn check_forbidden_names(shown: &str, src: &str, forbidden: &[(&str, &str)]) -> Vec<Violation> {
    let mut out = Vec::new();
    for (token, line) in tokens(&code_only(src)) {
        if let Token::Ident(word) = token {
            if let Some((_, why)) = forbidden.iter().find(|(name, _)| *name == word) {
                out.push(Violation {
                    file: shown.to_string(),
                    line,
                    rule: format!("names `{word}`: {why}"),
                });
            }
        }
    }
    out
}

/// Every `extern` block or `extern` fn in a file's code, of any ABI (the ABI string is blanked
/// with the other literals), `extern crate` aside. In the engine either declares what only the
/// glue may: an import from the host (an `extern "C"` block without a link attribute imports
/// from the default `env` module) or a function exported to it.
fn check_extern_items(shown: &str, src: &str) -> Vec<Violation> {
    let toks = tokens(&code_only(src));
    let mut out = Vec::new();
    for (i, (token, line)) in toks.iter().enumerate() {
        let is_extern = matches!(token, Token::Ident(w) if w == "extern");
        let extern_crate = matches!(toks.get(i + 1), Some((Token::Ident(w), _)) if w == "crate");
        if is_extern && !extern_crate {
            out.push(Violation {
                file: shown.to_string(),
                line: *line,
                rule: "declares an `extern` block or fn: the engine neither imports from nor \
                       exports to the host; both live in filter/src/wasm/"
                    .to_string(),
            });
        }
    }
    out
}

/// Every `.rs` file under `dir`, sorted.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display()));
        for entry in entries {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn layerings() -> BTreeMap<String, Layering> {
    let doc = read(&repo_root().join(ARCHITECTURE));
    parse_layerings(&doc)
        .unwrap_or_else(|e| panic!("{e}"))
        .into_iter()
        .map(|l| (l.dir.clone(), l))
        .collect()
}

fn assert_none(what: &str, violations: &[Violation]) {
    let list: Vec<String> = violations.iter().map(ToString::to_string).collect();
    assert!(
        violations.is_empty(),
        "{what}: {} forbidden reference(s):\n{}",
        list.len(),
        list.join("\n")
    );
}

/// Checks every file of a crate directory against its table.
fn check_crate(layering: &Layering) -> (usize, Vec<Violation>) {
    let root = repo_root();
    let src = root.join(&layering.dir);
    let files = rust_files(&src);
    let mut violations = Vec::new();
    for file in &files {
        let relative = file.strip_prefix(&src).expect("under the crate directory");
        let shown = file
            .strip_prefix(&root)
            .unwrap_or(file)
            .display()
            .to_string();
        violations.extend(check_layering(layering, relative, &shown, &read(file)));
    }
    (files.len(), violations)
}

// ---------------------------------------------------------------------------------------------
// The tree as it is
// ---------------------------------------------------------------------------------------------

#[test]
fn auditor_parts_name_only_the_parts_below_them() {
    let tables = layerings();
    let layering = tables
        .get("auditor/src")
        .unwrap_or_else(|| panic!("{ARCHITECTURE} has no layering table for auditor/src"));
    let (files, violations) = check_crate(layering);
    assert!(files > 50, "only {files} files under auditor/src");
    assert_none("auditor/src", &violations);
}

#[test]
fn controller_parts_name_only_the_parts_below_them() {
    let tables = layerings();
    let layering = tables.get("filter/controller/src").unwrap_or_else(|| {
        panic!("{ARCHITECTURE} has no layering table for filter/controller/src")
    });
    let (files, violations) = check_crate(layering);
    assert!(files > 10, "only {files} files under filter/controller/src");
    assert_none("filter/controller/src", &violations);
}

/// The document says every table is enforced: each one has its test above.
#[test]
fn every_table_of_the_document_is_checked() {
    let tables: Vec<String> = layerings().into_keys().collect();
    assert_eq!(
        tables,
        ["auditor/src", "filter/controller/src", "filter/src"],
        "a layering table was added or removed in {ARCHITECTURE}: check it with a test here"
    );
}

#[test]
fn filter_engine_never_names_the_glue_or_the_host() {
    let tables = layerings();
    let layering = tables
        .get("filter/src")
        .unwrap_or_else(|| panic!("{ARCHITECTURE} has no layering table for filter/src"));
    let (files, mut violations) = check_crate(layering);
    assert!(files > 20, "only {files} files under filter/src");
    let root = repo_root();
    let glue = root.join("filter/src/wasm");
    for file in rust_files(&root.join("filter/src")) {
        if file.starts_with(&glue) {
            continue;
        }
        let shown = file
            .strip_prefix(&root)
            .unwrap_or(&file)
            .display()
            .to_string();
        let src = read(&file);
        violations.extend(check_forbidden_names(&shown, &src, ENGINE_FORBIDDEN));
        violations.extend(check_extern_items(&shown, &src));
    }
    assert_none("filter/src", &violations);
}

const ENGINE_FORBIDDEN: &[(&str, &str)] = &[
    (
        "proxy_wasm",
        "the engine is plain Rust; only filter/src/wasm/ speaks proxy-wasm",
    ),
    (
        "wasm_import_module",
        "the engine never calls the host; host imports live in filter/src/wasm/",
    ),
    (
        "no_mangle",
        "the engine exports nothing to the host; exports live in filter/src/wasm/",
    ),
    (
        "export_name",
        "the engine exports nothing to the host; exports live in filter/src/wasm/",
    ),
];

const HOST_FORBIDDEN: &[(&str, &str)] = &[(
    "egress_filter",
    "the host shares no code with the filter; it knows it only through the ABI",
)];

#[test]
fn host_shares_no_code_with_the_filter() {
    let root = repo_root();
    let mut violations = Vec::new();
    let files = rust_files(&root.join("tests/src"));
    assert!(
        files.len() > 10,
        "only {} files under tests/src",
        files.len()
    );
    for file in files {
        let shown = file
            .strip_prefix(&root)
            .unwrap_or(&file)
            .display()
            .to_string();
        violations.extend(check_forbidden_names(&shown, &read(&file), HOST_FORBIDDEN));
    }
    violations.extend(check_manifest_dependencies(
        "tests/Cargo.toml",
        &read(&root.join("tests/Cargo.toml")),
    ));
    assert_none("tests/src", &violations);
}

/// The host's Cargo.toml must not list the filter crate, by name or by path, in any table.
fn check_manifest_dependencies(shown: &str, manifest: &str) -> Vec<Violation> {
    manifest
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim_start().starts_with('#'))
        .filter(|(_, l)| {
            let l = l.split('#').next().unwrap_or("");
            l.contains("egress-filter")
                || l.contains("egress_filter")
                || l.contains("../filter\"")
                || l.contains("/filter\"")
        })
        .map(|(n, _)| Violation {
            file: shown.to_string(),
            line: n + 1,
            rule: "depends on the filter crate: the host shares no code with the filter"
                .to_string(),
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The checker itself
// ---------------------------------------------------------------------------------------------

const FIXTURE_DOC: &str = "\
Some text.

<!-- layering: fake/src crate=fake -->
| Part | Modules | May name |
| --- | --- | --- |
| ground | `finding` | — |
| checks | `checks` | ground |
| sinks | `sinks` | ground |
| pipeline | `cli::pipeline` | ground, checks, sinks |
| cli | `cli`, `*` | ground, checks, sinks, pipeline |

More text.
";

fn fixture() -> Layering {
    parse_layerings(FIXTURE_DOC)
        .expect("fixture table parses")
        .remove(0)
}

fn check_fixture(file: &str, src: &str) -> Vec<Violation> {
    check_layering(&fixture(), Path::new(file), file, src)
}

#[test]
fn the_table_is_read_from_the_document() {
    let l = fixture();
    assert_eq!(l.dir, "fake/src");
    assert_eq!(l.crate_name, "fake");
    assert_eq!(l.parts.len(), 5);
    assert!(l.parts[0].may_name.is_empty());
    assert_eq!(l.parts[3].may_name, ["ground", "checks", "sinks"]);
    let part = |p: &str| {
        let path: Vec<String> = p.split("::").map(str::to_string).collect();
        l.part_of(&path).map(|p| p.name.clone())
    };
    assert_eq!(part("cli::pipeline::judge").as_deref(), Some("pipeline"));
    assert_eq!(part("cli::scan").as_deref(), Some("cli"));
    assert_eq!(part("Root").as_deref(), Some("cli"));
    let bad = FIXTURE_DOC.replace("| ground, checks, sinks |", "| ground, nowhere |");
    let err = parse_layerings(&bad).unwrap_err();
    assert!(err.contains("\"nowhere\""), "{err}");
}

#[test]
fn a_planted_forbidden_import_is_caught_with_its_line() {
    let src = "//! Checks.\n\nuse crate::finding::Finding;\nuse crate::sinks::json;\n";
    let v = check_fixture("checks/mod.rs", src);
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(v[0].file, "checks/mod.rs");
    assert_eq!(v[0].line, 4);
    assert!(
        v[0].rule.contains("checks names sinks") && v[0].rule.contains("may name only ground"),
        "{}",
        v[0]
    );
}

#[test]
fn groups_super_and_inline_modules_are_resolved() {
    // A `use` group naming two parts at once.
    let v = check_fixture("sinks/table.rs", "use crate::{finding::Finding, checks};\n");
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(v[0].rule.contains("sinks names checks"), "{}", v[0]);
    // `super::` from checks/live.rs is checks itself; from checks/x/y.rs two levels up too.
    assert!(check_fixture("checks/live.rs", "use super::rules::rule;\n").is_empty());
    assert!(check_fixture("checks/x/y.rs", "use super::super::sort;\n").is_empty());
    // `super::super::` climbs out of checks into the root: `sinks` named from there.
    let v = check_fixture(
        "checks/x.rs",
        "fn f() { super::super::sinks::json::render(); }\n",
    );
    assert_eq!(v.len(), 1, "{v:?}");
    // The crate's own name (a binary's `main.rs`) counts like `crate`.
    let v = check_fixture("checks/x.rs", "use fake::sinks::json;\n");
    assert_eq!(v.len(), 1, "{v:?}");
    // An inline `mod tests` sees its file through `super::`.
    let src = "mod tests {\n    use super::*;\n    use crate::sinks::json;\n}\n";
    let v = check_fixture("checks/live.rs", src);
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(v[0].line, 3);
    // Allowed: the pipeline names checks and sinks.
    let src = "use crate::checks::check_all;\nuse crate::sinks::{self, Summary};\n";
    assert!(check_fixture("cli/pipeline.rs", src).is_empty());
    // Forbidden: the pipeline names a handler (`cli`).
    let v = check_fixture("cli/pipeline.rs", "use super::scan::ScanArgs;\n");
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(v[0].rule.contains("pipeline names cli"), "{}", v[0]);
}

#[test]
fn comments_and_strings_are_not_imports() {
    let src = r####"
//! Findings are sorted by [`crate::checks::sort_findings`].
/* crate::sinks::json, /* nested crate::sinks */ still a comment */
const A: &str = "crate::sinks::json";
const B: &str = r#"crate::sinks "quoted" json"#;
const C: char = '"';
fn f<'a>(x: &'a str) -> &'a str { x }
const D: &str = "after the char: crate::sinks";
"####;
    assert!(check_fixture("checks/mod.rs", src).is_empty());
    // Code after all of them is still read, on the right line.
    let src = format!("{src}use crate::sinks::json;\n");
    let v = check_fixture("checks/mod.rs", &src);
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(v[0].line, 9);
}

#[test]
fn forbidden_names_and_dependencies_are_caught() {
    let v = check_forbidden_names(
        "filter/src/policy/mod.rs",
        "// proxy_wasm in a comment is fine\nuse proxy_wasm::traits::HttpContext;\n",
        ENGINE_FORBIDDEN,
    );
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(v[0].line, 2);
    assert!(v[0].rule.contains("only filter/src/wasm/"), "{}", v[0]);
    let v = check_forbidden_names(
        "filter/src/x.rs",
        "#[link(wasm_import_module = \"env\")]\nextern \"C\" {}\n",
        ENGINE_FORBIDDEN,
    );
    assert_eq!(v.len(), 1, "{v:?}");
    let v = check_forbidden_names(
        "tests/src/x.rs",
        "let f = \"egress_filter.wasm\";\nuse egress_filter::CompiledConfig;\n",
        HOST_FORBIDDEN,
    );
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(v[0].line, 2);
    let manifest = "[dependencies]\n# egress-filter is never a dependency\nwasmtime = \"1\"\n\
                    [dev-dependencies]\negress-filter = { path = \"../filter\" }\n";
    let v = check_manifest_dependencies("tests/Cargo.toml", manifest);
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(v[0].line, 5);
}

#[test]
fn engine_exports_and_extern_items_are_caught() {
    let v = check_forbidden_names(
        "filter/src/x.rs",
        "// #[no_mangle] in a comment is fine\n#[no_mangle]\npub fn proxy_on_tick(_: u32) {}\n",
        ENGINE_FORBIDDEN,
    );
    assert_eq!(v.len(), 1, "{v:?}");
    assert_eq!(v[0].line, 2);
    assert!(v[0].rule.contains("exports nothing"), "{}", v[0]);
    let v = check_forbidden_names(
        "filter/src/x.rs",
        "#[unsafe(no_mangle)]\nfn f() {}\n#[export_name = \"proxy_on_tick\"]\nfn g() {}\n",
        ENGINE_FORBIDDEN,
    );
    assert_eq!(v.len(), 2, "{v:?}");
    let src = r#"extern crate alloc;
// extern "C" { fn proxy_log(level: u32); }
const S: &str = "extern \"C\" fn";
extern "C" {
    fn proxy_log(level: u32);
}
pub extern "C" fn proxy_on_memory_allocate(size: usize) -> *mut u8 { todo!() }
unsafe extern "C" {}
extern {}
"#;
    let v = check_extern_items("filter/src/x.rs", src);
    let lines: Vec<usize> = v.iter().map(|v| v.line).collect();
    assert_eq!(lines, [4, 7, 8, 9], "{v:?}");
    assert!(v[0].rule.contains("filter/src/wasm/"), "{}", v[0]);
    // The glue does both, so the rules would see it there.
    let abi = read(&repo_root().join("filter/src/wasm/abi.rs"));
    assert!(!check_extern_items("filter/src/wasm/abi.rs", &abi).is_empty());
    assert!(!check_forbidden_names("filter/src/wasm/abi.rs", &abi, ENGINE_FORBIDDEN).is_empty());
}
