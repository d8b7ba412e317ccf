//! Every crate of the workspace reads one way: no circle among its modules.
//!
//! Why: a newcomer reads a crate bottom-up, in the order of its `# Layout`
//! list, and a circle (a module that, through others, refers back to
//! itself) leaves no module to read first. A circle is easy to close by
//! accident, often with a doc link that points "up", so it is checked here
//! rather than by eye.
//!
//! What counts as a reference from one module to another: a `crate::`,
//! `super::` or `self::` path anywhere in its code (in a `use` or inline,
//! `use` trees with braces included), a name the crate root re-exports
//! (`crate::Amount` is a reference to the module that defines `Amount`),
//! and the same paths in its doc comments (intra-doc links). Not counted:
//! a child using its ancestors' items (a parent's types in its children),
//! plain `//` comments, string literals, and `#[cfg(test)]` items, whose
//! fixtures may come from anywhere. Modules are found by following `mod`
//! declarations from each crate root (`lib.rs`, `main.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module's path inside its crate (`["lane", "pay"]`; the root is `[]`).
type ModPath = Vec<String>;

/// One crate's modules and the references between them.
#[derive(Debug, Default)]
struct ModuleGraph {
    /// Every module and its file.
    files: BTreeMap<ModPath, PathBuf>,
    /// `from → to → where` (the first place `from` refers to `to`).
    edges: BTreeMap<ModPath, BTreeMap<ModPath, String>>,
}

fn workspace() -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    std::fs::canonicalize(&path).unwrap_or(path)
}

/// Every crate root of the workspace's members (`crates/*`, `tools/*`).
fn crate_roots() -> Vec<PathBuf> {
    let mut roots = Vec::new();
    for group in ["crates", "tools"] {
        let entries = std::fs::read_dir(workspace().join(group)).expect("the workspace's folder");
        for entry in entries {
            let src = entry.expect("a directory entry").path().join("src");
            for root in ["lib.rs", "main.rs"] {
                if src.join(root).is_file() {
                    roots.push(src.join(root));
                }
            }
        }
    }
    roots.sort();
    roots
}

#[test]
fn no_crate_has_a_circle_of_modules() {
    let roots = crate_roots();
    assert!(roots.len() >= 10, "crate roots found: {roots:?}");
    let mut circles = Vec::new();
    for root in &roots {
        let graph = ModuleGraph::read(root);
        for circle in graph.circles() {
            circles.push(format!("{}:\n{circle}", root.display()));
        }
    }
    assert!(
        circles.is_empty(),
        "modules that refer back to themselves (turn the upward reference into plain text, \
         or move what both need into a module below both):\n{}",
        circles
            .join("\n")
            .replace(&format!("{}/", workspace().display()), "")
    );
}

#[test]
fn a_doc_link_upward_closes_a_circle() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
    write("lib.rs", "mod ids;\nmod order;\npub use order::Order;\n");
    write(
        "ids.rs",
        "/// Used by [`Order`](crate::Order).\npub struct Id;\n",
    );
    write("order.rs", "use crate::{ids::Id};\npub struct Order(Id);\n");
    let circles = ModuleGraph::read(&dir.path().join("lib.rs")).circles();
    assert_eq!(circles.len(), 1, "{circles:?}");
    assert!(circles[0].contains("ids -> order"), "{}", circles[0]);
    assert!(circles[0].contains("order -> ids"), "{}", circles[0]);

    // The same link as plain text, and the test module's use of `order`, are no references.
    write(
        "ids.rs",
        "/// Used by an `Order` (see the `order` module).\npub struct Id;\n\
         #[cfg(test)]\nmod tests {\n    use crate::order::Order;\n    fn f(_: Order) { let _ = '{'; }\n}\n",
    );
    let circles = ModuleGraph::read(&dir.path().join("lib.rs")).circles();
    assert!(circles.is_empty(), "{circles:?}");
}

