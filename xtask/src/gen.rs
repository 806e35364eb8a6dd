//! Writes shell completions (bash, zsh, fish) and the man pages `snapbackctl(8)` and
//! `snapbackd(8)` from the clap definitions, so they never drift from `--help`.
//!
//! `xtask gen --out DIR` → `DIR/completions/{snapbackctl.bash,_snapbackctl,snapbackctl.fish}`
//! and `DIR/man/{snapbackctl.8,snapbackd.8}` plus one page per subcommand
//! (`snapbackctl-list.8`…).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::CommandFactory;
use clap_complete::Shell;

/// Generates every file under `out`; returns their paths.
pub fn generate(out: &Path) -> Result<Vec<PathBuf>> {
    let completions = out.join("completions");
    let man = out.join("man");
    for dir in [&completions, &man] {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut written = Vec::new();
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let mut cmd = snapbackctl::cli::Cli::command();
        let path = clap_complete::generate_to(shell, &mut cmd, "snapbackctl", &completions)
            .with_context(|| format!("writing {shell} completions"))?;
        written.push(path);
    }
    written.extend(write_man(&man, snapbackctl::cli::Cli::command())?);
    written.extend(write_man(&man, snapbackd::cli::Cli::command())?);
    Ok(written)
}

/// `NAME.8` (section 8: system administration), plus one page per subcommand
/// (`snapbackctl-rollback.8`, `snapbackctl-cow-merge.8`, …) as the SUBCOMMANDS section of the
/// main page refers to them, the way git(1) documents its commands.
fn write_man(dir: &Path, cmd: clap::Command) -> Result<Vec<PathBuf>> {
    // `build` gives every subcommand its display name ("snapbackctl-rollback").
    let mut cmd = cmd.disable_help_subcommand(true);
    cmd.build();
    let mut written = Vec::new();
    write_man_tree(dir, &cmd, &mut written)?;
    Ok(written)
}

fn write_man_tree(dir: &Path, cmd: &clap::Command, written: &mut Vec<PathBuf>) -> Result<()> {
    let man = clap_mangen::Man::new(cmd.clone()).section("8").manual("snapback");
    let path = dir.join(man.get_filename());
    let mut text = Vec::new();
    man.render(&mut text).with_context(|| format!("rendering {}", path.display()))?;
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    written.push(path);
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_man_tree(dir, sub, written)?;
    }
    Ok(())
}
