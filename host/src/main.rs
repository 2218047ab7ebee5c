use std::process::ExitCode;

fn main() -> ExitCode {
    assessment_runtime::cli::main()
}