#[test]
fn siblings_through_super_close_a_circle_and_a_parent_does_not() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("lane")).unwrap();
    let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
    write("lib.rs", "mod lane;\n");
    write(
        "lane.rs",
        "mod pay;\nmod thread;\npub(crate) use pay::Pay;\n",
    );
    write(
        "lane/pay.rs",
        "use super::{thread::Job, Lane};\npub struct Pay;\n",
    );
    write(
        "lane/thread.rs",
        "pub struct Job(super::super::lane::pay::Pay);\n",
    );
    let graph = ModuleGraph::read(&dir.path().join("lib.rs"));
    assert_eq!(graph.files.len(), 4, "{:?}", graph.files.keys());
    let circles = graph.circles();
    assert_eq!(circles.len(), 1, "{circles:?}");
    assert!(
        circles[0].contains("lane::pay -> lane::thread"),
        "{}",
        circles[0]
    );
    assert!(
        circles[0].contains("lane::thread -> lane::pay"),
        "{}",
        circles[0]
    );
}

impl ModuleGraph {
    /// Reads the crate whose root file is `root`, following its `mod` declarations.
    fn read(root: &Path) -> Self {
        let mut graph = Self::default();
        let mut texts = BTreeMap::new();
        let mut pending = vec![(ModPath::new(), root.to_path_buf())];
        while let Some((module, file)) = pending.pop() {
            let text = std::fs::read_to_string(&file)
                .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            let source = Source::new(&text);
            let dir = match file.file_name().and_then(|n| n.to_str()) {
                Some("lib.rs" | "main.rs" | "mod.rs") => file.parent().unwrap().to_path_buf(),
                _ => file.with_extension(""),
            };
            for child in source.child_modules() {
                let flat = dir.join(format!("{child}.rs"));
                let nested = dir.join(&child).join("mod.rs");
                let child_file = if flat.is_file() { flat } else { nested };
                let mut path = module.clone();
                path.push(child);
                pending.push((path, child_file));
            }
            graph.files.insert(module.clone(), file);
            texts.insert(module, source);
        }
        let reexports = texts
            .get(&ModPath::new())
            .map(|root| root.reexports(&graph.files))
            .unwrap_or_default();
        for (module, source) in &texts {
            if module.is_empty() {
                continue;
            }
            for (line, path, text) in source.references(module) {
                let Some(target) = graph.resolve(&path, &reexports) else {
                    continue;
                };
                if module.starts_with(&target) {
                    continue; // itself, or a parent's items in a child
                }
                let at = format!("{}:{line} `{text}`", graph.files[module].display());
                graph
                    .edges
                    .entry(module.clone())
                    .or_default()
                    .entry(target)
                    .or_insert(at);
            }
        }
        graph
    }

    /// The module a path from the crate root refers to: its longest prefix
    /// that is a module, or for a name at the root the module the root
    /// re-exports it from; `None` for the root's own items.
    fn resolve(&self, path: &[String], reexports: &BTreeMap<String, ModPath>) -> Option<ModPath> {
        let longest = (0..=path.len())
            .rev()
            .find(|&n| self.files.contains_key(&path[..n]))?;
        if longest > 0 {
            return Some(path[..longest].to_vec());
        }
        path.first().and_then(|name| reexports.get(name)).cloned()
    }

    /// Each circle (a strongly connected set of two or more modules) with
    /// the references inside it, one per line.
    fn circles(&self) -> Vec<String> {
        let mut tarjan = Tarjan::default();
        for module in self.files.keys() {
            if !tarjan.index.contains_key(module) {
                tarjan.visit(module, &self.edges);
            }
        }
        tarjan
            .components
            .into_iter()
            .filter(|set| set.len() > 1)
            .map(|set| {
                let mut lines = Vec::new();
                for from in &set {
                    for (to, at) in self.edges.get(from).into_iter().flatten() {
                        if set.contains(to) {
                            lines.push(format!("  {} -> {}: {at}", name(from), name(to)));
                        }
                    }
                }
                lines.join("\n")
            })
            .collect()
    }
}

fn name(module: &ModPath) -> String {
    if module.is_empty() {
        "crate".to_owned()
    } else {
        module.join("::")
    }
}

/// Tarjan's strongly connected components over the module graph.
#[derive(Default)]
struct Tarjan {
    index: BTreeMap<ModPath, usize>,
    low: BTreeMap<ModPath, usize>,
    stack: Vec<ModPath>,
    on_stack: BTreeSet<ModPath>,
    components: Vec<BTreeSet<ModPath>>,
}

