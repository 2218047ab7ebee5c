//! `assessment-control-plane`: see `--help`.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = assessment_control_plane::cli::Cli::parse();
    assessment_control_plane::cli::init_logging(&cli.log_level, cli.log_format);
    match assessment_control_plane::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
