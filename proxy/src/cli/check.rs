//! `airlock check`: validates the config, reaches every secret (never
//! printing it), resolves every route host and warns about a config or home
//! open to other users; exits 1 when anything needs action, including a
//! config that does not load.

use std::process::ExitCode;

use clap::ValueEnum;

use super::load_policy;
use airlock::home::Home;

/// How the report is printed.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Format {
    Table,
    Json,
}

/// Prints the report; exit status 1 when anything needs action.
pub fn check(home: &Home, format: Format) -> anyhow::Result<ExitCode> {
    let policy = match load_policy(home) {
        Ok(p) => p,
        Err(e) => {
            match format {
                Format::Table => println!("Needs action: {e:#}"),
                Format::Json => println!("{}", serde_json::json!({"ok": false, "config_error": format!("{e:#}")})),
            }
            return Ok(ExitCode::FAILURE);
        }
    };
    let mut report = airlock::check::check(&home.dir, &policy);
    report.warnings = airlock::home::exposure(&home.dir, &home.config);
    match format {
        Format::Table => print!("{}", report.table()),
        Format::Json => println!(
            "{}",
            serde_json::json!({"ok": report.ok(), "routes": report.routes, "general": report.general,
                "warnings": report.warnings})
        ),
    }
    Ok(if report.ok() { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}
