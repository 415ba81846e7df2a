//! Architecture invariants checked by `cargo xtask test`:
//! * the engine crate does not depend (normal edges) on host or GUI crates (`cargo tree -i`);
//! * the stages keep to their layers (read off the engine's sources, test modules left out):
//!   nothing under `rt/` (what `process()` calls) uses `lab`, `ort`, a lock, the worker, the
//!   models or the `Shared` methods that lock; `listen` uses no later stage; `feel` uses neither
//!   `play` nor the worker; `play` does not use the worker; only `lab` uses `lab`;
//! * no two engine files import each other, directly or round a longer circle;
//! * the plugin is built without the engine's `lab` feature (`cargo tree -e features`), and the
//!   bundled binary carries no `lab` code (its symbol names).
//!
//! Thread: any

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::workspace::{self, Workspace, limit};

/// The engine crate and the crates it must never pull in through normal dependencies.
pub const ENGINE_PACKAGE: &str = "moodfader-engine";
pub const ENGINE_FORBIDDEN: &[&str] = &["nice-plug", "egui"];
/// The engine's folders (stages); a path `crate::STAGE::file` names the file, others name a
/// top-level file (`crate::worker`).
const STAGES: &[&str] = &["rt", "listen", "feel", "play", "lab"];

/// Every invariant; each failure is listed, then the step fails.
pub fn check_all(ws: &Workspace) -> Result<()> {
    let mut problems = Vec::new();
    if let Err(e) = check_engine_is_host_free() {
        problems.push(format!("{e:#}"));
    }
    let files = engine_sources(&ws.root.join("plugin/engine/src"))?;
    problems.extend(layer_problems(&files));
    problems.extend(cycle_problems(&files));
    match find_feature(crate::cargo_args::PLUGIN_PACKAGE, ENGINE_PACKAGE, "lab") {
        Ok(None) => {}
        Ok(Some(tree)) => problems.push(format!("the plugin's build enables {ENGINE_PACKAGE}'s lab feature:\n{tree}")),
        Err(e) => problems.push(format!("{e:#}")),
    }
    let bundle = ws.target_dir.join("bundled").join(format!("{}.clap", crate::cargo_args::PLUGIN_PACKAGE));
    match std::fs::read(&bundle) {
        Ok(bytes) => match links_lab(&bytes) {
            Some(false) => eprintln!("[xtask] {} carries no lab code", bundle.display()),
            Some(true) => problems.push(format!("{} carries the engine's lab module (moodfader_engine::lab symbols)", bundle.display())),
            None => problems.push(format!("{}: no engine symbols to check for lab code (stripped?)", bundle.display())),
        },
        Err(e) => problems.push(format!("{}: cannot read the bundle to check for lab code: {e}", bundle.display())),
    }
    if !problems.is_empty() {
        for p in &problems {
            eprintln!("[xtask] invariant broken: {p}");
        }
        bail!("{} architecture invariant(s) broken (listed above)", problems.len());
    }
    eprintln!("[xtask] {} engine files keep to their stages, import no circle, and the plugin carries no lab", files.len());
    Ok(())
}

/// One engine source file: its module path (`rt::audio_side`, `worker`) and its code without
/// comments and without its test module.
#[derive(Debug, Clone)]
pub struct Source {
    pub module: String,
    pub code: String,
}

fn engine_sources(src: &Path) -> Result<Vec<Source>> {
    let mut paths = Vec::new();
    collect_rs(src, &mut paths)?;
    paths.sort();
    let mut files = Vec::new();
    for p in paths {
        let rel = p.strip_prefix(src).unwrap_or(&p).with_extension("");
        let parts: Vec<String> = rel.iter().map(|c| c.to_string_lossy().into_owned()).collect();
        let module = match parts.as_slice() {
            [only] if only == "lib" => String::new(),
            [dir @ .., last] if last == "mod" => dir.join("::"),
            all => all.join("::"),
        };
        let text = std::fs::read_to_string(&p).with_context(|| format!("{}: cannot read", p.display()))?;
        files.push(Source { module, code: code_of(&text) });
    }
    if files.len() < 10 {
        bail!("{}: only {} engine files found", src.display(), files.len());
    }
    Ok(files)
}