impl Tarjan {
    fn visit(&mut self, v: &ModPath, edges: &BTreeMap<ModPath, BTreeMap<ModPath, String>>) {
        let n = self.index.len();
        self.index.insert(v.clone(), n);
        self.low.insert(v.clone(), n);
        self.stack.push(v.clone());
        self.on_stack.insert(v.clone());
        for w in edges.get(v).into_iter().flat_map(BTreeMap::keys) {
            if !self.index.contains_key(w) {
                self.visit(w, edges);
                let low = self.low[v].min(self.low[w]);
                self.low.insert(v.clone(), low);
            } else if self.on_stack.contains(w) {
                let low = self.low[v].min(self.index[w]);
                self.low.insert(v.clone(), low);
            }
        }
        if self.low[v] == self.index[v] {
            let mut component = BTreeSet::new();
            while let Some(w) = self.stack.pop() {
                self.on_stack.remove(&w);
                let done = &w == v;
                component.insert(w);
                if done {
                    break;
                }
            }
            self.components.push(component);
        }
    }
}

/// One source file, split into code (strings, comments and `#[cfg(test)]`
/// items blanked out, offsets kept) and its doc comments.
struct Source {
    /// The file's bytes with everything but code replaced by spaces (newlines kept).
    code: Vec<u8>,
    /// Each doc comment's offset and text.
    docs: Vec<(usize, String)>,
    /// Inline `mod name { … }` blocks: name and byte range.
    inline: Vec<(String, std::ops::Range<usize>)>,
}

impl Source {
    fn new(text: &str) -> Self {
        let (mut code, docs) = split_code_and_docs(text);
        let tests = cfg_test_items(&code);
        for range in &tests {
            blank(&mut code[range.clone()]);
        }
        let docs = docs
            .into_iter()
            .filter(|(at, _)| !tests.iter().any(|r| r.contains(at)))
            .collect();
        let inline = inline_modules(&code);
        Self { code, docs, inline }
    }

    /// The names of `mod name;` declarations (the children in their own files).
    fn child_modules(&self) -> Vec<String> {
        let code = String::from_utf8_lossy(&self.code);
        let mut children = Vec::new();
        let mut rest = &code[..];
        while let Some(at) = find_word(rest, "mod") {
            rest = &rest[at + 3..];
            let (name, after) = ident(rest.trim_start());
            if !name.is_empty() && after.trim_start().starts_with(';') {
                children.push(name.to_owned());
            }
        }
        children
    }

    /// `pub use` at the root: each re-exported name and the module it comes from.
    fn reexports(&self, files: &BTreeMap<ModPath, PathBuf>) -> BTreeMap<String, ModPath> {
        let code = String::from_utf8_lossy(&self.code);
        let mut names = BTreeMap::new();
        for (at, _) in code.match_indices("pub use ") {
            let mut paths = Vec::new();
            use_tree(&code[at + 8..], ModPath::new(), &mut paths);
            for path in paths {
                let module = (1..path.len())
                    .rev()
                    .find(|&n| files.contains_key(&path[..n]));
                if let (Some(n), Some(last)) = (module, path.last()) {
                    names.insert(last.clone(), path[..n].to_vec());
                }
            }
        }
        names
    }

    /// Every `crate::`/`super::`/`self::` path in code and doc comments, from
    /// the crate root: line, path, and the text it was read from.
    fn references(&self, module: &ModPath) -> Vec<(usize, ModPath, String)> {
        let code = String::from_utf8_lossy(&self.code).into_owned();
        let mut found = Vec::new();
        self.paths_in(&code, 0, module, &mut found);
        for (at, doc) in &self.docs {
            self.paths_in(doc, *at, module, &mut found);
        }
        let line_of = |at: usize| 1 + self.code[..at].iter().filter(|&&b| b == b'\n').count();
        found
            .into_iter()
            .map(|(at, path, text)| (line_of(at), path, text))
            .collect()
    }

