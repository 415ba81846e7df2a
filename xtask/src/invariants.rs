//! Architecture invariants checked by `cargo xtask test`: the engine crate must not depend
//! (normal edges) on host or GUI crates. Uses `cargo tree -i`.
//! Thread: any

use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::workspace;

/// The engine crate and the crates it must never pull in through normal dependencies.
pub const ENGINE_PACKAGE: &str = "moodfader-engine";
pub const ENGINE_FORBIDDEN: &[&str] = &["nice-plug", "egui"];

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
    let out = cmd
        .output()
        .with_context(|| format!("cargo tree -i {krate}: cannot start cargo"))?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    match classify_tree(out.status.success(), &stdout, &stderr)
        .with_context(|| format!("cargo tree -p {root} -i {krate}"))?
    {
        TreeVerdict::Absent => Ok(None),
        TreeVerdict::Present => Ok(Some(format!("{}{}", stdout, stderr))),
    }
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
}