fn collect_rs(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("{}: cannot read", dir.display()))? {
        let path = entry?.path();
        if path.is_dir() {
            collect_rs(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    Ok(())
}

/// The code of a file: comments dropped, string and character literals emptied, and nothing
/// from its first top-level `#[cfg(test)]` on (the test module, which may reach anywhere).
pub fn code_of(text: &str) -> String {
    let text = text.split("\n#[cfg(test)]").next().unwrap_or(text);
    let text = if text.starts_with("#[cfg(test)]") { "" } else { text };
    let c: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < c.len() {
        match c[i] {
            '/' if c.get(i + 1) == Some(&'/') => {
                while i < c.len() && c[i] != '\n' {
                    i += 1;
                }
            }
            '/' if c.get(i + 1) == Some(&'*') => {
                i += 2;
                while i < c.len() && !(c[i] == '*' && c.get(i + 1) == Some(&'/')) {
                    i += 1;
                }
                i += 2;
            }
            'r' if (c.get(i + 1) == Some(&'"') || c.get(i + 1) == Some(&'#')) && !ident_before(&c, i) => {
                // A raw string r"…" or r#"…"#.
                let mut j = i + 1;
                let mut hashes = 0;
                while c.get(j) == Some(&'#') {
                    hashes += 1;
                    j += 1;
                }
                if c.get(j) != Some(&'"') {
                    out.push('r');
                    i += 1;
                    continue;
                }
                j += 1;
                while j < c.len() && !(c[j] == '"' && (0..hashes).all(|h| c.get(j + 1 + h) == Some(&'#'))) {
                    j += 1;
                }
                out.push_str("\"\"");
                i = j + 1 + hashes;
            }
            '"' => {
                i += 1;
                while i < c.len() && c[i] != '"' {
                    i += if c[i] == '\\' { 2 } else { 1 };
                }
                out.push_str("\"\"");
                i += 1;
            }
            '\'' if c.get(i + 1) == Some(&'\\') => {
                // An escape: the quote, the backslash and the escaped character, then up to the
                // closing quote ('\u{..}').
                i += 3;
                while i < c.len() && c[i] != '\'' {
                    i += 1;
                }
                out.push_str("' '");
                i += 1;
            }
            '\'' if c.get(i + 2) == Some(&'\'') => {
                out.push_str("' '");
                i += 3;
            }
            ch => {
                out.push(ch);
                i += 1;
            }
        }
    }
    out
}

fn ident_before(c: &[char], i: usize) -> bool {
    i > 0 && (c[i - 1].is_alphanumeric() || c[i - 1] == '_')
}

/// The engine modules a file's code names through `crate::…` (and `super::…`), as file modules.
pub fn uses(file: &Source) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let parent: Vec<&str> = file.module.split("::").filter(|s| !s.is_empty()).collect();
    let parent = &parent[..parent.len().saturating_sub(1)];
    for (prefix, base) in [("crate::", Vec::new()), ("super::", parent.to_vec())] {
        for (i, _) in file.code.match_indices(prefix) {
            let before = file.code[..i].chars().next_back();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            let path: Vec<&str> = file.code[i + prefix.len()..]
                .split("::")
                .map(|seg| seg.split(|c: char| !(c.is_alphanumeric() || c == '_')).next().unwrap_or(""))
                .take_while(|seg| !seg.is_empty())
                .collect();
            let mut full: Vec<&str> = base.clone();
            full.extend(path);
            let take = if full.first().is_some_and(|s| STAGES.contains(s)) { 2 } else { 1 };
            if full.len() >= take {
                out.insert(full[..take].join("::"));
            }
        }
    }
    out.remove(&file.module);
    out
}

/// Whether `code` holds `word` as a whole word (not inside a longer identifier).
fn has_word(code: &str, word: &str) -> bool {
    code.match_indices(word).any(|(i, _)| {
        let ident = |c: char| c.is_alphanumeric() || c == '_';
        let before = code[..i].chars().next_back().is_some_and(ident);
        let after = code[i + word.len()..].chars().next().is_some_and(ident);
        !before && !after
    })
}

/// The stage of a module (`rt`, `listen`…), or the top-level file's name (`worker`).
fn stage(module: &str) -> &str {
    module.split("::").next().unwrap_or("")
}

/// What each stage may not use: stages and top-level files.
const FORBIDDEN_USES: &[(&str, &[&str])] = &[
    ("rt", &["lab", "feel", "play", "worker", "runtime"]),
    ("listen", &["feel", "play", "rt", "worker", "lab", "shared"]),
    ("feel", &["play", "worker", "lab"]),
    ("play", &["worker", "lab"]),
];

/// Words that mean a lock or ONNX Runtime, which the audio thread's code must not hold.
const RT_FORBIDDEN_WORDS: &[&str] = &["Mutex", "RwLock", "Condvar", "ort", "parking_lot", "lock"];

pub fn layer_problems(files: &[Source]) -> Vec<String> {
    let mut problems = Vec::new();
    // The methods of `Shared` that take its locks: the audio thread may not call them.
    let locking: Vec<String> = files.iter().find(|f| f.module == "shared").map(|f| locking_methods(&f.code)).unwrap_or_default();
    for f in files {
        let st = stage(&f.module);
        let used = uses(f);
        if st != "lab" && !f.module.is_empty() {
            for u in used.iter().filter(|u| stage(u) == "lab") {
                problems.push(format!("{} uses {u}: only the lab may use the lab", f.module));
            }
        }
        if let Some((_, forbidden)) = FORBIDDEN_USES.iter().find(|(s, _)| *s == st) {
            for u in used.iter().filter(|u| forbidden.contains(&stage(u)) && stage(u) != "lab") {
                problems.push(format!("{} uses {u}: {st}/ may not use {}", f.module, forbidden.join(", ")));
            }
        }
        if st == "rt" {
            for w in RT_FORBIDDEN_WORDS.iter().filter(|w| has_word(&f.code, w)) {
                problems.push(format!("{} names `{w}`: what process() calls holds no lock and runs no model", f.module));
            }
            for m in locking.iter().filter(|m| f.code.contains(&format!(".{m}("))) {
                problems.push(format!("{} calls Shared::{m}, which takes a lock", f.module));
            }
        }
    }
    problems
}

/// Names of the `fn`s in `code` whose bodies call `.lock()` (or `.read()`/`.write()` on a lock).
pub fn locking_methods(code: &str) -> Vec<String> {
    let mut out = Vec::new();
    let starts: Vec<usize> = code.match_indices("fn ").map(|(i, _)| i).filter(|&i| i == 0 || !code[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_')).collect();
    for (k, &i) in starts.iter().enumerate() {
        let body = &code[i..starts.get(k + 1).copied().unwrap_or(code.len())];
        let name: String = body[3..].chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
        if body.contains(".lock()") && !name.is_empty() {
            out.push(name);
        }
    }
    out
}

/// Circles of imports between engine files (each circle once, as `a -> b -> a`).
pub fn cycle_problems(files: &[Source]) -> Vec<String> {
    let graph: BTreeMap<String, BTreeSet<String>> = files.iter().map(|f| (f.module.clone(), uses(f))).collect();
    let mut problems = Vec::new();
    let mut seen = BTreeSet::new();
    for start in graph.keys() {
        // Depth-first search for a way back to `start` through modules after it (each circle is
        // then found once, from its smallest module).
        let mut stack = vec![(start.clone(), vec![start.clone()])];
        let mut visited = BTreeSet::new();
        while let Some((node, path)) = stack.pop() {
            for next in graph.get(&node).into_iter().flatten() {
                if next == start {
                    let circle = format!("{} -> {start}", path.join(" -> "));
                    if seen.insert(circle.clone()) {
                        problems.push(format!("import circle: {circle}"));
                    }
                } else if next > start && graph.contains_key(next) && visited.insert(next.clone()) {
                    let mut p = path.clone();
                    p.push(next.clone());
                    stack.push((next.clone(), p));
                }
            }
        }
    }
    problems
}

/// Whether a binary holds code of the engine's `lab` module, read off its symbol names (legacy
/// mangling: `16moodfader_engine3lab`); `None` when it holds no engine symbols at all.
pub fn links_lab(bytes: &[u8]) -> Option<bool> {
    let has = |needle: &[u8]| bytes.windows(needle.len()).any(|w| w == needle);
    if !has(b"16moodfader_engine") {
        return None;
    }
    Some(has(b"16moodfader_engine3lab"))
}

/// What `cargo tree -p <root> -e normal -i <krate>` said about `krate`.
#[derive(Debug, PartialEq, Eq)]
pub enum TreeVerdict {
    Absent,
    Present,
}

/// Classifies a `cargo tree -i` run. Cargo exits 101 with "did not match any packages" when the
/// crate is not in the root's graph, exits 0 with the inverted tree when it is, and reports an
/// ambiguous spec (several versions in the graph) as an error; that also means present.
pub fn classify_tree(success: bool, stdout: &str, stderr: &str) -> Result<TreeVerdict> {
    if success {
        return Ok(if stdout.trim().is_empty() {
            TreeVerdict::Absent
        } else {
            TreeVerdict::Present
        });
    }
    if stderr.contains("did not match any packages") {
        Ok(TreeVerdict::Absent)
    } else if stderr.contains("is ambiguous") {
        Ok(TreeVerdict::Present)
    } else {
        bail!("cargo tree: unexpected failure: {}", stderr.trim())
    }
}

/// Runs the check for one crate; `Ok(Some(tree))` when the forbidden crate is present.
fn find_in_tree(root: &str, krate: &str) -> Result<Option<String>> {
    let mut cmd = Command::new(workspace::cargo());
    cmd.args(["tree", "-p", root, "-e", "normal", "-i", krate]);
    eprintln!("[xtask] $ {}", workspace::describe(&cmd));
    let out = workspace::output_within(&format!("cargo tree -i {krate}"), &mut cmd, limit::QUERY)?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    match classify_tree(out.status.success(), &stdout, &stderr)
        .with_context(|| format!("cargo tree -p {root} -i {krate}"))?
    {
        TreeVerdict::Absent => Ok(None),
        TreeVerdict::Present => Ok(Some(format!("{}{}", stdout, stderr))),
    }
}

/// `Ok(Some(tree))` when building `root` alone enables `feature` of `krate` (normal edges).
fn find_feature(root: &str, krate: &str, feature: &str) -> Result<Option<String>> {
    let mut cmd = Command::new(workspace::cargo());
    cmd.args(["tree", "-p", root, "-e", "normal,features", "-i", krate]);
    eprintln!("[xtask] $ {}", workspace::describe(&cmd));
    let out = workspace::output_within(&format!("cargo tree -i {krate}"), &mut cmd, limit::QUERY)?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || !stdout.contains(krate) {
        bail!("cargo tree -p {root} -i {krate}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(enables_feature(&stdout, krate, feature).then(|| stdout.into_owned()))
}

/// Whether an inverted feature tree (`cargo tree -e features -i krate`) shows `feature` enabled.
pub fn enables_feature(tree: &str, krate: &str, feature: &str) -> bool {
    tree.contains(&format!("{krate} feature \"{feature}\""))
}

/// Fails when `moodfader-engine` depends on any of [`ENGINE_FORBIDDEN`].
pub fn check_engine_is_host_free() -> Result<()> {
    let mut offenders = Vec::new();
    for krate in ENGINE_FORBIDDEN {
        if let Some(tree) = find_in_tree(ENGINE_PACKAGE, krate)? {
            eprintln!("{tree}");
            offenders.push(*krate);
        }
    }
    if !offenders.is_empty() {
        bail!(
            "architecture invariant: {ENGINE_PACKAGE} depends on {}; the engine must stay free of \
             host and GUI crates",
            offenders.join(", ")
        );
    }
    eprintln!(
        "[xtask] {ENGINE_PACKAGE} has no normal dependency on {}",
        ENGINE_FORBIDDEN.join(" or ")
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(module: &str, text: &str) -> Source {
        Source { module: module.into(), code: code_of(text) }
    }

    #[test]
    fn no_match_means_absent() {
        let err = "error: package ID specification `egui` did not match any packages\n";
        assert_eq!(classify_tree(false, "", err).unwrap(), TreeVerdict::Absent);
    }

    #[test]
    fn printed_tree_means_present() {
        let out = "egui v0.37.0\n└── nice-plug-egui v0.6.0\n";
        assert_eq!(classify_tree(true, out, "").unwrap(), TreeVerdict::Present);
        assert_eq!(
            classify_tree(true, "  \n", "").unwrap(),
            TreeVerdict::Absent
        );
    }

    #[test]
    fn ambiguous_spec_means_present() {
        let err = "error: There are multiple `egui` packages in your project, and the \
                   specification `egui` is ambiguous.";
        assert_eq!(classify_tree(false, "", err).unwrap(), TreeVerdict::Present);
    }

    #[test]
    fn other_failures_are_errors() {
        assert!(classify_tree(false, "", "error: failed to parse manifest").is_err());
    }

    #[test]
    fn code_loses_comments_strings_and_tests() {
        let text = "let a = \"x // y\"; // crate::lab\n/* Mutex */ let b = r#\"crate::rt \"q\"\"#; let c = '\"'; let d = '\\'';\nfn f<'a>(x: &'a u8) {}\n#[cfg(test)]\nmod tests { Mutex }\n";
        let code = code_of(text);
        assert_eq!(code, "let a = \"\"; \n let b = \"\"; let c = ' '; let d = ' ';\nfn f<'a>(x: &'a u8) {}");
    }

    #[test]
    fn uses_are_file_modules_without_comments_or_tests() {
        let f = src(
            "play::compose",
            "use crate::listen::notes::Note;\nuse crate::worker;\n// crate::lab::export in a comment\nfn f() { super::tokens::x(); let u = \"https://crate::rt\"; }\n#[cfg(test)]\nmod tests { use crate::lab::evaluate; }\n",
        );
        let u: Vec<String> = uses(&f).into_iter().collect();
        assert_eq!(u, ["listen::notes", "play::tokens", "worker"]);
    }

    #[test]
    fn layers_and_locks_are_caught() {
        let files = [
            src("shared", "pub struct Shared { m: Mutex<u8> }\nimpl Shared {\n    pub fn status_text(&self) -> u8 { *self.m.lock().unwrap() }\n    pub fn valence(&self) -> f32 { 0.0 }\n}\n"),
            src("rt::audio_side", "use std::sync::Mutex;\nfn p(s: &crate::shared::Shared) { s.status_text(); s.valence(); }\n"),
            src("rt::synth", "fn label() {}\nfn clock() -> u8 { 0 } // no Mutex here\n"),
            src("listen::transcribe", "use crate::feel::features;\n"),
            src("feel::live", "use crate::rt::queues::ToWorker;\n"),
            src("worker", "use crate::lab::export;\n"),
        ];
        let p = layer_problems(&files);
        assert!(p.iter().any(|m| m.contains("rt::audio_side names `Mutex`")), "{p:?}");
        assert!(p.iter().any(|m| m.contains("rt::audio_side calls Shared::status_text")), "{p:?}");
        assert!(!p.iter().any(|m| m.contains("Shared::valence")), "{p:?}");
        assert!(!p.iter().any(|m| m.starts_with("rt::synth")), "`label`, `clock` and comments are not locks: {p:?}");
        assert!(p.iter().any(|m| m.starts_with("listen::transcribe uses feel::features")), "{p:?}");
        assert!(!p.iter().any(|m| m.starts_with("feel::live")), "feel may use the queue items: {p:?}");
        assert!(p.iter().any(|m| m.starts_with("worker uses lab::export")), "{p:?}");
    }

    #[test]
    fn circles_are_found_once() {
        let files = [
            src("listen::transcribe", "use crate::listen::audio_cues::X;\n"),
            src("listen::audio_cues", "use crate::listen::transcribe::Y;\n"),
            src("a", "use crate::b;\n"),
            src("b", "use crate::c;\n"),
            src("c", "use crate::a;\n"),
            src("d", "use crate::a;\n"),
        ];
        let p = cycle_problems(&files);
        assert_eq!(p, ["import circle: a -> b -> c -> a", "import circle: listen::audio_cues -> listen::transcribe -> listen::audio_cues"]);
        assert!(cycle_problems(&files[2..4]).is_empty());
    }

    #[test]
    fn lab_symbols_and_features_are_seen() {
        assert_eq!(links_lab(b"..._ZN16moodfader_engine2rt5synth..."), Some(false));
        assert_eq!(links_lab(b"..._ZN16moodfader_engine2rt..._ZN16moodfader_engine3lab6export..."), Some(true));
        assert_eq!(links_lab(b"stripped"), None);
        let tree = "moodfader-engine v0.1.0\n├── moodfader-engine feature \"default\"\n└── moodfader-engine feature \"lab\"\n";
        assert!(enables_feature(tree, "moodfader-engine", "lab"));
        assert!(!enables_feature(&tree.replace("\"lab\"", "\"labx\""), "moodfader-engine", "lab"));
    }
}