    fn paths_in(
        &self,
        text: &str,
        offset: usize,
        module: &ModPath,
        found: &mut Vec<(usize, ModPath, String)>,
    ) {
        for keyword in ["crate", "super", "self"] {
            let mut from = 0;
            while let Some(at) = find_word(&text[from..], keyword).map(|a| a + from) {
                from = at + keyword.len();
                let Some(mut rest) = text[from..].trim_start().strip_prefix("::") else {
                    continue;
                };
                if keyword == "super" && text[..at].trim_end().ends_with("::") {
                    continue; // the second `super` of `super::super::`, read with the first
                }
                // Where `self` stands: the file's module and the inline modules around.
                let mut base = module.clone();
                base.extend(
                    self.inline
                        .iter()
                        .filter(|(_, range)| range.contains(&(offset + at)))
                        .map(|(name, _)| name.clone()),
                );
                match keyword {
                    "crate" => base.clear(),
                    "super" => {
                        base.pop();
                        while let Some(more) = rest.trim_start().strip_prefix("super") {
                            let Some(after) = more.trim_start().strip_prefix("::") else {
                                break;
                            };
                            base.pop();
                            rest = after;
                        }
                    }
                    _ => {}
                }
                let mut paths = Vec::new();
                use_tree(rest, base, &mut paths);
                let shown: String = text[at..]
                    .chars()
                    .take_while(|&c| c != '\n')
                    .take(60)
                    .collect();
                for path in paths {
                    found.push((offset + at, path, shown.trim_end().to_owned()));
                }
            }
        }
    }
}

/// Reads one `use` tree (`a::b`, `{a, b::{c, self}}`, `*`) after `prefix`,
/// pushing each full path it names.
fn use_tree<'a>(text: &'a str, prefix: ModPath, paths: &mut Vec<ModPath>) -> &'a str {
    let text = text.trim_start();
    if let Some(mut rest) = text.strip_prefix('{') {
        loop {
            rest = rest.trim_start();
            if let Some(after) = rest.strip_prefix('}') {
                return after;
            }
            if let Some(after) = rest.strip_prefix(',') {
                rest = after;
                continue;
            }
            if rest.is_empty() {
                return rest;
            }
            let before = rest.len();
            rest = use_tree(rest, prefix.clone(), paths);
            if rest.len() == before {
                rest = &rest[rest.chars().next().map_or(0, char::len_utf8)..];
            }
        }
    }
    let (name, rest) = ident(text);
    if name.is_empty() || name == "self" {
        paths.push(prefix);
        return rest;
    }
    let mut path = prefix;
    path.push(name.to_owned());
    match rest.trim_start().strip_prefix("::") {
        Some(after) => use_tree(after, path, paths),
        None => {
            paths.push(path);
            rest
        }
    }
}

/// The identifier at the start of `text`, and what follows it.
fn ident(text: &str) -> (&str, &str) {
    let end = text
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(text.len());
    text.split_at(end)
}

/// The first offset of `word` in `text` as a word of its own.
fn find_word(text: &str, word: &str) -> Option<usize> {
    let is_ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let bytes = text.as_bytes();
    text.match_indices(word).map(|(at, _)| at).find(|&at| {
        let end = at + word.len();
        (at == 0 || !is_ident(bytes[at - 1])) && (end == bytes.len() || !is_ident(bytes[end]))
    })
}

fn blank(bytes: &mut [u8]) {
    for b in bytes.iter_mut().filter(|b| **b != b'\n') {
        *b = b' ';
    }
}

/// The code with comments, strings and character literals blanked, and
/// the doc comments (`///`, `//!`, `/** */`, `/*! */`) with their offsets.
fn split_code_and_docs(source: &str) -> (Vec<u8>, Vec<(usize, String)>) {
    let text = source.as_bytes();
    let mut code = text.to_vec();
    let mut docs = Vec::new();
    let is_ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut i = 0;
    while i < text.len() {
        let rest = &text[i..];
        let end = if rest.starts_with(b"//") {
            let end = i + rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
            if (rest.starts_with(b"///") && !rest.starts_with(b"////")) || rest.starts_with(b"//!")
            {
                docs.push((i, source[i..end].to_owned()));
            }
            end
        } else if rest.starts_with(b"/*") {
            let end = block_comment_end(text, i);
            if (rest.starts_with(b"/**") && !rest.starts_with(b"/**/")) || rest.starts_with(b"/*!")
            {
                docs.push((i, source[i..end].to_owned()));
            }
            end
        } else if let Some(end) = (i == 0 || !is_ident(text[i - 1]))
            .then(|| raw_string_end(text, i))
            .flatten()
        {
            end
        } else if rest[0] == b'"' {
            let mut j = i + 1;
            while j < text.len() && text[j] != b'"' {
                j += if text[j] == b'\\' { 2 } else { 1 };
            }
            j + 1
        } else if let Some(end) = (rest[0] == b'\'')
            .then(|| char_literal_end(source, i))
            .flatten()
        {
            end
        } else {
            i += 1;
            continue;
        };
        let end = end.min(text.len());
        blank(&mut code[i..end]);
        i = end;
    }
    (code, docs)
}

