//! Pure rewriting of cargo command-line arguments: adding a feature to an existing
//! `--features`/`-F` list, and recognising `bundle moodfader ...` invocations.
//! Thread: any

/// The package whose bundling xtask customises.
pub const PLUGIN_PACKAGE: &str = "moodfader";
/// The command line's package (its binary is `moodfader`).
pub const CLI_PACKAGE: &str = "moodfader-cli";

/// Returns `args` with `feature` enabled: appended to the first `--features`/`-F` list if there is
/// one, else as a new `--features <feature>` pair. Unchanged with `--all-features` or when the
/// feature is already listed.
pub fn with_feature(args: &[String], feature: &str) -> Vec<String> {
    let mut out = args.to_vec();
    if out.iter().any(|a| a == "--all-features") {
        return out;
    }
    let mut i = 0;
    while i < out.len() {
        let arg = out[i].clone();
        if arg == "--" {
            break;
        }
        if arg == "--features" || arg == "-F" {
            match out.get_mut(i + 1) {
                Some(list) => *list = append_feature(list, feature),
                None => out.push(feature.to_string()),
            }
            return out;
        }
        if let Some(list) = arg.strip_prefix("--features=") {
            out[i] = format!("--features={}", append_feature(list, feature));
            return out;
        }
        if let Some(list) = arg.strip_prefix("-F").filter(|rest| !rest.is_empty()) {
            let list = list.strip_prefix('=').unwrap_or(list);
            out[i] = format!("-F{}", append_feature(list, feature));
            return out;
        }
        i += 1;
    }
    out.push("--features".to_string());
    out.push(feature.to_string());
    out
}

fn append_feature(list: &str, feature: &str) -> String {
    let already = list.split([',', ' ']).map(str::trim).any(|f| f == feature);
    if already {
        list.to_string()
    } else if list.trim().is_empty() {
        feature.to_string()
    } else {
        format!("{list},{feature}")
    }
}

/// For `bundle` args naming only the plugin package (`moodfader ...` or `-p moodfader ...`),
/// returns the remaining cargo args. `None` means "not ours": pass through to nice-plug-xtask.
pub fn split_moodfader_bundle_args(args: &[String]) -> Option<Vec<String>> {
    let rest = match args {
        [p, rest @ ..] if p == PLUGIN_PACKAGE => rest,
        [flag, p, rest @ ..] if (flag == "-p" || flag == "--package") && p == PLUGIN_PACKAGE => {
            rest
        }
        _ => return None,
    };
    let names_other_package = rest.iter().any(|a| {
        a == "-p" || a == "--package" || a.starts_with("--package=") || a == "--workspace"
    });
    if names_other_package {
        None
    } else {
        Some(rest.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn adds_features_flag_when_absent() {
        assert_eq!(
            with_feature(&s(&["--release"]), "embed-runtime"),
            s(&["--release", "--features", "embed-runtime"])
        );
        assert_eq!(with_feature(&[], "x"), s(&["--features", "x"]));
    }

    #[test]
    fn appends_to_separate_value_forms() {
        assert_eq!(
            with_feature(&s(&["--features", "a,b", "--release"]), "embed-runtime"),
            s(&["--features", "a,b,embed-runtime", "--release"])
        );
        assert_eq!(
            with_feature(&s(&["-F", "a b"]), "embed-runtime"),
            s(&["-F", "a b,embed-runtime"])
        );
    }

    #[test]
    fn appends_to_joined_value_forms() {
        assert_eq!(
            with_feature(&s(&["--features=a"]), "e"),
            s(&["--features=a,e"])
        );
        assert_eq!(
            with_feature(&s(&["--features="]), "e"),
            s(&["--features=e"])
        );
        assert_eq!(with_feature(&s(&["-Fa"]), "e"), s(&["-Fa,e"]));
        assert_eq!(with_feature(&s(&["-F=a"]), "e"), s(&["-Fa,e"]));
    }

    #[test]
    fn only_first_list_is_extended() {
        assert_eq!(
            with_feature(&s(&["-F", "a", "--features", "b"]), "e"),
            s(&["-F", "a,e", "--features", "b"])
        );
    }

    #[test]
    fn leaves_args_alone_when_already_enabled() {
        assert_eq!(with_feature(&s(&["-F", "e,a"]), "e"), s(&["-F", "e,a"]));
        assert_eq!(
            with_feature(&s(&["--all-features"]), "e"),
            s(&["--all-features"])
        );
    }

    #[test]
    fn dangling_features_flag_gets_the_feature() {
        assert_eq!(
            with_feature(&s(&["--features"]), "e"),
            s(&["--features", "e"])
        );
    }

    #[test]
    fn recognises_moodfader_bundle_args() {
        assert_eq!(
            split_moodfader_bundle_args(&s(&["moodfader", "--release"])),
            Some(s(&["--release"]))
        );
        assert_eq!(
            split_moodfader_bundle_args(&s(&["-p", "moodfader"])),
            Some(vec![])
        );
        assert_eq!(
            split_moodfader_bundle_args(&s(&["other", "--release"])),
            None
        );
        assert_eq!(
            split_moodfader_bundle_args(&s(&["moodfader", "-p", "other"])),
            None
        );
        assert_eq!(split_moodfader_bundle_args(&[]), None);
    }
}
