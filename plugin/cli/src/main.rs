//! `moodfader`, the command line: the same engine as the plugin, on files.
//!
//! ```text
//! moodfader analyze INPUT.mid|INPUT.wav|FOLDER [--json] [--csv FILE] [--plot FILE.png]
//! moodfader continue PRIMER.mid --bars N [--valence V] [--arousal A] [--ATTRIBUTE X ...]
//!                    [--steer S] [--temperature T] [--seed S] -o OUT.mid [--wav OUT.wav]
//! moodfader transcribe INPUT.wav -o OUT.mid [--tempo BPM] [--csv FILE] [--no-pitch-bends]
//! moodfader render INPUT.mid -o OUT.wav [--rate HZ]
//! moodfader completions SHELL
//! moodfader lab export-features | export-tokens | eval-continuation | fit-bridge | eval-audio | eval-calibration
//! ```
//! The first four are the product's contract (`../shared/design/product.md`); `lab` holds the
//! training and measuring commands. Arguments are parsed by `clap`: `--help` on every command, and
//! a mistake is one line naming it with a hint. Bad input prints one line naming the file and the
//! problem; both exit with code 2.
//!
//! Thread: main

mod lab;
mod plot;
mod user;

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

const ENVIRONMENT: &str = "\
Environment:
  MOODFADER_ORT_DYLIB    path of libonnxruntime.so.1.31.1 (else the one beside this binary or
                         the `cargo xtask setup` copy)
  MOODFADER_MODEL_DIR    folder with emotion_va.onnx/.json and continuation.onnx/.json (else the
                         built-in models)
  MOODFADER_BASIC_PITCH  path of Basic Pitch's nmp.onnx (else the one beside this binary or the
                         `cargo xtask setup` copy)
  MOODFADER_DATA         the data sets for `moodfader lab` (else ../shared/data)";

/// Hears the mood of music (valence and arousal, each in [-1, 1]) and plays on from it, steered.
#[derive(Debug, Parser)]
#[command(name = "moodfader", version, arg_required_else_help = true, after_help = ENVIRONMENT)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Analyze(user::AnalyzeArgs),
    Continue(user::ContinueArgs),
    Transcribe(user::TranscribeArgs),
    Render(user::RenderArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) on stdout.
    ///
    /// For example `moodfader completions bash > ~/.local/share/bash-completion/completions/moodfader`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Training and measuring: the exporters the training scripts read, the evaluations, the
    /// emotion bridge's fit. For developers; `cargo xtask train …` runs them.
    #[command(subcommand)]
    Lab(lab::LabCommand),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    let result = match cli.command {
        Command::Analyze(a) => user::analyze(a),
        Command::Continue(a) => user::continue_cmd(a),
        Command::Transcribe(a) => user::transcribe_cmd(a),
        Command::Render(a) => user::render_cmd(a),
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "moodfader", &mut std::io::stdout());
            Ok(())
        }
        Command::Lab(c) => lab::run(c),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("moodfader: {}", format!("{e:#}").replace('\n', " "));
            ExitCode::from(2)
        }
    }
}

/// `--help` and `--version` print as clap renders them (exit 0); a mistake is one line, the
/// problem and a hint, then exit 2.
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = e.print();
            ExitCode::SUCCESS
        }
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            ExitCode::from(2)
        }
        _ => {
            eprintln!("moodfader: {}", one_line(&e.render().to_string(), &command_path(std::env::args())));
            ExitCode::from(2)
        }
    }
}

/// Clap's error text as one line: the message and its tips joined, then where the help is
/// (`moodfader continue --help` for an error in `continue`).
fn one_line(rendered: &str, command: &str) -> String {
    let parts: Vec<&str> = rendered
        .lines()
        .map(str::trim)
        .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
        .filter(|l| !l.is_empty())
        .map(|l| l.strip_prefix("error: ").unwrap_or(l))
        .collect();
    format!("{} (see '{command} --help')", parts.join(" "))
}

/// The (sub)command that the arguments name, as a user types it: `moodfader lab fit-bridge`.
fn command_path<I: IntoIterator<Item = String>>(args: I) -> String {
    let mut cmd = Cli::command();
    let mut path = vec![String::from("moodfader")];
    for a in args.into_iter().skip(1) {
        let Some(sub) = cmd.find_subcommand(&a).cloned() else {
            if a.starts_with('-') {
                continue;
            }
            break;
        };
        path.push(a);
        cmd = sub;
    }
    path.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }

    fn error_line(args: &[&str]) -> String {
        let e = Cli::try_parse_from(args).unwrap_err();
        one_line(&e.render().to_string(), &command_path(args.iter().map(|a| a.to_string())))
    }

    #[test]
    fn errors_are_one_line_with_the_commands_help() {
        let line = error_line(&["moodfader", "continue", "x.mid", "--bars", "2"]);
        assert!(!line.contains('\n'), "{line}");
        assert!(line.contains("-o") && line.ends_with("(see 'moodfader continue --help')"), "{line}");
        let line = error_line(&["moodfader", "continue", "x.mid", "--bars", "20", "-o", "y.mid"]);
        assert!(line.contains("--bars") && !line.contains("For more information"), "{line}");
        assert!(line.ends_with("(see 'moodfader continue --help')"), "{line}");
        let line = error_line(&["moodfader", "lab", "fit-bridge", "--gain", "-1"]);
        assert!(line.contains("--gain") && line.ends_with("(see 'moodfader lab fit-bridge --help')"), "{line}");
        let line = error_line(&["moodfader", "analyse", "x.mid"]);
        assert!(line.contains("analyse") && line.contains("analyze"), "a hint names the command meant: {line}");
        assert!(line.ends_with("(see 'moodfader --help')"), "{line}");
    }

    #[test]
    fn negative_targets_are_values_not_flags() {
        let cli = Cli::try_parse_from(["moodfader", "continue", "p.mid", "--bars", "2", "--valence", "-0.5", "-o", "o.mid"]).unwrap();
        let Command::Continue(a) = cli.command else { panic!("continue") };
        assert_eq!(a.valence, Some(-0.5));
    }
}