/// Where the (possibly nested) block comment that starts at `i` ends.
fn block_comment_end(text: &[u8], i: usize) -> usize {
    let (mut depth, mut j) = (0usize, i);
    while j < text.len() {
        if text[j..].starts_with(b"/*") {
            depth += 1;
            j += 2;
        } else if text[j..].starts_with(b"*/") {
            depth -= 1;
            j += 2;
            if depth == 0 {
                return j;
            }
        } else {
            j += 1;
        }
    }
    text.len()
}

/// Where the character literal (`'x'`, `'\n'`, `'\u{7f}'`, the `'{'` of
/// `b'{'`) that starts at `i` ends; `None` for a lifetime (`'a`).
fn char_literal_end(source: &str, i: usize) -> Option<usize> {
    let text = source.as_bytes();
    if text.get(i + 1) == Some(&b'\\') {
        let close = text.get(i + 3..)?.iter().position(|&b| b == b'\'')?;
        return Some(i + 3 + close + 1);
    }
    let width = source[i + 1..].chars().next()?.len_utf8();
    (text.get(i + 1 + width) == Some(&b'\'')).then_some(i + 2 + width)
}

/// Where a raw string (`r"…"`, `r#"…"#`, `br"…"`) that starts at `i`
/// ends; `None` if none starts there.
fn raw_string_end(text: &[u8], i: usize) -> Option<usize> {
    let mut j = i + match text[i..] {
        [b'r', ..] => 1,
        [b'b', b'r', ..] => 2,
        _ => return None,
    };
    let hashes = text[j..].iter().take_while(|&&b| b == b'#').count();
    j += hashes;
    if text.get(j) != Some(&b'"') {
        return None;
    }
    let mut close = vec![b'"'];
    close.extend(std::iter::repeat_n(b'#', hashes));
    let body = j + 1;
    let at = text[body..].windows(close.len()).position(|w| w == close)?;
    Some(body + at + close.len())
}

/// The byte ranges of items under `#[cfg(test)]`: the attribute, any
/// attributes after it, and the item up to its `;` or its closing brace.
fn cfg_test_items(code: &[u8]) -> Vec<std::ops::Range<usize>> {
    let text = String::from_utf8_lossy(code);
    let mut items = Vec::new();
    for (start, attr) in text.match_indices("#[cfg(test)]") {
        let mut i = start + attr.len();
        while i < code.len() && code[i] != b';' && code[i] != b'{' {
            i += 1;
        }
        let end = if code.get(i) == Some(&b'{') {
            matching_brace(code, i)
        } else {
            i + 1
        };
        items.push(start..end.min(code.len()));
    }
    items
}

/// The offset just past the brace that closes the one at `open`.
fn matching_brace(code: &[u8], open: usize) -> usize {
    let mut depth = 0usize;
    for (i, &b) in code.iter().enumerate().skip(open) {
        match b {
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
    }
    code.len()
}

/// Inline `mod name { … }` blocks of the (blanked) code.
fn inline_modules(code: &[u8]) -> Vec<(String, std::ops::Range<usize>)> {
    let text = String::from_utf8_lossy(code);
    let mut blocks = Vec::new();
    let mut from = 0;
    while let Some(at) = find_word(&text[from..], "mod").map(|a| a + from) {
        from = at + 3;
        let after = text[from..].trim_start();
        let (name, rest) = ident(after);
        let rest_trimmed = rest.trim_start();
        if !name.is_empty() && rest_trimmed.starts_with('{') {
            let open = text.len() - rest_trimmed.len();
            blocks.push((name.to_owned(), open..matching_brace(code, open)));
        }
    }
    blocks
}
