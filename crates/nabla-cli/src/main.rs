//! The `nabla` command-line tool.

use clap::error::ErrorKind;
use clap::parser::ValueSource;
use clap::{CommandFactory, FromArgMatches};

use nabla_cli::args::{Cli, Command};
use nabla_cli::{commands, interop, train};

fn main() {
    nabla::alloc::retain_freed_memory();
    let parsed = Cli::command()
        .try_get_matches()
        .and_then(|m| Cli::from_arg_matches(&m).map(|c| (c, m)));
    let (cli, matches) = match parsed {
        Ok(c) => c,
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
            print!("{e}");
            return;
        }
        Err(e) => {
            // One line for the user's mistake; `--help` has the rest.
            // clap lists missing arguments on the lines after "…were not provided:".
            let text = e.to_string();
            let first: Vec<&str> = text
                .lines()
                .map(str::trim)
                .take_while(|l| !l.is_empty() && !l.starts_with("Usage:"))
                .collect();
            let first = first.join(" ");
            let first = first.trim_start_matches("error: ");
            eprintln!(
                "{} (see `nabla --help`)",
                if first.is_empty() {
                    "invalid arguments"
                } else {
                    first
                }
            );
            std::process::exit(2);
        }
    };
    let result = match &cli.command {
        Command::Train(a) => {
            // The flags given on the command line (not defaults): --resume refuses the others,
            // and flags that do not apply to the run are errors.
            let sub = matches.subcommand_matches("train");
            let command = Cli::command();
            let is_flag = |id: &str| {
                command
                    .find_subcommand("train")
                    .is_some_and(|c| c.get_arguments().any(|a| a.get_id() == id))
            };
            let given: Vec<String> = sub.map_or_else(Vec::new, |m| {
                m.ids()
                    .filter(|id| is_flag(id.as_str()))
                    .filter(|id| m.value_source(id.as_str()) == Some(ValueSource::CommandLine))
                    .map(|id| id.to_string())
                    .collect()
            });
            train::run(a, &given)
        }
        Command::Eval(a) => commands::eval(a),
        Command::Predict(a) => commands::predict(a),
        Command::Gradcheck => commands::gradcheck(),
        Command::Info(a) => commands::info(a),
        Command::Bench(a) => nabla_cli::bench::run(a),
        Command::Export(a) => interop::export(a),
        Command::Import(a) => interop::import(a),
    };
    if let Err(e) = result {
        if let Some(i) = e.downcast_ref::<train::Interrupted>() {
            if !i.0.is_empty() {
                eprintln!("{i}");
            }
            std::process::exit(130);
        }
        let msg = format!("{e:#}").replace('\n', " ");
        eprintln!("error: {msg}");
        std::process::exit(1);
    }
}
